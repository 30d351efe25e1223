"""Lookups that chat, reflection and trace need: the newest events of some kinds, events by id
or by a meta field, full-text search, full-text recall ranked by BM25 and bounded for big
minds, and the turns around an event. Read-only.

Full-text results are confirmed against each event's own text (``fts.confirm``): the index is
not part of the chain, so it is never trusted to say what an event contains."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import NamedTuple, cast

from pmm import errors
from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.ledger import connection as cx
from pmm.ledger import fts, schema
from pmm.ledger.store import COLUMNS, NAMES, Ledger, select_list

E_COLUMNS = select_list("e")
CONTENT_AT = NAMES.index("content")
POSTINGS = 5_000  # events a recall query may score (see ``ranked``)


def get(mind: Ledger, ids: Iterable[int], kinds: Iterable[str] | None = None) -> list[Event]:
    """The events with these ids (of ``kinds``, when given), in id order (missing ids are
    skipped)."""
    wanted = sorted(set(ids))
    names = () if kinds is None else tuple(kinds)
    of_kinds = f" AND kind IN ({', '.join('?' for _ in names)})" if kinds is not None else ""
    found: list[Event] = []
    with cx.translated(mind.path):
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            found += map(Event._make, mind.conn.execute(
                f"SELECT {COLUMNS} FROM events WHERE id IN ({', '.join('?' for _ in chunk)})"
                f"{of_kinds} ORDER BY id", (*chunk, *names)).fetchall())
    return found


def with_meta(mind: Ledger, kinds: Iterable[str], key: str, value: str | int, since: int = 1,
              limit: int = 10_000) -> list[Event]:
    """Events of ``kinds`` from ``since`` on whose ``meta[key]`` equals ``value``."""
    names = tuple(kinds)
    with cx.translated(mind.path):
        rows = mind.conn.execute(
            f"SELECT {COLUMNS} FROM events WHERE kind IN ({', '.join('?' for _ in names)})"
            " AND id >= ? AND json_extract(meta, '$.' || ?) = ? ORDER BY id LIMIT ?",
            (*names, since, key, value, limit)).fetchall()
    return [Event._make(r) for r in rows]


# The chat lookups in schema 5's index (``schema.LINK_INDEXES``): the terms repeat the index's
# own, so SQLite can use it. A file older than schema 5 is scanned. The index is not part of the
# chain: every event it points at is read and its meta checked again.
_BY_SESSION = f"SELECT {COLUMNS} FROM events WHERE {schema.SESSION_EVENTS} AND {schema.SESSION} = ?"
START_SQL = f"{_BY_SESSION} AND kind = '{ev.SESSION_STARTED.name}' ORDER BY id"
ANSWERS_SQL = f"{_BY_SESSION} AND kind = '{ev.RESPONSE_SENT.name}' AND id >= ? ORDER BY id LIMIT ?"


def answer_to(mind: Ledger, message: Event) -> Event | None:
    """The first answer naming ``message`` in ``meta.reply_to``: pmm answers in the message's
    session, so that session's answers after it are read, nearest first (a message from before
    pmm kept sessions: every later answer)."""
    session = message.meta.get("session")
    if not isinstance(session, str):
        found = with_meta(mind, [ev.RESPONSE_SENT.name], "reply_to", message.id, since=message.id, limit=1)
        return found[0] if found else None
    with cx.translated(mind.path):
        for row in mind.conn.execute(ANSWERS_SQL, (session, message.id + 1, 2**62)):
            event = Event._make(row)
            meta = event.meta
            if (event.kind, meta.get("session"), meta.get("reply_to")) == (
                    ev.RESPONSE_SENT.name, session, message.id):
                return event
    return None


def session_start(mind: Ledger, session: str) -> Event | None:
    """The ``session_started`` event of ``session``: a native one names it in ``meta.session``
    (taken first), an imported one (with ``meta.source`` and no ``meta.session``) in
    ``meta.source_id``."""
    imported = None
    with cx.translated(mind.path):
        for row in mind.conn.execute(START_SQL, (session,)):
            event = Event._make(row)
            meta = event.meta
            if event.kind != ev.SESSION_STARTED.name:
                continue
            if meta.get("session") == session:
                return event
            if (imported is None and meta.get("source_id") == session and meta.get("source")
                    and "session" not in meta):
                imported = event
    return imported


def session_answers(mind: Ledger, session: str, since: int, limit: int = 10_000) -> list[Event]:
    """The answers of ``session`` from id ``since`` on, in id order."""
    with cx.translated(mind.path):
        rows = mind.conn.execute(ANSWERS_SQL, (session, since, limit)).fetchall()
    found = [Event._make(r) for r in rows]
    return [e for e in found if e.kind == ev.RESPONSE_SENT.name and e.meta.get("session") == session]


def session_ids_starting(mind: Ledger, prefix: str, limit: int) -> list[str]:
    """Up to ``limit`` distinct session ids (``meta.session`` of chat events) starting with ``prefix``."""
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    kinds = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)
    with cx.translated(mind.path):
        rows = mind.conn.execute(
            "SELECT DISTINCT json_extract(meta, '$.session') AS s FROM events WHERE kind IN (?, ?)"
            " AND s LIKE ? ESCAPE '\\' LIMIT ?", (*kinds, pattern, limit)).fetchall()
    return [r[0] for r in rows if isinstance(r[0], str)]


def latest(mind: Ledger, kinds: Iterable[str], limit: int) -> list[Event]:
    """The newest ``limit`` events of ``kinds``, newest first (one indexed query per kind)."""
    return latest_before(mind, kinds, limit, None)


def latest_before(mind: Ledger, kinds: Iterable[str], limit: int, before: int | None) -> list[Event]:
    """The newest ``limit`` events of ``kinds`` older than event ``before`` (None: the head),
    newest first (one indexed query per kind)."""
    found: list[Event] = []
    below = 2**63 - 1 if before is None else before
    with cx.translated(mind.path):
        for kind in kinds:
            found += map(Event._make, mind.conn.execute(
                f"SELECT {COLUMNS} FROM events WHERE kind = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (kind, below, limit)).fetchall())
    return sorted(found, key=lambda e: -e.id)[:limit]


def following(mind: Ledger, kinds: Iterable[str], since: int, limit: int) -> list[Event]:
    """The first ``limit`` events of ``kinds`` from id ``since`` on, in id order: one indexed
    query per kind, so reading a window of old history never reads (or sorts) the rest."""
    found: list[Event] = []
    with cx.translated(mind.path):
        for kind in kinds:
            found += map(Event._make, mind.conn.execute(
                f"SELECT {COLUMNS} FROM events WHERE kind = ? AND id >= ? ORDER BY id LIMIT ?",
                (kind, since, limit)).fetchall())
    return sorted(found, key=lambda e: e.id)[:limit]


def count_between(mind: Ledger, kinds: Iterable[str], low: int, high: int | None = None) -> int:
    """How many events of ``kinds`` have ids from ``low`` to ``high`` (None: the head)."""
    top = 2**63 - 1 if high is None else high
    with cx.translated(mind.path):
        return sum(mind.conn.execute(
            "SELECT count(*) FROM events WHERE kind = ? AND id BETWEEN ? AND ?",
            (kind, low, top)).fetchone()[0] for kind in kinds)


def ranked(mind: Ledger, words: Iterable[str], kinds: Iterable[str], limit: int,
           postings: int = POSTINGS, counts: Mapping[str, int] | None = None
           ) -> list[tuple[Event, float]]:
    """Events of ``kinds`` matching any of ``words``, best first, each with its BM25 score
    (higher is better).

    Ranking must score every event that holds a query word, so the words are taken rarest
    first while the events they occur in add up to at most ``postings``: a common word that
    would cost the most says the least, and the cost of a query stays bounded however big the
    mind grows (a message of only such words recalls nothing by its words). ``counts`` are
    the words' ``word_counts`` when the caller has them already."""
    words, names = tuple(dict.fromkeys(words)), tuple(kinds)
    return mind.full_text(lambda: _ranked(mind, words, names, limit, postings, counts))


