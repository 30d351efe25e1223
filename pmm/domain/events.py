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
    DATES,
    MAX_DEPTH,
    MAX_ID,
    TS_FAST,
    TS_TEXT,
    Field,
    compile_fast,
    compile_meta,
    depth_ok,
    has_surrogate,
    is_ts_bytes,
    parse_meta,
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


@dataclass(frozen=True)
class EventKind:
    """One kind of event: ``meta`` maps each field name to its ``Field``."""

    name: str
    doc: str
    meta: dict[str, Field] = field(default_factory=dict)
    version: int = 1
    content: str = ""


KINDS: dict[str, EventKind] = {}
VERSIONED: dict[str, int] = {}  # kinds past version 1, with their current version
_META_CHECKS: dict[str, Callable[[dict[str, Any]], str | None]] = {}
_FAST: dict[bytes, tuple[re.Pattern[bytes], tuple[bytes, ...]]] = {}


def declare(kind: EventKind) -> EventKind:
    if kind.name in KINDS or not KIND_PATTERN.fullmatch(kind.name):
        raise ValueError(f"bad or duplicate event kind {kind.name!r}")
    KINDS[kind.name] = kind
    _META_CHECKS[kind.name] = compile_meta(kind.name, kind.meta, kind.version)
    if kind.version > 1:
        VERSIONED[kind.name] = kind.version
    _FAST.clear()  # built again on first use: compiling the patterns takes tens of ms
    return kind


STR, STR_REQUIRED, TS = Field("str"), Field("str", True), Field("str", ts=True)
ID, ID_REQUIRED = Field("int", low=1, high=MAX_ID), Field("int", True, low=1, high=MAX_ID)
COUNT = Field("int")  # token counts and latencies: older pmm stored whatever a provider said
IDS = Field("list", items="int", low=1, high=MAX_ID)

