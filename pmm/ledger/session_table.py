"""The sessions table (schema 7): one row a session, kept by every append in its own
transaction, so that ``pmm sessions -n N``, ``pmm chat -c`` and ``--session PREFIX`` read a few
rows instead of every turn of the mind.

A row holds a session's first and last event, its turns and withdrawn answers, when it was
first and last said (the original time of an imported turn), its first ``session_started``
and first ``message_received``. It is derived data, never trusted blindly: each row carries a
MAC under this machine's cache key (pmm.ledger.seal), and a sealed mark (``projection_cache``
row ``sessions``) names the event the table was kept up to. A table whose mark is not this
machine's at the head, or a row whose MAC fails, is not read (the caller folds the events:
``fold``), and the next write rebuilds it from the events (``Keeping``). ``pmm verify --deep``
compares it whole with a fold.

The fold is the one definition of a session: a ``message_received`` or ``response_sent`` with
a text ``meta.session``, or a ``session_started`` with one (else its ``meta.source_id``). A
``response_withdrawn`` takes one turn off the session of the earlier turn it names, once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.ledger import seal
from pmm.ledger.chain import GENESIS_PREV

TABLE = """CREATE TABLE session_summary (
    session       TEXT PRIMARY KEY,
    first_id      INTEGER NOT NULL,
    last_id       INTEGER NOT NULL,
    turns         INTEGER NOT NULL,
    withdrawn     INTEGER NOT NULL,
    first_said    TEXT NOT NULL,
    last_said     TEXT NOT NULL,
    first_message INTEGER,
    start_id      INTEGER,
    mac           TEXT NOT NULL
) WITHOUT ROWID"""
# The newest sessions first, by when they were last said: `pmm sessions -n N`, `pmm chat -c`.
INDEX = "CREATE INDEX session_summary_latest ON session_summary(last_said, last_id)"

MARK = "sessions"  # the projection_cache row that seals how far the table was kept
MARK_VERSION = "sessions:1"
ROW_VERSION = "session-row:1"  # in each row's MAC: a row's seal is never a cache row's

STARTED, MESSAGE, ANSWER = ev.SESSION_STARTED.name, ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name
WITHDRAWN = ev.RESPONSE_WITHDRAWN.name
TURNS = (MESSAGE, ANSWER)
KINDS = (STARTED, MESSAGE, ANSWER, WITHDRAWN)
SCRUBBED = 10  # the newest rows each write checks (the REPL's /sessions lists ten)
SPILL = 4096  # sessions a new mind's bulk build holds in memory before it adds them to the table
_FIELDS = "session, first_id, last_id, turns, withdrawn, first_said, last_said, first_message, start_id"
# A partial row added to the one already there (a new mind's build, unsealed until ``write``):
# every field is a min, a max or a count, so rows folded apart merge into the row of the whole.
_MERGE = (f"INSERT INTO session_summary({_FIELDS}, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '')"
          " ON CONFLICT(session) DO UPDATE SET first_id = min(first_id, excluded.first_id),"
          " last_id = max(last_id, excluded.last_id), turns = turns + excluded.turns,"
          " withdrawn = withdrawn + excluded.withdrawn,"
          " first_said = min(first_said, excluded.first_said),"
          " last_said = max(last_said, excluded.last_said),"
          " first_message = coalesce(min(first_message, excluded.first_message), first_message,"
          " excluded.first_message),"
          " start_id = coalesce(min(start_id, excluded.start_id), start_id, excluded.start_id)")


@dataclass
class Summary:
    """One session's row (without its MAC)."""

    session: str
    first_id: int
    last_id: int
    turns: int  # message_received and response_sent events
    withdrawn: int  # of those, answers (or messages) a later response_withdrawn named
    first_said: str  # meta.original_ts when there is one, else ts
    last_said: str
    first_message: int | None  # the id of its first message_received
    start_id: int | None  # the id of its first session_started

    @property
    def messages(self) -> int:
        return max(0, self.turns - self.withdrawn)

    def values(self) -> tuple[str, int, int, int, int, str, str, int | None, int | None]:
        """The fields in order (``dataclasses.astuple`` without its deep copies: every field
        is a str, an int or None)."""
        return (self.session, self.first_id, self.last_id, self.turns, self.withdrawn,
                self.first_said, self.last_said, self.first_message, self.start_id)


