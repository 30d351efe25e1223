"""Every refusal of `pmm merge OTHER` says which file it is about, this mind or OTHER, in one
line with its exit code, and writes nothing: a user holding two copies (and a mind file and an
export of each) must know which one to fix or replace."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli_json, restore_guards, run_in, run_pmm, unguarded

ROOT = Path(__file__).resolve().parent.parent


def _ok(*args: str) -> None:
    run_in(*args, check=True)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _diverged(tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of one mind, each with a note of its own since they parted after event 2."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _ok("--mind", str(a), "init", "--name", "Echo")
    _ok("--mind", str(a), "remember", "before the copies parted")
    _ok("--mind", str(a), "export", "-o", str(tmp_path / "shared.jsonl"))
    _ok("--mind", str(b), "import", str(tmp_path / "shared.jsonl"))
    _ok("--mind", str(a), "remember", "on a")
    _ok("--mind", str(b), "remember", "on b")
    _ok("--mind", str(b), "remember", "on b again")
    return a, b


def _export(mind: Path, out: Path, *args: str) -> Path:
    _ok("--mind", str(mind), "export", "-o", str(out), *args)
    return out


def _tampered_export(tmp_path: Path, b: Path) -> Path:
    lines = _export(b, tmp_path / "b.jsonl").read_text().splitlines()
    event = json.loads(lines[-2])
    event["content"] = "an altered note"
    bad = tmp_path / "tampered.jsonl"
    bad.write_text("\n".join([*lines[:-2], json.dumps(event), lines[-1]]) + "\n")
    return bad


def _tampered_mind(tmp_path: Path, b: Path) -> Path:
    bad = tmp_path / "tampered.db"
    bad.write_bytes(b.read_bytes())
    conn = unguarded(bad)
    conn.execute("UPDATE events SET content = 'an altered note' WHERE id = 4")
    restore_guards(conn)
    conn.close()
    return bad


def _another_mind(tmp_path: Path, b: Path) -> Path:
    other = tmp_path / "stranger.db"
    _ok("--mind", str(other), "init", "--name", "Stranger")
    return other


def _partial_after_the_fork(tmp_path: Path, b: Path) -> Path:
    return _export(b, tmp_path / "part.jsonl", "--since", "4")


def _forgetting_after_the_fork(tmp_path: Path, b: Path) -> Path:
    _ok("--mind", str(b), "forget", "4", "--yes")
    return b


def _junk(tmp_path: Path, b: Path) -> Path:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\xff" * 100)
    return junk


def _empty(tmp_path: Path, b: Path) -> Path:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    return empty


def _truncated(tmp_path: Path, b: Path) -> Path:
    data = _export(b, tmp_path / "b.jsonl").read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[:data.rindex(b"\n", 0, len(data) - 1) + 1])  # no end line
    return cut


def _missing(tmp_path: Path, b: Path) -> Path:
    return tmp_path / "missing.jsonl"


OTHERS: dict[str, Callable[[Path, Path], Path]] = {
    "a tampered export": _tampered_export,
    "a tampered mind file": _tampered_mind,
    "another mind": _another_mind,
    "a partial export from after the fork": _partial_after_the_fork,
    "a forgetting after the fork": _forgetting_after_the_fork,
    "a binary file": _junk,
    "an empty file": _empty,
    "a truncated export": _truncated,
    "a missing file": _missing,
}


def _one_error_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, text
    return errors[0]


@pytest.mark.parametrize("what", OTHERS)
def test_a_refused_other_copy_is_named(tmp_path: Path, what: str) -> None:
    a, b = _diverged(tmp_path)
    other = OTHERS[what](tmp_path, b)
    before = _digest(a)
    refused = run_pmm("--mind", str(a), "merge", str(other))
    error = _one_error_line(refused.stderr)
    assert refused.returncode == 6, error
    assert str(other) in error, error
    assert _digest(a) == before


def test_a_refusal_about_this_mind_names_this_mind(tmp_path: Path) -> None:
    a, b = _diverged(tmp_path)
    missing = tmp_path / "none.db"
    refused = run_pmm("--mind", str(missing), "merge", str(b))
    error = _one_error_line(refused.stderr)
    assert refused.returncode == 4 and str(missing) in error, error
    not_a_mind = tmp_path / "notes.txt"
    not_a_mind.write_text("just some notes\n")
    refused = run_pmm("--mind", str(not_a_mind), "merge", str(b))
    error = _one_error_line(refused.stderr)
    assert refused.returncode == 4 and str(not_a_mind) in error, error
    refused = run_pmm("--mind", str(a), "merge", str(a))
    error = _one_error_line(refused.stderr)
    assert refused.returncode == 2 and str(a) in error, error


def test_another_mind_names_both_files(tmp_path: Path) -> None:
    a, b = _diverged(tmp_path)
    other = _another_mind(tmp_path, b)
    error = _one_error_line(run_pmm("--mind", str(a), "merge", str(other)).stderr)
    assert str(a) in error and str(other) in error, error


def test_json_refusals_name_the_file_too(tmp_path: Path) -> None:
    a, b = _diverged(tmp_path)
    bad = _tampered_export(tmp_path, b)
    refused = run_pmm("--mind", str(a), "merge", str(bad), "--json")
    assert refused.returncode == 6
    assert str(bad) in json.loads(refused.stdout)["error"]["message"]
    assert cli_json(a, "stats")["head_id"] == 3  # nothing written
