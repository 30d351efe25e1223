"""Opening and creating mind files (``sqlite3`` errors become ``PmmError``s by ``sqlite_errors``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from pmm import errors
from pmm.domain.ids import is_mind_id
from pmm.ledger import schema
from pmm.ledger.chain import FORMAT_VERSION
from pmm.ledger.sqlite_errors import is_busy as is_busy  # re-exported: callers say cx.translated(...)
from pmm.ledger.sqlite_errors import translate as translate
from pmm.ledger.sqlite_errors import translated as translated

DEFAULT_LOCK_TIMEOUT = 10.0


SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database

def lock_timeout() -> float:
    """Seconds a writer waits for another writer: ``$PMM_LOCK_TIMEOUT`` or 10."""
    from pmm import settings

    return settings.LOCK_TIMEOUT.get()


def connect(path: Path, *, write: bool) -> sqlite3.Connection:
    """Open ``path`` (which must exist) read-only or read-write; never changes the file."""
    if not path.exists():
        raise errors.MindNotFound(
            f"no mind file at {path}", hint="create one with `pmm init`, or pass --mind PATH"
        )
    if path.is_dir():
        raise errors.NotAMind(f"{path} is a directory, not a mind file")
    check_header(path)
    with translated(path):
        if write:
            conn = sqlite3.connect(path, isolation_level=None, timeout=lock_timeout())
        else:
            uri = "file:" + _uri_path(path) + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=lock_timeout())
    return conn


def check_header(path: Path) -> None:
    """Refuse anything that is not a pmm mind from its first 100 bytes, before SQLite opens it
    (SQLite would create -wal/-shm files beside a WAL-mode database, even read-only)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise errors.MindFileError(f"cannot read {path}: {exc.strerror}") from None
    if not header:
        raise errors.NotAMind(f"{path} is an empty file, not a pmm mind")
    if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
        raise errors.NotAMind(f"{path} is not a pmm mind file (not an SQLite database)")
    if int.from_bytes(header[68:72], "big") != schema.APPLICATION_ID:
        raise errors.NotAMind(
            f"{path} is an SQLite database but not a pmm mind",
            hint="point --mind at a mind file, or create one with `pmm init`",
        )


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(bytes(path.resolve()))  # the file name's own bytes: it need not be UTF-8


