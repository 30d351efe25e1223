"""The mind as it was at an earlier event: the projections replayed up to it, from the nearest
snapshot, and a read-only view of the ledger that ends there (``--as-of``, ``pmm diff``).

Snapshots are rows of the projection cache named ``snap:ID`` (``PREFIX``): every state after
event ID, sealed like the cache (pmm.ledger.seal: this machine's key, the event's hash), so a
forged or foreign one is ignored and never changes what ``--as-of`` shows. A write whose fold
passes an event id that is a multiple of ``SPACING`` stores one; at most ``KEPT`` are kept,
the spacing doubling as the mind grows (only multiples of ``spacing(head)`` stay). They are
an optimisation only: without them, ``--as-of`` replays from the first event. Deleting every
row whose name starts with ``PREFIX`` (``clear``) is always safe.

A snapshot does not repeat the history of closed commitments that the cache's ``mind:done``
row holds (pmm.ledger.cache: with 20,000 kept commitments, 64 copies of it were most of the
file). In its place it holds a reference (``_refer``): the entries of the ``done`` row whose id
is at most its event's, less the ids it names, plus the entries it holds itself (those that
differ), and the SHA-256 of the history so made. The reference is resolved against the ``done``
row as it is when read, and must give that digest (under the snapshot's seal), or the snapshot
is not trusted: a ``done`` row altered, or changed by a reopen since, never changes what
``--as-of`` shows. Rows of the older format (``SNAP_FORMAT`` 1: the history inline) are
rewritten in the new one, once trusted, at the next write that keeps the cache (``store``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
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
SNAP_FORMAT = 2  # 2: the closed commitments as a reference to the cache's ``done`` row
REF = "ref"  # the key of a referring history (a real one is keyed by commitment ids: digits)

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


def version() -> str:
    """What a snapshot row must have been written by: the cache's version and this format."""
    return f"{cache.version()};snap:{SNAP_FORMAT}"


def dump(states: States) -> str:
    """States as the compact JSON a snapshot holds (the commitments no longer open read whole)."""
    commitments = states["commitments"]
    whole = {**states, "commitments": {**commitments, "done": dict(commitments["done"])}}
    return json.dumps(whole, separators=(",", ":"), sort_keys=True)


def _history_digest(done: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(done, separators=(",", ":"), sort_keys=True).encode()).hexdigest()


Base = tuple[dict[str, Any], set[str]]  # the head's closed commitments, and every id it knows


def _base(states: States | None) -> Base | None:
    if states is None:
        return None
    held = dict(states["commitments"]["done"])
    return held, set(held) | set(states["commitments"]["open"])  # every id a later close could add


def _refer(states: States, event_id: int, base: Base | None) -> str:
    """``dump(states)`` with the closed commitments as a reference to ``base``'s (the head's:
    what the ``done`` row holds once this write commits), when there is a base."""
    if base is None:
        return dump(states)
    done = dict(states["commitments"]["done"])
    held, known = base
    minus = sorted((k for k in known if k not in done and _id(k) <= event_id), key=_id)
    put = {k: v for k, v in done.items() if held.get(k) != v}
    ref = {REF: cache.DONE_KEY, "upto": event_id, "minus": minus, "put": put, "digest": _history_digest(done)}
    commitments = states["commitments"]
    return json.dumps({**states, "commitments": {**commitments, "done": ref}}, separators=(",", ":"),
                      sort_keys=True)


def _id(key: str) -> int:
    """The id a ``done`` key names (the event that opened the commitment), or -1 for a key that
    is not one: only ASCII digits, at most 19 (``isdigit`` alone takes "²", which ``int`` does not)."""
    return int(key) if key.isascii() and key.isdigit() and len(key) <= 19 else -1


def done_row(ledger: Any) -> Callable[[], Any]:
    """The cache's ``done`` row, parsed when called (what a referring snapshot resolves
    against); raises ValueError or RecursionError for a row that is not JSON."""
    return lambda: json.loads(cache.read_done(ledger.conn) or "null")


