"""The sessions of a mind, summed up by one grouped query over the turns: for ``pmm sessions``,
``pmm chat -c`` and ``--session``. Read-only.

A session's id is ``meta.session`` on its turns; a ``session_started`` event carries it as
``meta.session`` (a pmm chat) or ``meta.source_id`` (an imported conversation)."""

from __future__ import annotations

from typing import NamedTuple

from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.ledger import connection as cx
from pmm.ledger.store import COLUMNS, Ledger

_TURNS = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)


class Row(NamedTuple):
    session: str
    first_id: int
    last_id: int
    turns: int  # message_received and response_sent events
    first_said: str  # meta.original_ts when there is one, else ts
    last_said: str
    first_message: int | None  # the id of its first message_received


def summaries(mind: Ledger) -> list[Row]:
    """Every session with at least one turn, or a start, by when it was last said (the original
    time of an imported conversation), oldest first: an old export imported today is not "the
    latest" session."""
    sql = (
        "SELECT sid, min(id), max(id), sum(kind IN (?, ?)), min(said), max(said),"
        " min(CASE WHEN kind = ? THEN id END) FROM ("
        "  SELECT id, kind, coalesce(json_extract(meta, '$.session'),"
        "   CASE WHEN kind = ? THEN json_extract(meta, '$.source_id') END) AS sid,"
        "   coalesce(json_extract(meta, '$.original_ts'), ts) AS said"
        "  FROM events WHERE kind IN (?, ?, ?))"
        " WHERE sid IS NOT NULL AND typeof(sid) = 'text' GROUP BY sid ORDER BY max(said), max(id)")
    args = (*_TURNS, ev.MESSAGE_RECEIVED.name, ev.SESSION_STARTED.name, *_TURNS,
            ev.SESSION_STARTED.name)
    with cx.translated(mind.path):
        return [Row(*r) for r in mind.conn.execute(sql, args).fetchall()]


def starts(mind: Ledger) -> list[Event]:
    """Every ``session_started`` event, in id order."""
    return list(mind.events(kind=ev.SESSION_STARTED.name))


def withdrawals(mind: Ledger) -> list[Event]:
    """Every ``response_withdrawn`` event, in id order."""
    return list(mind.events(kind=ev.RESPONSE_WITHDRAWN.name))


def turns_of(mind: Ledger, session: str, limit: int, before: int | None = None) -> list[Event]:
    """The newest ``limit`` turns of ``session`` older than event ``before``, newest first. The
    scan starts at the session's first ``session_started`` (found through the kind index), so
    a chat in a large mind does not read every turn before its session began."""
    below = 2**63 - 1 if before is None else before
    start = ("SELECT min(id) FROM events WHERE kind = ? AND (json_extract(meta, '$.session') = ?"
             " OR json_extract(meta, '$.source_id') = ?)")
    sql = (f"SELECT {COLUMNS} FROM events WHERE kind IN (?, ?) AND id < ? AND id >= ?"
           " AND json_extract(meta, '$.session') = ? ORDER BY id DESC LIMIT ?")
    with cx.translated(mind.path):
        first = mind.conn.execute(start, (ev.SESSION_STARTED.name, session, session)).fetchone()[0]
        return [Event._make(r) for r in mind.conn.execute(
            sql, (*_TURNS, below, first or 0, session, limit))]
