"""Reading a mind's events for people: ``pmm log``, ``pmm search``, and how one event is shown."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from pmm import errors
from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.domain.when import said_at
from pmm.ledger import lookup
from pmm.ledger.store import Ledger
from pmm.services.dates import local as local  # a ledger time as a person reads it, for the CLI
from pmm.services.dates import period
from pmm.services.dates import shown as shown  # the one way an event's time is shown to a person, for the CLI

if TYPE_CHECKING:  # the reports are types only
    from pmm.services.reports import EventJson, SearchHit


def when(event: Event) -> str:
    """When ``event`` was said, as a person is shown it (an import: with the day it was imported)."""
    return shown(said_at(event), event.ts)


MAX_ID = 2**63 - 1
_ID = re.compile(r"[0-9]{1,19}")  # ASCII digits: str.isdigit() also takes "²"


class Window:
    """Which events a reader asked for: ids from ``low`` to ``high`` (inclusive) and, as ledger
    timestamps, said from ``since`` (inclusive) to ``until`` (exclusive); None is no bound."""

    def __init__(self, since: str | None = None, until: str | None = None, on: str | None = None,
                 now: datetime | None = None) -> None:
        """``since``/``until``: an event id (digits only) or a date (``pmm.services.dates.period``:
        --since from its start, --until to its end, both inclusive); ``on``: a date only."""
        moment = now or datetime.now().astimezone()
        self.low, self.high = 1, MAX_ID
        self.since: str | None = None
        self.until: str | None = None
        if since is not None:
            if _ID.fullmatch(since):
                self.low = int(since)
            else:
                self.since = period(since, moment)[0]
        if until is not None:
            if _ID.fullmatch(until):
                self.high = int(until)
            else:
                self.until = period(until, moment)[1]
        if on is not None:
            if _ID.fullmatch(on):
                raise errors.UsageError(f"--on takes a date, not an event id ({on})",
                                        hint="e.g. --on 2025-03-01, --on today; ids go with --since/--until")
            start, end = period(on, moment)
            self.since = max(start, self.since or start)
            self.until = min(end, self.until or end)

    @property
    def said(self) -> tuple[str | None, str | None]:
        return self.since, self.until

    @property
    def ids(self) -> tuple[int, int]:
        return self.low, min(self.high, MAX_ID)


def check_kind(kind: str | None) -> None:
    """Refuse a kind pmm does not declare (exit 2), naming the ones it does."""
    if kind is not None and kind not in ev.KINDS:
        raise errors.UsageError(f"unknown event kind {kind!r}", hint="kinds: " + ", ".join(sorted(ev.KINDS)))


def kinds_starting(incomplete: str) -> list[str]:
    """The declared kinds starting with ``incomplete`` (shell completion of --kind)."""
    return [name for name in sorted(ev.KINDS) if name.startswith(incomplete)]


def log(mind: Ledger, n: int, kind: str | None, window: Window | None = None) -> list[Event]:
    """The last ``n`` events (of ``kind``) within ``window``, in id order."""
    check_kind(kind)
    if window is None:
        return mind.tail(n, kind)
    return lookup.tail(mind, n, kind, window.ids, window.said)


def search(mind: Ledger, text: str, limit: int, window: Window | None = None) -> lookup.Found:
    """Full-text matches said within ``window`` (its ids too), best first, each with a highlighted
    snippet; of a word in very many events, the best of the newest ``lookup.RANKED`` matches."""
    if window is None:
        return lookup.search(mind, text, limit)
    return lookup.search(mind, text, limit, window.said, window.ids)


def count(mind: Ledger, text: str, window: Window | None = None) -> int:
    """How many events match ``text`` within ``window``'s dates (``lookup.count_matches``)."""
    if window is None:
        return lookup.count_matches(mind, text)
    return lookup.count_matches(mind, text, window.said, window.ids)


def session_of(event: Event) -> str | None:
    """The session an event belongs to: ``meta.session``, or for an imported session's start its
    ``source_id`` (what ``pmm trace SESSION`` takes)."""
    if '"session"' not in event.meta_json and '"source_id"' not in event.meta_json:
        return None
    try:
        meta = event.meta
    except errors.IntegrityError:
        return None
    found = meta.get("session")
    if found is None and event.kind == ev.SESSION_STARTED.name and meta.get("source"):
        found = meta.get("source_id")
    return found if isinstance(found, str) else None


def event_json(event: Event) -> EventJson:
    """The stored event (``ts`` is when the ledger recorded it) plus ``said_at``: when it was
    said, which for an import is its original time (pmm.domain.when)."""
    return {
        "id": event.id, "ts": event.ts, "said_at": said_at(event), "kind": event.kind,
        "content": event.content, "meta": event.meta, "prev_hash": event.prev_hash, "hash": event.hash,
    }


def hit_json(event: Event, snippet: str, ranked: int | None = None) -> SearchHit:
    """A search match: the event as ``event_json`` shows it, plus its highlighted snippet and
    ``ranked_newest``: None when every match was ranked, else how many (the newest) were."""
    return {**event_json(event), "snippet": snippet, "ranked_newest": ranked}
