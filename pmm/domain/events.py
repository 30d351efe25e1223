"""Event kinds, declared once: name, version, what ``meta`` holds, and a one-line meaning.

An event read back from the ledger is an ``Event``; one about to be appended is a ``Draft``.
``meta`` is stored as canonical JSON text (RFC 8785) and parsed only when a reader needs it.
Changing a kind's meta shape means a new version (``meta["v"]``; absent means 1) and an
upgrade function, never a silent change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pmm import errors

FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "number": (int, float),
    "bool": (bool,),
    "object": (dict,),
    "list": (list,),
}

KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class EventKind:
    """One kind of event: ``meta`` maps field name to (type name, required)."""

    name: str
    doc: str
    meta: dict[str, tuple[str, bool]] = field(default_factory=dict)
    version: int = 1
    content: str = ""


KINDS: dict[str, EventKind] = {}


def declare(kind: EventKind) -> EventKind:
    if kind.name in KINDS or not KIND_PATTERN.fullmatch(kind.name):
        raise ValueError(f"bad or duplicate event kind {kind.name!r}")
    KINDS[kind.name] = kind
    return kind


_SOURCE = {
    "source": ("str", False),
    "source_id": ("str", False),
    "session": ("str", False),
    "original_ts": ("str", False),
}

MIND_CREATED = declare(
    EventKind(
        "mind_created",
        "The genesis of a mind: what created it and the name it was given, if any.",
        {"name": ("str", False), "pmm_version": ("str", True)},
        content="A human-readable line about the creation.",
    )
)
MIND_NAMED = declare(
    EventKind(
        "mind_named",
        "The mind took a (new) name.",
        {"name": ("str", True), "reason": ("str", False)},
        content="The name.",
    )
)
SESSION_STARTED = declare(
    EventKind(
        "session_started",
        "A conversation began; imported conversations keep their original id and time.",
        {**_SOURCE, "title": ("str", False)},
        content="The session title, or empty.",
    )
)
MESSAGE_RECEIVED = declare(
    EventKind(
        "message_received",
        "The user said something to the mind.",
        dict(_SOURCE),
        content="The user's message.",
    )
)
RESPONSE_SENT = declare(
    EventKind(
        "response_sent",
        "The mind (or, for imports, the assistant of the source service) answered. A chat turn"
        " records which model answered, its token usage and latency, the message it answers, the"
        " ids of the events put into the prompt, and an xxhash (XXH3-64) signature of the prompt.",
        {**_SOURCE, "model": ("str", False), "provider": ("str", False),
         "model_name": ("str", False), "reply_to": ("int", False), "tokens_in": ("int", False),
         "tokens_out": ("int", False), "latency_ms": ("int", False), "context": ("list", False),
         "prompt_xxh3": ("str", False), "finish": ("str", False)},
        content="The answer.",
    )
)
OBSERVATION_RECORDED = declare(
    EventKind(
        "observation_recorded",
        "A note the user asked the mind to remember (`pmm remember`).",
        {"source": ("str", False)},
        content="The note.",
    )
)

_MODEL = {
    "name": ("str", True),
    "provider": ("str", True),
    "model": ("str", True),
}
MODEL_ADDED = declare(
    EventKind(
        "model_added",
        "A model was added to the mind's configuration (portable: the name of the variable that"
        " holds the API key is kept, never the key). Prices are per million tokens, optional.",
        {**_MODEL, "base_url": ("str", False), "api_key_env": ("str", False),
         "context_window": ("int", False), "price_in": ("number", False),
         "price_out": ("number", False)},
        content="NAME = PROVIDER:MODEL.",
    )
)
MODEL_REMOVED = declare(
    EventKind(
        "model_removed",
        "A model was removed from the mind's configuration.",
        {"name": ("str", True)},
        content="The model's name.",
    )
)
MODEL_SWITCHED = declare(
    EventKind(
        "model_switched",
        "The mind now speaks (role chat) or reflects (role reflection) through another model;"
        " hash and version are what the provider reported when the switch was made.",
        {**_MODEL, "role": ("str", True), "model_hash": ("str", False),
         "model_version": ("str", False)},
        content="A human-readable line about the switch.",
    )
)
ROLES = ("chat", "reflection")

OCEAN = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")

REFLECTION_RECORDED = declare(
    EventKind(
        "reflection_recorded",
        "The mind reflected on the events since its last reflection (from first_id to last_id)."
        " Parts of the model's output that failed validation are listed in rejected, never"
        " invented or repaired.",
        {"first_id": ("int", True), "last_id": ("int", True), "trigger": ("str", True),
         "model_name": ("str", False), "provider": ("str", False), "model": ("str", False),
         "tokens_in": ("int", False), "tokens_out": ("int", False), "latency_ms": ("int", False),
         "rejected": ("list", False)},
        content="The reflection's text.",
    )
)
TRAIT_ADJUSTED = declare(
    EventKind(
        "trait_adjusted",
        "A reflection asked to move one OCEAN trait by delta; the projection bounds the step"
        " (docs/mind-model.md) and clamps the trait to [0, 1].",
        {"trait": ("str", True), "delta": ("number", True), "reflection": ("int", False)},
        content="The reason given.",
    )
)
COMMITMENT_OPENED = declare(
    EventKind(
        "commitment_opened",
        "The mind committed to something; the commitment's id is this event's id. due is an"
        " optional UTC time; source is reflection, user or conversation (turn: the answer it"
        " came from).",
        {"due": ("str", False), "source": ("str", True), "reflection": ("int", False),
         "turn": ("int", False)},
        content="What was committed to.",
    )
)
COMMITMENT_CLOSED = declare(
    EventKind(
        "commitment_closed",
        "A commitment was kept: evidence names events after it was opened that show it; the"
        " content is the statement. A close without valid evidence changes nothing.",
        {"commitment": ("int", True), "evidence": ("list", True), "reflection": ("int", False),
         "source": ("str", False)},
        content="The statement of how it was kept.",
    )
)
COMMITMENT_EXPIRED = declare(
    EventKind(
        "commitment_expired",
        "An open commitment lapsed: its due time passed, or it stayed open for too many turns.",
        {"commitment": ("int", True), "reason": ("str", True)},
        content="Why it expired.",
    )
)
COMMITMENT_REOPENED = declare(
    EventKind(
        "commitment_reopened",
        "A closed or expired commitment is open again (due: an optional new due time).",
        {"commitment": ("int", True), "due": ("str", False), "source": ("str", False)},
        content="Why it was reopened.",
    )
)


class Event(NamedTuple):
    """One ledger row, exactly as stored."""

    id: int
    ts: str
    kind: str
    content: str
    meta_json: str
    prev_hash: str
    hash: str

    @property
    def meta(self) -> dict[str, Any]:
        try:
            value = json.loads(self.meta_json)
        except ValueError:
            value = None
        if not isinstance(value, dict):  # only an altered file holds such meta
            raise errors.IntegrityError(f"event {self.id} has meta that is not a JSON object",
                                        hint="run `pmm verify` to see what was altered")
        return value


@dataclass(frozen=True)
class Draft:
    """An event to append: the ledger assigns id, ts, prev_hash and hash."""

    kind: str
    content: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def check_draft(draft: Draft) -> None:
    """Raise ``ValueError`` when a draft does not match its kind's declaration."""
    kind = KINDS.get(draft.kind)
    if kind is None:
        raise ValueError(f"unknown event kind {draft.kind!r}")
    unknown = set(draft.meta) - set(kind.meta) - {"v"}
    if unknown:
        raise ValueError(f"{draft.kind}: undeclared meta field {sorted(unknown)[0]!r}")
    for name, (type_name, required) in kind.meta.items():
        if name not in draft.meta:
            if required:
                raise ValueError(f"{draft.kind}: meta field {name!r} is required")
            continue
        value = draft.meta[name]
        types = FIELD_TYPES[type_name]
        if not isinstance(value, types) or (type_name != "bool" and isinstance(value, bool)):
            raise ValueError(f"{draft.kind}: meta field {name!r} must be {type_name}")
