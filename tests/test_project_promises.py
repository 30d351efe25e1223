"""The promises a newcomer relies on: README's commands, CI running them, the changelog."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_opens_with_install_and_test_commands() -> None:
    install, test = readme_commands()
    assert install.startswith("./install.sh")
    assert "pytest" in test


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci


def test_changelog_keeps_an_unreleased_section() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in text
    assert re.search(r"^## \[Unreleased\]$", text, flags=re.M)


def test_changelog_has_a_release_section_for_this_version() -> None:
    from pmm import __version__

    text = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", text, flags=re.M)
    assert releases and releases[0][0] == __version__, releases
    assert text.index("## [Unreleased]") < text.index(f"## [{__version__}]")


def test_version_lives_in_one_place() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert re.search(r'^__version__ = "\d+\.\d+\.\d+"$', (ROOT / "pmm" / "__init__.py").read_text(), flags=re.M)


def test_generated_docs_are_current() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bash_completion_completes_commands_and_options() -> None:
    import subprocess

    script = (
        f"source {ROOT / 'completions' / 'pmm.bash'}\n"
        "COMP_WORDS=(pmm ver); COMP_CWORD=1; _pmm; echo \"${COMPREPLY[@]}\"\n"
        "COMP_WORDS=(pmm export --for); COMP_CWORD=2; _pmm; echo \"${COMPREPLY[@]}\"\n"
        "COMP_WORDS=(pmm export --format ''); COMP_CWORD=3; _pmm; echo \"${COMPREPLY[@]}\"\n"
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["verify", "--format", "jsonl md"]