def session_of(kind: str, meta: dict[str, Any]) -> str | None:
    """The session an event of ``kind`` belongs to, or None."""
    sid = meta.get("session")
    if kind == STARTED and sid is None:
        sid = meta.get("source_id")
    return sid if type(sid) is str else None


def _meta(text: object) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class Folding:
    """Summaries folded from events in any order (every field is a min, a max or a count), the
    withdrawals held until every event is in (``resolve``)."""

    def __init__(self, rows: dict[str, Summary] | None = None) -> None:
        self.rows: dict[str, Summary] = {} if rows is None else rows
        self.withdrawals: dict[int, int] = {}  # named event -> the first withdrawal naming it

    def add(self, event_id: int, ts: str, kind: str, meta: dict[str, Any], sid: str | None) -> None:
        """Fold in one event of ``KINDS``, its meta parsed, ``sid`` its ``session_of``."""
        if kind == WITHDRAWN:
            target = meta.get("response")
            if type(target) is int:
                self.withdrawals[target] = min(event_id, self.withdrawals.get(target, event_id))
            return
        if sid is None:
            return
        original = meta.get("original_ts")
        said = original if type(original) is str else ts
        row = self.rows.get(sid)
        if row is None:
            row = self.rows[sid] = Summary(sid, event_id, event_id, 0, 0, said, said, None, None)
        else:
            row.first_id, row.last_id = min(row.first_id, event_id), max(row.last_id, event_id)
            row.first_said, row.last_said = min(row.first_said, said), max(row.last_said, said)
        if kind in TURNS:
            row.turns += 1
        if kind == MESSAGE:
            row.first_message = event_id if row.first_message is None else min(row.first_message, event_id)
        elif kind == STARTED:
            row.start_id = event_id if row.start_id is None else min(row.start_id, event_id)

    def add_in_order(self, events: Iterable[tuple[int, str, str, dict[str, Any]]]) -> None:
        """``add`` of each event (id, ts, kind and parsed meta) of ``KINDS``: the same rows, in
        fewer steps for events in id order (a replay's; any order still folds right)."""
        rows = self.rows
        for event_id, ts, kind, meta in events:
            if kind == WITHDRAWN:
                self.add(event_id, ts, kind, meta, None)
                continue
            sid = meta.get("session")
            if kind == STARTED and sid is None:
                sid = meta.get("source_id")
            if type(sid) is not str:
                continue
            original = meta.get("original_ts")
            said = original if type(original) is str else ts
            row = rows.get(sid)
            if row is None:
                row = rows[sid] = Summary(sid, event_id, event_id, 0, 0, said, said, None, None)
            else:
                if event_id > row.last_id:
                    row.last_id = event_id
                elif event_id < row.first_id:
                    row.first_id = event_id
                if said < row.first_said:
                    row.first_said = said
                elif said > row.last_said:
                    row.last_said = said
            if kind == MESSAGE:
                row.turns += 1
                if row.first_message is None or event_id < row.first_message:
                    row.first_message = event_id
            elif kind == ANSWER:
                row.turns += 1
            elif row.start_id is None or event_id < row.start_id:
                row.start_id = event_id

    def finish(self, conn: sqlite3.Connection) -> dict[str, Summary]:
        """Every session's summary, once every event is in: the withdrawals counted (their
        turns read in ``conn``, in the snapshot the events were read in)."""
        for sid in self.withdrawn_sessions(conn, set()):
            if sid in self.rows:
                self.rows[sid].withdrawn += 1
        return self.rows

    def withdrawn_sessions(self, conn: sqlite3.Connection, before: set[int]) -> Iterator[str]:
        """The session of each turn withdrawn by a withdrawal after it (each turn once, and
        none in ``before``: already withdrawn)."""
        for target, by in sorted(self.withdrawals.items()):
            if target in before or target >= by:
                continue
            row = conn.execute("SELECT CAST(kind AS TEXT), CAST(meta AS TEXT) FROM events WHERE id = ?",
                               (target,)).fetchone()
            meta = _meta(row[1]) if row is not None and row[0] in TURNS else None
            sid = session_of(row[0], meta) if meta is not None else None
            if sid is not None:
                yield sid


