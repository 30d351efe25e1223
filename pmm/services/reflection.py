"""``pmm reflect``: the mind looks back at what happened since its last reflection.

The reflection model is asked for structured output and every part of its answer is validated
(``reflection_answer``); the reflection with every
resulting event (trait steps, commitments opened and closed with evidence, a first name,
overdue commitments expired) is appended in one transaction. Invalid parts are listed in the
reflection's ``rejected`` meta and otherwise ignored: nothing is invented or repaired.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pmm.domain import events as ev
from pmm.domain import mind as dynamics
from pmm.domain.events import Draft, Event
from pmm.domain.projections import MAX_TRAIT_STEP
from pmm.ledger.store import TS_FORMAT, Mind, now_ts
from pmm.providers.base import Message, Request
from pmm.services import context, minds, models
from pmm.services import reflection_answer as answer

__all__ = ["MAX_TRAIT_STEP", "Outcome", "expirations", "reflect"]
SEEN_KINDS = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name, ev.OBSERVATION_RECORDED.name,
              ev.NOTE_PINNED.name)


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
    parsed = answer.parse(completion.text)
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
        out = answer.consequences(now, parsed, reflection_id, rejected, shown={e.id: e.content for e in mind.events(since=min(seen)) if e.id in seen})
        kept = {d.meta["commitment"] for d in out if d.kind == ev.COMMITMENT_CLOSED.name}
        out += expirations(now, exclude=kept)
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
    budget = max(256, window - answer.ANSWER_TOKENS - 300)
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
    request = Request(messages=(Message("user", answer.INSTRUCTIONS),), system=system, context=ctx,
                      max_tokens=answer.ANSWER_TOKENS, temperature=0.2, json_schema=answer.SCHEMA)
    return request, seen


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
