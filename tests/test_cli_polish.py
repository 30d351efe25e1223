"""What every command owes a user: --quiet before or after the command (that every command takes
--json and prints JSON with it: test_every_command_prints_json.py), usage mistakes as one `Error:` line with a `Hint:` (exit 2), every other failure
the same shape with its SPEC exit code, and a fast `--version`."""

from __future__ import annotations

import subprocess

import pytest
from conftest import run_in, run_pmm
from test_every_command_prints_json import leaves

from pmm import __version__
from pmm.cli.app import command_tree


def _one_error(result: subprocess.CompletedProcess[bytes], code: int) -> tuple[str, str]:
    lines = result.stderr.decode().splitlines()
    assert result.returncode == code, (result.returncode, lines)
    assert len(lines) == 2 and lines[0].startswith("Error: ") and lines[1].startswith("Hint: "), lines
    return lines[0], lines[1]


def test_the_tree_has_every_command() -> None:
    names = {path for path, _ in leaves(command_tree())}
    assert {"verify", "sign", "keygen", "backup", "restore", "model use", "commitments close"} <= names


def test_quiet_after_the_command_silences_messages(mind) -> None:
    loud = run_in("--mind", str(mind), "remember", "a note")
    assert loud.returncode == 0 and b"Remembered" in loud.stderr
    for args in (("remember", "another", "-q"), ("remember", "--quiet", "a third")):
        quiet = run_in("--mind", str(mind), *args)
        assert quiet.returncode == 0 and quiet.stderr == b"", quiet.stderr


@pytest.mark.parametrize("args", [("verify", "--bogus"), ("verfy",), ("model", "use"), ("backup",),
                                  ("sign", "--format", "pgp"), ("commitments", "close", "x")])
def test_usage_mistakes_are_one_line_with_a_hint(args) -> None:
    error, hint = _one_error(run_in(*args), 2)
    assert "--help" in hint
    assert "Traceback" not in error


def test_failures_without_their_own_hint_get_one(tmp_path) -> None:
    bad = tmp_path / "x.age"
    bad.write_bytes(b"age-encryption.org/v1\n-> X25519 abc\nxyz\n--- mac\n")
    _one_error(run_in("--mind", str(tmp_path / "m.db"), "restore", str(bad)), 6)
    _one_error(run_in("--mind", str(tmp_path / "none.db"), "stats"), 4)


def test_bare_commands_show_help_and_exit_2() -> None:
    """Real processes: the exit code of a usage mistake as the shell sees it."""
    for args in ((), ("model",), ("commitments",)):
        result = run_pmm(*args)
        assert result.returncode == 2 and b"Usage: pmm" in result.stderr and b"Error" not in result.stderr


def test_version_is_the_package_version() -> None:
    """Real processes: start-up, before any mind is looked at."""
    for args in (("--version",), ("--mind", "/nonexistent/m.db", "--version")):
        result = run_pmm(*args)
        assert result.returncode == 0 and result.stdout.decode() == f"pmm {__version__}\n"


def test_no_colour_when_output_is_not_a_terminal(mind, tmp_path, monkeypatch) -> None:
    """NO_COLOR unset and a colour terminal declared: pipes still get plain text."""
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "xterm-256color")
    for args in (("stats",), ("stats", "--json"), ("verify",), ("health",), ("log",),
                 ("verify", str(tmp_path / "missing.db"))):
        # pipes on real descriptors for two of them (what isatty says of them is the point);
        # in-process the streams are not terminals either, and the rest is the same code
        run = run_pmm if args in (("stats",), ("verify", str(tmp_path / "missing.db"))) else run_in
        result = run("--mind", str(mind), *args)
        assert b"\x1b[" not in result.stdout + result.stderr, args
