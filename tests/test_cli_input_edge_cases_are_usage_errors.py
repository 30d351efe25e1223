"""Absurd numbers and bytes that are not UTF-8 are the user's mistake, said in one line with its
exit code (SPEC section 5), never an "unexpected" exit 1: every numeric option declares its
bounds; non-UTF-8 text on the command line is a usage error (2), on stdin rejected input (6);
file names may be any bytes. `health --strict` with warnings exits 7, documented in --help."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import invoke, mind_events, run_pmm

from pmm.cli.app import command_tree

HUGE = str(10**30)


@pytest.fixture(scope="module")
def mind(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mind for the module: every test here leaves it unchanged (``refused`` checks that)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as env:  # pmm's state dirs, as the autouse fixture does
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "HOME"):
            env.setenv(var, str(home / var))
        path = home / "mind.db"
        assert invoke("--mind", str(path), "init", "--name", "Test").exit_code == 0
    return path


def refused(mind: Path, *args: str, code: int = 2, input: bytes | None = None) -> str:
    before = mind.read_bytes()
    done = invoke("--mind", str(mind), *args, input=input)
    assert done.exit_code == code, (args, done.exit_code, done.stderr)
    assert done.stderr.startswith("Error: ") and "unexpected" not in done.stderr, done.stderr
    assert "Hint: " in done.stderr
    assert mind.read_bytes() == before  # nothing written
    return done.stderr


@pytest.mark.parametrize("args", [
    ("log", "-n", "1e20"), ("log", "-n", HUGE), ("log", "-n", "-1"), ("log", "-n", "0"),
    ("search", "x", "-n", HUGE), ("chat", "-m", "hi", "--max-tokens", HUGE),
    ("commitments", "close", HUGE, "-e", "1", "-s", "kept"),
    ("commitments", "close", "1", "-e", HUGE, "-s", "kept"), ("commitments", "reopen", "0"),
    ("trace", HUGE), ("trace", "²"), ("export", "--since", HUGE),
    ("backup", "-o", "b.age", "--keep", str(10**9)),
    ("run", "--autonomous", "--max-cycles", "1", "--interval", "inf"),
    ("run", "--autonomous", "--max-cycles", "1", "--interval", "nan"),
    ("model", "add", "x", "openai:y", "--context-window", "-1"),
    ("model", "add", "x", "openai:y", "--price-in", "nan"),
])
def test_absurd_numbers_are_usage_errors(mind: Path, args: tuple[str, ...]) -> None:
    refused(mind, *args)


def test_every_numeric_parameter_declares_its_bounds() -> None:
    def walk(group: object, path: str) -> list[str]:
        missing = []
        for name, sub in getattr(group, "commands", {}).items():
            for p in sub.params:
                if p.type_descriptor.annotation in (int, float, list[int]) and (p.min is None or p.max is None):
                    missing.append(f"{path} {name} {p.name}")
            missing += walk(sub, f"{path} {name}")
        return missing

    assert walk(command_tree(), "pmm") == []


@pytest.mark.parametrize("args", [
    ("remember", "bad \udcff note"), ("commitments", "open", "bad \udcff promise"),
    ("search", "\udcff"), ("log", "--kind", "\udcff"), ("init", "--name", "\udcff"),
    ("model", "add", "x", "openai:\udcff"), ("chat", "-m", "hi \udcff"),
])
def test_text_arguments_that_are_not_utf8_are_usage_errors(mind: Path, args: tuple[str, ...]) -> None:
    assert "not valid UTF-8" in refused(mind, *args)


def test_real_non_utf8_argv_bytes_at_the_process_boundary(mind: Path, tmp_path: Path) -> None:
    done = run_pmm("--mind", str(mind), "remember", "caf\udce9")  # the byte 0xE9 in argv
    assert done.returncode == 2 and b"not valid UTF-8" in done.stderr
    other = tmp_path / "caf\udce9.db"  # a file name is not text: any bytes will do
    assert invoke("--mind", str(other), "init").exit_code == 0 and other.exists()
    assert invoke("--mind", str(other), "log").exit_code == 0


def test_stdin_that_is_not_utf8_is_rejected_input(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    assert invoke("--mind", str(mind), "init").exit_code == 0
    err = refused(mind, "remember", "-", code=6, input=b"fine\nnot \xff fine\n")
    assert "line 2" in err and "not valid UTF-8" in err
    assert "line 1" in refused(mind, "chat", code=6, input=b"\xfe\xff")
    assert "line 1" in refused(mind, "chat", "-m", "-", code=6, input=b"caf\xe9")
    assert invoke("--mind", str(mind), "remember", "-", input="café ✓\n".encode()).exit_code == 0
    assert mind_events(mind)[-1]["content"] == "café ✓"


def test_health_strict_exit_codes_are_documented() -> None:
    root = invoke("--help").stdout
    assert "7 health --strict found warnings" in " ".join(root.split())
    assert "1 unexpected error" in root
    health = " ".join(invoke("health", "--help").stdout.split())
    assert "7 when there are warnings and no failure" in health and "exit 1" not in health
