"""The mind's projections read from a ledger: the sealed cache (pmm.ledger.cache) plus the events
after it, folded in memory. Reads never write; every write of the ledger folds its new events
into the cache in its own transaction (``Folding``), so the cache never disagrees with the
events it claims to reflect.

Events enter the folds here only through ``projections.replay`` and ``projections.Fold``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pmm.domain import projections
from pmm.domain.events import Event
from pmm.domain.states import States
from pmm.ledger import cache
from pmm.ledger import connection as cx


class Source(Protocol):
    """What the folds read of an open ledger (``pmm.ledger.store.Ledger``)."""

    path: Path
    conn: sqlite3.Connection
    mind_id: str
    schema_version: int

    def head(self) -> tuple[int, str]: ...

    def hash_at(self, event_id: int) -> str | None: ...

    def events(self, since: int = 1, kind: str | None = None) -> Iterator[Event]: ...


@dataclass
class CacheStatus:
    state: str  # "current", "behind" (newer events folded in memory), "stale" or "absent"
    last_id: int


def state(ledger: Source) -> tuple[States, CacheStatus]:
    """Current projections: the cache plus newer events folded in memory (never writes)."""
    found = cached(ledger)
    if found is None:
        with cx.translated(ledger.path):
            status = "stale" if cache.present(ledger.conn) else "absent"
        return projections.replay(ledger.events()), CacheStatus(status, 0)
    states, last_id = found
    head_id, _ = ledger.head()
    states = projections.replay(ledger.events(since=last_id + 1), states)
    return states, CacheStatus("current" if head_id == last_id else "behind", last_id)


def cached(ledger: Source) -> tuple[States, int] | None:
    """The cached states and the event id they reflect, if that event still has that hash."""
    if ledger.schema_version < 2:
        return None  # no seal before schema 2: the next write migrates and rebuilds it
    with cx.translated(ledger.path):
        return cache.load(ledger.conn, ledger.mind_id, ledger.hash_at)


def seal(ledger: Source, states: States) -> None:
    """Store ``states`` as the cache at the ledger's head (inside the caller's transaction)."""
    last_id, last_hash = ledger.head()
    cache.store(ledger.conn, ledger.mind_id, states, last_id, last_hash)


def rebuild(ledger: Source) -> None:
    """The cache rebuilt from every event (inside the caller's transaction)."""
    seal(ledger, projections.replay(ledger.events()))


class Folding:
    """The cache carried through one write: opened at ``head_id`` before the insert (the cached
    states when they are at ``head_id``, else a replay of every event), fed each new event as it
    is inserted (``passing``, one read of the input), sealed at the new head (``seal``)."""

    def __init__(self, ledger: Source, head_id: int) -> None:
        self.ledger = ledger
        self.count = 0
        if head_id == 0:
            self.fold = projections.Fold()
            return
        found = cached(ledger)
        at_head = found is not None and found[1] == head_id
        self.fold = projections.Fold(found[0] if found is not None and at_head else None)
        if not at_head:
            self.fold.add_all(ledger.events())

    def passing(self, events: Iterable[Event]) -> Iterator[Event]:
        add = self.fold.add
        for event in events:
            add(event)
            self.count += 1
            yield event

    def seal(self) -> None:
        seal(self.ledger, self.fold.states)