def read_identity(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
    """Check that ``conn`` holds a mind this pmm can read; return its ``pmm_meta`` values."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise translate(exc, path) from None
    if app_id != schema.APPLICATION_ID or "pmm_meta" not in tables or "events" not in tables:
        raise errors.NotAMind(
            f"{path} is an SQLite database but not a pmm mind",
            hint="point --mind at a mind file, or create one with `pmm init`",
        )
    with translated(path):
        meta = dict(conn.execute("SELECT key, value FROM pmm_meta").fetchall())
    if "schema_version" not in meta or "ledger_format" not in meta or "mind_id" not in meta:
        raise errors.NotAMind(f"{path} is a damaged pmm mind: its metadata is incomplete")
    version = schema.valid_version(meta["schema_version"])
    fmt = schema.valid_version(meta["ledger_format"])
    if version is None or fmt is None:
        bad = "schema_version" if version is None else "ledger_format"
        raise errors.NotAMind(
            f"{path} is not a valid pmm mind: its {bad} is {meta[bad][:40]!r}, not a version pmm writes",
            hint="pmm writes versions 1 and up; the file was left untouched",
        )
    if not is_mind_id(meta["mind_id"]):
        raise errors.NotAMind(f"{path} is not a valid pmm mind: its mind id {errors.quoted(meta['mind_id'])} is not one pmm makes")
    if version > schema.SCHEMA_VERSION or fmt > FORMAT_VERSION:
        raise errors.NewerFormat(
            f"{path} was written by a newer pmm (schema {version}, ledger format {fmt})",
            hint="upgrade pmm to open it; the file was left untouched",
        )
    return meta


def writable_identity(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
    """``read_identity``, then refuse (exit 3) a schema that is not pmm's for that version, both
    in one read snapshot: a writer migrating the file in between would make the old version's
    layout look altered."""
    with translated(path):
        conn.execute("BEGIN")
        try:
            meta = read_identity(conn, path)
            schema.check(conn, int(meta["schema_version"]), path)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")  # only reads: the error that matters is the one above
            raise
        conn.execute("COMMIT")
    return meta


def migrate_file(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to ``SCHEMA_VERSION`` in one transaction, each migration recorded in it
    (``schema.migrate``). The version is read again under the write lock: another writer may
    have migrated it since this one looked."""
    with translated(path):
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(read_identity(conn, path)["schema_version"])
            schema.check(conn, version, path)
            schema.migrate(conn, version)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def configure_writer(conn: sqlite3.Connection, path: Path) -> None:
    """WAL with full fsync for a writing connection on an existing mind.

    A mind at rest is in rollback-journal mode, so that a reader never leaves -wal or -shm files
    beside it; a writer switches it to WAL (``_enter_wal``) and the last one back (``close_writer``).

    Switching a file into WAL needs an exclusive lock. When several processes make that switch at
    the same moment, SQLite sees a possible deadlock and answers "locked" at once instead of calling
    the busy handler, so the switch is retried here until the lock timeout is spent."""
    if not _folder_writable(path):  # WAL keeps two files beside the mind: refuse before the switch
        refused = sqlite3.OperationalError("the folder is read-only")
        refused.sqlite_errorcode = sqlite3.SQLITE_READONLY_DIRECTORY
        raise translate(refused, path)
    deadline = time.monotonic() + lock_timeout()
    pause = 0.002
    with translated(path):
        while True:
            try:
                _enter_wal(conn)
                break
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        conn.execute("PRAGMA synchronous=FULL")
        # Freed bytes are zeroed: an old copy of a row (a projection cache rewritten at every
        # write, a forgotten event's content) never lingers in free space for a later
        # `pmm forget` to miss.
        conn.execute("PRAGMA secure_delete=ON")


def _folder_writable(path: Path) -> bool:
    effective = os.access in os.supports_effective_ids  # as this process, even under seteuid
    return os.access(path.parent, os.W_OK | os.X_OK, effective_ids=effective)


def _enter_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL with no journal and no fsync of its own (SQLite's way costs four).

    The switch rewrites one page, the first, to change two bytes of its header (the file format,
    18-19): one write, which a kill cannot tear, and whose every changed byte lies in the first
    100, so a power cut mid-write leaves a valid header either way (SQLite's own model of a
    torn sector). It need not be durable either: SQLite opens a -wal file it finds beside the
    database whatever that header says (test_writes_fsync_only_for_durability.py holds both), and
    every commit after the switch is made durable by the WAL's own fsyncs."""
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return  # another writer has it in WAL already
    conn.execute("PRAGMA journal_mode=OFF")  # a setting of this connection, until the switch
    conn.execute("PRAGMA synchronous=OFF")
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    finally:
        conn.execute("PRAGMA synchronous=FULL")
    if str(mode).lower() != "wal":  # a file system without shared memory: SQLite kept OFF
        conn.execute("PRAGMA journal_mode=DELETE")  # never write without a journal


def close_writer(conn: sqlite3.Connection) -> None:
    """Close a writer; when it is the last user, fold the WAL back so the file stands alone.

    Leaving WAL checkpoints it with full fsync (the WAL, then the database) before it deletes
    it; the switch back then rewrites the header like ``_enter_wal``, with no journal (and one
    fsync: SQLite makes the checkpoint and that write under one setting). SQLite's own switch
    to a rollback journal costs four more."""
    try:
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA journal_mode=OFF")
    except sqlite3.Error:
        pass  # another connection still has the file open: it will do this when it closes
    conn.close()


def random_id() -> str:
    """32 lowercase hex digits as ``uuid.uuid4().hex`` makes them (random, version 4, RFC 4122's
    variant), without importing uuid: it imports platform, ~2 ms of every command's start."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


new_mind_id = random_id


def hold(fd: int) -> None:
    """Mark the temp file open at ``fd`` as in use for as long as this process keeps ``fd`` open:
    an exclusive ``flock``, which a cleaner of stale temp files (pmm.services.files.remove_stale)
    tries first, so a live owner it cannot see (another PID namespace, another host on a shared
    folder) keeps its file."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def in_use(path: Path) -> bool:
    """Whether a process holds ``hold`` on the file at ``path`` (False: none, or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # (closing drops the lock this took, if it took one)
    return False


@contextlib.contextmanager
def new_file(path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A connection to a private temp file beside ``path``, published there when the block
    succeeds (closed, fsynced, hard-linked: never overwriting). On failure nothing is left:
    no temp file, and no directory if this call made it."""
    if path.exists():
        raise errors.UsageError(f"{path} already exists", hint="pmm never overwrites a mind")
    made = [d for d in [path.parent, *path.parent.parents] if not d.exists()]  # deepest first
    if made:
        path.parent.mkdir(parents=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        lock = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            hold(lock)
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                yield tmp, conn
            finally:
                conn.close()
            _publish(tmp, path)
        finally:
            os.close(lock)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
            for directory in made:
                directory.rmdir()  # only empty ones: another process may be using it
        raise
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}-journal").unlink(missing_ok=True)


def _publish(tmp: Path, path: Path) -> None:
    """Durably make ``tmp`` appear as ``path``; never overwrites."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise errors.UsageError(
            f"{path} already exists", hint="pmm never overwrites a mind; choose another path"
        ) from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def init_file(conn: sqlite3.Connection, mind_id: str, *, with_indexes: bool = True,
              ledger_format: int = FORMAT_VERSION) -> None:
    """Lay out an empty mind in a fresh file (the caller commits); ``ledger_format`` is the
    newest for a new mind, an export's own for a file built from it."""
    schema.create(conn, with_indexes=with_indexes)
    conn.executemany(
        "INSERT INTO pmm_meta(key, value) VALUES (?, ?)",
        [("ledger_format", str(ledger_format)), ("mind_id", mind_id)],
    )