def fold(conn: sqlite3.Connection) -> dict[str, Summary]:
    """Every session's summary, folded from the events (one read of the session events)."""
    folding = Folding()
    sql = ("SELECT id, CAST(ts AS TEXT), CAST(kind AS TEXT), CAST(meta AS TEXT) FROM events"
           f" WHERE kind IN ({', '.join('?' for _ in KINDS)})")
    cursor = conn.execute(sql, KINDS)
    while batch := cursor.fetchmany(4096):
        for event_id, ts, kind, text in batch:
            meta = _meta(text)
            if type(event_id) is int and isinstance(ts, str) and meta is not None:
                folding.add(event_id, ts, kind, meta, session_of(kind, meta))
    return folding.finish(conn)


# The same fold in SQLite's C code, for ``pmm verify --deep`` and a write that makes the table
# again (a few times faster at 1M events).
# It reads each meta with SQLite's JSON functions where ``fold`` uses ``json.loads``: the two
# agree on every RFC 8785 (canonical) meta, which is all a mind --deep passes can hold (it
# checks each meta is canonical), so it never calls a table right that ``fold`` calls wrong.
# tests/test_sessions_are_read_from_a_kept_table.py holds the two equal over hostile metas.
_OBJECT = "json_valid(m) AND json_type(m) = 'object'"  # ``_meta``: a JSON object, else skipped
_TEXT = "CASE WHEN json_type(m, '$.{0}') = 'text' THEN m ->> '$.{0}' END"  # a str, else None
_SID = (f"CASE WHEN kind = '{STARTED}' AND m ->> '$.session' IS NULL THEN {_TEXT.format('source_id')}"
        f" ELSE {_TEXT.format('session')} END")  # ``session_of`` (->> is NULL: null or absent)
_FOLD_SQL = f"""SELECT sid, min(id), max(id), sum(kind IN ('{MESSAGE}', '{ANSWER}')), min(said), max(said),
    min(CASE WHEN kind = '{MESSAGE}' THEN id END), min(CASE WHEN kind = '{STARTED}' THEN id END)
  FROM (SELECT id, kind, {_SID} AS sid, coalesce({_TEXT.format('original_ts')}, ts) AS said
    FROM (SELECT id, CAST(ts AS TEXT) AS ts, CAST(kind AS TEXT) AS kind, CAST(meta AS TEXT) AS m
      FROM events WHERE +kind IN ('{STARTED}', '{MESSAGE}', '{ANSWER}')) WHERE {_OBJECT})
  WHERE sid IS NOT NULL GROUP BY sid"""
# each turn a later response_withdrawn names (its first one), counted once, by its session
_WITHDRAWN_SQL = f"""SELECT sid, count(*) FROM (
    SELECT {_TEXT.format('session')} AS sid FROM (
      SELECT CAST(t.meta AS TEXT) AS m FROM (
        SELECT m ->> '$.response' AS target, min(id) AS by FROM (
          SELECT id, CAST(meta AS TEXT) AS m FROM events WHERE kind = '{WITHDRAWN}')
        WHERE {_OBJECT} AND json_type(m, '$.response') = 'integer' GROUP BY target) w
      JOIN events t ON t.id = w.target
      WHERE w.target < w.by AND CAST(t.kind AS TEXT) IN ('{MESSAGE}', '{ANSWER}'))
    WHERE {_OBJECT})
  WHERE sid IS NOT NULL GROUP BY sid"""


# SQLite's JSON functions end a text at an escaped NUL, which a canonical meta may hold. Both
# queries scan the table (``+kind``: not by the kind index): most of a mind's events are turns,
# and reading them through the index costs a lookup each.
_NUL_SQL = ("SELECT 1 FROM events WHERE +kind IN (" + ", ".join(f"'{k}'" for k in KINDS) + ")"
            " AND instr(CAST(meta AS TEXT), '\\u0000') LIMIT 1")


