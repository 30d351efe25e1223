"""``pmm reflect``: the mind looks back at what happened since its last reflection.

The reflection model is asked for structured output (constrained by a JSON schema where the
provider can), every part is validated on its own (pydantic), and the reflection with every
resulting event (trait steps, commitments opened and closed with evidence, a first name,
overdue commitments expired) is appended in one transaction. Invalid parts are listed in the
reflection's ``rejected`` meta and otherwise ignored: nothing is invented or repaired.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pmm import errors
from pmm.domain import events as ev
from pmm.domain import mind as dynamics
from pmm.domain.events import Draft, Event
from pmm.domain.projections import MAX_TRAIT_STEP, since, valid_evidence
from pmm.ledger.store import TS_FORMAT, Mind, now_ts
from pmm.providers.base import Message, Request
from pmm.services import context, minds, models

ANSWER_TOKENS = 700
MAX_TEXT = 4000
__all__ = ["MAX_TRAIT_STEP", "Outcome", "SCHEMA", "expirations", "parse", "reflect"]
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9 '\-]{0,39}")
SEEN_KINDS = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name, ev.OBSERVATION_RECORDED.name,
              ev.NOTE_PINNED.name)

# Bounded lengths and counts: a grammar built from this schema stops a small model from
# looping inside an array or a string until it runs out of tokens.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reflection": {"type": "string", "minLength": 1, "maxLength": 600},
        "traits": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
            "trait": {"type": "string", "enum": list(ev.OCEAN)},
            "delta": {"type": "number"}, "reason": {"type": "string", "maxLength": 200}},
            "required": ["trait", "delta", "reason"]}},
        "open": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
            "text": {"type": "string", "maxLength": 200}, "due_in_hours": {"type": "number"}},
            "required": ["text"]}},
        "close": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
            "commitment": {"type": "integer"},
            "evidence": {"type": "array", "maxItems": 5, "items": {"type": "integer"}},
            "statement": {"type": "string", "maxLength": 200}},
            "required": ["commitment", "evidence", "statement"]}},
        "name": {"type": "string", "maxLength": 40},
    },
    "required": ["reflection", "traits", "open", "close"],
}
INSTRUCTIONS = (
    "Reflect on the events above in two to four sentences: what happened, what you learned about"
    " the user and yourself. Then, only where the events give a reason: adjust a trait by a small"
    " delta between -0.05 and 0.05; open a commitment for something you intend to do; close an"
    " open commitment (by its number) when events above show it was kept, giving those event"
    " numbers as evidence and a statement. Use empty lists when there is nothing to change."
    " Answer with JSON only."
)


@dataclass
class Outcome:
    """What one reflection did (``recorded`` False: nothing was due or another ran)."""

    recorded: bool
    reason: str
    reflection: Event | None = None
    events: list[Event] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    model: str | None = None

    def as_json(self) -> dict[str, Any]:
        changes = [{"id": e.id, "kind": e.kind, "content": e.content, "meta": e.meta}
                   for e in self.events if e is not self.reflection]
        return {"recorded": self.recorded, "reason": self.reason, "model": self.model,
                "reflection": None if self.reflection is None else {
                    "id": self.reflection.id, "text": self.reflection.content,
                    **{k: v for k, v in self.reflection.meta.items() if k != "rejected"}},
                "changes": changes, "rejected": self.rejected}


# -- validation of the model's output ------------------------------------------------------------

@functools.cache
def _pydantic_models() -> tuple[Any, Any, Any]:
    from pydantic import BaseModel, Field

    class TraitStep(BaseModel):
        trait: str = Field(pattern="^(" + "|".join(ev.OCEAN) + ")$")
        delta: float = Field(allow_inf_nan=False)
        reason: str = Field(min_length=1, max_length=1000)

    class NewCommitment(BaseModel):
        text: str = Field(min_length=3, max_length=300)
        due_in_hours: float | None = Field(default=None, gt=0, le=24 * 366, allow_inf_nan=False)

    class KeptCommitment(BaseModel):
        commitment: int = Field(ge=1)
        evidence: list[int] = Field(min_length=1, max_length=50)
        statement: str = Field(min_length=1, max_length=1000)

    return TraitStep, NewCommitment, KeptCommitment


@dataclass
class Parsed:
    text: str = ""
    traits: list[Any] = field(default_factory=list)
    open: list[Any] = field(default_factory=list)
    close: list[Any] = field(default_factory=list)
    name: str | None = None
    rejected: list[str] = field(default_factory=list)


def parse(raw: str) -> Parsed:
    """Each part of the model's JSON validated on its own; what fails is named in ``rejected``."""
    from pydantic import ValidationError

    try:
        data = json.loads(raw)
    except ValueError:
        raise errors.ProviderError("the reflection model did not answer with JSON",
                                   hint="use a model with structured output (`pmm model use NAME --for reflection`)") from None
    except RecursionError:  # nested past Python's stack: a malformed answer, not a crash
        raise errors.ProviderError("the reflection model's JSON is nested too deeply to read",
                                   hint="nothing was saved; try again, or use another model for reflection") from None
    if not isinstance(data, dict):
        raise errors.ProviderError("the reflection model's JSON is not an object")
    parsed = Parsed()
    text = data.get("reflection")
    if isinstance(text, str) and text.strip():
        parsed.text = text.strip()[:MAX_TEXT]
        if len(text.strip()) > MAX_TEXT:
            parsed.rejected.append(f"reflection: text cut to {MAX_TEXT} characters")
    else:
        parsed.rejected.append("reflection: missing or empty text")
    for key, model in zip(("traits", "open", "close"), _pydantic_models(), strict=True):
        items = data.get(key, [])
        if not isinstance(items, list):
            parsed.rejected.append(f"{key}: not a list")
            continue
        for i, item in enumerate(items[:20]):
            try:
                getattr(parsed, key).append(model.model_validate(item))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "item"
                parsed.rejected.append(f"{key}[{i}].{where}: {first['msg']}")
    name = data.get("name")
    if isinstance(name, str) and name.strip():
        if NAME_PATTERN.fullmatch(name.strip()):
            parsed.name = name.strip()
        else:
            parsed.rejected.append("name: not a usable name")
    return parsed