def word_counts(mind: Ledger, words: Iterable[str], postings: int = POSTINGS) -> dict[str, int]:
    """How many indexed events hold each of ``words`` (stemmed as the index stems), each
    counted up to ``postings + 1``, so that counting a common word costs no more than that."""
    distinct = tuple(dict.fromkeys(words))
    return mind.full_text(lambda: _word_counts(mind, distinct, postings))


def _word_counts(mind: Ledger, words: tuple[str, ...], postings: int) -> dict[str, int]:
    return {word: mind.conn.execute(
        "SELECT count(*) FROM (SELECT rowid FROM events_fts WHERE events_fts MATCH ? LIMIT ?)",
        (_term(word), postings + 1)).fetchone()[0] for word in words}


def _term(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def _ranked(mind: Ledger, words: tuple[str, ...], names: tuple[str, ...], limit: int,
            postings: int, counts: Mapping[str, int] | None) -> list[tuple[Event, float]]:
    if counts is None or any(word not in counts for word in words):
        counts = _word_counts(mind, words, postings)
    taken: list[str] = []
    total = 0
    for hits, word in sorted((counts[word], word) for word in words if counts[word]):
        if total + hits > postings:
            break
        taken.append(_term(word))
        total += hits
    if not taken:
        return []
    query = " OR ".join(taken)
    rows = mind.conn.execute(
        f"SELECT {E_COLUMNS}, -bm25(events_fts) FROM events_fts JOIN events e"
        f" ON e.id = events_fts.rowid WHERE events_fts MATCH ?"
        f" AND e.kind IN ({', '.join('?' for _ in names)}) ORDER BY rank LIMIT ?",
        (query, *names, limit)).fetchall()
    confirmed = fts.confirm(query, rows, CONTENT_AT, mind.schema_version)
    return [(Event._make(r[:7]), float(r[7])) for r in confirmed]


def around(mind: Ledger, ids: Iterable[int], kinds: Iterable[str], reach: int = 2) -> list[Event]:
    """The events of ``kinds`` within ``reach`` ids of any of ``ids`` (the turns next to a
    recalled one), in id order."""
    return get(mind, {n for i in ids for n in range(max(1, i - reach), i + reach + 1)}, kinds)


Bounds = tuple[str | None, str | None]  # said_at from (inclusive), said_at before (exclusive)
SAID_AT = "coalesce(json_extract({p}meta, '$.original_ts'), {p}ts)"  # pmm.domain.when.said_at


def _said(bounds: Bounds, prefix: str = "") -> tuple[str, tuple[str | int, ...]]:
    """SQL conditions (each starting " AND") keeping events said within ``bounds``."""
    said = SAID_AT.format(p=prefix)
    since, until = bounds
    sql, args = "", cast("tuple[str | int, ...]", ())
    if since is not None:
        sql, args = sql + f" AND {said} >= ?", (*args, since)
    if until is not None:
        sql, args = sql + f" AND {said} < ?", (*args, until)
    return sql, args


def tail(mind: Ledger, n: int, kind: str | None, ids: tuple[int, int], said: Bounds) -> list[Event]:
    """The last ``n`` events (of ``kind``) with ids in ``ids`` (inclusive) said within
    ``said``, in id order."""
    sql, args = " WHERE id BETWEEN ? AND ?", cast("tuple[str | int, ...]", ids)
    if kind is not None:
        sql, args = sql + " AND kind = ?", (*args, kind)
    when, more = _said(said)
    with cx.translated(mind.path):
        rows = mind.conn.execute(f"SELECT {COLUMNS} FROM events{sql}{when} ORDER BY id DESC LIMIT ?",
                                 (*args, *more, n)).fetchall()
    return [Event._make(r) for r in reversed(rows)]


ALL_IDS = (1, 2**63 - 1)
RANKED = 10_000  # matches a search ranks at most: the newest (see ``search``)


class Found(NamedTuple):
    """A search's hits, best first, and ``ranked``: None when every match was ranked, else the
    bound (only the newest ``ranked`` matches were ranked)."""

    hits: list[tuple[Event, str]]
    ranked: int | None


def search(mind: Ledger, query: str, limit: int, said: Bounds = (None, None),
           ids: tuple[int, int] = ALL_IDS, ranked: int = RANKED) -> Found:
    """Full-text matches with ids in ``ids`` said within ``said``, best first, each with a
    highlighted snippet (a damaged index: see ``Ledger.full_text``).

    FTS5 scores every match before it can sort them, so a word in half a million events cost
    half a second. Only the newest ``ranked`` matches are ranked (found by walking the index
    newest first, which costs the bound, not the mind): BM25 still weighs each by the whole
    index's statistics, so a hit scores what it would among all; ``Found.ranked`` says when
    older matches were left unranked."""
    return mind.full_text(lambda: _search(mind, query, limit, said, ids, ranked))


def count_matches(mind: Ledger, query: str, said: Bounds = (None, None), ids: tuple[int, int] = ALL_IDS) -> int:
    """How many events the index matches for ``query`` within ``ids`` and ``said`` (as ``search``
    reads the query; not confirmed against each text, so it may count one the search then drops)."""
    def run() -> int:
        source, when, more = _matching(said, ids)
        sql = f"SELECT count(*) FROM {source} WHERE events_fts MATCH ?{when}"
        try:
            return int(mind.conn.execute(sql, (query, *more)).fetchone()[0])
        except sqlite3.OperationalError as exc:
            if fts.is_damage(exc):
                raise
            literal = _literal(query)
            return int(mind.conn.execute(sql, (literal, *more)).fetchone()[0]) if literal else 0
    return mind.full_text(run)


def _matching(said: Bounds, ids: tuple[int, int]) -> tuple[str, str, tuple[str | int, ...]]:
    """The FROM clause and the conditions (each starting " AND") of matches within ``ids`` and
    ``said``. Ids bound the index's own rowid (FTS5 starts and stops its walk there); the events
    are joined only when a date is asked (their said-at time is in ``events``)."""
    sql, args = "", cast("tuple[str | int, ...]", ())
    if ids != ALL_IDS:
        sql, args = " AND events_fts.rowid BETWEEN ? AND ?", ids
    if said == (None, None):
        return "events_fts", sql, args
    when, more = _said(said, "e.")
    return "events_fts JOIN events e ON e.id = events_fts.rowid", sql + when, (*args, *more)


def _literal(query: str) -> str:
    """``query``'s words searched literally (for text that is not valid FTS5 syntax)."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in query.split())


def _search(mind: Ledger, query: str, limit: int, said: Bounds, ids: tuple[int, int],
            ranked: int) -> Found:
    source, when, more = _matching(said, ids)
    # the newest match past the bound: the ranked ones are those after it
    past = (f"SELECT events_fts.rowid FROM {source} WHERE events_fts MATCH ?{when}"
            " ORDER BY events_fts.rowid DESC LIMIT 1 OFFSET ?")

    def run(text: str) -> Found:
        floor = mind.conn.execute(past, (text, *more, ranked)).fetchone()
        after, args = (when, more) if floor is None else (when + " AND events_fts.rowid > ?", (*more, floor[0]))
        rows = mind.conn.execute(
            f"SELECT {E_COLUMNS}, snippet(events_fts, 0, '[', ']', '…', 12)"
            " FROM events_fts JOIN events e ON e.id = events_fts.rowid"
            f" WHERE events_fts MATCH ?{after} ORDER BY rank LIMIT ?", (text, *args, limit)).fetchall()
        confirmed = fts.confirm(text, rows, CONTENT_AT, mind.schema_version)
        return Found([(Event._make(r[:7]), r[7]) for r in confirmed], None if floor is None else ranked)

    try:
        return run(query)
    except sqlite3.OperationalError as exc:
        if fts.is_damage(exc):
            raise
    # Not valid FTS5 syntax (e.g. "self-aware", "it's"): search the words literally.
    literal = _literal(query)
    if not literal:
        raise errors.UsageError("nothing to search for") from None
    return run(literal)


def index_coverage(mind: Ledger) -> tuple[int, int, int]:
    """The search index's (documents, lowest id, highest id), from its own bookkeeping."""
    with cx.translated(mind.path):
        return fts.coverage(mind.conn)


def index_summary(mind: Ledger) -> tuple[int, int, int]:
    """``index_coverage`` at the cost of three lookups (``fts.summary``)."""
    with cx.translated(mind.path):
        return fts.summary(mind.conn)


def index_glance(mind: Ledger) -> str | None:
    """What FTS5 refuses in the index's config, structure or first entry (``fts.problem``)."""
    with cx.translated(mind.path):
        return fts.problem(mind.conn, mind.schema_version, thorough=False)


def source_ids(mind: Ledger, source: str, kinds: Iterable[str]) -> set[tuple[str, str]]:
    """``(meta.session or "", meta.source_id)`` of the events of ``kinds`` imported from ``source``:
    what a chat import already holds."""
    names = tuple(kinds)
    sql = (
        "SELECT coalesce(json_extract(meta, '$.session'), ''), json_extract(meta, '$.source_id')"
        f" FROM events WHERE kind IN ({', '.join('?' for _ in names)})"
        " AND json_extract(meta, '$.source') = ? AND json_extract(meta, '$.source_id') IS NOT NULL"
    )
    with cx.translated(mind.path):
        return set(mind.conn.execute(sql, (*names, source)).fetchall())


def retractions(mind: Ledger) -> dict[int, Event]:
    """The retraction of each retracted reflection, by the reflection's id (the first one
    naming it: a second changes nothing)."""
    found: dict[int, Event] = {}
    for event in mind.events(kind=ev.REFLECTION_RETRACTED.name):
        target = event.meta.get("reflection")
        if type(target) is int:
            found.setdefault(target, event)
    return found