def _resolved(states: dict[str, Any], read_done: Callable[[], Any]) -> States | None:
    """``states`` with a referring history resolved against the ``done`` row (``read_done()``:
    parsed), or None when it does not give the digest the snapshot sealed."""
    commitments = states.get("commitments")
    ref = commitments.get("done") if isinstance(commitments, dict) else None
    if not isinstance(ref, dict) or REF not in ref:
        return cast(States, states)  # held inline
    upto, minus, put, digest = (ref.get(k) for k in ("upto", "minus", "put", "digest"))
    if type(upto) is not int or not isinstance(minus, list) or not isinstance(put, dict):
        return None
    try:
        held = read_done()
    except (ValueError, RecursionError):
        return None
    if not isinstance(held, dict):
        return None
    dropped = set(m for m in minus if isinstance(m, str))
    done = {k: v for k, v in held.items() if _id(k) <= upto and k not in dropped}
    done.update(put)
    if _history_digest(done) != digest:
        return None  # the done row was altered, or changed since (a reopen): not this history
    states["commitments"]["done"] = done
    return cast(States, states)


def store(conn: sqlite3.Connection, mind_id: str, snaps: list[Snap], head_id: int,
          base: States | None = None) -> int:
    """Write the sealed snapshots of ``snaps`` that the spacing at ``head_id`` keeps, and drop
    every snapshot row it does not (inside the caller's transaction). Returns how many were
    written. Without this machine's key none is written: unsealed, none would be trusted.
    ``base`` is the states sealed as the cache at the head in the same write: each snapshot's
    closed commitments refer to its ``done`` row (without it, they are held inline)."""
    step = spacing(head_id)
    if base is not None:
        snaps = _upgraded(conn, mind_id, head_id) + snaps
    head = _base(base) if snaps else None
    merged = first_merge(conn)
    if merged is not None:  # a merge re-folds from its fork (docs/merge.md): none from there on
        snaps = [snap for snap in snaps if snap[0] < merged]
        conn.execute("DELETE FROM projection_cache WHERE substr(name, 1, ?) = ? AND last_id >= ?",
                     (len(PREFIX), PREFIX, merged))
    secret = seal.key(create=True) if snaps else None
    current = version()
    written = 0
    if secret is not None:
        for event_id, event_hash, states in snaps:
            if event_id % step or event_id > head_id:
                continue
            text = _refer(states, event_id, head)
            mac = seal.mac(secret, mind_id, SEALED_AS + current, event_id, event_hash, text)
            conn.execute(
                "INSERT INTO projection_cache(name, version, last_id, last_hash, state, mac)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " version = excluded.version, last_id = excluded.last_id,"
                " last_hash = excluded.last_hash, state = excluded.state, mac = excluded.mac",
                (f"{PREFIX}{event_id}", current, event_id, event_hash, text, mac))
            written += 1
    conn.execute("DELETE FROM projection_cache WHERE substr(name, 1, ?) = ? AND"
                 " (version IS NOT ? OR last_id % ? != 0 OR last_id > ?)",
                 (len(PREFIX), PREFIX, current, step, head_id))
    return written


def _upgraded(conn: sqlite3.Connection, mind_id: str, head_id: int) -> list[Snap]:
    """The migration of format-1 snapshot rows (the history inline, written by an older pmm):
    those still trusted (sealed here, their event's hash unchanged), to be written again in
    this format; ``store`` then drops every row of another version. A few rows, read only
    while some are left."""
    rows = conn.execute("SELECT version, last_id, last_hash, state, mac FROM projection_cache"
                        " WHERE substr(name, 1, ?) = ? AND version = ?",
                        (len(PREFIX), PREFIX, cache.version())).fetchall()
    if not rows:
        return []
    secret = seal.key(create=False)
    found: list[Snap] = []
    for old, last_id, last_hash, state, mac in rows:
        if not (isinstance(last_id, int) and isinstance(last_hash, str) and isinstance(state, str)
                and isinstance(mac, str) and last_id <= head_id):
            continue
        if not seal.matches(secret, mac, mind_id, SEALED_AS + old, last_id, last_hash, state):
            continue
        hashed = conn.execute("SELECT hash FROM events WHERE id = ?", (last_id,)).fetchone()
        if hashed is None or hashed[0] != last_hash:
            continue
        try:
            states = json.loads(state)
        except (ValueError, RecursionError):
            continue
        if isinstance(states, dict) and isinstance(states.get("commitments"), dict) \
                and isinstance(states["commitments"].get("done"), dict):
            found.append((last_id, last_hash, cast(States, states)))
    return found


def outdated(conn: sqlite3.Connection) -> bool:
    """Whether snapshot rows of the older format are stored (``store`` rewrites them)."""
    return conn.execute("SELECT 1 FROM projection_cache WHERE substr(name, 1, ?) = ? AND version = ?"
                        " LIMIT 1", (len(PREFIX), PREFIX, cache.version())).fetchone() is not None


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


