"""The derived table of recall vectors (schema 4): one embedding per recent event, by id.

Like the search index it is not covered by the chain, so a hostile file can hold any rows:
a vector is only ever a ranking hint. Whoever reads it checks every blob (``pmm.services.
semantic``) and the events it points to are read from ``events`` by id, so a forged row can
skew the ranking but never put text in a prompt that is not the event's own. Which model made
the vectors is kept in ``pmm_meta`` (``MODEL_KEY``): vectors of another model are not compared
with this one's, and a writer replaces them.

The table stays bounded: a writer that stores the vectors of the newest events drops the ones
older than the span it was asked about, so a mind of a million events keeps about a span's
worth (20,000 vectors of 512 bytes: 10 MB), not a million.

Only this module and the schema touch the table; it reads and writes bytes and leaves what
they mean to the service that makes them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from pmm.ledger import connection as cx
from pmm.ledger import schema
from pmm.ledger.store import Ledger

SINCE = 4  # the schema version that made the table
TABLE = schema.VECTORS_TABLE
MODEL_KEY = "vector_model"
CHUNK = 500  # ids per IN (...) list: well under SQLite's limit on bound parameters


def present(mind: Ledger) -> bool:
    """Whether the file has the table (an older file read without migrating has none)."""
    return mind.schema_version >= SINCE


def model(mind: Ledger) -> str | None:
    """The tag of the model the stored vectors were made by (None: none stored yet)."""
    if not present(mind):
        return None
    with cx.translated(mind.path):
        row = mind.conn.execute("SELECT CAST(value AS TEXT) FROM pmm_meta WHERE key = ?",
                                (MODEL_KEY,)).fetchone()
    return row[0] if row else None


def span(mind: Ledger, kinds: Iterable[str], newest: int) -> list[int]:
    """The ids of the events of ``kinds`` among the newest ``newest`` events, newest first
    (a range of the kind index per kind: it holds the ids, so no event row is read)."""
    if newest <= 0:
        return []
    found: list[int] = []
    with cx.translated(mind.path):
        top = mind.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        for kind in dict.fromkeys(kinds):
            found += (row[0] for row in mind.conn.execute(
                "SELECT id FROM events WHERE kind = ? AND id > ?", (kind, top - newest)))
    found.sort(reverse=True)
    return found


def stored(mind: Ledger, low: int, high: int, size: int) -> list[tuple[int, bytes]]:
    """The stored vectors of ids ``low``..``high`` that are BLOBs of ``size`` bytes (any other
    row is as good as missing), in id order. Bounded by ids, not by what the table holds: a
    hostile file may add any number of rows for ids no event has."""
    if not present(mind):
        return []
    with cx.translated(mind.path):
        return mind.conn.execute(
            "SELECT id, vec FROM event_vectors WHERE id BETWEEN ? AND ? AND typeof(vec) = 'blob'"
            " AND length(vec) = ? ORDER BY id", (low, high, size)).fetchall()


def data_version(mind: Ledger) -> int:
    """Changes when another connection commits to the file (SQLite's ``data_version``)."""
    with cx.translated(mind.path):
        return int(mind.conn.execute("PRAGMA data_version").fetchone()[0])


def texts(mind: Ledger, ids: Iterable[int]) -> dict[int, str]:
    """The content of the events with these ids (read as text, as every other read is)."""
    wanted = sorted(set(ids))
    found: dict[int, str] = {}
    with cx.translated(mind.path):
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start:start + CHUNK]
            found.update(mind.conn.execute(
                f"SELECT id, CAST(content AS TEXT) FROM events WHERE id IN ({', '.join('?' for _ in chunk)})",
                chunk))
    return found


def store(mind: Ledger, tag: str, rows: list[tuple[int, bytes]], keep_from: int) -> bool:
    """Store ``rows`` as vectors made by model ``tag``, drop those below id ``keep_from`` (and
    all of another model's), in the caller's transaction or one of its own. Derived data:
    nothing is stored by a reader or in an older layout, and a writer that cannot have the
    lock now (another pmm is writing) skips it. True when stored."""
    if not mind.writable or not present(mind):
        return False
    own = not mind.conn.in_transaction
    # Its own transaction skips the fsync (WAL with synchronous=NORMAL stays consistent): a
    # power cut may lose these vectors, which are recomputed, and no event rides on it. That
    # fsync was most of a turn's cost for two new vectors.
    relaxed = own and _in_wal(mind)
    try:
        if relaxed:
            mind.conn.execute("PRAGMA synchronous=NORMAL")
        if own:
            mind.conn.execute("BEGIN IMMEDIATE")
        if model(mind) != tag:
            mind.conn.execute("DELETE FROM event_vectors")
            mind.conn.execute("INSERT INTO pmm_meta(key, value) VALUES (?, ?) ON CONFLICT(key)"
                              " DO UPDATE SET value = excluded.value", (MODEL_KEY, tag))
        mind.conn.execute("DELETE FROM event_vectors WHERE id < ?", (keep_from,))
        mind.conn.executemany("INSERT OR REPLACE INTO event_vectors(id, vec) VALUES (?, ?)", rows)
        if own:
            mind.conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if own and mind.conn.in_transaction:
            mind.conn.execute("ROLLBACK")
        if cx.is_busy(exc):
            return False
        raise cx.translate(exc, mind.path) from None
    except BaseException:
        if own and mind.conn.in_transaction:
            mind.conn.execute("ROLLBACK")
        raise
    finally:
        if relaxed:
            mind.conn.execute("PRAGMA synchronous=FULL")
    return True


def _in_wal(mind: Ledger) -> bool:
    with cx.translated(mind.path):
        return str(mind.conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


def clear(mind: Ledger) -> None:
    """Drop every stored vector (inside the caller's transaction)."""
    if present(mind):
        with cx.translated(mind.path):
            mind.conn.execute("DELETE FROM event_vectors")
            mind.conn.execute("DELETE FROM pmm_meta WHERE key = ?", (MODEL_KEY,))


def coverage(mind: Ledger, size: int) -> tuple[int, int, int, int]:
    """(stored vectors, lowest and highest id, vectors whose blob is not ``size`` bytes)."""
    if not present(mind):
        return 0, 0, 0, 0
    with cx.translated(mind.path):
        row = mind.conn.execute(
            "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0),"
            " coalesce(sum(typeof(vec) != 'blob' OR length(vec) != ?), 0) FROM event_vectors",
            (size,)).fetchone()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])
