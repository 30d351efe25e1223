"""``pmm export --format md``: a readable transcript, grouped by session.

Each session's events stay together under its heading, in the time they were said
(``meta.original_ts`` for an import), whatever order they were appended in: a turn that a later
export added to an old conversation is shown in that conversation, not after the newest one.
Events that belong to no session (the mind's creation, reflections, notes) stay with the pmm
session they happened in, or, before the first one, at the top. Sessions follow each other in
the time they began.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

from pmm import errors
from pmm.domain.events import Event
from pmm.domain.when import said_at
from pmm.ledger import lookup
from pmm.ledger.store import Ledger

_MD_LABELS = {
    "message_received": "**User**",
    "response_sent": "**Mind**",
    "observation_recorded": "**Remembered**",
    "note_pinned": "**Pinned**",
    "persona_set": "**Persona**",
}
_FETCH = 500  # events read back at once while writing


@dataclass
class _Block:
    """One session (or the events before the first pmm session): what it is shown in order by."""

    start: str
    first_id: int
    imported: bool
    ids: array[int] = field(default_factory=lambda: array("q"))  # pmm's own: in the order written
    entries: list[tuple[int, str, int]] = field(default_factory=list)  # imported: (0 = heading, said, id)

    def add(self, heading: bool, said: str, event_id: int) -> None:
        if self.imported:
            self.entries.append((0 if heading else 1, said, event_id))
        else:
            self.ids.append(event_id)

    def order(self) -> Sequence[int]:
        """The ids in the order shown: an import's heading first, then the time each was said."""
        return [entry[2] for entry in sorted(self.entries)] if self.imported else self.ids


def _session_key(event: Event) -> tuple[str, str] | None:
    """``(source, session id)`` for an event of a session (source "" for pmm's own), else None."""
    if event.kind not in ("session_started", "message_received", "response_sent"):
        return None
    try:
        meta = event.meta
    except errors.IntegrityError:
        return None
    imported = isinstance(meta.get("source_id"), str) and isinstance(meta.get("source"), str)
    session = meta.get("session")
    if event.kind == "session_started" and imported:
        session = meta.get("source_id")
    if not isinstance(session, str) or not session:
        return None
    return (meta["source"] if imported else "", session)


def _blocks(events: Iterator[Event]) -> tuple[list[_Block], int]:
    """The events' ids grouped into blocks, in the order they are shown; and how many events."""
    prelude: _Block | None = None
    sessions: dict[tuple[str, str], _Block] = {}
    current: _Block | None = None  # the pmm session that events of no session happen in
    count = 0
    for e in events:
        count += 1
        key = _session_key(e)
        said = said_at(e)
        if key is None:
            if current is None:
                prelude = prelude or _Block(said, e.id, False)
                prelude.add(False, said, e.id)
            else:
                current.add(False, said, e.id)
            continue
        block = sessions.get(key)
        if block is None:
            block = sessions[key] = _Block(said, e.id, bool(key[0]))
        if e.kind == "session_started" and block.imported:
            block.start = said
        block.add(e.kind == "session_started", said, e.id)
        if not block.imported:
            current = block
    ordered = sorted(sessions.values(), key=lambda b: (b.start, b.first_id))
    return ([prelude] if prelude else []) + ordered, count


def write(mind: Ledger, events: Iterator[Event], out: IO[str]) -> int:
    """Write the transcript; returns how many events it holds. Event text is the author's (a
    model, an imported file), so it only ever fills its slot (``safe_text.md_line`` and
    ``md_quote``): a title cannot start a heading or a turn, a body cannot leave its quote, and
    control characters are shown, not passed on."""
    from pmm.services.safe_text import md_line, md_quote

    out.write(f"# Mind {md_line(mind.mind_id)}\n\n")
    blocks, count = _blocks(events)
    for block in blocks:
        heading_day = None  # an imported session's heading says the day it was imported, once
        for e in _read(mind, block.order()):
            said = said_at(e)
            imported = md_line(e.ts[:10]) if said != e.ts else None  # the day the ledger recorded it
            if e.kind == "session_started":
                heading_day = imported
                mark = f" · imported {imported}" if imported else ""
                out.write(f"\n## {md_line(e.content) or 'Session'}\n\n_{md_line(said)}{mark} · event {e.id}_\n\n")
                continue
            if imported is None or imported != heading_day:
                heading_day = None  # a native event (or another import) ends what the heading covers
            mark = f", imported {imported}" if imported and heading_day is None else ""
            label = _MD_LABELS.get(e.kind) or f"`{md_line(e.kind).replace('`', chr(39))}`"
            out.write(f"{label} ({md_line(said)}{mark}, event {e.id}):\n{md_quote(e.content)}\n\n")
    return count


def _read(mind: Ledger, ids: Sequence[int]) -> Iterator[Event]:
    """The events with ``ids``, in that order, a few hundred at a time."""
    for start in range(0, len(ids), _FETCH):
        chunk = list(ids[start:start + _FETCH])
        found = {e.id: e for e in lookup.get(mind, chunk)}
        for event_id in chunk:
            yield found[event_id]
