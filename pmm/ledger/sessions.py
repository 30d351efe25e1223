"""The sessions of a mind, read from the sessions table (pmm.ledger.session_table) when it can be
trusted, else folded from the events: for ``pmm sessions``, ``pmm chat -c`` and ``--session``.
Read-only.

A session's id is ``meta.session`` on its turns; a ``session_started`` event carries it as
``meta.session`` (a pmm chat) or ``meta.source_id`` (an imported conversation)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.ledger import connection as cx
from pmm.ledger import session_table
from pmm.ledger.session_table import Summary
from pmm.ledger.store import COLUMNS, Ledger

_TURNS = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)
_ORDER = "ORDER BY last_said, last_id"  # when last said (the original time of imported turns)
TABLE_FROM = 7  # the schema that has the sessions table


def _key(row: Summary) -> tuple[str, int]:
    return row.last_said, row.last_id


def _read(mind: Ledger, where: str, args: tuple[object, ...],
          otherwise: Callable[[list[Summary]], list[Summary]]) -> list[Summary]:
    """The rows ``where`` selects from the sessions table when it can be trusted, else
    ``otherwise`` of every session folded from the events (oldest first), in one snapshot."""
    with _snapshot(mind), cx.translated(mind.path):
        found = None
        if mind.schema_version >= TABLE_FROM:
            found = session_table.read(mind.conn, mind.mind_id, mind.head(), where, args)
        if found is None:
            found = otherwise(sorted(session_table.fold(mind.conn).values(), key=_key))
        return found


@contextlib.contextmanager
def _snapshot(mind: Ledger) -> Iterator[None]:
    if mind.conn.in_transaction:
        yield
        return
    with mind.read_transaction():
        yield


def summaries(mind: Ledger) -> list[Summary]:
    """Every session with at least one turn, or a start, by when it was last said (the original
    time of an imported conversation), oldest first: an old export imported today is not "the
    latest" session."""
    return _read(mind, _ORDER, (), lambda every: every)


def newest(mind: Ledger, limit: int) -> list[Summary]:
    """The ``limit`` sessions last said most recently, oldest first (a few rows of the table)."""
    found = _read(mind, _ORDER.replace(",", " DESC,") + " DESC LIMIT ?", (limit,),
                  lambda every: every[::-1][:limit])
    return found[::-1]


def named(mind: Ledger, ref: str) -> tuple[list[Summary], int]:
    """The session whose id is ``ref`` (one), else those whose id starts with it (at most two
    read), with how many ids start with it."""
    try:
        ref.encode()
    except UnicodeEncodeError:  # a lone surrogate: no stored id holds one
        return [], 0
    exact = _read(mind, "WHERE session = ?", (ref,), lambda every: [r for r in every if r.session == ref])
    if exact:
        return exact, 1
    if not ref:
        return [], 0
    upper = _after(ref)
    where = "WHERE session > ?" + (" AND session < ?" if upper else "")
    args = (ref, upper) if upper else (ref,)
    read = _read(mind, where + " ORDER BY session", args,
                 lambda every: sorted(every, key=lambda row: row.session))
    found = [row for row in read if row.session.startswith(ref)]
    return found[:2], len(found)


def _after(prefix: str) -> str | None:
    """The least text greater than every text starting with ``prefix`` (code point order, which
    is SQLite's order of UTF-8 text), or None when there is none to name."""
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last < 0xE000:
        last = 0xE000
    return prefix[:-1] + chr(last) if last <= 0x10FFFF else None


def of(mind: Ledger, session: str) -> Summary | None:
    """The summary of ``session`` when the table holds it and can be trusted (else None)."""
    if mind.schema_version < TABLE_FROM:
        return None
    with _snapshot(mind), cx.translated(mind.path):
        found = session_table.read(mind.conn, mind.mind_id, mind.head(), "WHERE session = ?", (session,))
    return found[0] if found else None


_BEFORE_TABLE = "absent (a schema before 6: sessions are folded from the events)"


def check(mind: Ledger) -> tuple[str, bool]:
    """``pmm verify --deep``: the sessions table read whole against a fold of the events (in the
    caller's snapshot), as a phrase and whether they agree."""
    if mind.schema_version < TABLE_FROM:
        return _BEFORE_TABLE, True
    with cx.translated(mind.path):
        return session_table.check(mind.conn, mind.mind_id, mind.head())


class Checking:
    """``check``, fed by a read of every event that the caller makes anyway (``verify --deep``'s
    replay, in the caller's snapshot): the table is read when made; ``folding`` (None: no fold
    is needed) takes each event of ``session_table.KINDS`` in id order, its meta parsed (one
    that is a JSON object); ``said()`` then compares."""

    def __init__(self, mind: Ledger) -> None:
        self.mind = mind
        self.head = mind.head()
        self.stored: list[Summary] | None = None
        self.folding: session_table.Folding | None = None
        if mind.schema_version >= TABLE_FROM:
            with cx.translated(mind.path):
                self.stored = session_table.read(mind.conn, mind.mind_id, self.head)
            if self.stored is not None:
                self.folding = session_table.Folding()

    def said(self) -> tuple[str, bool]:
        if self.mind.schema_version < TABLE_FROM:
            return _BEFORE_TABLE, True
        if self.stored is None or self.folding is None:
            return session_table.UNTRUSTED, True
        with cx.translated(self.mind.path):
            folded = self.folding.finish(self.mind.conn)
        return session_table.compared(self.stored, folded, self.head)


def withdrawals(mind: Ledger) -> list[Event]:
    """Every ``response_withdrawn`` event, in id order."""
    return list(mind.events(kind=ev.RESPONSE_WITHDRAWN.name))


def turns_of(mind: Ledger, session: str, limit: int, before: int | None = None) -> list[Event]:
    """The newest ``limit`` turns of ``session`` older than event ``before``, newest first. The
    scan runs from the session's last event to its first (its row in the sessions table; else
    from the head to its first ``session_started``, found through the kind index), so a chat in
    a large mind does not read every turn outside its session."""
    below = 2**63 - 1 if before is None else before
    kept = of(mind, session)
    if kept is not None:  # the scan covers the session's own span of the ledger, at most
        with cx.translated(mind.path):
            return [Event._make(r) for r in mind.conn.execute(
                _TURNS_SQL, (*_TURNS, min(below, kept.last_id + 1), kept.first_id, session, limit))]
    start = ("SELECT min(id) FROM events WHERE kind = ? AND (json_extract(meta, '$.session') = ?"
             " OR json_extract(meta, '$.source_id') = ?)")
    with cx.translated(mind.path):
        first = mind.conn.execute(start, (ev.SESSION_STARTED.name, session, session)).fetchone()[0]
        return [Event._make(r) for r in mind.conn.execute(
            _TURNS_SQL, (*_TURNS, below, first or 0, session, limit))]


_TURNS_SQL = (f"SELECT {COLUMNS} FROM events WHERE kind IN (?, ?) AND id < ? AND id >= ?"
              " AND json_extract(meta, '$.session') = ? ORDER BY id DESC LIMIT ?")
