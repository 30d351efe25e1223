"""What a reflection model is asked to answer, and how its answer becomes events.

The answer is structured output: ``SCHEMA`` is passed to the provider (a grammar for a local
model, ``response_format`` for OpenAI-compatible servers, ``format`` for Ollama, a forced tool
call for Anthropic). ``parse`` validates each part on its own (pydantic) and ``consequences``
checks each against the mind as it is now; what fails is named in ``rejected``, never invented
or repaired.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pmm import errors
from pmm.domain import events as ev
from pmm.domain import mind as dynamics
from pmm.domain.events import Draft
from pmm.domain.growth import since, valid_evidence
from pmm.ledger.store import TS_FORMAT

ANSWER_TOKENS = 700  # the answer's token limit: the longest answer SCHEMA admits must fit
MAX_TEXT = 4000
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9 '\-]{0,39}")

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


def consequences(states: dict[str, Any], parsed: Parsed, reflection_id: int,
                 rejected: list[str], shown: Collection[int] = ()) -> list[Draft]:
    """The events a reflection leads to, each checked against the mind as it is now (overdue
    commitments are the caller's: ``reflection.expirations``); ``shown``: the ids of the events
    the reflection was shown, which is all it may cite)."""
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
    return out
