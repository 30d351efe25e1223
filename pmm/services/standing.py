"""Standing memory and the mind's name: pinned notes (``pmm remember --pin``, ``pmm unpin``,
``pmm pins``), the persona (``pmm persona``) and ``pmm rename``.

Every change is one event, checked against the mind as it is inside the transaction that
appends it; the ``standing`` projection (pmm.domain.projections) holds the result, and
``projections.standing`` is what the prompt builder reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

from pmm import errors
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.domain.states import Note as StateNote
from pmm.domain.states import StandingState
from pmm.ledger import folded
from pmm.ledger.store import Ledger
from pmm.services import opening

# Bounds, in characters, so that standing memory cannot crowd everything else out of a prompt
# (the embedded model's window holds about 6,000 characters). Over them: input rejected (exit 6).
PERSONA_MAX_CHARS = 2000
PIN_MAX_CHARS = 1000
PINS_MAX = 20

class Note(TypedDict):
    """A pinned note or the persona: the id of the event that set it, its text, when."""

    id: int
    text: str
    ts: str


ANY = -1  # set_persona's ``based_on`` when the caller did not start from a particular persona


class _Unchanged(Exception):
    """Raised inside a write transaction when the change is already so: it rolls back, so a
    no-op writes nothing at all (not even the projection cache)."""


def _append_one(mind: Ledger, draft: Callable[[int], Draft]) -> Event | None:
    """Append the draft that ``draft(first_id)`` returns; None when it raised ``_Unchanged``."""
    try:
        (event,) = mind.append(lambda first: [draft(first)])
    except _Unchanged:
        return None
    return event


def pin(path: Path, text: str, notify: opening.Notify) -> Event:
    """Append a pinned note (stripped, at most ``PIN_MAX_CHARS``; at most ``PINS_MAX`` pinned)."""
    text = _text(text, "note", PIN_MAX_CHARS)
    with opening.open_write(path, notify) as mind:

        def drafts(_first: int) -> list[Draft]:
            pinned = _state(mind)["pinned"]
            if len(pinned) >= PINS_MAX:
                raise errors.InputRejected(
                    f"{PINS_MAX} notes are pinned already, the most a mind holds",
                    hint="unpin one first (`pmm pins` lists them, `pmm unpin ID`), or"
                         " `pmm remember` it without --pin")
            return [Draft(ev.NOTE_PINNED.name, text, {"source": "user"})]

        (event,) = mind.append(drafts)
    return event


def unpin(path: Path, note: int) -> Event:
    """Append the unpinning of the pinned note ``note``; anything else is a usage error."""
    with _existing(path) as mind:

        def drafts(_first: int) -> list[Draft]:
            if not any(entry["id"] == note for entry in _state(mind)["pinned"]):
                raise errors.UsageError(f"#{note} is not a pinned note: {_what(mind, note)}",
                                        hint="`pmm pins` lists the pinned notes and their ids")
            return [Draft(ev.NOTE_UNPINNED.name, f"Unpinned note #{note}", {"note": note})]

        (event,) = mind.append(drafts)
    return event


def _what(mind: Ledger, event_id: int) -> str:
    found = next(mind.events(since=event_id), None)
    if found is None or found.id != event_id:
        return "there is no such event"
    if found.kind == ev.NOTE_PINNED.name:
        return "it was unpinned already"
    return f"it is a {found.kind} event"


def pins(path: Path) -> list[Note]:
    """The pinned notes, oldest pin first: id, text, when pinned."""
    with opening.open_read(path) as mind:
        return [_note(entry) for entry in _state(mind)["pinned"]]


def persona(path: Path) -> Note | None:
    """The persona (id of the event that set it, text, time), or None."""
    with opening.open_read(path) as mind:
        found = _state(mind)["persona"]
    return _note(found) if found else None


def _note(entry: StateNote) -> Note:
    return {"id": entry["id"], "text": entry["text"], "ts": entry["ts"]}  # the standing state's entry


def set_persona(path: Path, text: str, notify: opening.Notify, *, based_on: int | None = ANY
                ) -> Event | None:
    """Append ``text`` as the persona; None (nothing written) when it is the persona already.

    ``based_on``: the id of the persona the text was edited from (None: there was none); if
    another one was set meanwhile, the edit is refused rather than silently replacing it."""
    text = _text(text, "persona", PERSONA_MAX_CHARS)
    with opening.open_write(path, notify) as mind:

        def draft(_first: int) -> Draft:
            current = _state(mind)["persona"]
            if based_on != ANY and (current["id"] if current else None) != based_on:
                now = f"event #{current['id']}" if current else "it was cleared"
                raise errors.UsageError(f"the persona changed while it was being edited ({now});"
                                        " nothing written", hint="run `pmm persona edit` again")
            if current is not None and current["text"] == text:
                raise _Unchanged()
            return Draft(ev.PERSONA_SET.name, text, {"source": "user"})

        return _append_one(mind, draft)


def clear_persona(path: Path) -> Event | None:
    """Append the clearing of the persona; None (nothing written) when there is none."""
    with _existing(path) as mind:

        def draft(_first: int) -> Draft:
            if _state(mind)["persona"] is None:
                raise _Unchanged()
            return Draft(ev.PERSONA_CLEARED.name, "Persona cleared")

        return _append_one(mind, draft)


def rename(path: Path, name: str, notify: opening.Notify) -> Event | None:
    """Append ``mind_named`` for the user's ``name`` (``opening.valid_name``); None when the mind
    is called that already."""
    name = opening.valid_name(name)
    with opening.open_write(path, notify) as mind:

        def draft(_first: int) -> Draft:
            if folded.state(mind)[0]["identity"]["name"] == name:
                raise _Unchanged()
            return Draft(ev.MIND_NAMED.name, name, {"name": name, "reason": "renamed by the user"})

        return _append_one(mind, draft)


def _text(text: str, what: str, limit: int) -> str:
    text = text.strip()
    if not text:
        raise errors.UsageError(f"the {what} is empty", hint=f"give the {what}'s text, or - to read it from stdin")
    if len(text) > limit:
        raise errors.InputRejected(f"the {what} has {len(text):,} characters; at most {limit:,} fit",
                                   hint="shorten it: it goes into every prompt")
    return text


def _state(mind: Ledger) -> StandingState:
    return folded.state(mind)[0]["standing"]


def _existing(path: Path) -> Ledger:
    """A writer on a mind that must exist already: removing something from a mind that is not
    there is a missing file (exit 4), not a reason to make a new one."""
    return opening.witnessed(Ledger.open(path, write=True))
