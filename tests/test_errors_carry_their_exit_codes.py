"""Each error class carries its exit code, default hint and meaning (SPEC section 5), the tree drawn
in pmm/errors.py is the real one, `pmm --help` and the man page list the codes from the classes,
and every sqlite3 error pmm maps is mapped by SQLite's result code, most specific first: each
mapping met here by a real SQLite condition (a lock held, a file that is not a database, a
truncated one, a file size limit, ...), through the CLI wherever the CLI can meet it."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import invoke, mind_events

from pmm import errors
from pmm.ledger import fts, sqlite_errors

# -- the classes ----------------------------------------------------------------------------------

DRAWN = re.compile(r"^(?P<indent>[ │├└─]*?)(?P<name>[A-Z]\w+)\s+(?P<code>\d+)\s+\S")


def pmm_classes() -> list[tuple[int, str, int]]:
    """(depth, name, exit code) of every class under PmmError that pmm declares, depth first."""
    found = []

    def walk(cls: type[errors.PmmError], depth: int) -> None:
        found.append((depth, cls.__name__, cls.exit_code))
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("pmm."):  # not one a test made
                walk(sub, depth + 1)

    walk(errors.PmmError, 0)
    return found


def test_the_tree_drawn_in_the_docstring_is_the_class_tree() -> None:
    doc = errors.__doc__ or ""
    rows = [m for m in map(DRAWN.match, doc.split("::", 1)[1].splitlines()) if m]
    margin = len(rows[0]["indent"])  # the literal block's own indentation
    drawn = [((len(m["indent"]) - margin) // 4, m["name"], int(m["code"])) for m in rows]
    assert drawn == pmm_classes()


def test_every_class_says_its_own_meaning_and_keeps_its_parents_code() -> None:
    spec = {1, 2, 3, 4, 5, 6}
    for cls in errors.tree():
        if not cls.__module__.startswith("pmm."):
            continue
        assert "meaning" in vars(cls) and cls.meaning and "\n" not in cls.meaning, cls
        assert cls.exit_code in spec, cls
        parent = cls.__mro__[1]
        if parent is not errors.PmmError and issubclass(parent, errors.PmmError):
            assert cls.exit_code == parent.exit_code, cls  # a narrower error, not another code


def test_a_raise_without_a_hint_gets_its_class_default_and_a_specific_hint_wins() -> None:
    assert errors.MindLocked("x").hint == errors.MindLocked.default_hint
    assert errors.MindLocked("x").hint != errors.MindFileError.default_hint
    assert errors.NotAMind("x").hint == errors.MindFileError.default_hint  # inherited
    assert errors.UsageError("x").hint is None
    assert errors.InputRejected("x", hint="fix line 3", line=3).hint == "fix line 3"


def test_help_and_man_page_list_every_code_from_the_classes() -> None:
    codes = dict(errors.EXIT_STATUS)
    assert list(codes) == sorted(codes) and {0, 7, 130} <= set(codes)
    assert {cls.exit_code for cls in errors.tree() if cls.__module__.startswith("pmm.")} <= set(codes)
    assert codes[4] == errors.MindFileError.meaning and codes[1] == errors.PmmError.meaning
    result = invoke("--help")
    assert result.exit_code == 0
    epilog = " ".join(result.stdout.split("Exit codes:", 1)[1].split())
    for code, meaning in errors.EXIT_STATUS:
        assert f"{code} {meaning}" in epilog
    man = (Path(__file__).resolve().parent.parent / "man" / "pmm.1").read_text()
    status = man.split(".SH EXIT STATUS\n", 1)[1].split(".SH ", 1)[0]
    assert status.count(".TP\n.B ") == len(codes)
    for code, meaning in errors.EXIT_STATUS:
        assert f".B {code}\n{meaning.replace('-', chr(92) + '-')}\n" in status


# -- the order of the sqlite mapping --------------------------------------------------------------


def test_the_sqlite_mapping_runs_most_specific_first() -> None:
    table = [known for known, _ in sqlite_errors.SQLITE_ERRORS]
    assert len(set(table)) == len(table)
    for i, earlier in enumerate(table):
        for later in table[i + 1:]:
            # a primary code before one of its own extended codes would hide it
            assert not (earlier <= 0xFF < later and later & 0xFF == earlier), (hex(earlier), hex(later))
    for known, make in sqlite_errors.SQLITE_ERRORS:
        assert sqlite_errors.translation(known) is make  # each entry is reached by its own code
    busy_family = sqlite3.SQLITE_BUSY_RECOVERY  # not listed: falls under its primary code
    assert sqlite_errors.translation(busy_family) is dict(sqlite_errors.SQLITE_ERRORS)[sqlite3.SQLITE_BUSY]


# -- real SQLite conditions through the CLI -------------------------------------------------------


def refused(result, code: int, text: str) -> str:  # noqa: ANN001 (click's Result)
    """The one-line ``Error:`` (and its ``Hint:``) of a refusal with exit ``code``."""
    lines = result.stderr.splitlines()
    assert result.exit_code == code, result.output
    assert len(lines) == 2 and lines[0].startswith("Error: ") and lines[1].startswith("Hint: "), lines
    assert text in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mind with two events, made once for the module in this process (in dirs of its own)."""
    home = tmp_path_factory.mktemp("template")
    path = home / "mind.db"
    with pytest.MonkeyPatch.context() as env:
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "HOME"):
            env.setenv(var, str(home / var.lower()))
        env.setenv("PMM_SEMANTIC", "0")
        assert invoke("--mind", str(path), "init", "--name", "T").exit_code == 0
        assert invoke("--mind", str(path), "remember", "apples and pears").exit_code == 0
    return path