def fold_sql(conn: sqlite3.Connection) -> dict[str, Summary]:
    """``fold(conn)``, computed by SQLite (see above: equal on canonical metas; a mind whose
    session events escape a NUL, or whose JSON SQLite reads as text that is not UTF-8 (an
    escaped lone surrogate, which pmm never writes), is folded by ``fold``)."""
    if conn.execute(_NUL_SQL).fetchone() is not None:
        return fold(conn)
    try:
        rows = {sid: Summary(sid, first_id, last_id, turns, 0, first_said, last_said, first_message, start_id)
                for sid, first_id, last_id, turns, first_said, last_said, first_message, start_id
                in conn.execute(_FOLD_SQL) if type(sid) is str}
        for sid, count in conn.execute(_WITHDRAWN_SQL):
            if sid in rows:
                rows[sid].withdrawn = count
    except sqlite3.OperationalError as exc:
        if "Could not decode to UTF-8" not in str(exc):
            raise
        return fold(conn)
    return rows


# -- the seal --------------------------------------------------------------------------------


def _row_mac(secret: bytes, mind_id: str, row: Summary) -> str:
    return seal.mac(secret, mind_id, ROW_VERSION, row.last_id, "", json.dumps(row.values()))


def _mark_mac(secret: bytes, mind_id: str, last_id: int, last_hash: str) -> str:
    return seal.mac(secret, mind_id, MARK_VERSION, last_id, last_hash, "")


def current(conn: sqlite3.Connection, mind_id: str, head: tuple[int, str]) -> bytes | None:
    """This machine's key when the table was kept up to ``head`` by it (its mark is sealed
    here and names that event and hash), else None: the table is not to be read."""
    secret = seal.key(create=False)
    if secret is None:
        return None
    found = conn.execute("SELECT version, last_id, last_hash, mac FROM projection_cache WHERE name = ?",
                         (MARK,)).fetchone()
    if found is None or tuple(found[:3]) != (MARK_VERSION, *head) or not isinstance(found[3], str):
        return None
    return secret if seal.matches(secret, found[3], mind_id, MARK_VERSION, *head, "") else None


def _checked(secret: bytes, mind_id: str, found: tuple[Any, ...]) -> Summary | None:
    """A stored row, when its MAC holds (which also holds its types: they are in the MAC)."""
    *values, mac = found
    row = Summary(*values)
    try:
        ok = isinstance(mac, str) and isinstance(row.session, str) and seal.matches(
            secret, mac, mind_id, ROW_VERSION, row.last_id, "", json.dumps(row.values()))
    except (TypeError, ValueError):  # a BLOB, or a number JSON cannot hold
        return None
    return row if ok else None


def read(conn: sqlite3.Connection, mind_id: str, head: tuple[int, str], where: str = "",
         args: tuple[Any, ...] = ()) -> list[Summary] | None:
    """The rows ``where`` selects (SQL after FROM: a condition, order, limit), or None when the
    table may not be trusted (no current mark, or any row's MAC fails)."""
    secret = current(conn, mind_id, head)
    if secret is None:
        return None
    found = []
    for values in conn.execute(f"SELECT {_FIELDS}, mac FROM session_summary {where}", args):
        row = _checked(secret, mind_id, values)
        if row is None:
            return None
        found.append(row)
    return found


# -- keeping it ------------------------------------------------------------------------------


