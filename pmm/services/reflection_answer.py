"""What a reflection model is asked to answer, and how its answer becomes events.

The answer is structured output: ``SCHEMA`` is passed to the provider (a grammar for a local
model, ``response_format`` for OpenAI-compatible servers, ``format`` for Ollama, a forced tool
call for Anthropic); its bounds fit the answer in ``ANSWER_TOKENS``. ``parse`` validates each
part on its own (pydantic) and ``consequences`` checks each against the mind as it is now and
against the events the reflection was shown (docs/mind-model.md, "What a reflection may
change"). What fails is named in ``rejected``, never invented or repaired; an answer with no
text, or text grounded in none of the events shown, is refused whole (``ProviderError``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pmm import errors
from pmm.domain import dynamics
from pmm.domain import events as ev
from pmm.domain.events import Draft
from pmm.domain.growth import MAX_TRAIT_STEP, since, valid_evidence
from pmm.domain.states import States
from pmm.ledger.store import TS_FORMAT

ANSWER_TOKENS = 1024  # the answer's token limit: the longest answer SCHEMA admits fits with 10% to spare
MAX_TEXT = 4000  # a reflection from a provider that ignores the schema is cut here
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9 '\-]{0,39}")
STEPS = tuple(round(n / 100, 2) for n in range(-round(MAX_TRAIT_STEP * 100), round(MAX_TRAIT_STEP * 100) + 1)
              if n)  # -0.05 ... 0.05 in hundredths: llama.cpp's grammar ignores minimum/maximum
DUE_HOURS = (24, 72, 168, 720)
PROMISE = "I will "  # the grammar makes a commitment start so; validation still judges it


# Letters, digits, spaces and the punctuation of prose. No control character: llama.cpp's own
# string rule admits a raw newline, which is not JSON. No quote or backslash: no escapes, so one
# character is at most one token and the grammar's length bound is a token bound. No braces or
# brackets: a small model cannot wander into markup or half of a JSON object.
TEXT_CHARS = "[A-Za-z0-9 ,.'?!:;()#/-]"
_MARKUP = re.compile(r"[{}\[\]<>|\\`*=~^]")


def _text(low: int, high: int, prefix: str = "", description: str = "") -> dict[str, Any]:
    pattern = f"^{prefix}{TEXT_CHARS}{{{low},{high}}}$"
    return {"type": "string", "minLength": len(prefix) + low, "maxLength": len(prefix) + high,
            "pattern": pattern, **({"description": description} if description else {})}


def _ids(most: int, description: str) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "maxItems": most, "description": description,
            "items": {"type": "integer", "minimum": 1}}


def _items(most: int, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "array", "maxItems": most, "items": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}


# Small and flat, every string, list and number bounded in the schema itself: a grammar built
# from it keeps a 135M model inside the token limit and inside the allowed values.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        # The fixed start steers a small model to quote what the user said: text that is grounded.
        "reflection": _text(1, 163, "The user wrote: ", "What the user told you and what it means."),
        "traits": _items(2, {
            "trait": {"type": "string", "enum": list(ev.OCEAN)},
            "delta": {"type": "number", "enum": list(STEPS)},
            "evidence": _ids(2, "Ids (#) of the events above that show it."),
            "reason": _text(3, 50)}, ["trait", "delta", "evidence", "reason"]),
        "open": _items(1, {
            "text": _text(3, 60, PROMISE, "A promise about something you will do later."),
            "due_in_hours": {"type": "integer", "enum": list(DUE_HOURS)}}, ["text"]),
        "close": _items(1, {
            "commitment": {"type": "integer", "minimum": 1, "description": "The open commitment's id."},
            "evidence": _ids(2, "Ids (#) of the events above that show it was kept."),
            "statement": _text(3, 50)}, ["commitment", "evidence", "statement"]),
        "name": {"type": "string", "minLength": 2, "maxLength": 16, "pattern": "^[A-Z][a-z]{1,15}$"},
    },
    "required": ["reflection", "traits", "open", "close"],
    "additionalProperties": False,
}
# No word about JSON or "I will" (the grammar sees to both): the embedded model echoes what the
# instructions say ("The user wrote: 'I will' in JSON format"), which grounds nothing. Measured on
# four windows of an imported mind: 21 of 22 answers grounded with this text, 3 of 22 with one that
# named them.
INSTRUCTIONS = (
    "Write what the user told you in the events above, in the user's own words, one or two"
    " sentences. Leave traits, open and close empty unless an event above clearly shows a reason;"
    " cite event ids (the numbers after #) as evidence."
)


# What grounds a reflection: a content word it shares with the events it was shown (words of
# four letters or more outside this list, matched on a five-letter stem) or a "#id" it cites.
_WORD = re.compile(r"[a-z]{4,}")
_SOME_WORD = re.compile(r"[A-Za-z]{2,}")
_LETTERS = re.compile(r"[A-Za-z]+")  # "I will #N: },{" is four words but no promise
_CITED = re.compile(r"#(\d{1,12})\b")
_STOP = frozenset(_WORD.findall("""
about above after again also always another back because been before being between both came
come could does doing done down each even every first from going good great have having here
into just know known like long made make many maybe more most much must need never next only
other over really said same should since some something still such sure take tell than that
their them then there these they thing things think this those though through time today told
under until user users very want wants well went were what when where which while will with
would your yours yourself myself reflect reflection reflected events event learned learn mind wrote
persistent said says trait traits commitment commitments open close name answer means mean
"""))


def _stems(text: str) -> set[str]:
    return {w[:5] for w in _WORD.findall(text.lower()) if w not in _STOP}


def grounded(text: str, shown: Mapping[int, str], cited: bool = True) -> bool:
    """Whether ``text`` shares a content word with the events shown, or (``cited``) cites one
    by ``#id``."""
    if cited and any(int(m) in shown for m in _CITED.findall(text)):
        return True
    mine = _stems(text)
    seen = set().union(*(_stems(t) for t in shown.values())) if shown else set()
    return any(a.startswith(b) or b.startswith(a) for a in mine for b in seen)


