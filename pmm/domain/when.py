"""When an event happened, as opposed to when the ledger recorded it.

``Event.ts`` is the append time: hashed, strictly the ledger's own clock, never rewritten. An
imported event keeps the time it was originally said in ``meta.original_ts`` (checked as a
timestamp when it is appended, imported or verified). What a person or a model is shown as an
event's date is ``said_at``: the original time when there is one, else the append time.
"""

from __future__ import annotations

from pmm import errors
from pmm.domain.events import Event
from pmm.domain.shapes import is_ts


def said_at(event: Event) -> str:
    """The event's original time (``meta.original_ts``) if it has one, else its ``ts``."""
    if '"original_ts"' not in event.meta_json:  # most events: no JSON parse
        return event.ts
    try:
        original = event.meta.get("original_ts")
    except errors.IntegrityError:  # meta that is not an object (an altered file): the ledger's time
        return event.ts
    return original if type(original) is str and is_ts(original) else event.ts


def is_backdated(event: Event) -> bool:
    """Whether the event was said at another time than it was recorded (an import)."""
    return said_at(event) != event.ts


def shown(said: str, recorded: str) -> str:
    """An event's time for a person, from its ``said_at`` and ``ts``: ``2025-03-01 10:00:00``,
    and for an import also the day it was recorded: ``2025-03-01 10:00:00 (imported 2026-12-01)``.
    (pmm.services.dates.shown is the local-time one the CLI uses.)"""
    when = said[:19].replace("T", " ")
    return when if said == recorded else f"{when} (imported {recorded[:10]})"
