"""``pmm trace``: why an answer is what it is. For a response (or its message): the user's
message, the context events the model saw (by section: standing memory, recalled memory,
recent turns, for answers that recorded them), the model, tokens, latency, and what the turn
changed; for a session: its turns. Each event carries ``ts`` (when the ledger recorded it) and
``said_at`` (when it was said: an import's original time)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from pmm import errors
from pmm.domain import costs
from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.domain.when import said_at
from pmm.ledger import lookup
from pmm.ledger.store import Ledger
from pmm.services import opening

TURN_KINDS = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)
EXCERPT = 200


class Brief(TypedDict):
    """An event the turn saw or appended, cut to an excerpt."""

    id: int
    ts: str
    said_at: str
    kind: str
    excerpt: str
    section: NotRequired[str]  # standing, recalled or recent: only for answers that recorded them


class Said(TypedDict):
    id: int
    ts: str
    said_at: str
    text: str


class Started(TypedDict):
    id: int
    ts: str
    said_at: str
    title: str


class Turn(TypedDict):
    """``pmm trace ID --json`` for an answer (or its message)."""

    kind: Literal["turn"]
    response: Said
    message: Said | None
    session: str | None
    source: str  # "pmm", or where an imported answer came from
    model: dict[str, str]  # model_name, provider, model: those the answer recorded
    tokens_in: int | None  # the whole prompt, cached parts included
    tokens_out: int | None
    tokens_cache_read: int | None
    tokens_cache_write: int | None
    usage_estimated: bool  # the provider reported no usage: pmm estimated the counts
    cost: costs.CostJson | None  # at the prices the answer recorded; None: it recorded none
    latency_ms: int | None
    finish: str | None
    options: list[str]  # the model options the run set (`pmm chat -o`), as "key=value"
    prompt_xxh3: str | None
    context: list[Brief]
    sections: dict[str, list[int]] | None
    missing_context: list[int]
    changed: list[Brief]


class Session(TypedDict):
    """``pmm trace SESSION --json``: its start and each answer's turn."""

    kind: Literal["session"]
    session: str
    started: Started
    turns: list[Turn]


Trace = Turn | Session


def trace(path: Path, ref: str | None) -> Trace:
    """``ref``: an event id, a session id, or None / "last" for the latest answer."""
    with opening.open_read(path) as mind:
        if ref is None or ref == "last":
            latest = lookup.latest(mind, [ev.RESPONSE_SENT.name], 1)
            if not latest:
                raise errors.UsageError("this mind has no answers yet", hint="talk to it: pmm chat")
            return turn(mind, latest[0])
        if re.fullmatch(r"[0-9]{1,30}", ref):  # ASCII digits: str.isdigit() also takes "²"
            try:
                return _by_id(mind, int(ref))
            except errors.UsageError:
                # the start of a session id that `pmm log` shows can be all digits (a 32-hex-digit
                # id starts with eight of them once in 43): no such event, so try the session
                if len(ref) < PREFIX or not lookup.session_ids_starting(mind, ref, 1):
                    raise
                return session(mind, ref)
        if SESSION_ID.fullmatch(ref):
            return session(mind, ref)
    raise errors.UsageError(f"{ref!r} is neither an event id nor a session id",
                            hint="e.g. pmm trace 42, or pmm trace last")


# a native session's 32 hex digits, an import's conversation id (a UUID, or the service's own)
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
PREFIX = 6  # the shortest start of a session id trace takes (`pmm log` shows the first 8)


def _by_id(mind: Ledger, event_id: int) -> Trace:
    found = lookup.get(mind, [event_id]) if 0 < event_id < 2**63 else []  # SQLite's INTEGER
    if not found:
        raise errors.UsageError(f"there is no event {event_id} (the mind has {mind.head()[0]})")
    event = found[0]
    if event.kind == ev.RESPONSE_SENT.name:
        return turn(mind, event)
    if event.kind == ev.MESSAGE_RECEIVED.name:
        answer = lookup.answer_to(mind, event)
        answers = [answer] if answer is not None else []
        if not answers:  # imported conversations name no reply: the next answer in its session
            following = [e for e in lookup.get(mind, range(event.id + 1, event.id + 3))
                         if e.kind == ev.RESPONSE_SENT.name and e.meta.get("session") == event.meta.get("session")]
            answers = following[:1]
        if not answers:
            raise errors.UsageError(f"event {event_id} is a message that was never answered")
        return turn(mind, answers[0])
    if event.kind == ev.SESSION_STARTED.name and event.meta.get("session"):
        return session(mind, event.meta["session"])
    raise errors.UsageError(f"event {event_id} is a {event.kind}, not part of a chat turn",
                            hint="trace a response, a message or a session (see pmm log)")


