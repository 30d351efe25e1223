"""``pmm reflections``: every reflection the mind recorded, what each one led to, and the owner's
overrule (``retract``). A retraction is an event: the reflection stays in the chain, and the
projections count it as if it had never been recorded (docs/mind-model.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from pmm import errors
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.domain.growth import RETRACTABLE
from pmm.domain.states import CommitmentsState, States
from pmm.domain.when import said_at
from pmm.ledger import folded, lookup
from pmm.ledger.store import Ledger
from pmm.services import opening
from pmm.services.reports import Change, Meta

FIRST_WORDS = 12
LED_TO = (ev.TRAIT_ADJUSTED.name, ev.COMMITMENT_OPENED.name, ev.COMMITMENT_CLOSED.name)


class Row(TypedDict):
    """One reflection in ``pmm reflections list``."""

    id: int
    ts: str
    said_at: str
    first_id: int | None
    last_id: int | None
    model: str | None  # provider:model
    trigger: str | None
    first_words: str
    retracted: bool
    retracted_by: int | None
    retraction_reason: str | None


class Listing(TypedDict):
    reflections: list[Row]
    count: int  # not retracted
    retracted: int


class Shown(Row):
    """``pmm reflections show``: the row, then its text, cost and what it led to."""

    text: str
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: int | None
    rejected: list[str]
    led_to: list[Change]


class Undone(TypedDict):
    traits: dict[str, list[float]]  # trait -> [before, after], only those that changed
    dropped: list[int]
    reopened: list[int]


class Retracted(Undone):
    """``pmm reflections retract --json``: the retraction event, then what it undid."""

    event: Change


def _model(meta: Meta) -> str | None:
    if "provider" in meta:
        return f"{meta['provider']}:{meta.get('model', '?')}"
    return meta.get("model_name") if isinstance(meta.get("model_name"), str) else None


def _row(event: Event, retraction: Event | None) -> Row:
    meta = event.meta
    words = event.content.split()
    return {"id": event.id, "ts": event.ts, "said_at": said_at(event),
            "first_id": meta.get("first_id"), "last_id": meta.get("last_id"),
            "model": _model(meta), "trigger": meta.get("trigger"),
            "first_words": " ".join(words[:FIRST_WORDS]) + (" …" if len(words) > FIRST_WORDS else ""),
            "retracted": retraction is not None,
            "retracted_by": retraction.id if retraction is not None else None,
            "retraction_reason": retraction.content if retraction is not None else None}


def listing(path: Path, all_: bool = False) -> Listing:
    """Reflections in the order they were recorded; retracted ones only with ``all_``."""
    with opening.open_read(path) as mind:
        gone = lookup.retractions(mind)
        rows = [_row(e, gone.get(e.id)) for e in mind.events(kind=ev.REFLECTION_RECORDED.name)]
    shown = [r for r in rows if all_ or not r["retracted"]]
    return {"reflections": shown, "count": len(rows) - len(gone.keys() & {r["id"] for r in rows}),
            "retracted": sum(r["retracted"] for r in rows)}


def _reflection(mind: Ledger, reflection: int) -> Event:
    found = lookup.get(mind, [reflection])
    if not found:
        raise errors.UsageError(f"there is no event #{reflection}", hint="see pmm reflections list")
    if found[0].kind != ev.REFLECTION_RECORDED.name:
        raise errors.UsageError(f"#{reflection} is not a reflection but a {found[0].kind} event",
                                hint="see pmm reflections list")
    return found[0]


def show(path: Path, reflection: int) -> Shown:
    """One reflection: its text, the events it covered, model and tokens, the events it led to,
    what of the model's answer was rejected, and its retraction if any."""
    with opening.open_read(path) as mind:
        event = _reflection(mind, reflection)
        led = lookup.with_meta(mind, LED_TO, "reflection", reflection, since=reflection)
        led += lookup.with_meta(mind, [ev.MIND_NAMED.name], "reason", f"reflection #{reflection}",
                                since=reflection)
        retraction = lookup.retractions(mind).get(reflection)
    meta = event.meta
    return {**_row(event, retraction), "text": event.content,
            "tokens_in": meta.get("tokens_in"), "tokens_out": meta.get("tokens_out"),
            "latency_ms": meta.get("latency_ms"), "rejected": list(meta.get("rejected") or []),
            "led_to": [{"id": e.id, "kind": e.kind, "content": e.content, "meta": e.meta}
                       for e in sorted(led, key=lambda e: e.id)]}


def retract(path: Path, reflection: int, reason: str) -> Retracted:
    """Append a ``reflection_retracted``; returns the event and what it undid (trait values
    before and after, commitments dropped and open again)."""
    reason = " ".join(reason.split())
    if not reason:
        raise errors.UsageError("say why the reflection is retracted (--reason TEXT)")
    opening.open_read(path).close()  # a missing file is refused, never created
    with opening.open_write(path, lambda _m: None) as mind:
        before: list[States] = []  # the states the retraction was checked against

        def drafts(_first: int) -> list[Draft]:
            _reflection(mind, reflection)
            states = folded.state(mind)[0]
            window = {entry["id"]: entry for entry in states["reflections"]["window"]}
            if reflection not in window:
                raise errors.UsageError(
                    f"reflection #{reflection} is too old to retract: only the last {RETRACTABLE}"
                    " reflections can be", hint="see pmm reflections list")
            if window[reflection].get("retracted"):
                raise errors.UsageError(f"reflection #{reflection} is retracted already",
                                        hint=f"pmm reflections show {reflection} says when and why")
            before[:] = [states]
            return [Draft(ev.REFLECTION_RETRACTED.name, reason, {"reflection": reflection, "source": "user"})]

        (event,) = mind.append(drafts)
        after = folded.state(mind)[0]
    return {"event": {"id": event.id, "kind": event.kind, "content": event.content, "meta": event.meta},
            **undone(before[0], after)}


def undone(before: States, after: States) -> Undone:
    """What changed between two states of a mind: trait values (before, after), commitments
    dropped and commitments open again."""
    traits = {t: [before["traits"]["values"][t], after["traits"]["values"][t]] for t in ev.OCEAN
              if before["traits"]["values"][t] != after["traits"]["values"][t]}
    old, new = before["commitments"], after["commitments"]

    def status(state: CommitmentsState, key: str) -> str | None:
        if key in state["open"]:
            return "open"
        done = state["done"].get(key)
        return None if done is None else done.get("status")

    keys = sorted({*old["open"], *old["done"]}, key=int)
    return {"traits": traits,
            "dropped": [int(k) for k in keys if status(new, k) == "dropped" != status(old, k)],
            "reopened": [int(k) for k in keys if status(new, k) == "open" != status(old, k)]}
