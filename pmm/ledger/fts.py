"""The full-text index over ``events.content``, and what a forged index can and cannot do.

The index is not covered by the chain, so a hostile file can hold any index. Every result pmm
uses is read from ``events`` by id and matched again here against that text (in a private
in-memory FTS5 table made by the file's own index statement, so it tokenizes the same way): a
forged index cannot make search or recall return an event whose text does not match. It can
still hide matches or skew the ranking; ``coverage`` notices an index that does not cover exactly
the stored events, and ``rebuild`` (``pmm health --repair``, or the next write when coverage is
off) makes it again from the events.

Its shadow tables (``events_fts_config``, ``_data``, ``_idx``, ``_docsize``) are rows, not schema,
so the ``sqlite_master`` check never sees them: a hostile config or a corrupt blob makes FTS5
itself fail ("invalid fts5 file format", "malformed"). The index is derived data, so a writer
``reset``s it to what FTS5 makes for a new table and rebuilds it from the events (no hash is
touched); a reader reports it with ``damaged_error`` (exit 3, ``pmm health --repair`` fixes it).

What the index holds depends on the file's schema version (``table``): every function that
makes or checks index rows takes that version, so a file read without migrating is judged by
the layout it has.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pmm import errors

# The index's statement, keyed by the schema version that introduced it. Schema 3 stems words
# (porter) and folds every diacritic: `dogs` finds "dog", `running` "run", `cafe` "café".
TABLE_V1 = "CREATE VIRTUAL TABLE events_fts USING fts5(content, content='events', content_rowid='id')"
TABLE_V3 = ("CREATE VIRTUAL TABLE events_fts USING fts5(content, content='events', content_rowid='id',"
            " tokenize='porter unicode61 remove_diacritics 2')")
TABLES = {1: TABLE_V1, 3: TABLE_V3}
NEWEST = max(TABLES)

SHADOWS = ("events_fts_config", "events_fts_data", "events_fts_idx", "events_fts_docsize")
REPAIR_HINT = "`pmm health --repair` rebuilds it from the events (which stay untouched)"

Row = TypeVar("Row", bound=Sequence[Any])


def table(version: int) -> str:
    """The statement that makes the index of a file at schema ``version``."""
    return TABLES[max(since for since in TABLES if since <= version)]


def confirm(query: str, rows: list[Row], content_at: int, version: int = NEWEST) -> list[Row]:
    """The ``rows`` (in order) whose text, column ``content_at``, really matches ``query`` as
    the index of a file at schema ``version`` tokenizes it (pass the file's own version: a
    stemmed query checked by an unstemmed twin, or back, would drop true matches)."""
    if not rows:
        return rows
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, content TEXT)")
        scratch.execute(table(version))
        scratch.executemany("INSERT INTO events(id, content) VALUES (?, ?)",
                            ((n, row[content_at]) for n, row in enumerate(rows)))
        rebuild(scratch)
        keep = {n for (n,) in scratch.execute(
            "SELECT rowid FROM events_fts WHERE events_fts MATCH ?", (query,))}
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


def optimize(conn: sqlite3.Connection) -> None:
    """Merge every segment of the index into one (what drops a deleted entry's old bytes)."""
    conn.execute("INSERT INTO events_fts(events_fts) VALUES ('optimize')")


def index_after(conn: sqlite3.Connection, after_id: int) -> None:
    conn.execute("INSERT INTO events_fts(rowid, content) SELECT id, content FROM events"
                 " WHERE id > ?", (after_id,))


@cache
def pristine(version: int) -> tuple[tuple[tuple[Any, ...], ...], tuple[tuple[Any, ...], ...]]:
    """The ``events_fts_config`` and ``events_fts_data`` rows FTS5 makes for a new, empty index
    at schema ``version`` (read from this SQLite's own FTS5, so they match whatever it writes)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, content TEXT)")
        conn.execute(table(version))
        config = tuple(conn.execute("SELECT k, v FROM events_fts_config ORDER BY k"))
        data = tuple(conn.execute("SELECT id, block FROM events_fts_data ORDER BY id"))
        return config, data
    finally:
        conn.close()


def config_sound(conn: sqlite3.Connection, version: int) -> bool:
    """Whether ``events_fts_config`` holds exactly what pmm's index at ``version`` has (a
    plain-table read: it runs no FTS5 code, so it answers even when FTS5 would refuse it)."""
    return (tuple(conn.execute("SELECT k, v FROM events_fts_config ORDER BY k"))
            == pristine(version)[0])


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is FTS5 refusing its own files (config, structure or a segment blob)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return False
    if code & 0xFF == sqlite3.SQLITE_CORRUPT:  # SQLITE_CORRUPT_VTAB is FTS5's own "corrupt"
        return True
    # FTS5 refuses a config it cannot read (a version it does not know, an option it does not
    # take) with the generic SQLITE_ERROR, as it does a query it cannot parse ("fts5: syntax
    # error", the user's, not damage): only the text tells them apart.
    return code == sqlite3.SQLITE_ERROR and any(
        sign in str(exc) for sign in ("invalid fts5 file format", "vtable constructor failed"))


def damaged_error(path: Path, exc: sqlite3.Error | None = None) -> errors.IntegrityError:
    return errors.IntegrityError(f"the search index of {path} is damaged"
                                 + (f" ({exc})" if exc else ""), hint=REPAIR_HINT)


def problem(conn: sqlite3.Connection, version: int, *, thorough: bool = True) -> str | None:
    """What is wrong with the index's own files, or None: its config, then a read of every
    entry (an fts5vocab table in the connection's temp schema, so a read-only open can ask);
    not ``thorough``, only of its first entry (which opens the structure and every segment), so
    it costs the same at any size."""
    read = ("SELECT count(*) FROM temp.pmm_fts_check" if thorough
            else "SELECT * FROM temp.pmm_fts_check LIMIT 1")
    try:
        if not config_sound(conn, version):
            return "its configuration is not the one pmm makes"
        conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.pmm_fts_check"
                     f" USING fts5vocab(main, events_fts, '{'instance' if thorough else 'row'}')")
        try:
            conn.execute(read).fetchall()
        finally:
            conn.execute("DROP TABLE temp.pmm_fts_check")
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return str(exc)
    return None


AVERAGES_ROWID = 1  # FTS5's "averages" record: the number of rows, then tokens per column


def summary(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """``coverage`` without counting: the number of documents is FTS5's own running total
    (the first varint of its averages record) and the ids are the ends of its docsize table,
    so it costs the same at any size. Both are the index's bookkeeping, as the count is."""
    row = conn.execute("SELECT block FROM events_fts_data WHERE id = ?", (AVERAGES_ROWID,)).fetchone()
    total = _varint(row[0]) if row is not None and isinstance(row[0], bytes) else 0
    low = conn.execute("SELECT coalesce(min(id), 0) FROM events_fts_docsize").fetchone()[0]
    high = conn.execute("SELECT coalesce(max(id), 0) FROM events_fts_docsize").fetchone()[0]
    return total, int(low), int(high)


def _varint(data: bytes) -> int:
    """SQLite's varint (FTS5 writes its counts in it): big-endian 7-bit groups, a ninth byte of 8."""
    value = 0
    for at, byte in enumerate(data[:9]):
        if at == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value
    return value


def reset(conn: sqlite3.Connection, version: int) -> None:
    """Put the index back to what FTS5 makes for a new table, then rebuild it from ``events``
    (inside the caller's transaction)."""
    _empty(conn, version)
    rebuild(conn)


def retokenize(conn: sqlite3.Connection, old: int, new: int) -> None:
    """Replace the index of schema ``old`` by the one of schema ``new``, built from ``events``
    (a migration step: inside the caller's transaction). It is emptied first because FTS5
    refuses to drop an index whose config it refuses, and a hostile file may hold one."""
    _empty(conn, old)
    conn.execute("DROP TABLE events_fts")
    conn.execute(table(new))
    rebuild(conn)


def _empty(conn: sqlite3.Connection, version: int) -> None:
    """Shadow tables as FTS5 makes them for a new table at ``version``. They are written
    directly: FTS5 cannot be asked to rebuild, or even to drop, an index whose config or
    structure it refuses."""
    config, data = pristine(version)
    for name in SHADOWS:
        conn.execute(f"DELETE FROM {name}")
    conn.executemany("INSERT INTO events_fts_config(k, v) VALUES (?, ?)", config)
    conn.executemany("INSERT INTO events_fts_data(id, block) VALUES (?, ?)", data)
