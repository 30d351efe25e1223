"""The mind's projections read from a ledger: the sealed cache (pmm.ledger.cache) plus the events
after it, folded in memory. Reads never write; every write of the ledger folds its new events
into the cache in its own transaction (``Folding``), so the cache never disagrees with the
events it claims to reflect. Each process also remembers the last states it folded for a mind
file, so that however often a command asks, and however stale the cache, it replays at most
once.

Events enter the folds here only through ``projections.Fold`` (and ``replay_merged``): a replay
reads them through ``past.feed``, which reads only what the projections read.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, cast

from pmm import errors
from pmm.domain import projections
from pmm.domain.events import MIND_MERGED as _MERGED_KIND
from pmm.domain.events import Event
from pmm.domain.states import States
from pmm.ledger import cache, past
from pmm.ledger import connection as cx
from pmm.ledger.chain import GENESIS_PREV


class Source(Protocol):
    """What the folds read of an open ledger (``pmm.ledger.store.Ledger``)."""

    path: Path
    conn: sqlite3.Connection
    mind_id: str
    schema_version: int

    def head(self) -> tuple[int, str]: ...

    def hash_at(self, event_id: int) -> str | None: ...

    def events(self, since: int = 1, kind: str | None = None, until: int | None = None) -> Iterator[Event]: ...

    def close(self) -> None: ...

    @classmethod
    def open(cls, path: Path) -> Source: ...


@dataclass
class CacheStatus:
    state: str  # "current", "behind" (newer events folded in memory), "stale" or "absent"
    last_id: int


# Full replays (from the first event) this process has done: bench/bench_cache.py reads it.
replays = 0
# The states this process last folded, by mind file: (event id, its hash, states). Each is
# our own fold, so it needs no seal; it holds while that event keeps that hash (a file
# replaced or rolled back under the process fails the check and is read again).
_MEMO: dict[tuple[str, str], tuple[int, str, States]] = {}
MEMO_MINDS = 4  # minds remembered at once (a process mostly opens one)


def forget() -> None:
    """Forget this process's folds (what a new process starts with)."""
    _MEMO.clear()


def state(ledger: Source) -> tuple[States, CacheStatus]:
    """Current projections: the states this process folded last, or the cache, plus newer
    events folded in memory (never writes). At most one replay per process and mind file,
    even when the cache is stale: the fold is remembered."""
    row = _sealed(ledger)
    if row is None:
        with cx.translated(ledger.path):
            status = CacheStatus("stale" if cache.present(ledger.conn) else "absent", 0)
    states, last = _fold_on(ledger, *_best_or_start(ledger, row))
    _remember(ledger, states, *last)
    if row is not None:
        status = CacheStatus("current" if last[0] == row.last_id else "behind", row.last_id)
    return states.copy(), status


def cached(ledger: Source) -> tuple[States, int] | None:
    """The stored cache read whole (``verify --deep`` compares it with a replay): its states
    and the event id they reflect, when the seal holds and that event still has that hash."""
    row = _sealed(ledger)
    if row is None:
        return None
    with cx.translated(ledger.path):
        states = cache.load(row, _done_row(ledger), _done_at(ledger, row.last_id, row.last_hash),
                            strict=True)
    return None if states is None else (states, row.last_id)


def seal(ledger: Source, states: States, snaps: list[past.Snap] | None = None) -> None:
    """Store ``states`` as the cache at the ledger's head, and ``snaps`` (the states a fold
    passed at snapshot points, ``pmm.ledger.past``) as snapshots (inside the caller's
    transaction)."""
    last_id, last_hash = ledger.head()
    stored = cache.store(ledger.conn, ledger.mind_id, states, last_id, last_hash)
    _remember(ledger, stored, last_id, last_hash)
    if snaps or past.outdated(ledger.conn):  # (snapshots refer to the done row just stored)
        past.store(ledger.conn, ledger.mind_id, snaps or [], last_id, stored)


def rebuild(ledger: Source) -> None:
    """The cache and the snapshots rebuilt from every event (inside the caller's transaction)."""
    global replays
    snaps: list[past.Snap] = []
    past.clear(ledger.conn)
    states, _ = _fold_on(ledger, None, 0, GENESIS_PREV, snaps)
    if past.first_merge(ledger.conn) is None:
        replays += 1  # (a merged mind's fold ended in replay_all, which counts itself)
    seal(ledger, states, snaps)


def _sealed(ledger: Source) -> cache.Row | None:
    if ledger.schema_version < 2:
        return None  # no seal before schema 2: the next write migrates and rebuilds it
    with cx.translated(ledger.path):
        return cache.sealed(ledger.conn, ledger.mind_id, ledger.hash_at)


Base = tuple[States | None, int, str]  # states (None: the initial ones), at event id, its hash


def _best_or_start(ledger: Source, row: cache.Row | None) -> Base:
    """The newest trustworthy states: this process's own fold, else the stored cache when it
    is newer (reading its small row costs less than folding the events between), else none:
    a replay from the first event."""
    global replays
    mine = _remembered(ledger)
    if row is not None and (mine is None or row.last_id > mine[1]):
        with cx.translated(ledger.path):
            states = cache.load(row, _done_row(ledger), _done_at(ledger, row.last_id, row.last_hash))
        if states is not None:
            return states, row.last_id, row.last_hash
    if mine is None:
        replays += 1
        return None, 0, GENESIS_PREV
    return mine