@pytest.fixture
def made(template: Path, tmp_path: Path) -> Path:
    """A copy of the template mind, for this test to break."""
    return Path(shutil.copy(template, tmp_path / "mind.db"))


def test_a_write_lock_held_by_another_connection_is_exit_4(made: Path) -> None:
    holder = sqlite3.connect(made, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = invoke("--mind", str(made), "remember", "waits", env={"PMM_LOCK_TIMEOUT": "0"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    refused(result, 4, "is locked by another pmm process")
    assert "PMM_LOCK_TIMEOUT" in result.stderr
    assert len(mind_events(made)) == 2


def test_a_file_sqlite_cannot_read_is_not_a_mind(made: Path) -> None:
    data = bytearray(made.read_bytes())
    data[16:18] = (3).to_bytes(2, "big")  # a page size SQLite refuses; magic and application id kept
    made.write_bytes(bytes(data))
    for args in (("log",), ("remember", "x")):
        refused(invoke("--mind", str(made), *args), 4, "its SQLite header is not one SQLite can read")


def test_a_truncated_mind_is_a_damaged_file_left_as_it_was(made: Path) -> None:
    made.write_bytes(made.read_bytes()[: os.path.getsize(made) // 2])
    before = made.read_bytes()
    line = refused(invoke("--mind", str(made), "log"), 4, "is a damaged SQLite file")
    assert "malformed" in line
    refused(invoke("--mind", str(made), "remember", "x"), 4, "is a damaged SQLite file")
    assert made.read_bytes() == before


def test_a_wal_that_cannot_be_opened_is_exit_4(made: Path) -> None:
    Path(f"{made}-wal").mkdir()  # SQLite cannot open its WAL beside the mind
    refused(invoke("--mind", str(made), "remember", "x"), 4, f"SQLite cannot open {made}")


def test_a_journal_that_cannot_be_read_is_a_disk_io_error(made: Path) -> None:
    Path(f"{made}-journal").mkdir()  # SQLite reads a journal beside the file as a hot one
    assert "(SQLITE_IOERR_READ)" in refused(invoke("--mind", str(made), "log"), 4, "disk I/O error on")


def test_a_write_past_the_file_size_limit_is_refused_whole(made: Path) -> None:
    """EFBIG, as a full disk would answer: SQLITE_IOERR_WRITE, exit 1, nothing half-written."""
    before = mind_events(made)
    limit = os.path.getsize(made) + 64 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        result = invoke("--mind", str(made), "remember", "-", input="x" * 400_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    refused(result, 1, f"could not write {made}: the system refused the write")
    assert "nothing was half-written" in result.stderr
    assert mind_events(made) == before
    assert invoke("--mind", str(made), "verify").exit_code == 0


def test_a_damaged_search_index_is_exit_3_with_the_repair_hint(made: Path) -> None:
    conn = sqlite3.connect(made, isolation_level=None)
    conn.execute("UPDATE events_fts_data SET block = x'00ff00ff00ff00ff' WHERE id > 10")  # segments
    conn.close()
    result = invoke("--mind", str(made), "search", "apples")
    refused(result, 3, "the search index of")
    assert fts.REPAIR_HINT in result.stderr


NOBODY = 65534


@contextlib.contextmanager
def without_root() -> Iterator[None]:
    """Root writes any file whatever its mode: as root, run the block as nobody (the effective
    uid only, so root comes back), for file permissions to mean what they say."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.mark.parametrize(("folder_mode", "file_mode", "said"), [
    (0o700, 0o400, "cannot be written (read-only file or directory)"),
    (0o500, 0o600, "cannot be written: its folder is read-only"),
])
def test_a_read_only_mind_or_folder_is_exit_4_and_readers_still_read(
        made: Path, folder_mode: int, file_mode: int, said: str) -> None:
    assert invoke("--mind", str(made), "remember", "warm").exit_code == 0  # imports done as root
    # a folder nobody may enter (tmp_path's parents are root's alone when root runs the tests)
    folder = Path(tempfile.mkdtemp(prefix="pmm-read-only-"))
    try:
        folder.chmod(0o755)
        (folder / "mind").mkdir()
        mind = Path(shutil.copy(made, folder / "mind" / "mind.db"))
        if os.geteuid() == 0:
            for path in (mind.parent, mind):
                os.chown(path, NOBODY, -1)
        mind.chmod(file_mode)
        mind.parent.chmod(folder_mode)
        before = mind.read_bytes()
        with without_root():
            written = invoke("--mind", str(mind), "remember", "x")
            read = invoke("--mind", str(mind), "log")
        refused(written, 4, said)
        assert read.exit_code == 0 and "warm" in read.stdout
        assert mind.read_bytes() == before
    finally:
        for path in folder.rglob("*"):
            path.chmod(0o700)
        shutil.rmtree(folder)


# -- real SQLite conditions the CLI never meets: mapped all the same ------------------------------


def raised(action: Callable[[], object]) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as caught:
        action()
    return caught.value


def test_the_conditions_pmm_avoids_are_mapped_too(made: Path, tmp_path: Path) -> None:
    """What pmm's own transactions never meet (it writes under BEGIN IMMEDIATE, never reopens a
    moved file, never runs out of pages) still maps to the right class if it ever does."""
    def snapshot() -> None:  # a read transaction that then writes, after another writer committed
        reader = sqlite3.connect(wal, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()
        sqlite3.connect(wal, isolation_level=None).execute("CREATE TABLE other(x)")
        reader.execute("CREATE TABLE mine(x)")

    wal = tmp_path / "wal.db"
    shutil.copy(made, wal)
    sqlite3.connect(wal).execute("PRAGMA journal_mode=WAL").fetchone()

    def locked() -> None:  # a table dropped under this same connection's open read
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
        reading = conn.execute("SELECT x FROM t")
        reading.fetchone()
        conn.execute("DROP TABLE t")

    def read_only() -> None:
        sqlite3.connect(f"file:{made}?mode=ro", uri=True).execute("CREATE TABLE t(x)")

    def moved() -> None:
        conn = sqlite3.connect(copy, isolation_level=None)
        conn.execute("SELECT count(*) FROM events").fetchone()
        copy.rename(tmp_path / "elsewhere.db")
        conn.execute("CREATE TABLE t(x)")

    copy = tmp_path / "copy.db"
    shutil.copy(made, copy)

    def full() -> None:
        conn = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
        conn.execute("CREATE TABLE t(x)")
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        conn.execute("INSERT INTO t VALUES (randomblob(100000))")

    cases: list[tuple[Callable[[], object], int, type[errors.PmmError], str]] = [
        (snapshot, sqlite3.SQLITE_BUSY_SNAPSHOT, errors.MindLocked, "while this one was reading it"),
        (locked, sqlite3.SQLITE_LOCKED, errors.PmmError, "in use in this same process"),
        (read_only, sqlite3.SQLITE_READONLY, errors.MindFileError, "cannot be written"),
        (moved, sqlite3.SQLITE_READONLY_DBMOVED, errors.MindFileError, "was moved or deleted"),
        (full, sqlite3.SQLITE_FULL, errors.WriteRefused, "the disk is full"),
    ]
    for action, code, cls, text in cases:
        exc = raised(action)
        assert exc.sqlite_errorcode == code, (exc.sqlite_errorname, exc)  # type: ignore[attr-defined]
        mapped = sqlite_errors.translate(exc, made)
        assert type(mapped) is cls and text in mapped.message and mapped.hint, (code, mapped.message)


def test_sqlites_generic_error_and_pythons_own_are_told_apart_by_their_text(made: Path) -> None:
    """SQLITE_ERROR is every query error (no such table, a syntax error): only its text says
    which; Python's sqlite3 raises the UTF-8 decode error itself, with no SQLite code at all."""
    conn = sqlite3.connect(":memory:")
    missing = raised(lambda: conn.execute("SELECT * FROM events"))
    assert missing.sqlite_errorcode == sqlite3.SQLITE_ERROR  # type: ignore[attr-defined]
    assert type(sqlite_errors.translate(missing, made)) is errors.IntegrityError
    undecodable = raised(lambda: conn.execute("SELECT CAST(x'ff' AS TEXT) AS content").fetchall())
    assert sqlite_errors.code(undecodable) is None
    assert "not UTF-8 in column 'content'" in sqlite_errors.translate(undecodable, made).message
    syntax = raised(lambda: conn.execute("SELEKT 1"))
    assert type(sqlite_errors.translate(syntax, made)) is errors.PmmError
    assert not fts.is_damage(syntax)


def test_a_write_the_system_refuses_is_exit_1_whichever_file_it_grew() -> None:
    """A full disk shows up as SQLITE_FULL, IOERR_WRITE, or, when only the WAL index (-shm) or the
    folder could not grow, IOERR_SHMSIZE / TRUNCATE / DIR_FSYNC: all are a refused write (exit 1,
    nothing half-written), never "reading failed" (exit 4). Other I/O errors stay exit 4."""
    from pathlib import Path

    for code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_WRITE, sqlite3.SQLITE_IOERR_FSYNC,
                 sqlite3.SQLITE_IOERR_SHMSIZE, sqlite3.SQLITE_IOERR_TRUNCATE, sqlite3.SQLITE_IOERR_DIR_FSYNC):
        made = sqlite_errors.translation(code)(sqlite3.OperationalError("disk I/O error"), Path("m.db"))
        assert isinstance(made, errors.WriteRefused) and made.exit_code == 1, hex(code)
    other = sqlite_errors.translation(sqlite3.SQLITE_IOERR_READ)(sqlite3.OperationalError("x"), Path("m.db"))
    assert type(other) is errors.MindFileError and other.exit_code == 4