# -- validation of the model's output ------------------------------------------------------------

@functools.cache
def _pydantic_models() -> tuple[Any, Any, Any]:
    from pydantic import BaseModel, Field, field_validator

    def bounded(schema: dict[str, Any]) -> Any:  # the schema's own string bounds, checked again
        return Field(min_length=schema["minLength"], max_length=schema["maxLength"])

    def words(cls: Any, text: str) -> str:  # punctuation and markup are not a reason
        if len(_SOME_WORD.findall(text)) < 2 or _MARKUP.search(text):
            raise ValueError("two words at least, and no markup")
        return text

    items = {key: SCHEMA["properties"][key]["items"]["properties"] for key in ("traits", "open", "close")}

    class TraitStep(BaseModel):
        trait: str = Field(pattern="^(" + "|".join(ev.OCEAN) + ")$")
        delta: float = Field(allow_inf_nan=False)
        evidence: list[int] = Field(min_length=1, max_length=items["traits"]["evidence"]["maxItems"])
        reason: str = bounded(items["traits"]["reason"])

        _words = field_validator("reason")(words)

        @field_validator("delta")
        @classmethod
        def one_step(cls, delta: float) -> float:
            if not any(abs(delta - step) < 1e-9 for step in STEPS):
                raise ValueError(f"a step is one of {', '.join(map(str, STEPS))}")
            return round(delta, 2)

    class NewCommitment(BaseModel):
        text: str = bounded(items["open"]["text"])
        due_in_hours: int | None = None

        @field_validator("due_in_hours")
        @classmethod
        def known_due(cls, due: int | None) -> int | None:
            if due is not None and due not in DUE_HOURS:
                raise ValueError(f"one of {', '.join(map(str, DUE_HOURS))} hours")
            return due

        @field_validator("text")
        @classmethod
        def a_promise(cls, text: str) -> str:
            if len(_LETTERS.findall(text)) < 4 or _MARKUP.search(text) or not dynamics.is_promise(text):
                raise ValueError("not a first-person promise of an act")
            return text

    class KeptCommitment(BaseModel):
        commitment: int = Field(ge=1)
        evidence: list[int] = Field(min_length=1, max_length=items["close"]["evidence"]["maxItems"])
        statement: str = bounded(items["close"]["statement"])

        _words = field_validator("statement")(words)

    return TraitStep, NewCommitment, KeptCommitment


@dataclass
class Parsed:
    text: str = ""
    # (index in the answer's list, the validated item): rejections name the item as the model wrote it
    traits: list[tuple[int, Any]] = field(default_factory=list)
    open: list[tuple[int, Any]] = field(default_factory=list)
    close: list[tuple[int, Any]] = field(default_factory=list)
    name: str | None = None
    rejected: list[str] = field(default_factory=list)


NOTHING_SAVED = "nothing was saved; try again, or use another model for reflection"


