"""Event kinds, declared once: name, version, what ``meta`` holds, and a one-line meaning.

An event read back from the ledger is an ``Event``; one about to be appended is a ``Draft``.
``meta`` is stored as canonical JSON text (RFC 8785) and parsed only when a reader needs it.
Changing a kind's meta shape means a new version (``meta["v"]``; absent means 1) and an
upcaster (``@upcaster(kind, from_version)``: a pure function from that version's meta to the
next one's), never a silent change. Stored events are never rewritten (the hash chain covers
them): ``upcast`` brings an older event's meta to the kind's current version as the projections
read it, v1 -> v2 -> v3, and the result must pass the current declaration. The declarations are
the one schema: ``check_draft`` holds every append to it and ``check_row`` every event that
verify, import and restore read (through ``pmm.ledger.chain.check_chain``), an older version
once upcast; ``RULES`` documents both in docs/event-kinds.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pmm import errors
from pmm.domain import upcasters
from pmm.domain.shapes import (
    MAX_DEPTH,
    MAX_ID,
    TS_TEXT,
    Field,
    compile_meta,
)

KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
KIND_BYTES = re.compile(KIND_PATTERN.pattern.encode())

# One limit for every event, on what is stored: content plus canonical meta, in UTF-8 bytes.
# An export line (pmm.ledger.jsonl.MAX_LINE, 64 MiB) carries both as JSON strings, where
# escaping grows a byte to at most 6 (a control character becomes \u00XX), so 8 MiB leaves
# room for the worst case and for the other fields: whatever pmm writes, it can import.
MAX_EVENT_BYTES = 8 * 1024 * 1024


RULES = f"""\
Every event pmm appends, imports, verifies or restores must have this shape; anything else
is refused (`pmm verify`: exit 3 naming the event; `pmm import`: exit 6 naming the line,
nothing written; `pmm restore`: refused through verify). So the projections and commands can
rely on every event they read.

