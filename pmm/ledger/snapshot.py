"""Whole copies of a mind through SQLite's backup API: consistent even while another process
writes (never a raw copy of a live file, whose WAL may hold the newest events)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pmm.ledger import connection as cx
from pmm.ledger.chain import GENESIS_PREV
from pmm.ledger.store import Ledger


def snapshot(mind: Ledger) -> tuple[bytes, tuple[int, str]]:
    """The whole database as one consistent image, in memory (nothing plain is written to disk),
    and the head (id, hash) that image ends at: read from the copy, since another process may
    have appended to the file by the time anything reads it again."""
    with cx.translated(mind.path):
        copy = sqlite3.connect(":memory:")
        try:
            mind.conn.backup(copy)
            row = copy.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
            return copy.serialize(), ((row[0], row[1]) if row else (0, GENESIS_PREV))
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