def parse(raw: str) -> Parsed:
    """Each part of the model's JSON validated on its own; what fails is named in ``rejected``.
    An answer with no reflection text is refused whole (``ProviderError``)."""
    from pydantic import ValidationError

    try:
        data = json.loads(raw)
    except ValueError:
        raise errors.ProviderError("the reflection model did not answer with JSON",
                                   hint="use a model with structured output (`pmm model use NAME --for reflection`)") from None
    except RecursionError:  # nested past Python's stack: a malformed answer, not a crash
        raise errors.ProviderError("the reflection model's JSON is nested too deeply to read",
                                   hint=NOTHING_SAVED) from None
    if not isinstance(data, dict):
        raise errors.ProviderError("the reflection model's JSON is not an object", hint=NOTHING_SAVED)
    text = data.get("reflection")
    if not isinstance(text, str) or len(_SOME_WORD.findall(text)) < 3:
        raise errors.ProviderError("the reflection model's answer has no reflection text (three words at least)",
                                   hint=NOTHING_SAVED)
    parsed = Parsed(text=" ".join(text.split())[:MAX_TEXT])
    if len(" ".join(text.split())) > MAX_TEXT:
        parsed.rejected.append(f"reflection: text cut to {MAX_TEXT} characters")
    for key, model in zip(("traits", "open", "close"), _pydantic_models(), strict=True):
        items = data.get(key, [])
        if not isinstance(items, list):
            parsed.rejected.append(f"{key}: not a list")
            continue
        most = SCHEMA["properties"][key]["maxItems"]
        if len(items) > most:
            parsed.rejected.append(f"{key}: {len(items) - most} past the first {most} ignored")
        for i, item in enumerate(items[:most]):
            try:
                getattr(parsed, key).append((i, model.model_validate(item)))
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


def _unseen(ids: list[int], shown: Mapping[int, str]) -> str:
    return ", ".join(f"#{i}" for i in ids if i not in shown)


def require_grounded(parsed: Parsed, shown: Mapping[int, str]) -> None:
    """A reflection that shares nothing with the events it was shown is refused whole."""
    if not grounded(parsed.text, shown):
        raise errors.ProviderError("the reflection does not mention anything in the events it was shown",
                                   hint=NOTHING_SAVED)


def consequences(states: States, parsed: Parsed, reflection_id: int,
                 rejected: list[str], shown: Mapping[int, str]) -> list[Draft]:
    """The events a reflection leads to, each checked against the mind as it is now (overdue
    commitments are the caller's: ``reflection.expirations``). ``shown``: the events the
    reflection was shown (id to text), which is all it may cite (``require_grounded`` first)."""
    out: list[Draft] = []
    stepped: set[str] = set()
    for i, step in parsed.traits:
        if step.trait in stepped:
            rejected.append(f"traits: a second step for {step.trait}")
            continue
        if unseen := _unseen(step.evidence, shown):
            rejected.append(f"traits[{i}].evidence: {unseen} not among the events shown")
            continue
        stepped.add(step.trait)
        cited = ", ".join(f"#{e}" for e in sorted(set(step.evidence)))
        out.append(Draft(ev.TRAIT_ADJUSTED.name, f"{step.reason.strip()} ({cited})",
                         {"trait": step.trait, "delta": step.delta, "reflection": reflection_id,
                          "v": ev.TRAIT_ADJUSTED.version}))
    open_ = states["commitments"]["open"]
    for _, new in parsed.open:
        if any(dynamics.same_commitment(new.text, c["text"]) for c in open_.values()):
            rejected.append(f"open: already committed to {new.text!r}")
            continue
        # a promise about nothing that happened is noise; so is one that cites the prompt's ids
        if _CITED.search(new.text) or not grounded(new.text, shown, cited=False):
            rejected.append(f"open: {new.text!r} is about nothing in the events shown")
            continue
        meta: dict[str, Any] = {"source": "reflection", "reflection": reflection_id}
        if new.due_in_hours:
            meta["due"] = (datetime.now(UTC) + timedelta(hours=new.due_in_hours)).strftime(TS_FORMAT)
        out.append(Draft(ev.COMMITMENT_OPENED.name, new.text.strip(), meta))
    closed: set[int] = set()
    for i, kept in parsed.close:
        entry = open_.get(str(kept.commitment))
        if entry is None or kept.commitment in closed:
            rejected.append(f"close[{i}]: #{kept.commitment} is not an open commitment")
            continue
        evidence = sorted(set(kept.evidence))
        if unseen := _unseen(evidence, shown):
            rejected.append(f"close[{i}].evidence: {unseen} for #{kept.commitment} not among the events shown")
            continue
        if not valid_evidence(evidence, since(entry), reflection_id):
            rejected.append(f"close[{i}].evidence: for #{kept.commitment} must name events after it was opened")
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