- `ts`: a UTC timestamp of the form {TS_TEXT}, a real date and time.
- Size: content plus the canonical meta text at most {MAX_EVENT_BYTES // (1024 * 1024)} MiB
  (UTF-8 bytes). Appending more is refused (exit 6). This keeps every event well inside the
  export's line limit (64 MiB) even when JSON escaping grows the text six-fold.
- Text is valid UTF-8: no lone surrogates (`\\ud800` in JSON).
- `meta` is a JSON object, stored as RFC 8785 canonical JSON: no NaN or Infinity, no number
  a double cannot hold, no field the kind does not list below except `"v"`, the kind's
  version (absent means 1), and every field of the type and range listed. Ids are integers
  from 1 to 2^53-1.
- A kind this pmm does not know (written by a newer pmm) is accepted when its name is
  lower-case letters, digits and `_` (at most 64) and its meta a JSON object nested at most
  {MAX_DEPTH} deep: its hash is checked like any other, and projections ignore it.
- A known kind with a `"v"` newer than the one listed here is refused: its meaning is not
  one this pmm knows, and upgrading pmm reads it.
- A known kind with an older `"v"` (or none, meaning 1) is read through its upgrade (listed
  under the kind): its stored meta stays as it was written, in the hash chain, and what the
  upgrade makes of it must fit the shape listed here."""


class EventKind(NamedTuple):
    """One kind of event: ``meta`` maps each field name to its ``Field``."""

    name: str
    doc: str
    meta: dict[str, Field]
    version: int = 1
    content: str = ""


KINDS: dict[str, EventKind] = {}
VERSIONED: dict[str, int] = {}  # kinds past version 1, with their current version
META_CHECKS: dict[str, Callable[[dict[str, Any]], str | None]] = {}
FAST_PATTERNS: dict[bytes, tuple[re.Pattern[bytes], tuple[bytes, ...]] | None] = {}  # by kind, as met


def declare(kind: EventKind) -> EventKind:
    if kind.name in KINDS or not KIND_PATTERN.fullmatch(kind.name):
        raise ValueError(f"bad or duplicate event kind {kind.name!r}")
    KINDS[kind.name] = kind
    META_CHECKS[kind.name] = compile_meta(kind.name, kind.meta, kind.version)
    if kind.version > 1:
        VERSIONED[kind.name] = kind.version
    FAST_PATTERNS.clear()  # each built again on first use: compiling them all takes tens of ms
    return kind


STR, STR_REQUIRED, TS = Field("str"), Field("str", True), Field("str", ts=True)
ID, ID_REQUIRED = Field("int", low=1, high=MAX_ID), Field("int", True, low=1, high=MAX_ID)
COUNT = Field("int")  # token counts and latencies: older pmm stored whatever a provider said
IDS = Field("list", items="int", low=1, high=MAX_ID)

_SOURCE = {"source": STR, "source_id": STR, "session": STR, "original_ts": TS}
PRICE = Field("number", low=0, high=1_000_000)  # per million tokens
CURRENCY = STR  # an ISO 4217 code such as USD (pmm model add/set checks it)
# What a model call cost (pmm.domain.costs): the cached parts of tokens_in, whether the counts
# were estimated (the provider reported none), and the prices in force, per million tokens.
_USAGE = {"tokens_cache_read": COUNT, "tokens_cache_write": COUNT, "usage_estimated": Field("bool"),
          "price_in": PRICE, "price_out": PRICE, "price_cache_read": PRICE, "price_cache_write": PRICE,
          "currency": CURRENCY}
_USAGE_DOC = (" Usage: tokens_in is the whole prompt, of which tokens_cache_read were read from"
              " the provider's prompt cache and tokens_cache_write written to it; usage_estimated"
              " marks counts pmm estimated because the provider reported none. While the model has"
              " prices, the prices in force (per million tokens) and their currency are recorded,"
              " so the cost stays what it was when prices change (docs/costs.md).")

MIND_CREATED = declare(
    EventKind(
        "mind_created",
        "The genesis of a mind: what created it and the name it was given, if any.",
        {"name": STR, "pmm_version": STR_REQUIRED},
        content="A human-readable line about the creation.",
    )
)
MIND_NAMED = declare(
    EventKind(
        "mind_named",
        "The mind took a (new) name.",
        {"name": STR_REQUIRED, "reason": STR},
        content="The name.",
    )
)
SESSION_STARTED = declare(
    EventKind(
        "session_started",
        "A conversation began; imported conversations keep their original id and time.",
        {**_SOURCE, "title": STR},
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
        " ids of the events put into the prompt (`context`; newer answers also say which of them"
        " were standing and which recalled memory, the rest being recent turns: `standing`,"
        " `recalled`), an xxhash (XXH3-64) signature of the prompt, and the model options the"
        " run set (`pmm chat -o`: `options`, such as `temperature=0.2`; absent: the defaults)."
        + _USAGE_DOC,
        {**_SOURCE, "model": STR, "provider": STR, "model_name": STR, "reply_to": ID,
         "tokens_in": COUNT, "tokens_out": COUNT, "latency_ms": COUNT, "context": IDS,
         "standing": IDS, "recalled": IDS, "prompt_xxh3": STR, "finish": STR,
         "options": Field("list", items="str"), **_USAGE},
        content="The answer.",
    )
)
RESPONSE_WITHDRAWN = declare(
    EventKind(
        "response_withdrawn",
        "An answer was withdrawn (`/retry` in `pmm chat`): the response_sent named by response"
        " stays in the chain but no longer enters the model's context, recalled or recent; the"
        " answer recorded with it replies to the same message (message) instead.",
        {"response": ID_REQUIRED, "message": ID, "session": STR},
        content="A human-readable line about the withdrawal.",
    )
)
OBSERVATION_RECORDED = declare(
    EventKind(
        "observation_recorded",
        "A note the user asked the mind to remember (`pmm remember`).",
        {"source": STR},
        content="The note.",
    )
)

NOTE_PINNED = declare(
    EventKind(
        "note_pinned",
        "A standing note (`pmm remember --pin`): always in the prompt, after the persona,"
        " until a note_unpinned names it. A kind of its own, not a field on"
        " observation_recorded, so that a pmm that predates it still verifies and imports it.",
        {"source": STR},
        content="The note.",
    )
)
NOTE_UNPINNED = declare(
    EventKind(
        "note_unpinned",
        "A pinned note (the note_pinned event named by note) is no longer always in the prompt.",
        {"note": ID_REQUIRED},
        content="A human-readable line about the unpinning.",
    )
)
PERSONA_SET = declare(
    EventKind(
        "persona_set",
        "The mind's persona: text always at the head of the prompt (`pmm persona set|edit`),"
        " replacing any earlier one. Empty content clears it, as persona_cleared does.",
        {"source": STR},
        content="The persona's text.",
    )
)
PERSONA_CLEARED = declare(
    EventKind(
        "persona_cleared",
        "The mind has no persona any more (`pmm persona clear`).",
        {},
        content="A human-readable line about the clearing.",
    )
)

_MODEL = {"name": STR_REQUIRED, "provider": STR_REQUIRED, "model": STR_REQUIRED}
MODEL_ADDED = declare(
    EventKind(
        "model_added",
        "A model was added to the mind's configuration (portable: the name of the variable that"
        " holds the API key is kept, never the key). Prices are per million tokens, optional, in"
        " currency (an ISO 4217 code; absent: USD); unset cache prices charge price_in. max_cost"
        " caps what the model may spend per UTC day, in that currency.",
        {**_MODEL, "base_url": STR, "api_key_env": STR,
         "context_window": Field("int", low=1, high=MAX_ID),
         "price_in": PRICE, "price_out": PRICE, "price_cache_read": PRICE, "price_cache_write": PRICE,
         "currency": CURRENCY, "max_cost": Field("number", low=0, high=1_000_000_000)},
        content="NAME = PROVIDER:MODEL.",
    )
)
MODEL_CHANGED = declare(
    EventKind(
        "model_changed",
        "A model's settings were changed (`pmm model set`): meta holds the model's whole new"
        " setting, as model_added does, and `changed` names the fields that differ from before."
        " The name stays; switches to it now use the new setting.",
        {**MODEL_ADDED.meta, "changed": Field("list", True, items="str")},
        content="NAME: FIELD, FIELD changed (PROVIDER:MODEL).",
    )
)
MODEL_REMOVED = declare(
    EventKind(
        "model_removed",
        "A model was removed from the mind's configuration.",
        {"name": STR_REQUIRED},
        content="The model's name.",
    )
)
ROLES = ("chat", "reflection")
MODEL_SWITCHED = declare(
    EventKind(
        "model_switched",
        "The mind now speaks (role chat) or reflects (role reflection) through another model;"
        " hash and version are what the provider reported when the switch was made.",
        {**_MODEL, "role": Field("str", True, choices=ROLES), "model_hash": STR,
         "model_version": STR},
        content="A human-readable line about the switch.",
    )
)

OCEAN = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")

REFLECTION_RECORDED = declare(
    EventKind(
        "reflection_recorded",
        "The mind reflected on the events since its last reflection (from first_id to last_id)."
        " Parts of the model's output that failed validation are listed in rejected, never"
        " invented or repaired." + _USAGE_DOC,
        {"first_id": Field("int", True, low=0, high=MAX_ID),
         "last_id": Field("int", True, low=0, high=MAX_ID), "trigger": STR_REQUIRED,
         "model_name": STR, "provider": STR, "model": STR, "tokens_in": COUNT,
         "tokens_out": COUNT, "latency_ms": COUNT, "rejected": Field("list", items="str"), **_USAGE},
        content="The reflection's text.",
    )
)
SUMMARY_RECORDED = declare(
    EventKind(
        "summary_recorded",
        "The mind condensed its reflections (covers: their ids, oldest first) and its previous"
        " summary (previous) into one standing summary, shown in every prompt until the next"
        " one. The reflections stay in the ledger." + _USAGE_DOC,
        {"covers": Field("list", True, items="int", low=1, high=MAX_ID), "previous": ID,
         "trigger": STR_REQUIRED, "model_name": STR, "provider": STR, "model": STR,
         "tokens_in": COUNT, "tokens_out": COUNT, "latency_ms": COUNT, **_USAGE},
        content="The summary's text.",
    )
)
TRAIT_ADJUSTED = declare(
    EventKind(
        "trait_adjusted",
        "A reflection asked to move one OCEAN trait by delta; the projection bounds the step"
        " (docs/mind-model.md) and clamps the trait to [0, 1]. Version 2 keeps delta within"
        " [-1, 1], a trait's whole range; version 1 took any finite number and is read with its"
        " delta clamped into [-1, 1], which moves a trait exactly as before.",
        {"trait": Field("str", True, choices=OCEAN), "delta": Field("number", True, low=-1, high=1),
         "reflection": ID},
        version=2,
        content="The reason given.",
    )
)
COMMITMENT_SOURCES = ("reflection", "user", "conversation")
COMMITMENT_OPENED = declare(
    EventKind(
        "commitment_opened",
        "The mind committed to something; the commitment's id is this event's id. due is an"
        " optional UTC time; source is reflection, user or conversation (turn: the answer it"
        " came from).",
        {"due": TS, "source": Field("str", True, choices=COMMITMENT_SOURCES), "reflection": ID,
         "turn": ID},
        content="What was committed to.",
    )
)
COMMITMENT_CLOSED = declare(
    EventKind(
        "commitment_closed",
        "A commitment was kept: evidence names events after it was opened that show it; the"
        " content is the statement. A close without valid evidence changes nothing.",
        {"commitment": ID_REQUIRED, "evidence": Field("list", True, items="int", low=1, high=MAX_ID),
         "reflection": ID, "source": STR},
        content="The statement of how it was kept.",
    )
)
COMMITMENT_EXPIRED = declare(
    EventKind(
        "commitment_expired",
        "An open commitment lapsed: its due time passed, or it stayed open for too many turns.",
        {"commitment": ID_REQUIRED, "reason": STR_REQUIRED},
        content="Why it expired.",
    )
)
COMMITMENT_REOPENED = declare(
    EventKind(
        "commitment_reopened",
        "A closed or expired commitment is open again (due: an optional new due time).",
        {"commitment": ID_REQUIRED, "due": TS, "source": STR},
        content="Why it was reopened.",
    )
)
REFLECTION_RETRACTED = declare(
    EventKind(
        "reflection_retracted",
        "The owner overruled a reflection (`pmm reflections retract`); the reflection stays in the"
        " chain but counts as if it had never been recorded: its trait steps are undone, the"
        " commitments it opened are dropped and those it closed are open again, it is not the"
        " latest reflection, not counted in reflection depth, and recall does not bring it"
        " (docs/mind-model.md). Only one of the last 100 reflections, and only once.",
        {"reflection": ID_REQUIRED, "source": STR},
        content="Why it was retracted.",
    )
)
COMMITMENT_DROPPED = declare(
    EventKind(
        "commitment_dropped",
        "The owner dropped a commitment (`pmm commitments drop`), whatever its status: it is"
        " neither open, kept nor lapsed, and counts in none of the success figures. A reopen"
        " makes it open again.",
        {"commitment": ID_REQUIRED, "source": STR},
        content="Why it was dropped.",
    )
)

HASH_LIST = Field("list", items="str")
TS_LIST = Field("list", items="str")  # each a timestamp; one that is not is read as the copy's own
MIND_MERGED = declare(
    EventKind(
        "mind_merged",
        "Another copy of this mind, which diverged from it after event fork, was merged in"
        " (`pmm merge`): the copied events are the len(their_ids) events just before this one,"
        " each the other copy's event their_ids[k] (hash their_hashes[k]) first written as"
        " origin_ids[k] / origin_hashes[k] at origin_ts[k] on whichever copy wrote it; same names"
        " events of this copy that the other copy also held (the same note written on both, the"
        " same import), with the other copy's first-written time, id and hash (same_ts, same_ids,"
        " same_hashes). The other copy is named by its head then (other_head_id, other_head) and"
        " the hash of its first event after the fork (other_branch). The projections fold every"
        " event after the fork in one order both copies agree on (docs/merge.md); this event"
        " itself counts in none of them.",
        {"fork": Field("int", True, low=0, high=MAX_ID), "fork_hash": STR_REQUIRED,
         "other_head_id": ID_REQUIRED, "other_head": STR_REQUIRED, "other_branch": STR_REQUIRED,
         "source": STR,
         "their_ids": IDS, "their_hashes": HASH_LIST,
         "origin_ts": TS_LIST, "origin_ids": IDS, "origin_hashes": HASH_LIST,
         "same": IDS, "same_ts": TS_LIST, "same_ids": IDS, "same_hashes": HASH_LIST},
        content="A human-readable line about the merge.",
    )
)

# The meta fields that hold another event's id: a merge maps them to the ids the events have
# in the copy they are merged into (tests/test_merge_joins_diverged_copies.py checks that every
# declared id field is listed here or is not an event id).
EVENT_REFERENCES = frozenset({
    "reply_to", "context", "standing", "recalled", "response", "message", "note", "reflection",
    "first_id", "last_id", "covers", "previous", "commitment", "evidence", "turn", "event"})
NOT_REFERENCES = frozenset({"context_window", "fork", "other_head_id", "their_ids", "origin_ids",
                            "same", "same_ids", "format1_events"})

CONTENT_FORGOTTEN = declare(
    EventKind(
        "content_forgotten",
        "The owner forgot an event's content (`pmm forget`, ledger format 2): the event stays in"
        " the chain with its id, kind, time and meta, but its content is gone from the mind,"
        " its search index and derived tables; content_digest is the digest the event's hash"
        " commits to in the content's place (its tombstone); by is who asked (the login name)."
        " Projections read the forgotten event with empty content.",
        {"event": ID_REQUIRED, "content_digest": STR_REQUIRED, "by": STR, "source": STR},
        content="Why it was forgotten.",
    )
)
LEDGER_UPGRADED = declare(
    EventKind(
        "ledger_upgraded",
        "The mind's chain was rewritten from ledger format 1 to 2 (`pmm upgrade`): every event"
        " before this one has the same id, time, kind, content and meta and a new hash; the"
        " format-1 chain had format1_events events ending at the hash format1_head, which a"
        " signature made before the upgrade names.",
        {"from_format": Field("int", True, low=1, high=1), "format1_events": ID_REQUIRED,
         "format1_head": STR_REQUIRED},
        content="What was upgraded.",
    )
)

# Kinds only the ledger writes, in the transaction that does what they record (the content's
# removal, the chain's rewrite): an ordinary append of one would record what did not happen.
LEDGER_ONLY = frozenset({CONTENT_FORGOTTEN.name, LEDGER_UPGRADED.name})


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
        except (ValueError, RecursionError):
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


if upcasters.missing(VERSIONED):  # a kind past version 1 must be readable from every older one
    raise ValueError(f"no upcaster for {', '.join(upcasters.missing(VERSIONED))}")