def sealed(ledger: Any, event_id: int, done: Callable[[], Any] | None = None) -> States | None:
    """The snapshot after ``event_id`` when one is stored, sealed by this machine, written by
    this pmm, and that event still has the hash it was taken at; else None. ``done`` reads the
    ``done`` row its history refers to (default: ``done_row``; a caller that only compares the
    states may pass one that parses it once for many snapshots)."""
    if ledger.schema_version < 2:
        return None
    with cx.translated(ledger.path):
        row = ledger.conn.execute(
            "SELECT version, last_id, last_hash, state, mac FROM projection_cache WHERE name = ?",
            (f"{PREFIX}{event_id}",)).fetchone()
        return _trusted(ledger, row, event_id, done or done_row(ledger))


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


def _trusted(ledger: Any, row: tuple[Any, ...] | None, event_id: int,
             done: Callable[[], Any]) -> States | None:
    if row is None:
        return None
    version_, last_id, last_hash, state, mac = row
    if version_ != version() or not isinstance(state, str) or not isinstance(last_id, int) \
            or not isinstance(last_hash, str) or not isinstance(mac, str):
        return None
    if last_id != event_id or not seal.matches(seal.key(create=False), mac, ledger.mind_id,
                                               SEALED_AS + version_, last_id, last_hash, state):
        return None  # forged, written on another machine, or a cache row under a snapshot's name
    if ledger.hash_at(last_id) != last_hash:
        return None
    try:
        states = json.loads(state)
    except (ValueError, RecursionError):
        return None
    if not isinstance(states, dict):
        return None
    return _resolved(states, done)


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
    "SELECT id, CAST(ts AS TEXT) AS ts, CAST(kind AS TEXT) AS kind,"
    " CASE WHEN CAST(kind AS TEXT) IN ({kinds}) THEN CAST(content AS TEXT) ELSE '' END AS content,"
    " CAST(meta AS TEXT) AS meta, '', '' FROM events WHERE id >= ? AND id <= ? ORDER BY id").format(
        kinds=", ".join(f"'{kind}'" for kind in sorted(projections.CONTENT_KINDS)))


_EVENT = cast(Callable[[Any], Event], functools.partial(tuple.__new__, Event))  # Event._make, unchecked


def runs(ledger: Any, since: int, until: int | None = None) -> Iterator[list[Event]]:
    """The events from ``since`` to ``until`` (default: the last) as a fold reads them, in runs
    of ``projections.RUN`` read together: each meta whole, the content only of the kinds a
    projection reads, no hashes."""
    high = 2**63 - 1 if until is None else until
    cursor = ledger.conn.cursor()
    try:
        with cx.translated(ledger.path):
            cursor.execute(_FOLD_ROWS, (since, high))
            while batch := cursor.fetchmany(projections.RUN):
                yield list(map(_EVENT, batch))
    finally:
        cursor.close()


def fold_split(fold: projections.Fold, events: list[Event], point: Callable[[int], bool],
               at: Callable[[int, States], None]) -> None:
    """``fold.add_run(events)``, cut after each event whose id is a ``point``, where
    ``at(id, states)`` is given the states after it (a copy is the caller's to make)."""
    start = 0
    for n, event in enumerate(events):
        if point(event.id):
            fold.add_run(events[start:n + 1])
            at(event.id, fold.states)
            start = n + 1
    if start < len(events):
        fold.add_run(events[start:])


def feed(ledger: Any, fold: projections.Fold, since: int, until: int | None = None,
         snaps: list[Snap] | None = None) -> tuple[int, str] | None:
    """Fold the events from ``since`` to ``until`` (default: the last) into ``fold`` (``runs``);
    into ``snaps``, when given, the states at each snapshot point passed. Returns the last
    event folded (id and hash), or None when there was none."""
    def keep(event_id: int, states: States) -> None:
        add(cast(list[Snap], snaps), (event_id, _hash(ledger, event_id), states.copy()))

    last: int | None = None
    for events in runs(ledger, since, until):
        if snaps is not None and (events[-1].id >> SHIFT) != ((events[0].id - 1) >> SHIFT):
            fold_split(fold, events, lambda i: not i & MASK, keep)  # a snapshot point in the run
        else:
            fold.add_run(events)
        last = events[-1].id
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
