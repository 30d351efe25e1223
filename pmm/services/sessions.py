"""Sessions: the conversations a mind holds (its own chats and imported ones), for
``pmm sessions``, ``pmm chat -c`` / ``--session ID`` and the REPL's ``/sessions``.

A session's title is its ``session_started`` content (an imported conversation's title, or
``pmm chat --title``), else its first message, clipped. Its dates are when its turns were said
(the original time for imported ones). Withdrawn answers (``/retry``) are not counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, TypedDict

from pmm import errors
from pmm.domain.events import Event
from pmm.ledger import lookup
from pmm.ledger import sessions as rows
from pmm.ledger.session_table import Summary
from pmm.ledger.store import Ledger
from pmm.services import opening
from pmm.services.safe_text import clip

TITLE_CHARS = 60
PAGE = 200


class SessionJson(TypedDict):
    session: str
    title: str
    titled: bool  # False: the title is the first message, not one the session was given
    first_said: str  # said at (UTC), the original time for imported sessions
    last_said: str
    messages: int
    first_id: int
    last_id: int
    source: str | None  # "chatgpt", "claude" for an imported session, else None


class Session(NamedTuple):
    id: str
    title: str
    titled: bool
    first: str
    last: str
    messages: int
    first_id: int
    last_id: int
    source: str | None

    def as_json(self) -> SessionJson:
        return {"session": self.id, "title": self.title, "titled": self.titled,
                "first_said": self.first, "last_said": self.last, "messages": self.messages,
                "first_id": self.first_id, "last_id": self.last_id, "source": self.source}


def hidden(mind: Ledger) -> set[int]:
    """The withdrawn answers (``/retry``): kept in the chain, never in a prompt."""
    found: set[int] = set()
    for event in rows.withdrawals(mind):
        target = event.meta.get("response")
        if type(target) is int:
            found.add(target)
    return found


def _described(mind: Ledger, found: list[Summary]) -> list[Session]:
    """``found`` with their titles and sources: their starts and first messages, read by id."""
    starts = {e.id: e for e in lookup.get(mind, [r.start_id for r in found if r.start_id])}
    firsts = {e.id: e for e in lookup.get(mind, [r.first_message for r in found if r.first_message])}
    sessions = []
    for row in found:
        start = starts.get(row.start_id) if row.start_id else None
        title = " ".join(start.content.split()) if start is not None else ""
        titled = bool(title)
        if not title and row.first_message in firsts:
            title = " ".join(firsts[row.first_message].content.split())
        source = start.meta.get("source") if start is not None else None
        sessions.append(Session(row.session, clip(title, TITLE_CHARS), titled, row.first_said,
                                row.last_said, row.messages, row.first_id, row.last_id,
                                source if isinstance(source, str) else None))
    return sessions


def of_mind(mind: Ledger) -> list[Session]:
    """Every session, the one with the newest activity last."""
    return _described(mind, rows.summaries(mind))


def newest(mind: Ledger, limit: int) -> list[Session]:
    """The ``limit`` sessions with the newest activity, the newest last (a few rows read)."""
    return _described(mind, rows.newest(mind, limit))


def listing(path: Path, limit: int | None = None) -> list[Session]:
    """``pmm sessions``: the newest ``limit`` sessions (all when None), newest last."""
    with opening.open_read(path) as mind:
        return newest(mind, limit) if limit else of_mind(mind)


def resolve(mind: Ledger, ref: str) -> Session:
    """The session ``ref`` names: its id, or a prefix of one that no other id shares."""
    ref = ref.strip()
    matches, count = rows.named(mind, ref)
    if count == 1:
        return _described(mind, matches)[0]
    if not count:
        raise errors.UsageError(f"there is no session {ref!r}",
                                hint="`pmm sessions` lists them; `pmm chat --title T` starts a named one")
    raise errors.UsageError(f"{ref!r} is the start of {count} session ids",
                            hint="give more of the id (`pmm sessions` lists them)")


def latest(mind: Ledger) -> Session | None:
    """The session with the newest activity (``pmm chat -c``), or None in a mind without one."""
    found = newest(mind, 1)
    return found[-1] if found else None


def last_exchange(mind: Ledger, session: str) -> tuple[Event, Event] | None:
    """The newest answer of ``session`` that is not withdrawn, with the message it replies to."""
    gone = hidden(mind)
    before = None
    while True:
        page = rows.turns_of(mind, session, PAGE, before)
        for at, event in enumerate(page):
            if event.kind == "response_sent" and event.id not in gone:
                reply_to = event.meta.get("reply_to")
                if type(reply_to) is int:
                    message = lookup.get(mind, [reply_to])
                else:  # an imported answer: the message before it in its session
                    message = [e for e in page[at + 1:at + 2] if e.kind == "message_received"]
                if message and message[0].kind == "message_received":
                    return message[0], event
                return None
        if len(page) < PAGE:
            return None
        before = page[-1].id