def _fold_on(ledger: Source, states: States | None, last_id: int, last_hash: str,
             snaps: list[past.Snap] | None = None) -> tuple[States, tuple[int, str]]:
    """``states`` (at ``last_id``) with every later event folded in, and the last event folded;
    into ``snaps``, when given, the states at each snapshot point passed (for a writer to store)."""
    fold = projections.Fold(states)
    last = past.feed(ledger, fold, last_id + 1, None, snaps) or (last_id, last_hash)
    if fold.merges:  # a merge after the states we had: the fold from its fork is read again
        return replay_all(ledger, last[0]), last  # (past.store keeps no snapshot from a merge on)
    return fold.states, last


def replay_all(ledger: Source, upto: int | None = None) -> States:
    """The states at ``upto`` (default: the head) by a replay of every event, read as a merged
    mind reads when it holds ``mind_merged`` events (``projections.replay_merged``)."""
    global replays
    replays += 1

    def until(events: Iterator[Event], last: int | None) -> Iterator[Event]:
        # a read stopped early closes its statement at once (one left open holds a read lock)
        with contextlib.closing(cast(Generator[Event, None, None], events)):
            for event in events:
                if last is not None and event.id > last:
                    return
                yield event

    markers = list(until(ledger.events(kind=_MERGED_KIND.name), upto))
    if not markers:
        fold = projections.Fold()
        past.feed(ledger, fold, 1, upto)
        return fold.states
    return projections.replay_merged(until(ledger.events(), upto), markers,
                                     lambda low, high: until(ledger.events(since=low), high))


def _done_at(ledger: Source, last_id: int, last_hash: str) -> Callable[[], cache.Done]:
    """The commitments no longer open at an event, by replay: the true value of a ``done`` row
    that was altered (or rewritten by another process) after it was read."""
    def replayed(source: Source) -> cache.Done:
        return dict(replay_all(source, last_id)["commitments"]["done"])
    return lambda: _reading(ledger, replayed, (last_id, last_hash))


def _done_row(ledger: Source) -> Callable[[], str | None]:
    def read() -> str | None:
        return _reading(ledger, lambda source: cache.read_done(source.conn))
    return read


T = TypeVar("T")


def _reading(ledger: Source, read: Callable[[Source], T], at: tuple[int, str] | None = None) -> T:
    """``read(ledger)``, or, when the caller has closed that ledger since it read the states
    (the history is read when first asked for), ``read`` of the same file opened again (which
    must still hold event ``at`` as this ledger did, when one is named)."""
    try:
        ledger.conn.total_changes  # noqa: B018 (raises once the connection is closed)
    except sqlite3.ProgrammingError:
        pass
    else:
        with cx.translated(ledger.path):
            return read(ledger)
    again = type(ledger).open(ledger.path)
    try:
        with cx.translated(ledger.path):
            if again.mind_id != ledger.mind_id or (at is not None and at[0] and again.hash_at(at[0]) != at[1]):
                raise errors.IntegrityError(f"{ledger.path} changed while it was read",
                                            hint="run the command again")
            return read(again)
    finally:
        again.close()


def _remembered(ledger: Source) -> tuple[States, int, str] | None:
    found = _MEMO.get((str(ledger.path), ledger.mind_id))
    if found is None:
        return None
    last_id, last_hash, states = found
    with cx.translated(ledger.path):
        if (ledger.hash_at(last_id) if last_id else GENESIS_PREV) != last_hash:
            return None
    done = states["commitments"]["done"]
    if isinstance(done, cache.Deferred):  # read, when it is, through this ledger
        rebound = done.rebound(_done_row(ledger), _done_at(ledger, last_id, last_hash))
        states = {**states, "commitments": {**states["commitments"], "done": cast(cache.Done, rebound)}}
    return states, last_id, last_hash


def _remember(ledger: Source, states: States, last_id: int, last_hash: str) -> None:
    key = (str(ledger.path), ledger.mind_id)
    _MEMO.pop(key, None)
    _MEMO[key] = (last_id, last_hash, states)
    while len(_MEMO) > MEMO_MINDS:
        del _MEMO[next(iter(_MEMO))]


class Folding:
    """The states carried through one write: opened at ``head_id`` before the insert (this
    process's fold or the cache, with any events after it; a replay of every event when there
    is neither), fed each new event as it is inserted (``passing``, one read of the input),
    sealed at the new head (``seal``)."""

    def __init__(self, ledger: Source, head_id: int) -> None:
        self.ledger = ledger
        self.count = 0
        self.snaps: list[past.Snap] = []  # the states at the snapshot points this write passes
        if head_id == 0:
            self.fold = projections.Fold()
            return
        self.fold = projections.Fold(
            _fold_on(ledger, *_best_or_start(ledger, _sealed(ledger)), self.snaps)[0])

    def passing(self, events: Iterable[Event]) -> Iterator[Event]:
        fold, snaps, mask = self.fold, self.snaps, past.MASK
        add = fold.add
        for event in events:
            add(event)
            if not event.id & mask:
                past.add(snaps, (event.id, event.hash, fold.states.copy()))
            self.count += 1
            yield event

    def seal(self) -> None:
        if self.fold.merges:  # the new events hold a merge: read again from its fork
            seal(self.ledger, replay_all(self.ledger), self.snaps)
            return
        seal(self.ledger, self.fold.states, self.snaps)
