"""``--as-of ID|DATE``: the mind as it was at an earlier event. The point is an event id, or a
date meaning the last event recorded at or before it; the projections are replayed up to it from
the nearest snapshot (pmm.ledger.past), and reads see only the events up to it. See docs/time.md."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypedDict

from pmm import errors
from pmm.domain.states import States
from pmm.ledger import folded, lookup, past
from pmm.ledger.store import Ledger
from pmm.services import dates, opening

_ID = re.compile(r"[0-9]{1,19}")  # ASCII digits only
FORMS = f"an event id (digits) or a date: {dates.DATE_FORMS} (local time; Z or +HH:MM for another zone)"


class PointJson(TypedDict):
    """Where ``--as-of`` (or a side of ``pmm diff``) stood: the event, its hash and time, what
    was asked for, and the replay's start (0: the first event, else a snapshot or the cache)."""

    asked: str
    id: int
    hash: str
    ts: str
    replayed_from: int
    replayed: int  # events folded from there


@dataclass(frozen=True)
class Point:
    """An event of a mind: the one ``--as-of`` names."""

    asked: str
    id: int
    hash: str
    ts: str

    def said(self) -> str:
        return f"As of event #{self.id:,} (recorded {dates.local(self.ts)})"


def point(mind: Ledger, text: str, now: datetime | None = None) -> Point:
    """The event ``text`` names in ``mind``: an id from 1 to the head, or a date (the last event
    recorded at or before its end: ``2025-03-01`` is that whole day). Anything else, an id the
    mind does not have or a time before its first event, is a usage error (exit 2)."""
    head_id, _ = mind.head()
    asked = text.strip()
    if head_id == 0:
        raise errors.UsageError("this mind has no events yet: there is no earlier point to show")
    if _ID.fullmatch(asked):
        event_id = int(asked)
        if not 1 <= event_id <= head_id:
            raise errors.UsageError(f"there is no event #{event_id} in {mind.path} (it has events 1 to {head_id:,})",
                                    hint="pmm log shows the ids; or give a date")
    else:
        try:
            _, end = dates.period(asked, now or datetime.now().astimezone())
        except errors.UsageError:
            raise errors.UsageError(f"{asked!r} is neither an event id nor a date", hint=f"use {FORMS}") from None
        found = past.last_before(mind, end)
        if found is None:
            first = lookup.get(mind, [1])
            began = f": its first event was recorded {dates.local(first[0].ts)}" if first else ""
            raise errors.UsageError(f"{mind.path} holds no event recorded at or before {asked}{began}",
                                    hint="give a later date, or an event id")
        event_id = found
    (event,) = lookup.get(mind, [event_id])
    return Point(asked, event.id, event.hash, event.ts)


@dataclass
class Past:
    """The projections after ``point``'s event, and where their replay began."""

    point: Point
    states: States
    replayed_from: int

    def as_json(self) -> PointJson:
        p = self.point
        return {"asked": p.asked, "id": p.id, "hash": p.hash, "ts": p.ts,
                "replayed_from": self.replayed_from, "replayed": p.id - self.replayed_from}

    def said(self) -> str:
        """One line for stderr: which event, when, and what the replay started from."""
        start = ("the first event" if not self.replayed_from
                 else f"the states stored at #{self.replayed_from:,}")
        return f"{self.point.said()}: replayed {self.point.id - self.replayed_from:,} events from {start}"


def at(mind: Ledger, text: str) -> Past:
    """The mind at the point ``text`` names (``point``), replayed (never writes)."""
    where = point(mind, text)
    merged = past.first_merge(mind.conn)
    if merged is not None and merged <= where.id:  # a merge folds again from its fork: all of it
        return Past(where, folded.replay_all(mind, where.id), 0)
    states, base = past.replay_to(mind, where.id)
    return Past(where, states, base)


@contextlib.contextmanager
def opened(path: Path, text: str, *, index: bool = False) -> Iterator[tuple[Ledger, Past]]:
    """``path`` opened read-only as it was at ``text``'s point: the states then, and a ledger
    whose reads end at that event (with ``index``: searched over an index of those events only,
    so recall ranks by the past's word statistics)."""
    with opening.open_read(path) as mind:
        then = at(mind, text)
        with past.view(mind, then.point.id, index=index):
            yield mind, then


@contextlib.contextmanager
def ending(path: Path, text: str) -> Iterator[tuple[Ledger, Point]]:
    """``path`` opened read-only with reads that end at ``text``'s point (no replay: ``pmm log``)."""
    with opening.open_read(path) as mind:
        where = point(mind, text)
        with past.view(mind, where.id):
            yield mind, where