class Keeping:
    """The rows one write changes: each new event passes through (``passing``, as it is
    inserted); ``write`` stores the changed rows and the mark at the new head (inside the
    write's transaction). A table that was not current before the write is rebuilt whole."""

    def __init__(self, conn: sqlite3.Connection, mind_id: str, head: tuple[int, str]) -> None:
        self.conn, self.mind_id = conn, mind_id
        # the key is made (if this machine has none yet) only by ``write``: a write refused
        # before it leaves no state folder behind
        self.secret = seal.key(create=False)
        self.empty = head[0] == 0  # a new mind: any row is another file's, and there is none to read
        self.kept = self.empty or (self.secret is not None and current(conn, mind_id, head) is not None)
        self.folding = Folding()
        self.head_id = head[0]
        self.spilled = False  # some rows are in the table, unsealed (``see``)
        self._text: str | None = None  # the last meta parsed, and what it read (never changed)
        self._parsed: dict[str, Any] | None = None

    def passing(self, events: Iterable[Event]) -> Iterator[Event]:
        if not self.kept:
            yield from events
            return
        take = self._take
        for event in events:
            if event.kind in KINDS:
                take(event.id, event.ts, event.kind, event.meta_json)
            yield event

    def _take(self, event_id: int, ts: str, kind: str, text: str) -> None:
        if text == self._text:  # a session's turns often carry the same meta: parsed once
            meta = self._parsed
        else:
            meta = self._parsed = _meta(text)
            self._text = text
        if meta is None:
            return
        sid = None if kind == WITHDRAWN else session_of(kind, meta)
        if sid is not None and not self.empty and sid not in self.folding.rows:
            self._load(sid)
        self.folding.add(event_id, ts, kind, meta, sid)

    def see(self, rows: Iterable[Sequence[Any]]) -> None:
        """``passing`` for rows in their column order (a bulk build's plain tuples), consumed.
        A new mind's rows go into the table (unsealed: ``write`` seals them) each time
        ``SPILL`` sessions are held, so the build's memory stays flat at any size."""
        if not self.kept:
            return
        take, kinds = self._take, KINDS
        for row in rows:
            if row[2] in kinds:
                take(row[0], row[1], row[2], row[4])
        if self.empty and len(self.folding.rows) >= SPILL:
            self._spill()

    def _spill(self) -> None:
        if not self.spilled:  # a new mind: any row there is another file's
            self.conn.execute("DELETE FROM session_summary")
            self.spilled = True
        self.conn.executemany(_MERGE, (row.values() for row in self.folding.rows.values()))
        self.folding.rows.clear()

    def _load(self, sid: str) -> None:
        """Start ``sid``'s row from the stored one (a bad MAC: the table is rebuilt instead)."""
        if self.secret is None:  # kept without a key: only a new mind, which has no rows
            return
        found = self.conn.execute(f"SELECT {_FIELDS}, mac FROM session_summary WHERE session = ?",
                                  (sid,)).fetchone()
        if found is None:
            return
        row = _checked(self.secret, self.mind_id, found)
        if row is None:
            self.kept = False
        else:
            self.folding.rows[sid] = row

    def write(self, head: tuple[int, str]) -> None:
        self.secret = self.secret or seal.key(create=True)
        if self.secret is None:  # no key here: nothing can be sealed, reads fold the events
            self.conn.execute("DELETE FROM projection_cache WHERE name = ?", (MARK,))
            if self.spilled:  # no unsealed row is left behind
                self.conn.execute("DELETE FROM session_summary")
            return
        if self.kept and self.spilled:
            self._seal_spilled(self.secret)
            put_mark(self.conn, self.mind_id, self.secret, head)
            return
        if self.kept and not self.empty:
            self._scrub()
        if self.kept and self.folding.withdrawals:
            self._withdraw()
        if not self.kept:
            rows = fold_sql(self.conn)
            self.conn.execute("DELETE FROM session_summary")
        else:
            rows = self.folding.rows
            if self.empty:
                self.conn.execute("DELETE FROM session_summary")
        self.conn.executemany(
            f"INSERT INTO session_summary({_FIELDS}, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(session) DO UPDATE SET first_id = excluded.first_id,"
            " last_id = excluded.last_id, turns = excluded.turns, withdrawn = excluded.withdrawn,"
            " first_said = excluded.first_said, last_said = excluded.last_said,"
            " first_message = excluded.first_message, start_id = excluded.start_id, mac = excluded.mac",
            ((*row.values(), _row_mac(self.secret, self.mind_id, row)) for row in rows.values()))
        put_mark(self.conn, self.mind_id, self.secret, head)

    def _seal_spilled(self, secret: bytes) -> None:
        """A new mind's table, built in parts (``see``): the rest added, the withdrawals
        counted, then every row sealed (a SQL function: no row is held here)."""
        self._spill()
        for sid in list(self.folding.withdrawn_sessions(self.conn, set())):
            self.conn.execute("UPDATE session_summary SET withdrawn = withdrawn + 1 WHERE session = ?",
                              (sid,))
        mind_id = self.mind_id

        def row_mac(*values: Any) -> str:
            return _row_mac(secret, mind_id, Summary(*values))

        self.conn.create_function("pmm_session_mac", 9, row_mac, deterministic=True)
        try:
            self.conn.execute(f"UPDATE session_summary SET mac = pmm_session_mac({_FIELDS})")
        finally:
            self.conn.create_function("pmm_session_mac", 9, None)

    def _scrub(self) -> None:
        """Check the newest rows' MACs (what `pmm sessions -n`, `chat -c` and the REPL read):
        one altered behind pmm's back has the table rebuilt, so those reads are fast again.
        An older altered row is rebuilt when its session is next written, or by `pmm health
        --repair`; until then reads that meet it fold the events instead."""
        assert self.secret is not None
        for found in self.conn.execute(
                f"SELECT {_FIELDS}, mac FROM session_summary ORDER BY last_said DESC, last_id DESC"
                " LIMIT ?", (SCRUBBED,)):
            if _checked(self.secret, self.mind_id, found) is None:
                self.kept = False
                return

    def _withdraw(self) -> None:
        before: set[int] = set()
        if not self.empty:  # the turns withdrawn before this write count once
            for (meta,) in self.conn.execute(
                    "SELECT CAST(meta AS TEXT) FROM events WHERE kind = ? AND id <= ?",
                    (WITHDRAWN, self.head_id)):
                target = (_meta(meta) or {}).get("response")
                if type(target) is int:
                    before.add(target)
        for sid in list(self.folding.withdrawn_sessions(self.conn, before)):
            if sid not in self.folding.rows:
                self._load(sid)
            if sid in self.folding.rows:
                self.folding.rows[sid].withdrawn += 1


