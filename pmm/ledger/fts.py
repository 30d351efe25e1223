"""The full-text index over ``events.content``, and what a forged index can and cannot do.

The index is not covered by the chain, so a hostile file can hold any index. Every result pmm
uses is read from ``events`` by id and matched again here against that text (in a private
in-memory FTS5 table with the same tokenizer): a forged index cannot make search or recall
return an event whose text does not match. It can still hide matches or skew the ranking;
``coverage`` notices an index that does not cover exactly the stored events, and ``rebuild``
(``pmm health --repair``, or the next write when coverage is off) makes it again from the events.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, TypeVar

Row = TypeVar("Row", bound=Sequence[Any])


def confirm(query: str, rows: list[Row], content_at: int) -> list[Row]:
    """The ``rows`` (in order) whose text, column ``content_at``, really matches ``query``."""
    if not rows:
        return rows
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.execute("CREATE VIRTUAL TABLE t USING fts5(content)")
        scratch.executemany("INSERT INTO t(rowid, content) VALUES (?, ?)",
                            ((n, row[content_at]) for n, row in enumerate(rows)))
        keep = {n for (n,) in scratch.execute("SELECT rowid FROM t WHERE t MATCH ?", (query,))}
    finally:
        scratch.close()
    return [row for n, row in enumerate(rows) if n in keep]


def coverage(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(indexed documents, lowest and highest indexed id) from the index's own bookkeeping."""
    row = conn.execute("SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0)"
                       " FROM events_fts_docsize").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def covers(conn: sqlite3.Connection, head_id: int, *, thorough: bool = False) -> bool:
    """Whether the index's highest id is the head's (one index lookup: every write asks) and,
    when ``thorough``, whether it holds exactly events 1..``head_id`` (a count: health asks)."""
    top = conn.execute("SELECT coalesce(max(id), 0) FROM events_fts_docsize").fetchone()[0]
    if top != head_id:
        return False
    return not thorough or coverage(conn) == (head_id, 1 if head_id else 0, head_id)


def rebuild(conn: sqlite3.Connection) -> None:
    """Make the index again from ``events`` (inside the caller's transaction)."""
    conn.execute("INSERT INTO events_fts(events_fts) VALUES ('rebuild')")


def index_after(conn: sqlite3.Connection, after_id: int) -> None:
    conn.execute("INSERT INTO events_fts(rowid, content) SELECT id, content FROM events"
                 " WHERE id > ?", (after_id,))
