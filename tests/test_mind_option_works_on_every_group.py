"""`--mind` picks the mind wherever a user puts it: on pmm itself, on a command group
(`pmm model --mind X list`) and on the command; the innermost one given wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli_json, json_data, run_in

# A read-only command of every group, and what it prints of the mind `other` holds.
READS = {
    "model": (["list"], "theirs"),
    "commitments": (["list"], "water the plants"),
    "persona": (["show"], "A calm lighthouse keeper"),
    "reflections": (["list"], "Reflections: 0"),
}


@pytest.fixture
def other(tmp_path: Path) -> Path:
    path = tmp_path / "other.db"
    run_in("--mind", str(path), "init", "--name", "Other", check=True)
    run_in("--mind", str(path), "model", "add", "theirs", "ollama:llama3.1", check=True)
    run_in("--mind", str(path), "commitments", "open", "water the plants", check=True)
    run_in("--mind", str(path), "persona", "set", "A calm lighthouse keeper", check=True)
    return path


def test_every_group_is_covered_here() -> None:
    from pmm.cli.app import command_tree

    groups = {name for name, command in command_tree().commands.items() if hasattr(command, "commands")}
    assert groups == set(READS)


def shows(*args: str) -> str | None:
    """What ``pmm ARGS`` prints on stdout, or None when it fails."""
    result = run_in(*args)
    return result.stdout.decode() if result.returncode == 0 else None


@pytest.mark.parametrize("group", sorted(READS))
def test_mind_on_a_group_picks_the_mind(group: str, other: Path, tmp_path: Path) -> None:
    sub, shown = READS[group]
    result = run_in(group, "--mind", str(other), *sub)
    assert result.returncode == 0, result.stderr.decode()
    assert shown in result.stdout.decode()
    assert shown not in (shows(group, *sub) or "")  # the default mind: none yet
    if group != "model":  # `model list` shows the built-in model without a mind
        missing = tmp_path / "missing.db"
        result = run_in(group, "--mind", str(missing), *sub)
        assert result.returncode == 4
        assert str(missing) in result.stderr.decode()


@pytest.mark.parametrize("group", sorted(READS))
def test_the_innermost_mind_wins(group: str, other: Path, tmp_path: Path) -> None:
    sub, shown = READS[group]
    theirs, mine = str(other), str(tmp_path / "missing.db")
    assert shown in (shows("--mind", mine, group, "--mind", theirs, *sub) or "")
    assert shown not in (shows("--mind", theirs, group, "--mind", mine, *sub) or "")
    assert shown in (shows("--mind", mine, group, "--mind", mine, *sub, "--mind", theirs) or "")
    assert shown not in (shows(group, "--mind", theirs, *sub, "--mind", mine) or "")
    assert shown in (shows("--mind", theirs, group, *sub) or "")  # pmm's own still reaches it


def test_a_write_through_a_group_goes_to_that_mind(other: Path, mind: Path) -> None:
    run_in("model", "--mind", str(mind), "add", "mine", "ollama:qwen2.5", check=True)
    run_in("commitments", "--mind", str(mind), "open", "answer the letters", check=True)
    names = {m["name"] for m in cli_json(mind, "model", "list")["models"]}
    assert "mine" in names and "theirs" not in names
    assert "mine" not in {m["name"] for m in cli_json(other, "model", "list")["models"]}
    listed = json_data(run_in("commitments", "--mind", str(mind), "list", "--json", check=True).stdout)
    assert "answer the letters" in str(listed) and "water the plants" not in str(listed)
    assert "answer the letters" not in run_in("--mind", str(other), "commitments", "list").stdout.decode()


@pytest.mark.parametrize("group", sorted(READS))
def test_the_group_help_documents_it(group: str) -> None:
    text = run_in(group, "--help", check=True).stdout.decode()
    assert "--mind" in text and "overrides pmm --mind" in " ".join(text.split())


def test_quiet_still_goes_anywhere(other: Path) -> None:
    result = run_in("model", "--mind", str(other), "-q", "add", "quiet", "ollama:phi3")
    assert result.returncode == 0 and result.stderr == b""
    result = run_in("commitments", "--mind", str(other), "open", "sleep", "-q")
    assert result.returncode == 0 and result.stderr == b""
