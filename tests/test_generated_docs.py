"""The generated files (README's command reference, completions, man page) come from the Typer app,
and a stale one fails the build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- BEGIN GENERATED: command reference (scripts/gen_docs.py) -->"
END = "<!-- END GENERATED -->"


def gen_docs(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(root / "scripts" / "gen_docs.py"), *args],
                          capture_output=True, text=True, timeout=60)


def copy_of_the_tree(tmp_path: Path) -> Path:
    """The script, the files it writes and the package it reads: gen_docs.py works on the tree
    it sits in, so a copy can be made stale without touching the checkout."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    for script in ("gen_docs.py", "command_tree.py", "completions.py"):
        shutil.copy(ROOT / "scripts" / script, tree / "scripts")
    shutil.copy(ROOT / "README.md", tree)
    for folder in ("completions", "man", "docs"):
        shutil.copytree(ROOT / folder, tree / folder)
    (tree / "pmm").symlink_to(ROOT / "pmm")
    return tree


def test_the_checkout_is_current() -> None:
    proc = gen_docs(ROOT, "--check")
    assert proc.returncode == 0, proc.stderr


def test_readme_reference_lists_every_command_with_usage_and_options() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(BEGIN):text.index(END)]
    assert text.rstrip().endswith(END)
    for heading in ("### `pmm export`", "### `pmm model add`", "### `pmm commitments close`"):
        assert heading in section
    assert "`pmm export [OPTIONS]`" in section
    assert "- `-f, --format <jsonl|md>`: jsonl (verifiable) or md. [default: jsonl]" in section
    assert "130 interrupted" in section


def test_check_fails_on_a_stale_section_and_a_rerun_only_rewrites_the_section(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    assert gen_docs(tree).returncode == 0  # bring the copy up to date, whatever the checkout's state
    assert gen_docs(tree, "--check").returncode == 0
    readme = tree / "README.md"
    current = readme.read_text()

    readme.write_text(("An edit above the reference.\n" + current).replace(
        "jsonl (verifiable) or md.", "jsonl or md."))
    proc = gen_docs(tree, "--check")
    assert proc.returncode == 1
    assert "README.md" in proc.stderr

    assert gen_docs(tree).returncode == 0
    assert readme.read_text() == "An edit above the reference.\n" + current
    assert gen_docs(tree, "--check").returncode == 0

    readme.write_text(current[:current.index("\n## Command reference")])  # no section yet
    assert gen_docs(tree, "--check").returncode == 1
    assert gen_docs(tree).returncode == 0
    assert readme.read_text() == current  # appended at the end, under its heading


def test_check_names_a_stale_completion_or_man_page_and_a_rerun_mends_it(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    assert gen_docs(tree).returncode == 0
    generated = [tree / "completions" / name for name in ("pmm.bash", "_pmm", "pmm.fish")] + [tree / "man" / "pmm.1"]
    current = {path: path.read_text() for path in generated}
    for path in generated:
        path.write_text(current[path].replace("commitments", "commitment"))
    proc = gen_docs(tree, "--check")
    assert proc.returncode == 1
    for path in generated:
        assert str(path.relative_to(tree)) in proc.stderr
    assert gen_docs(tree).returncode == 0
    assert {path: path.read_text() for path in generated} == current