def _started(mind: Ledger, session_id: str) -> list[Event]:
    """The event that started the session: a native one names it in ``meta.session``, an
    imported one keeps the conversation's id in ``meta.source_id``."""
    found = lookup.session_start(mind, session_id)
    return [found] if found is not None else []


def _brief(event: Event) -> Brief:
    text = " ".join(event.content.split())
    return {"id": event.id, "ts": event.ts, "said_at": said_at(event), "kind": event.kind,
            "excerpt": text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"}


def turn(mind: Ledger, response: Event) -> Turn:
    meta = response.meta
    message = None
    if isinstance(meta.get("reply_to"), int):
        found = lookup.get(mind, [meta["reply_to"]])
        message = found[0] if found else None
    if message is None:  # imported: the message just before it in the same session
        earlier = [e for e in lookup.get(mind, range(max(1, response.id - 2), response.id))
                   if e.kind == ev.MESSAGE_RECEIVED.name]
        message = earlier[-1] if earlier else None
    context = [_brief(e) for e in lookup.get(mind, _ids(meta.get("context")))]
    sections = _sections(meta)
    if sections is not None:
        where = {i: name for name, ids in sections.items() for i in ids}
        for brief in context:
            brief["section"] = where.get(brief["id"], "recent")
    changed = [_brief(e) for e in _changed_by(mind, response)]
    paid = costs.spent(meta) if "provider" in meta else None  # an imported answer cost pmm nothing
    return {
        "kind": "turn",
        "response": {"id": response.id, "ts": response.ts, "said_at": said_at(response), "text": response.content},
        "message": ({"id": message.id, "ts": message.ts, "said_at": said_at(message), "text": message.content}
                    if message else None),
        "session": meta.get("session"),
        "source": meta.get("source", "pmm"),
        # named as chat --json and model info name a model: its name in the mind is ``name``
        "model": {("name" if k == "model_name" else k): meta[k]
                  for k in ("model_name", "provider", "model") if k in meta},
        "tokens_in": meta.get("tokens_in"),
        "tokens_out": meta.get("tokens_out"),
        "tokens_cache_read": meta.get("tokens_cache_read"),
        "tokens_cache_write": meta.get("tokens_cache_write"),
        "usage_estimated": meta.get("usage_estimated") is True,
        "cost": paid.as_json() if paid is not None else None,
        "latency_ms": meta.get("latency_ms"),
        "finish": meta.get("finish"),
        "options": [o for o in meta.get("options") or [] if isinstance(o, str)],
        "prompt_xxh3": meta.get("prompt_xxh3"),
        "context": context,
        "sections": sections,
        "missing_context": sorted(set(_ids(meta.get("context"))) - {c["id"] for c in context}),
        "changed": changed,
    }


def _sections(meta: dict[str, Any]) -> dict[str, list[int]] | None:
    """Which context ids were standing memory, recalled memory and recent turns; ``None``
    for an answer recorded before pmm kept the sections (or an imported one)."""
    if "standing" not in meta and "recalled" not in meta:
        return None
    standing, recalled = _ids(meta.get("standing")), _ids(meta.get("recalled"))
    named = set(standing) | set(recalled)
    return {"standing": standing, "recalled": recalled,
            "recent": [i for i in _ids(meta.get("context")) if i not in named]}


def _ids(value: Any) -> list[int]:
    """Event ids from a meta list (only an altered file holds anything else: it is left out)."""
    if not isinstance(value, list):
        return []
    return [i for i in value if type(i) is int and 0 < i < 2**63]


def _changed_by(mind: Ledger, response: Event) -> list[Event]:
    """Events the turn itself appended after its answer (they name it in ``meta.turn``)."""
    changed = []
    for event in lookup.get(mind, range(response.id + 1, response.id + 33)):
        if event.meta.get("turn") != response.id:
            break
        changed.append(event)
    return changed


def session(mind: Ledger, session_id: str) -> Session:
    """A session by its id, or by the start of it that `pmm log` shows (when only one fits); an
    imported session is named by its conversation's id (its start's ``meta.source_id``)."""
    started = _started(mind, session_id)
    if not started and len(session_id) >= PREFIX:
        fits = lookup.session_ids_starting(mind, session_id, 2)
        if len(fits) > 1:
            raise errors.UsageError(f"more than one session starts with {session_id}",
                                    hint="give more of its id: `pmm log` shows the first 8 characters,"
                                         " `pmm log --json` the whole id (meta.session)")
        if fits:
            session_id = fits[0]
            started = _started(mind, session_id)
    if not started:
        raise errors.UsageError(f"there is no session {session_id}",
                                hint="session ids are in `pmm log` and `pmm trace ID --json`")
    turns = lookup.session_answers(mind, session_id, started[0].id)
    return {
        "kind": "session",
        "session": session_id,
        "started": {"id": started[0].id, "ts": started[0].ts, "said_at": said_at(started[0]),
                    "title": started[0].content},
        "turns": [turn(mind, response) for response in turns],
    }
