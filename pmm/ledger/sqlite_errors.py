"""``sqlite3`` errors translated into ``PmmError``s where they enter (SPEC section 5), by SQLite's
own result code (``exc.sqlite_errorcode``), as httpx's ``map_httpcore_exceptions`` maps by type.

``SQLITE_ERRORS`` is read top down and the first match wins, so it runs most specific first: an
extended code (``SQLITE_BUSY_SNAPSHOT``) matches only itself and comes before its primary code
(``SQLITE_BUSY``), which matches its whole family (``code & 0xFF``). A test holds that order.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from pmm import errors
from pmm.ledger import fts, schema

Translation = Callable[[sqlite3.Error, Path], errors.PmmError]

RESTORE = "`pmm restore` writes a mind back from a backup; this file was left as it was"
REFUSED = "nothing was half-written (the transaction was rolled back); free some space and run it again"


def code(exc: BaseException) -> int | None:
    """SQLite's extended result code of ``exc``; None for the errors Python's sqlite3 module
    raises itself (text it cannot decode, a closed connection)."""
    return getattr(exc, "sqlite_errorcode", None)


def primary(exc: BaseException) -> int | None:
    """The primary result code of ``exc`` (``SQLITE_BUSY`` for ``SQLITE_BUSY_SNAPSHOT``)."""
    extended = code(exc)
    return None if extended is None else extended & 0xFF


def is_busy(exc: BaseException) -> bool:
    """Another connection holds the lock this one needs (SQLite's busy handler gave up, or it
    answered at once to break a possible deadlock)."""
    return primary(exc) == sqlite3.SQLITE_BUSY


def _busy(_: sqlite3.Error, path: Path) -> errors.PmmError:
    return errors.MindLocked(f"{path} is locked by another pmm process")


def _name(exc: sqlite3.Error) -> str:
    return getattr(exc, "sqlite_errorname", None) or "SQLITE_ERROR"


SQLITE_ERRORS: tuple[tuple[int, Translation], ...] = (
    # a read transaction that then wanted to write, after another writer committed
    (sqlite3.SQLITE_BUSY_SNAPSHOT, lambda _, path: errors.MindLocked(
        f"{path} was written by another pmm process while this one was reading it",
        hint="nothing was written; run the command again")),
    (sqlite3.SQLITE_BUSY, _busy),
    # a conflict inside one process (a table in use by this same connection): never another
    # process, so a pmm bug rather than a lock to wait for
    (sqlite3.SQLITE_LOCKED, lambda exc, path: errors.PmmError(
        f"SQLite refused {path}: a table of it is in use in this same process ({exc})")),
    (sqlite3.SQLITE_READONLY_DBMOVED, lambda _, path: errors.MindFileError(
        f"{path} was moved or deleted while pmm had it open",
        hint="nothing was written; run the command again on the file where it is now")),
    (sqlite3.SQLITE_READONLY_DIRECTORY, lambda _, path: errors.MindFileError(
        f"{path} cannot be written: its folder is read-only",
        hint="pmm writes a journal beside the mind file: make the folder writable")),
    (sqlite3.SQLITE_READONLY, lambda _, path: errors.MindFileError(
        f"{path} cannot be written (read-only file or directory)",
        hint="check the permissions of the file and its folder")),
    (sqlite3.SQLITE_CANTOPEN, lambda _, path: errors.MindFileError(
        f"SQLite cannot open {path}, or a file it keeps beside it ({path.name}-wal, -shm, -journal)",
        hint="check the permissions of the file and its folder, and what is beside the file")),
    (sqlite3.SQLITE_NOTADB, lambda _, path: errors.NotAMind(
        f"{path} is not a pmm mind file (its SQLite header is not one SQLite can read)")),
    # FTS5 reports its own damaged files so: the events are untouched, the index can be rebuilt
    (sqlite3.SQLITE_CORRUPT_VTAB, lambda exc, path: fts.damaged_error(path, exc)),
    (sqlite3.SQLITE_CORRUPT, lambda exc, path: errors.NotAMind(
        f"{path} is a damaged SQLite file ({exc}): truncated or overwritten", hint=RESTORE)),
    (sqlite3.SQLITE_FULL, lambda _, path: errors.WriteRefused(
        f"could not write {path}: the disk is full (or the quota is used up)", hint=REFUSED)),
    (sqlite3.SQLITE_IOERR_WRITE, lambda _, path: errors.WriteRefused(
        f"could not write {path}: the system refused the write (an I/O error, a full disk or"
        " a file size limit)", hint=REFUSED)),
    (sqlite3.SQLITE_IOERR_FSYNC, lambda _, path: errors.WriteRefused(
        f"could not write {path}: the system could not sync it to the disk (an I/O error)",
        hint=REFUSED)),
    # growing the WAL index (-shm), truncating, or syncing the folder: a write, so a full disk is
    # what usually refuses them (seen: SHMSIZE with a few KiB left on the disk)
    *((code, lambda exc, path: errors.WriteRefused(
        f"could not write {path}: the system refused to grow or sync it or a file beside it"
        f" (-wal, -shm: a full disk or an I/O error; {_name(exc)})", hint=REFUSED))
      for code in (sqlite3.SQLITE_IOERR_SHMSIZE, sqlite3.SQLITE_IOERR_TRUNCATE,
                   sqlite3.SQLITE_IOERR_DIR_FSYNC)),
    (sqlite3.SQLITE_IOERR, lambda exc, path: errors.MindFileError(
        f"disk I/O error on {path} ({_name(exc)})",
        hint="check the disk, and that nothing beside the mind file (-journal, -wal) is in the way")),
)


def translation(extended: int | None) -> Translation | None:
    """The first entry of ``SQLITE_ERRORS`` that ``extended`` falls under, or None."""
    if extended is None:
        return None
    for known, make in SQLITE_ERRORS:
        if extended == known or (known <= 0xFF and extended & 0xFF == known):
            return make
    return None


def translate(exc: sqlite3.Error, path: Path) -> errors.PmmError:
    """Map an ``sqlite3`` error to the exception tree (SPEC section 5)."""
    make = translation(code(exc))
    if make is not None:
        return make(exc, path)
    text = str(exc)
    # What is left is SQLite's generic SQLITE_ERROR, which only its text tells apart.
    if "no such table" in text or "no such column" in text:
        # pmm's own queries only name what its schema makes: the file was altered
        return errors.IntegrityError(f"{path} has been altered outside pmm ({text})",
                                     hint=schema.ALTERED_HINT)
    if code(exc) is None and "Could not decode to UTF-8" in text:
        # Python's sqlite3 raises this itself (no SQLite code): pmm writes only UTF-8 text, so
        # these bytes were put there behind its back
        column = re.search(r"column '(\w+)'", text)
        where = f" in column {column[1]!r}" if column else ""
        return errors.IntegrityError(
            f"{path} has been altered outside pmm: it holds text that is not UTF-8{where}",
            hint="`pmm verify` names the altered event; restore a backup from before it")
    return errors.PmmError(f"SQLite error on {path}: {text}")


@contextlib.contextmanager
def translated(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
