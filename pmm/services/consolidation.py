"""Consolidation: many reflections condensed into one standing summary (``summary_recorded``).

Once ``CONSOLIDATE_EVERY`` reflections have accumulated since the last summary, one model call
condenses them, oldest first, together with the previous summary, into a new one: the latest
summary stands for all the mind's reflections and is shown in every prompt's standing memory
(``context._standing``), citing the reflection ids it condenses. Nothing is lost: the
reflections stay in the ledger and recallable. A retracted reflection is never condensed, and a
summary that condensed one before it was retracted is stale (``projections.Summaries``): the next
summary is rebuilt from the reflections after the newest clean one, never from the stale text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pmm import errors
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.domain.states import StandingSummary, States
from pmm.ledger import folded, lookup
from pmm.ledger.store import Ledger
from pmm.providers.base import Message, Request
from pmm.services import models, tokens, usage
from pmm.services.reflection_answer import _text
from pmm.services.reports import Meta
from pmm.services.safe_text import clip

CONSOLIDATE_EVERY = 8  # reflections since the last summary that call for a new one
MAX_COVERS = 16  # reflections one summary condenses at most (the rest wait for the next)
MAX_PER_RUN = 8  # summaries one run makes at most (a catch-up leaves a backlog behind)
SUMMARY_CHARS = 600
# The answer's token limit: the longest answer SCHEMA admits is printable ASCII without escapes
# (``reflection_answer.TEXT_CHARS``), so its byte count bounds its tokens, and it fits with a margin.
SUMMARY_TOKENS = 700
REFLECTION_CHARS = 600  # of each reflection shown
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"summary": _text(1, SUMMARY_CHARS)},
    "required": ["summary"],
    "additionalProperties": False,
}
INSTRUCTIONS = (
    "Condense your previous summary (if any) and the reflections above into one standing summary"
    " of at most six sentences: what you have learned about the user and yourself, and what"
    " you intend. Keep what still matters, drop what does not. Answer with JSON only:"
    ' {"summary": "..."}.'
)


@dataclass
class Summary:
    """A summary just recorded."""

    event: Event
    model: str

    def as_json(self) -> Meta:  # the event's meta spread (its kind's declaration): pass-through
        return {"id": self.event.id, "text": self.event.content, **self.event.meta,
                "model_name": self.model}


def _id(summary: StandingSummary | None) -> int | None:
    return None if summary is None else summary["id"]


def pending(mind: Ledger, states: States, limit: int = MAX_COVERS) -> list[Event]:
    """The reflections no summary condenses yet, oldest first (retracted ones left out)."""
    after = states["summaries"]["covered_to"]
    retracted = lookup.retractions(mind)
    found: list[Event] = []
    since = after + 1
    while len(found) < limit:
        page = lookup.following(mind, [ev.REFLECTION_RECORDED.name], since, 200)
        found += [e for e in page if e.id not in retracted][:limit - len(found)]
        if len(page) < 200:
            break
        since = page[-1].id + 1
    return found


def due(mind: Ledger, states: States) -> bool:
    return len(pending(mind, states, CONSOLIDATE_EVERY)) >= CONSOLIDATE_EVERY


class _Superseded(Exception):
    """Another summary was recorded, or a reflection it condenses was retracted, while this one
    waited for the model."""


def consolidate(mind: Ledger, states: States, model: models.Model, trigger: str,
                budget: usage.Budget | None = None) -> Summary | None:
    """Condense the pending reflections into a new summary (None: none pending, or another
    process recorded one meanwhile). Raises ``ProviderError`` when the model fails, and
    ``BudgetExceeded`` (nothing sent) when the request could pass a cap."""
    reflections = pending(mind, states)
    if not reflections:
        return None
    request, covers = _request(states, reflections, model.window())
    (budget or usage.Budget()).check(states, model, request)
    provider = models.connect(mind.mind_id, model)
    try:
        completion = provider.complete(request)
    finally:
        provider.close()
    usage.estimate(completion, request, model.token_counter(mind.mind_id))
    text = parse(completion.text)
    previous = states["summaries"]["latest"]
    meta: dict[str, Any] = {"covers": covers, "trigger": trigger, "model_name": model.name,
                            "provider": model.spec.provider, "model": model.spec.model,
                            "latency_ms": completion.latency_ms}
    if previous:
        meta["previous"] = previous["id"]
    usage.record(meta, completion, model)

    def drafts(_first_id: int) -> list[Draft]:
        now = folded.state(mind)[0]["summaries"]
        if (_id(now["latest"]) != _id(previous) or set(covers) & set(now["retracted"])):
            raise _Superseded()  # another summary, or a retraction, while the model wrote
        return [Draft(ev.SUMMARY_RECORDED.name, text, meta)]

    try:
        (written,) = mind.append(drafts)
    except _Superseded:
        return None
    return Summary(written, model.name)


def parse(raw: str) -> str:
    """The summary's text from the model's JSON (cut to ``SUMMARY_CHARS``)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    text = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise errors.ProviderError("the reflection model did not answer with a summary in JSON",
                                   hint="nothing was saved; use a model with structured output"
                                   " (`pmm model use NAME --for reflection`)")
    return " ".join(text.split())[:SUMMARY_CHARS]


def _request(states: States, reflections: list[Event], window: int) -> tuple[Request, list[int]]:
    """The previous summary and the pending reflections, oldest first, while they fit."""
    name = states["identity"]["name"]
    system = (f"You are {name}, a persistent mind, condensing your past reflections." if name
              else "You are a persistent mind, condensing your past reflections.")
    previous = states["summaries"]["latest"]
    head = (f"Your summary so far (event #{previous['id']}): {' '.join(previous['text'].split())}\n\n"
            if previous else "You have no summary yet.\n\n") + "Your reflections since, oldest first:"
    room = window - SUMMARY_TOKENS - 64 - sum(
        tokens.estimate_tokens(t) for t in (system, INSTRUCTIONS, head))
    lines: list[str] = []
    covers: list[int] = []
    for event in reflections:
        first, last = event.meta.get("first_id"), event.meta.get("last_id")
        seen = f" (on events #{first}-#{last})" if first and last else ""
        line = f"#{event.id}{seen}: {clip(event.content, REFLECTION_CHARS)}"
        cost = tokens.estimate_tokens(line) + 1
        if covers and cost > room:
            break  # the rest wait for the next summary
        lines.append(line)
        covers.append(event.id)
        room -= cost
    request = Request(messages=(Message("user", INSTRUCTIONS),), system=system,
                      context=head + "\n" + "\n".join(lines), max_tokens=SUMMARY_TOKENS,
                      temperature=0.2, json_schema=SCHEMA)
    return request, covers


def cite(ids: list[int]) -> str:
    """Reflection ids compactly: "#3, #9, #12", or "#3 ... #40 (8)" when there are more."""
    if len(ids) <= 3:
        return ", ".join(f"#{i}" for i in ids) or "none"
    return f"#{ids[0]} ... #{ids[-1]} ({len(ids):,})"


