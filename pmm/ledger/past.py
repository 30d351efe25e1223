"""The mind as it was at an earlier event: the projections replayed up to it, from the nearest
snapshot, and a read-only view of the ledger that ends there (``--as-of``, ``pmm diff``).

Snapshots are rows of the projection cache named ``snap:ID`` (``PREFIX``): every state after
event ID, sealed like the cache (pmm.ledger.seal: this machine's key, the event's hash), so a
forged or foreign one is ignored and never changes what ``--as-of`` shows. A write whose fold
passes an event id that is a multiple of ``SPACING`` stores one; at most ``KEPT`` are kept,
the spacing doubling as the mind grows (only multiples of ``spacing(head)`` stay). They are
an optimisation only: without them, ``--as-of`` replays from the first event. Deleting every
row whose name starts with ``PREFIX`` (``clear``) is always safe.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, cast

from pmm.domain import projections
from pmm.domain.events import MIND_MERGED, Event
from pmm.domain.states import States
from pmm.ledger import cache, fts, seal
from pmm.ledger import connection as cx
from pmm.ledger.chain import GENESIS_PREV

PREFIX = "snap:"
SPACING = 16_384  # 2**14: a snapshot point is an id with these low bits clear
MASK = SPACING - 1
SHIFT = MASK.bit_length()  # id >> SHIFT: which run of SPACING ids it falls in
KEPT = 64
# What a snapshot's seal covers beside the cache row's fields: a sealed cache row (whose history
# is a digest, pmm.ledger.cache) copied under a snapshot's name, or back, does not pass.
SEALED_AS = "snapshot;"

Snap = tuple[int, str, States]  # after event id, with that hash: the states


def spacing(head_id: int) -> int:
    """The distance between the snapshots kept in a mind of ``head_id`` events: ``SPACING``,
    doubled until at most ``KEPT`` fit."""
    step = SPACING
    while head_id // step > KEPT:
        step *= 2
    return step


def add(snaps: list[Snap], snap: Snap) -> None:
    """Append ``snap`` to the snapshots a fold collects, keeping at most ``KEPT`` + 1 in memory:
    one whose id is not a multiple of the spacing at ``snap``'s id is no multiple of the spacing
    at any later head either (each a power of two, never smaller), so ``store`` would drop it."""
    snaps.append(snap)
    if len(snaps) > KEPT:
        step = spacing(snap[0])
        snaps[:] = [kept for kept in snaps if not kept[0] % step]


def dump(states: States) -> str:
    """States as the compact JSON a snapshot holds (the commitments no longer open read whole)."""
    commitments = states["commitments"]
    whole = {**states, "commitments": {**commitments, "done": dict(commitments["done"])}}
    return json.dumps(whole, separators=(",", ":"), sort_keys=True)


def store(conn: sqlite3.Connection, mind_id: str, snaps: list[Snap], head_id: int) -> int:
    """Write the sealed snapshots of ``snaps`` that the spacing at ``head_id`` keeps, and drop
    every snapshot row it does not (inside the caller's transaction). Returns how many were
    written. Without this machine's key none is written: unsealed, none would be trusted."""
    step = spacing(head_id)
    merged = first_merge(conn)
    if merged is not None:  # a merge re-folds from its fork (docs/merge.md): none from there on
        snaps = [snap for snap in snaps if snap[0] < merged]
        conn.execute("DELETE FROM projection_cache WHERE substr(name, 1, ?) = ? AND last_id >= ?",
                     (len(PREFIX), PREFIX, merged))
    secret = seal.key(create=True) if snaps else None
    version = cache.version()
    written = 0
    if secret is not None:
        for event_id, event_hash, states in snaps:
            if event_id % step or event_id > head_id:
                continue
            text = dump(states)
            mac = seal.mac(secret, mind_id, SEALED_AS + version, event_id, event_hash, text)
            conn.execute(
                "INSERT INTO projection_cache(name, version, last_id, last_hash, state, mac)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " version = excluded.version, last_id = excluded.last_id,"
                " last_hash = excluded.last_hash, state = excluded.state, mac = excluded.mac",
                (f"{PREFIX}{event_id}", version, event_id, event_hash, text, mac))
            written += 1
    conn.execute("DELETE FROM projection_cache WHERE substr(name, 1, ?) = ? AND"
                 " (version IS NOT ? OR last_id % ? != 0 OR last_id > ?)",
                 (len(PREFIX), PREFIX, version, step, head_id))
    return written


def first_merge(conn: sqlite3.Connection) -> int | None:
    """The id of the mind's first ``mind_merged`` event, or None. The states at or after it are
    not a plain fold of the events before (a merge folds again from its fork): no snapshot is
    kept from there on, and ``--as-of`` a point past it replays as a merged mind reads."""
    row = conn.execute("SELECT min(id) FROM events WHERE kind = ?", (MIND_MERGED.name,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def clear(conn: sqlite3.Connection) -> None:
    """Delete every snapshot (inside the caller's transaction): ``pmm forget`` must, since
    they hold texts (pinned notes, commitments, summaries)."""
    conn.execute("DELETE FROM projection_cache WHERE substr(name, 1, ?) = ?", (len(PREFIX), PREFIX))


def ids(conn: sqlite3.Connection) -> list[int]:
    """The event ids of the snapshot rows stored (sealed or not), in order."""
    rows = conn.execute("SELECT last_id FROM projection_cache WHERE substr(name, 1, ?) = ?"
                        " ORDER BY last_id", (len(PREFIX), PREFIX)).fetchall()
    return [int(r[0]) for r in rows if isinstance(r[0], int)]


def sealed(ledger: Any, event_id: int) -> States | None:
    """The snapshot after ``event_id`` when one is stored, sealed by this machine, written by
    this pmm, and that event still has the hash it was taken at; else None."""
    if ledger.schema_version < 2:
        return None
    with cx.translated(ledger.path):
        row = ledger.conn.execute(
            "SELECT version, last_id, last_hash, state, mac FROM projection_cache WHERE name = ?",
            (f"{PREFIX}{event_id}",)).fetchone()
        return _trusted(ledger, row, event_id)


def nearest(ledger: Any, event_id: int) -> tuple[States | None, int, str]:
    """The newest trustworthy states at or before ``event_id``: a snapshot, or the cache when it
    reflects an event no later than that; (None, 0, GENESIS_PREV) when there is neither (a
    replay from the first event)."""
    best: tuple[States | None, int, str] = (None, 0, GENESIS_PREV)
    if ledger.schema_version < 2:
        return best  # no seal before schema 2: nothing stored is trusted
    with cx.translated(ledger.path):
        rows = ledger.conn.execute(  # the texts are read one by one, the newest first
            "SELECT last_id FROM projection_cache WHERE substr(name, 1, ?) = ? AND last_id <= ?"
            " AND typeof(last_id) = 'integer' ORDER BY last_id DESC LIMIT 4",
            (len(PREFIX), PREFIX, event_id)).fetchall()
        for (last_id,) in rows:
            states = sealed(ledger, last_id)
            if states is not None:
                best = (states, last_id, ledger.hash_at(last_id) or GENESIS_PREV)
                break
        row = cache.sealed(ledger.conn, ledger.mind_id, ledger.hash_at)
        if row is not None and best[1] < row.last_id <= event_id:  # the cache is nearer
            states = cache.load(row, lambda: cache.read_done(ledger.conn), _unused, strict=True)
            if states is not None:
                return states, row.last_id, row.last_hash
    return best


def _unused() -> cache.Done:
    raise AssertionError("a strict load never falls back")  # pragma: no cover


def _trusted(ledger: Any, row: tuple[Any, ...] | None, event_id: int) -> States | None:
    if row is None:
        return None
    version, last_id, last_hash, state, mac = row
    if version != cache.version() or not isinstance(state, str) or not isinstance(last_id, int) \
            or not isinstance(last_hash, str) or not isinstance(mac, str):
        return None
    if last_id != event_id or not seal.matches(seal.key(create=False), mac, ledger.mind_id,
                                               SEALED_AS + version, last_id, last_hash, state):
        return None  # forged, written on another machine, or a cache row under a snapshot's name
    if ledger.hash_at(last_id) != last_hash:
        return None
    try:
        states = json.loads(state)
    except (ValueError, RecursionError):
        return None
    return cast(States, states) if isinstance(states, dict) else None


def replay_to(ledger: Any, event_id: int) -> tuple[States, int]:
    """The projections after event ``event_id``: the nearest snapshot (or the cache) at or before
    it, and the events after that up to it folded in memory (never writes). Returns the states
    and the id replayed from (0: the first event)."""
    states, base, _ = nearest(ledger, event_id)
    fold = projections.Fold(states)
    feed(ledger, fold, base + 1, event_id)
    return fold.states, base


# The events as a replay reads them: an ``Event`` each, but the content only of the kinds a
# projection reads (``projections.CONTENT_KINDS``: most of a mind's text is messages no
# projection reads), and no hashes (read apart for the few events whose states are kept).
_FOLD_ROWS = (
    "SELECT id, CAST(ts AS TEXT), CAST(kind AS TEXT),"
    " CASE WHEN CAST(kind AS TEXT) IN ({kinds}) THEN CAST(content AS TEXT) ELSE '' END,"
    " CAST(meta AS TEXT), '', '' FROM events WHERE id >= ? AND id <= ? ORDER BY id").format(
        kinds=", ".join(f"'{kind}'" for kind in sorted(projections.CONTENT_KINDS)))


_EVENT = cast(Callable[[Any], Event], functools.partial(tuple.__new__, Event))  # Event._make, unchecked


def feed(ledger: Any, fold: projections.Fold, since: int, until: int | None = None,
         snaps: list[Snap] | None = None) -> tuple[int, str] | None:
    """Fold the events from ``since`` to ``until`` (default: the last) into ``fold``, in runs
    of rows read together; into ``snaps``, when given, the states at each snapshot point
    passed. Returns the last event folded (id and hash), or None when there was none."""
    high = 2**63 - 1 if until is None else until
    cursor = ledger.conn.cursor()
    last: int | None = None
    try:
        with cx.translated(ledger.path):
            cursor.execute(_FOLD_ROWS, (since, high))
            while batch := cursor.fetchmany(projections.RUN):
                events = list(map(_EVENT, batch))
                if snaps is not None and (events[-1].id >> SHIFT) != ((events[0].id - 1) >> SHIFT):
                    start = 0  # a snapshot point in this run: the states after it are kept
                    for n, event in enumerate(events):
                        if not event.id & MASK:
                            fold.add_run(events[start:n + 1])
                            add(snaps, (event.id, _hash(ledger, event.id), fold.states.copy()))
                            start = n + 1
                    if start < len(events):
                        fold.add_run(events[start:])
                else:
                    fold.add_run(events)
                last = events[-1].id
    finally:
        cursor.close()
    return None if last is None else (last, _hash(ledger, last))


def _hash(ledger: Any, event_id: int) -> str:
    found = ledger.hash_at(event_id)  # (an event, once stored, keeps its id and its hash)
    return found if isinstance(found, str) else ""


@contextlib.contextmanager
def view(ledger: Any, event_id: int, *, index: bool = False) -> Iterator[None]:
    """Within the block, every read of ``ledger`` sees only events 1 to ``event_id``: temporary
    views named ``events`` (and, with ``index``, a full-text index of those events alone, so
    BM25's statistics are the past's) shadow the file's own on this connection. Nothing is
    written to the mind file: SQLite keeps temporary objects apart, even on a read-only open."""
    conn = ledger.conn
    bound = int(event_id)
    with cx.translated(ledger.path):
        conn.execute(f"CREATE TEMP VIEW events AS SELECT * FROM main.events WHERE id <= {bound}")
        try:
            if index:
                statement = fts.table(ledger.schema_version)
                conn.execute(statement.replace("VIRTUAL TABLE events_fts", "VIRTUAL TABLE temp.events_fts", 1))
                conn.execute("INSERT INTO temp.events_fts(events_fts) VALUES ('rebuild')")
        except BaseException:
            conn.execute("DROP VIEW IF EXISTS temp.events")
            raise
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("COMMIT")
            conn.execute("DROP TABLE IF EXISTS temp.events_fts")
            conn.execute("DROP VIEW IF EXISTS temp.events")


def last_before(ledger: Any, ts: str) -> int | None:
    """The highest id of an event recorded before ``ts`` (a ledger timestamp), or None: with a
    clock that never went back, the last event at or before that time."""
    with cx.translated(ledger.path):
        row = ledger.conn.execute("SELECT max(id) FROM events WHERE ts < ?", (ts,)).fetchone()
    return None if row[0] is None else int(row[0])