def put_mark(conn: sqlite3.Connection, mind_id: str, secret: bytes, head: tuple[int, str]) -> None:
    conn.execute(
        "INSERT INTO projection_cache(name, version, last_id, last_hash, state, mac)"
        " VALUES (?, ?, ?, ?, '', ?) ON CONFLICT(name) DO UPDATE SET version = excluded.version,"
        " last_id = excluded.last_id, last_hash = excluded.last_hash, state = excluded.state,"
        " mac = excluded.mac",
        (MARK, MARK_VERSION, head[0], head[1], _mark_mac(secret, mind_id, *head)))


def rebuild(conn: sqlite3.Connection, mind_id: str) -> None:
    """The table made again from the events (inside the caller's transaction); without a key
    here it is left untrusted (no mark), and reads fold the events."""
    conn.execute("DELETE FROM projection_cache WHERE name = ?", (MARK,))
    conn.execute("DELETE FROM session_summary")
    secret = seal.key(create=True)
    if secret is None:
        return
    rows = fold_sql(conn)
    conn.executemany(f"INSERT INTO session_summary({_FIELDS}, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     ((*row.values(), _row_mac(secret, mind_id, row)) for row in rows.values()))
    found = conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    put_mark(conn, mind_id, secret, (found[0], found[1]) if found else (0, GENESIS_PREV))


def backfill(conn: sqlite3.Connection) -> None:
    """Migration 6's step: fill the new table from the events of a file that has some (a new,
    empty file, or SQLite's image of the schema, has none: no key is made for it)."""
    if conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None:
        return
    found = conn.execute("SELECT value FROM pmm_meta WHERE key = 'mind_id'").fetchone()
    if found is not None and isinstance(found[0], str):
        rebuild(conn, found[0])


UNTRUSTED = "absent, stale or not sealed here (ignored: sessions are folded from the events)"


def check(conn: sqlite3.Connection, mind_id: str, head: tuple[int, str]) -> tuple[str, bool]:
    """``pmm verify --deep``: the table read whole against a fold of the events, as a phrase
    and whether they agree (a table not sealed here at the head is ignored, so it agrees)."""
    stored = read(conn, mind_id, head)
    if stored is None:
        return UNTRUSTED, True
    return compared(stored, fold_sql(conn), head)


def compared(stored: list[Summary], folded: dict[str, Summary], head: tuple[int, str]) -> tuple[str, bool]:
    """``check``'s phrase for the table's rows (``read`` at ``head``) against the events' fold."""
    same = {row.session: row for row in stored} == folded
    return f"reflects event {head[0]}; " + ("equals the events" if same else "DIFFERS from the events"), same