# -- the reflection ------------------------------------------------------------------------------

def seconds_since(ts: str, now: datetime | None = None) -> float:
    then = datetime.strptime(ts, TS_FORMAT).replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - then).total_seconds()


def _due_now(states: dict[str, Any]) -> tuple[bool, str]:
    latest = states["reflections"]["latest"]
    return dynamics.reflection_due(states, seconds_since(latest["ts"]) if latest else None)


class _Superseded(Exception):
    """Another reflection was recorded while this one waited for the model."""


def reflect(path: Path, *, if_due: bool = False, trigger: str = "manual", model_name: str | None = None,
            notify: minds.Notify = lambda _m: None) -> Outcome:
    """One reflection now (or only when due). Raises ``ProviderError`` when the model fails."""
    minds.open_read(path).close()  # a missing or foreign file is refused, never created
    with _single_reflection(path, wait=not if_due) as running:
        if not running:
            return Outcome(False, "another reflection is running")
        mind = minds.open_write(path, notify)
        try:
            return _reflect(mind, if_due=if_due, trigger=trigger, model_name=model_name)
        finally:
            mind.close()


def _reflect(mind: Mind, *, if_due: bool, trigger: str, model_name: str | None) -> Outcome:
    states, _ = mind.state()
    latest = states["reflections"]["latest"]
    is_due, why = _due_now(states)
    if if_due and not is_due:
        return Outcome(False, why)
    # From just after what the last reflection saw (events appended while it ran included).
    first_id = (int(latest.get("last_id") or latest["id"]) + 1) if latest else 1
    head_id, _ = mind.head()
    model = models.pick(states, model_name, "reflection")
    models.require_trusted(mind.mind_id, model)  # said even when there is nothing to reflect on
    request, seen = _request(mind, states, first_id, model.window())
    if not seen:
        return Outcome(False, "nothing new to reflect on since the last reflection")
    provider = models.connect(mind.mind_id, model)
    try:
        completion = provider.complete(request)
    finally:
        provider.close()
    parsed = parse(completion.text)
    meta: dict[str, Any] = {"first_id": first_id, "last_id": head_id, "trigger": trigger,
                            "model_name": model.name, "provider": model.spec.provider,
                            "model": model.spec.model, "latency_ms": completion.latency_ms}
    if completion.tokens_in is not None:
        meta["tokens_in"] = completion.tokens_in
    if completion.tokens_out is not None:
        meta["tokens_out"] = completion.tokens_out
    rejected: list[str] = []

    def drafts(reflection_id: int) -> list[Draft]:
        now = mind.state()[0]
        now_latest = now["reflections"]["latest"]
        if (now_latest["id"] if now_latest else None) != (latest["id"] if latest else None):
            raise _Superseded()
        out = _consequences(now, parsed, reflection_id, rejected)
        rejected[:0] = parsed.rejected
        reflection_meta = {**meta, "rejected": rejected} if rejected else meta
        return [Draft(ev.REFLECTION_RECORDED.name, parsed.text, reflection_meta), *out]

    try:
        written = mind.append(drafts)
    except _Superseded:
        return Outcome(False, "another reflection was recorded meanwhile")
    return Outcome(True, why if is_due else "asked for", written[0], written, rejected, model.name)