_SOURCE = {"source": STR, "source_id": STR, "session": STR, "original_ts": TS}

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
        " `recalled`), and an xxhash (XXH3-64) signature of the prompt.",
        {**_SOURCE, "model": STR, "provider": STR, "model_name": STR, "reply_to": ID,
         "tokens_in": COUNT, "tokens_out": COUNT, "latency_ms": COUNT, "context": IDS,
         "standing": IDS, "recalled": IDS, "prompt_xxh3": STR, "finish": STR},
        content="The answer.",
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
        " holds the API key is kept, never the key). Prices are per million tokens, optional.",
        {**_MODEL, "base_url": STR, "api_key_env": STR,
         "context_window": Field("int", low=1, high=MAX_ID),
         "price_in": Field("number", low=0, high=1_000_000),
         "price_out": Field("number", low=0, high=1_000_000)},
        content="NAME = PROVIDER:MODEL.",
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
        " invented or repaired.",
        {"first_id": Field("int", True, low=0, high=MAX_ID),
         "last_id": Field("int", True, low=0, high=MAX_ID), "trigger": STR_REQUIRED,
         "model_name": STR, "provider": STR, "model": STR, "tokens_in": COUNT,
         "tokens_out": COUNT, "latency_ms": COUNT, "rejected": Field("list", items="str")},
        content="The reflection's text.",
    )
)
SUMMARY_RECORDED = declare(
    EventKind(
        "summary_recorded",
        "The mind condensed its reflections (covers: their ids, oldest first) and its previous"
        " summary (previous) into one standing summary, shown in every prompt until the next"
        " one. The reflections stay in the ledger.",
        {"covers": Field("list", True, items="int", low=1, high=MAX_ID), "previous": ID,
         "trigger": STR_REQUIRED, "model_name": STR, "provider": STR, "model": STR,
         "tokens_in": COUNT, "tokens_out": COUNT, "latency_ms": COUNT},
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


def upcast(event: Event) -> Event:
    """``event`` as its kind's current version, for the projections to read (the stored event,
    and its hash, stay as written). Meta that no upcaster makes valid (only a file written
    outside pmm holds it) is passed on unchanged: the projections read it as any odd event."""
    current = VERSIONED.get(event.kind)
    if current is None:
        return event
    meta = event.meta
    if meta.get("v", 1) == current:
        return event
    upgraded = upcasters.upcast_meta(event.kind, meta, current)
    if upgraded is None or _META_CHECKS[event.kind](upgraded) is not None:
        return event
    from pmm.domain.canonical import canonical_json

    return event._replace(meta_json=canonical_json(upgraded))


def _meta_problem(kind: str, meta: dict[str, Any]) -> str | None:
    """Why ``meta`` does not fit ``kind``'s declaration: an older version once upcast."""
    check = _META_CHECKS[kind]
    current, version = VERSIONED.get(kind), meta.get("v", 1)
    if current is None or type(version) is not int or not 1 <= version < current:
        return check(meta)  # the current version, or a "v" the version check words
    upgraded = upcasters.upcast_meta(kind, meta, current)
    if upgraded is None:
        return f"{kind}: meta of version {version} cannot be read as version {current}"
    why = check(upgraded)
    return None if why is None else f"{why} (version {version}, read as version {current})"


def check_draft(draft: Draft) -> None:
    """Refuse a draft that does not match its kind's declaration (``ValueError``: pmm's own
    code is wrong) or is over the size limit (``InputRejected``: the user's text is too big)."""
    if draft.kind not in _META_CHECKS:
        raise ValueError(f"unknown event kind {draft.kind!r}")
    if not isinstance(draft.meta, dict):
        raise ValueError(f"{draft.kind}: meta must be a dict")
    why = _meta_problem(draft.kind, draft.meta)
    if why is not None:
        raise ValueError(why)
    texts = [draft.content, *(v for v in draft.meta.values() if type(v) is str),
             *(x for v in draft.meta.values() if type(v) is list for x in v if type(x) is str)]
    if any(has_surrogate(t) for t in texts if not t.isascii()):
        raise errors.InputRejected(
            f"this {draft.kind} holds a lone surrogate (\\ud800-\\udfff), which is not text",
            hint="fix the encoding of the input")
    if len(draft.content) * 4 + len(repr(draft.meta)) * 6 > MAX_EVENT_BYTES:  # can be near it
        from pmm.domain.canonical import canonical_json

        size = len(draft.content.encode("utf-8", "surrogatepass")) + len(
            canonical_json(draft.meta).encode("utf-8", "surrogatepass"))
        if size > MAX_EVENT_BYTES:
            raise errors.InputRejected(
                f"this {draft.kind} would be {_mib(size)}; an event holds at most"
                f" {_mib(MAX_EVENT_BYTES)} (content and meta together)",
                hint="split the text into smaller parts")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size % (1024 * 1024) else f"{size // (1024 * 1024)} MiB"


def check_row(ts: bytes, kind: bytes, content: bytes, meta: bytes) -> str | None:
    """Why a stored event (fields as UTF-8 bytes) is not one this pmm can rely on, or ``None``.

    ``ts`` must be a ledger timestamp; content and meta together at most ``MAX_EVENT_BYTES``
    and valid UTF-8; a known kind's meta must match its declaration. A kind this pmm does not
    know (a newer pmm's) passes when its name is well formed and its meta a JSON object:
    projections and commands ignore it, so a newer mind still verifies here.
    """
    # verify runs this on every event: first the shortcut that every event pmm writes takes
    fast = (_FAST or _fast_patterns()).get(kind)
    if (fast is not None and TS_FAST.fullmatch(ts) and DATES.get(ts[:10])
            and len(content) + len(meta) <= MAX_EVENT_BYTES and (content.isascii() or _utf8(content))
            and (meta.isascii() or _utf8(meta))  # the pattern takes any byte over 0x7f
            and fast[0].fullmatch(meta) and (not fast[1] or all(name in meta for name in fast[1]))):
        return None
    return _row_problem(ts, kind, content, meta)


def _fast_patterns() -> dict[bytes, tuple[re.Pattern[bytes], tuple[bytes, ...]]]:
    """verify's shortcut patterns, compiled when first needed (not by every command's import)."""
    for kind in KINDS.values():
        fast = compile_fast(kind.meta, kind.version)
        if fast is not None and kind.version > 1:
            # only the current version: an older one fits once upcast, which takes the full check
            fast = fast[0], (*fast[1], b'"v":%d' % kind.version)
        if fast is not None:
            _FAST[kind.name.encode()] = fast
    return _FAST


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _row_problem(ts: bytes, kind: bytes, content: bytes, meta: bytes) -> str | None:
    if not is_ts_bytes(ts):
        return f"ts {_show(ts)} is not a ledger timestamp {TS_TEXT}"
    if len(content) + len(meta) > MAX_EVENT_BYTES:
        return (f"content and meta are {_mib(len(content) + len(meta))}, over the limit of"
                f" {_mib(MAX_EVENT_BYTES)} per event")
    if not (content.isascii() or _utf8(content)):
        return "content is not valid UTF-8"
    if not (kind.isascii() and meta.isascii() or _utf8(kind) and _utf8(meta)):
        return f"{'kind' if not _utf8(kind) else 'meta'} is not valid UTF-8"
    kind_text, meta_text = kind.decode("utf-8"), meta.decode("utf-8")
    value, why = parse_meta(meta_text)
    if value is None:
        return why
    if kind_text in _META_CHECKS:
        return _meta_problem(kind_text, value)
    if not KIND_BYTES.fullmatch(kind):
        return f"kind {_show(kind)} is not a valid kind name (a-z, 0-9 and _, at most 64)"
    if not depth_ok(value):
        return "meta is nested too deeply"
    return None


def _show(value: bytes) -> str:
    text = value[:40].decode("utf-8", "replace")
    return repr(text + ("..." if len(value) > 40 else ""))
