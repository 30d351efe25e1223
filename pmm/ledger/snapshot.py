"""Whole copies of a mind through SQLite's backup API: consistent even while another process
writes (never a raw copy of a live file, whose WAL may hold the newest events)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from pmm.ledger import connection as cx
from pmm.ledger import sqlite_errors
from pmm.ledger.store import Ledger

_WRITING = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY}


def snapshot_to(mind: Ledger, path: Path, opened: Callable[[], object] | None = None) -> tuple[int, str]:
    """Copy the whole database as one consistent image into ``path`` (an empty file the caller
    made, private to it) and return the head (id, hash) that image ends at: read in the same
    read transaction as the copy, since another process may append to the mind meanwhile.
    ``opened`` is called once SQLite holds ``path`` open and before any page is copied: the
    caller may unlink the name then (SQLite writes on into the open file, with no journal), so
    the plain copy never has a name while it holds data. SQLite's page cache bounds the memory
    this takes, whatever the size of the mind. The copy is scratch: no journal and no fsync
    (the caller encrypts it and removes it). A write that fails (a full disk) is
    ``WriteRefused`` naming ``path``; anything else names the mind."""
    copy = sqlite3.connect(path, isolation_level=None)
    try:
        try:
            copy.execute("PRAGMA journal_mode=OFF")
            copy.execute("PRAGMA synchronous=OFF")
        except sqlite3.Error as exc:
            raise cx.translate(exc, path) from None
        if opened is not None:
            opened()
        with mind.read_transaction():
            head = mind.head()  # the backup below reads in this transaction: the image ends here
            try:
                mind.conn.backup(copy)
            except sqlite3.Error as exc:
                raise cx.translate(exc, path if sqlite_errors.primary(exc) in _WRITING else mind.path) from None
        return head
    finally:
        copy.close()


def copy_over(source: Path, target: Path) -> None:
    """Replace the database at ``target`` with ``source``'s, in one transaction of the target's
    own (readers see the old mind or the new one; its WAL and locks are respected)."""
    src = cx.connect(source, write=False)
    try:
        with cx.translated(target):
            dst = sqlite3.connect(target, isolation_level=None, timeout=cx.lock_timeout())
            try:
                src.backup(dst)
            finally:
                dst.close()
    finally:
        src.close()
