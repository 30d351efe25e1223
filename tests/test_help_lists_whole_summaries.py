"""`pmm --help` and every group's `--help` list each command with its first sentence whole
(click would cut it to one line and end it with "..."), laid out within 100 columns."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import run_in, run_pmm


def groups() -> list[tuple[tuple[str, ...], Any]]:
    from pmm.cli.app import command_tree

    found = [((), command_tree())]
    found += [((name,), sub) for name, sub in command_tree().commands.items() if hasattr(sub, "commands")]
    return found


def listed(help_text: str) -> dict[str, str]:
    """The "Commands:" section of a help text: each command's summary, its lines joined."""
    section = help_text.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    summaries: dict[str, str] = {}
    name = ""
    for line in section.splitlines():
        if line[2] != " ":  # "  name   summary": a new command
            name, _, text = line.strip().partition(" ")
            summaries[name] = text.strip()
        else:
            summaries[name] += " " + line.strip()
    return summaries


def first_sentence(help_text: str) -> str:
    """What a reader takes as the first sentence of a command's help, found independently of
    pmm's own helper: up to the first '. ' or the end of the first paragraph."""
    paragraph = " ".join(help_text.split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


@pytest.mark.parametrize("path", [p for p, _ in groups()], ids=lambda p: " ".join(("pmm", *p)))
def test_every_summary_is_whole_within_100_columns(path: tuple[str, ...]) -> None:
    group = dict(groups())[path]
    text = run_in(*path, "--help", env={"COLUMNS": "100"}, check=True).stdout.decode()
    summaries = listed(text)
    assert set(summaries) == set(group.commands)
    for name, command in group.commands.items():
        assert "..." not in summaries[name], name
        assert summaries[name] == first_sentence(command.help), name
    assert max(len(line) for line in text.splitlines()) <= 100


def test_a_narrow_terminal_wraps_rather_than_cuts() -> None:
    text = run_in("--help", env={"COLUMNS": "60"}, check=True).stdout.decode()
    assert "..." not in listed(text)["verify"]
    assert "(exit 3 on any problem)." in listed(text)["verify"]
    assert max(len(line) for line in text.splitlines()) <= 60


def test_the_installed_script_prints_them_whole() -> None:
    result = run_pmm("model", "--help", env={"COLUMNS": "100"})
    assert result.returncode == 0
    summaries = listed(result.stdout.decode())
    assert summaries["use"] == "Switch chat (or reflection) to a model; identity and memory carry over."
    assert not any("..." in summary for summary in summaries.values())
