"""Reading a mind's events for people: ``pmm log``, ``pmm search``, and how one event is shown."""

from __future__ import annotations

from pmm.domain.events import Event
from pmm.domain.when import said_at
from pmm.domain.when import shown as shown  # the one way an event's time is shown to a person, for the CLI
from pmm.ledger import lookup
from pmm.ledger.store import Ledger
from pmm.services.reports import EventJson, SearchHit


def when(event: Event) -> str:
    """When ``event`` was said, as a person is shown it (an import: with the day it was imported)."""
    return shown(said_at(event), event.ts)


def log(mind: Ledger, n: int, kind: str | None) -> list[Event]:
    return mind.tail(n, kind)


def search(mind: Ledger, text: str, limit: int) -> list[tuple[Event, str]]:
    """Full-text matches, best first, each with a highlighted snippet."""
    return lookup.search(mind, text, limit)


def event_json(event: Event) -> EventJson:
    """The stored event (``ts`` is when the ledger recorded it) plus ``said_at``: when it was
    said, which for an import is its original time (pmm.domain.when)."""
    return {
        "id": event.id, "ts": event.ts, "said_at": said_at(event), "kind": event.kind,
        "content": event.content, "meta": event.meta, "prev_hash": event.prev_hash, "hash": event.hash,
    }


def hit_json(event: Event, snippet: str) -> SearchHit:
    """A search match: the event as ``event_json`` shows it, plus its highlighted snippet."""
    return {**event_json(event), "snippet": snippet}
