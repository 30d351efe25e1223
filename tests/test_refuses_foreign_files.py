"""pmm refuses files that are not its minds, and leaves them exactly as they were.

SPEC section 1: a non-SQLite file, a SQLite file that is not a mind, or a mind from a newer pmm
is refused with exit 4 and left byte-for-byte untouched (no -wal / -shm / -journal beside it);
read commands never create a missing file or its directory; what pmm creates is its owner's
alone (0600 files, 0700 directories).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_in, run_pmm


def _random_bytes(path: Path, _mind: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(8192))


def _text(path: Path, _mind: Path) -> None:
    path.write_text("Dear diary,\nthis is not a database.\n")


def _empty(path: Path, _mind: Path) -> None:
    path.write_bytes(b"")


def _foreign_sqlite(path: Path, *, wal: bool = False) -> None:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, title TEXT, starts TEXT)")
    conn.execute("INSERT INTO users(email) VALUES ('a@example.org')")
    conn.execute("INSERT INTO events(title, starts) VALUES ('party', '2024-01-01')")
    conn.commit()
    conn.close()
    for suffix in ("-wal", "-shm"):  # a cleanly closed WAL database leaves none
        assert not Path(f"{path}{suffix}").exists()


def _newer(key: str) -> Callable[[Path, Path], None]:
    def make(path: Path, mind: Path) -> None:
        shutil.copyfile(mind, path)
        conn = sqlite3.connect(path)
        assert conn.execute("UPDATE pmm_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = ?",
                            (key,)).rowcount == 1
        conn.commit()
        conn.close()
    return make


def _directory(path: Path, _mind: Path) -> None:
    path.mkdir()


FOREIGN: dict[str, Callable[[Path, Path], None]] = {
    "random-bytes": _random_bytes,
    "text-file": _text,
    "empty-file": _empty,
    "foreign-sqlite": lambda path, _: _foreign_sqlite(path),
    "foreign-sqlite-wal": lambda path, _: _foreign_sqlite(path, wal=True),
    "newer-schema-version": _newer("schema_version"),
    "newer-ledger-format": _newer("ledger_format"),
    "directory": _directory,
}

# Each command as a function of the target path (and a valid export to import into it).
COMMANDS: dict[str, Callable[[Path, Path], tuple[str, ...]]] = {
    "verify-positional": lambda p, _: ("verify", str(p)),
    "verify-mind-option": lambda p, _: ("--mind", str(p), "verify"),
    "export": lambda p, _: ("--mind", str(p), "export"),
    "stats": lambda p, _: ("--mind", str(p), "stats"),
    "log": lambda p, _: ("--mind", str(p), "log"),
    "search": lambda p, _: ("--mind", str(p), "search", "party"),
    "import": lambda p, export: ("--mind", str(p), "import", str(export)),
    "remember": lambda p, _: ("--mind", str(p), "remember", "do not write this"),
}


def _snapshot(path: Path) -> tuple[object, list[str]]:
    """The target's content (or a directory's listing) and everything beside it."""
    if path.is_dir():
        content: object = sorted(os.listdir(path))
    else:
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    return content, sorted(os.listdir(path.parent))


def _assert_one_error_line(stderr: bytes, label: str) -> str:
    text = stderr.decode()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and all(line.startswith(("Error: ", "Hint: ")) for line in lines), (
        f"{label}: expected one Error: line (and a hint), got {lines}")
    return errors[0]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A mind made by pmm (copied to make the newer-format ones) and a valid export of it."""
    base = tmp_path_factory.mktemp("source")
    mind = base / "source.db"
    env = {var: str(base / var.lower()) for var in
           ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME")}
    run_in("--mind", str(mind), "init", "--name", "Source", check=True, env=env)
    run_in("--mind", str(mind), "remember", "party at eight", check=True, env=env)
    export = base / "source.jsonl"
    export.write_bytes(run_in("--mind", str(mind), "export", check=True, env=env).stdout)
    return mind, export


@pytest.fixture(scope="module")
def valid_export(source: tuple[Path, Path]) -> Path:
    return source[1]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", list(FOREIGN))
def test_foreign_file_is_refused_and_left_untouched(
        tmp_path: Path, source: tuple[Path, Path], kind: str, command: str) -> None:
    mind, valid_export = source
    home = tmp_path / "place"
    home.mkdir()
    target = home / "target.db"
    FOREIGN[kind](target, mind)
    before = _snapshot(target)
    mtime = target.stat().st_mtime_ns

    result = run_in(*COMMANDS[command](target, valid_export))

    label = f"pmm {command} on {kind}"
    assert result.returncode == 4, (
        f"{label}: exit {result.returncode}, stderr: {result.stderr.decode()}")
    error = _assert_one_error_line(result.stderr, label)
    assert "target.db" in error, f"{label}: the message does not name the file: {error}"
    assert result.stdout == b"", f"{label}: wrote data on stdout: {result.stdout[:200]!r}"
    assert _snapshot(target) == before, f"{label}: the file or what lies beside it changed"
    assert target.stat().st_mtime_ns == mtime, f"{label}: the file was written to"


READ_COMMANDS = ("verify-positional", "verify-mind-option", "export", "stats", "log", "search")


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_read_command_on_missing_file_creates_nothing(
        tmp_path: Path, private_dirs: Path, command: str) -> None:
    in_new_dir = tmp_path / "not-yet" / "deeper" / "mind.db"
    in_existing_dir = tmp_path / "here" / "mind.db"
    in_existing_dir.parent.mkdir()
    for target in (in_new_dir, in_existing_dir):
        result = run_in(*COMMANDS[command](target, Path("unused")))
        assert result.returncode == 4, f"{command} on missing {target}: exit {result.returncode}"
        _assert_one_error_line(result.stderr, command)
        assert result.stdout == b""
    assert not (tmp_path / "not-yet").exists(), f"{command} created the missing directory"
    assert os.listdir(in_existing_dir.parent) == [], f"{command} created files beside the mind"
    # Nor did it quietly create the default mind instead.
    assert not any(private_dirs.rglob("*.db")), list(private_dirs.rglob("*"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("how", ["init", "remember", "import"])
def test_created_mind_and_directories_are_private(tmp_path: Path, valid_export: Path, how: str) -> None:
    target = tmp_path / "made" / "by-pmm" / "mind.db"
    args = {"init": ("init",), "remember": ("remember", "hello"),
            "import": ("import", str(valid_export))}[how]
    # a permissive umask must not leak into what pmm creates: a real process, which inherits it
    old = os.umask(0)
    try:
        result = run_pmm("--mind", str(target), *args)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr.decode()
    assert _mode(target) == 0o600, oct(_mode(target))
    assert _mode(target.parent) == 0o700, oct(_mode(target.parent))
    assert _mode(target.parent.parent) == 0o700, oct(_mode(target.parent.parent))
    assert sorted(os.listdir(target.parent)) == ["mind.db"], "temporary or journal files left behind"
    if how != "init":
        assert "Created a new mind" in result.stderr.decode()  # said so on stderr


def test_default_mind_directory_is_private(tmp_path: Path, private_dirs: Path) -> None:
    old = os.umask(0)
    try:
        result = run_pmm("remember", "hello")
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr.decode()
    (created,) = private_dirs.rglob("mind.db")
    assert _mode(created) == 0o600
    assert _mode(created.parent) == 0o700