def _request(mind: Mind, states: dict[str, Any], first_id: int, window: int) -> tuple[Request, list[int]]:
    """The events since the last reflection (newest kept first when they do not all fit)."""
    budget = max(256, window - ANSWER_TOKENS - 300)
    lines: list[str] = []
    seen: list[int] = []
    spent = 0
    recent = [e for e in mind.tail(400) if e.id >= first_id and e.kind in SEEN_KINDS]
    for event in reversed(recent):
        who = {"message_received": "user", "response_sent": "you"}.get(event.kind, "note")
        line = f"#{event.id} {who}: {' '.join(event.content.split())[:400]}"
        cost = context.estimate_tokens(line)
        if spent + cost > budget:
            break
        lines.append(line)
        seen.append(event.id)
        spent += cost
    lines.reverse()
    open_ = states["commitments"]["open"]
    commitments = "\n".join(f"#{k}: {v['text']}" for k, v in sorted(open_.items(), key=lambda kv: int(kv[0])))
    traits = ", ".join(f"{k} {v:.2f}" for k, v in states["traits"]["values"].items())
    name = states["identity"]["name"]
    system = (f"You are {name}, a persistent mind, reflecting on your recent experience."
              if name else "You are a persistent mind with no name yet, reflecting on your recent"
              " experience. You may propose a name for yourself in the name field.")
    ctx = (f"Your traits: {traits}.\nYour open commitments:\n{commitments or '(none)'}\n\n"
           "Events since your last reflection:\n" + ("\n".join(lines) or "(none)"))
    request = Request(messages=(Message("user", INSTRUCTIONS),), system=system, context=ctx,
                      max_tokens=ANSWER_TOKENS, temperature=0.2, json_schema=SCHEMA)
    return request, seen


def _consequences(states: dict[str, Any], parsed: Parsed, reflection_id: int,
                  rejected: list[str]) -> list[Draft]:
    """The events a reflection leads to, each checked against the mind as it is now."""
    out: list[Draft] = []
    stepped: set[str] = set()
    for step in parsed.traits:
        if step.trait in stepped:
            rejected.append(f"traits: a second step for {step.trait}")
            continue
        stepped.add(step.trait)
        out.append(Draft(ev.TRAIT_ADJUSTED.name, step.reason,
                         {"trait": step.trait, "delta": float(step.delta), "reflection": reflection_id}))
    open_ = states["commitments"]["open"]
    for new in parsed.open:
        if any(dynamics.same_commitment(new.text, c["text"]) for c in open_.values()):
            rejected.append(f"open: already committed to {new.text!r}")
            continue
        meta: dict[str, Any] = {"source": "reflection", "reflection": reflection_id}
        if new.due_in_hours:
            meta["due"] = (datetime.now(UTC) + timedelta(hours=new.due_in_hours)).strftime(TS_FORMAT)
        out.append(Draft(ev.COMMITMENT_OPENED.name, new.text.strip(), meta))
    closed: set[int] = set()
    for kept in parsed.close:
        entry = open_.get(str(kept.commitment))
        if entry is None or kept.commitment in closed:
            rejected.append(f"close: #{kept.commitment} is not an open commitment")
            continue
        evidence = sorted(set(kept.evidence))
        if not valid_evidence(evidence, since(entry), reflection_id):
            rejected.append(f"close: evidence for #{kept.commitment} must name events after it was opened")
            continue
        closed.add(kept.commitment)
        out.append(Draft(ev.COMMITMENT_CLOSED.name, kept.statement.strip(),
                         {"commitment": kept.commitment, "evidence": evidence,
                          "reflection": reflection_id, "source": "reflection"}))
    if parsed.name:
        if states["identity"]["name"]:
            rejected.append(f"name: already named {states['identity']['name']}")
        else:
            out.append(Draft(ev.MIND_NAMED.name, parsed.name,
                             {"name": parsed.name, "reason": f"reflection #{reflection_id}"}))
    out += expirations(states, exclude=closed)
    return out


def expirations(states: dict[str, Any], exclude: Collection[int] = ()) -> list[Draft]:
    """``commitment_expired`` drafts for every overdue open commitment now."""
    return [Draft(ev.COMMITMENT_EXPIRED.name, reason, {"commitment": cid, "reason": reason})
            for cid, reason in dynamics.overdue(states, now_ts()) if cid not in exclude]


@contextlib.contextmanager
def _single_reflection(path: Path, wait: bool) -> Iterator[bool]:
    """One reflection per mind file at a time (a lock file in the user state dir): a cron
    ``--if-due`` that finds one running steps aside; a manual one waits for it."""
    import fcntl
    import hashlib

    from pmm.paths import state_dir

    directory = state_dir() / "locks"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(directory / f"reflect-{key}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
