"""The mind's growth as projections: its OCEAN traits, its commitments and its reflections,
with the owner's retractions honoured (docs/mind-model.md defines every quantity; the metrics
over these states are in ``pmm.domain.dynamics``). Pure folds, as every projection
(``pmm.domain.projections``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.domain.states import (
    Commitment,
    CommitmentsState,
    LatestReflection,
    Noted,
    ReflectionsState,
    Status,
    TraitsPublic,
    TraitsState,
    TraitStep,
)
from pmm.domain.when import said_at

MAX_TRAIT_STEP = 0.05  # the most one trait_adjusted event can move a trait
TRAIT_DEFAULT = 0.5
RECENT_STEPS = 10  # trait steps remembered for identity stability
RETRACTABLE = 100  # the latest reflections the owner can retract (each projection keeps their ids)
KEPT_STEPS = 5 * RETRACTABLE  # trait steps kept to undo: a reflection takes one step per trait at most


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _noted(window: list[Noted], entry: Noted) -> list[Noted]:
    """The window of the last ``RETRACTABLE`` reflections, with a new one."""
    return [*window[-(RETRACTABLE - 1):], entry]


def _retracting(window: list[Noted], reflection: object) -> list[Noted] | None:
    """The window with ``reflection`` marked retracted, or None when the retraction does not
    count: not one of the last ``RETRACTABLE`` reflections, or retracted already. Traits,
    Commitments and Reflections each keep such a window, so all three agree on it."""
    for i, entry in enumerate(window):
        if entry["id"] == reflection and type(reflection) is int:
            if entry.get("retracted"):
                return None
            return [*window[:i], {"id": reflection, "retracted": True}, *window[i + 1:]]
    return None


def _is_retracted(window: list[Noted], reflection: object) -> bool:
    return any(entry["id"] == reflection and entry.get("retracted") for entry in window)


def _step(state: TraitsPublic, trait: str, step: float) -> TraitsPublic:
    """The public trait state after one bounded step (the clamp at 0 and 1 makes it path-dependent)."""
    old = state["values"][trait]
    new = round(_clamp(old + step, 0.0, 1.0), 6)
    applied = abs(new - old)
    return {"values": {**state["values"], trait: new}, "adjustments": state["adjustments"] + 1,
            "recent": (state["recent"] + [round(applied, 6)])[-RECENT_STEPS:],
            "moved": round(state["moved"] + applied, 6)}


def _public(state: TraitsPublic) -> TraitsPublic:
    return {"values": state["values"], "adjustments": state["adjustments"],
            "recent": state["recent"], "moved": state["moved"]}


def _parts(step: TraitStep) -> tuple[int, int, str, float]:
    """A kept step's parts (a JSON array, so that the cache reads back what was folded)."""
    event_id, reflection, trait, value = step
    return int(event_id), int(reflection), str(trait), float(value)


class Traits:
    """OCEAN traits: 0.5 each at first; each adjustment moves one trait by at most
    ``MAX_TRAIT_STEP`` and keeps it in [0, 1].

    A retracted reflection's steps are undone as if never taken: the last ``KEPT_STEPS`` steps
    (``steps``: event id, reflection id or 0, trait, bounded step) are kept with the state before
    the oldest of them (``base``), and the steps that remain are taken again from there."""

    name = "traits"
    version = 2
    kinds: frozenset[str] | None = frozenset({ev.TRAIT_ADJUSTED.name, ev.REFLECTION_RECORDED.name,
                                              ev.REFLECTION_RETRACTED.name})
    content: frozenset[str] = frozenset()

    def initial(self) -> TraitsState:
        public: TraitsPublic = {"values": {t: TRAIT_DEFAULT for t in ev.OCEAN}, "adjustments": 0, "recent": [],
                  "moved": 0.0}
        return {**public, "base": public, "steps": [], "reflections": [], "undone": 0, "refused": 0}

    def apply(self, state: TraitsState, event: Event) -> TraitsState:
        if event.kind == ev.REFLECTION_RECORDED.name:
            return {**state, "reflections": _noted(state["reflections"], {"id": event.id})}
        meta = event.meta
        if event.kind == ev.REFLECTION_RETRACTED.name:
            return self._retract(state, meta.get("reflection"))
        trait, delta, reflection = meta.get("trait"), meta.get("delta"), meta.get("reflection")
        if (trait not in state["values"] or isinstance(delta, bool)
                or not isinstance(delta, (int, float)) or delta != delta):
            return state  # an unknown trait or a non-number changes nothing
        if type(reflection) is not int:
            reflection = 0
        elif _is_retracted(state["reflections"], reflection):
            return state  # a step of a retracted reflection (only a foreign writer adds one)
        try:
            step = _clamp(float(delta), -MAX_TRAIT_STEP, MAX_TRAIT_STEP)
        except OverflowError:  # an integer beyond any float (only a foreign file holds one)
            step = MAX_TRAIT_STEP if delta > 0 else -MAX_TRAIT_STEP
        steps: list[TraitStep] = [*state["steps"], [event.id, reflection, str(trait), step]]
        base = state["base"]
        if len(steps) > KEPT_STEPS:  # the oldest step settles into the base: no longer undone
            _, _, oldest, taken = _parts(steps[0])
            base = _step(base, oldest, taken)
            steps = steps[1:]
        return {**state, **_step(state, str(trait), step), "base": base, "steps": steps}

    def _retract(self, state: TraitsState, reflection: object) -> TraitsState:
        window = _retracting(state["reflections"], reflection)
        if window is None:
            return {**state, "refused": state["refused"] + 1}
        steps = [s for s in state["steps"] if s[1] != reflection]
        public = _public(state)
        if len(steps) != len(state["steps"]):
            public = state["base"]
            for s in steps:
                _, _, trait, step = _parts(s)
                public = _step(public, trait, step)
        return {**state, **public, "steps": steps, "reflections": window,
                "undone": state["undone"] + len(state["steps"]) - len(steps)}


STATUSES: tuple[Status, ...] = ("closed", "expired", "dropped")  # a commitment that is not open: kept, lapsed, dropped


class Commitments:
    """Commitments by the id of the event that opened them: open ones with their text, due time
    and the turn count when opened; kept (closed with evidence), lapsed (expired) and dropped
    ones, with how many are in each status now (``current``: what success is computed from).

    A close counts only when the commitment is open and every evidence id names an event after
    the opening (or the latest reopening) and before the close; otherwise it is counted in
    ``refused`` and nothing else changes. ``turns`` counts live user messages, for expiry by
    turns: imported ones (said at another time, ``imported_turns``) are history and age nothing.
    A retracted reflection's commitments are dropped, and those it closed are open again."""

    name = "commitments"
    version = 2
    kinds: frozenset[str] | None = frozenset({
        ev.COMMITMENT_OPENED.name, ev.COMMITMENT_CLOSED.name, ev.COMMITMENT_EXPIRED.name,
        ev.COMMITMENT_REOPENED.name, ev.COMMITMENT_DROPPED.name, ev.MESSAGE_RECEIVED.name,
        ev.REFLECTION_RECORDED.name, ev.REFLECTION_RETRACTED.name})
    content: frozenset[str] = frozenset({ev.COMMITMENT_OPENED.name, ev.COMMITMENT_CLOSED.name})

    def initial(self) -> CommitmentsState:
        return {"open": {}, "done": {}, "opened": 0, "closed": 0, "expired": 0, "reopened": 0,
                "dropped": 0, "refused": 0, "turns": 0, "imported_turns": 0,
                "current": dict.fromkeys(STATUSES, 0), "reflections": []}

    def apply_run(self, state: CommitmentsState, events: list[Event]) -> CommitmentsState:
        """``apply`` of each of ``events`` in turn, the live user messages between two other
        events counted in one step (each only adds one to ``turns``)."""
        message = ev.MESSAGE_RECEIVED.name
        return _counting(self.apply, state, events, "turns",
                         lambda e: e.kind == message and '"original_ts"' not in e.meta_json)

    def apply(self, state: CommitmentsState, event: Event) -> CommitmentsState:
        kind = event.kind
        if kind == ev.MESSAGE_RECEIVED.name:
            if '"original_ts"' in event.meta_json and said_at(event) != event.ts:
                return {**state, "imported_turns": state["imported_turns"] + 1}
            return {**state, "turns": state["turns"] + 1}
        if kind == ev.REFLECTION_RECORDED.name:
            return {**state, "reflections": _noted(state["reflections"], {"id": event.id})}
        meta = event.meta
        if kind == ev.REFLECTION_RETRACTED.name:
            return _retract_commitments(state, meta.get("reflection"), event.id)
        if kind == ev.COMMITMENT_OPENED.name:
            entry: Commitment = {"text": event.content, "opened_id": event.id, "opened_at": event.ts,
                     "due": _text(meta.get("due")), "turns_at": state["turns"],
                     "source": _text(meta.get("source"))}
            if type(meta.get("reflection")) is int:
                entry["reflection"] = meta["reflection"]
            return {**state, "open": {**state["open"], str(event.id): entry}, "opened": state["opened"] + 1}
        key = str(meta.get("commitment"))
        if kind == ev.COMMITMENT_REOPENED.name:
            if key not in state["done"]:
                return {**state, "refused": state["refused"] + 1}
            entry = {**_reopened(state["done"][key]), "due": _text(meta.get("due")),
                     "turns_at": state["turns"], "since_id": event.id}
            return {**_moved(state, key, entry, state["done"][key]["status"], None),
                    "reopened": state["reopened"] + 1}
        if kind == ev.COMMITMENT_DROPPED.name:
            found = state["open"].get(key) or state["done"].get(key)
            if found is None or found.get("status") == "dropped":
                return {**state, "refused": state["refused"] + 1}
            was = found.get("status")
            dropped: Commitment = {**_reopened(found), "status": "dropped", "closed_id": event.id}
            return {**_moved(state, key, dropped, was, "dropped"), "dropped": state["dropped"] + 1}
        if key not in state["open"]:
            return {**state, "refused": state["refused"] + 1}
        entry = state["open"][key]
        if kind == ev.COMMITMENT_CLOSED.name:
            evidence = meta.get("evidence")
            if not valid_evidence(evidence, since(entry), event.id) or not event.content.strip():
                return {**state, "refused": state["refused"] + 1}
            entry = {**entry, "status": "closed", "closed_id": event.id}
            if type(meta.get("reflection")) is int:
                entry["closed_by_reflection"] = meta["reflection"]
            return {**_moved(state, key, entry, None, "closed"), "closed": state["closed"] + 1}
        entry = {**entry, "status": "expired", "closed_id": event.id}
        return {**_moved(state, key, entry, None, "expired"), "expired": state["expired"] + 1}


S = TypeVar("S", CommitmentsState, ReflectionsState)


def _counting(apply: Callable[[S, Event], S], state: S, events: list[Event], field: str,
              counted: Callable[[Event], bool]) -> S:
    """``apply`` of each of ``events`` in turn, where each event ``counted`` only adds one to
    ``state[field]``: the runs of those between two other events are added in one step."""
    turns = 0
    for event in events:
        if counted(event):
            turns += 1
            continue
        if turns:
            state, turns = cast(S, {**state, field: cast(Any, state)[field] + turns}), 0
        state = apply(state, event)
    return cast(S, {**state, field: cast(Any, state)[field] + turns}) if turns else state


def _reopened(entry: Commitment) -> Commitment:
    """An entry without what its last close, expiry or drop set."""
    kept = entry.copy()
    kept.pop("status", None)
    kept.pop("closed_id", None)
    kept.pop("closed_by_reflection", None)
    return kept


def _moved(state: CommitmentsState, key: str, entry: Commitment, was: Status | None,
           now: Status | None) -> CommitmentsState:
    """``state`` with commitment ``key`` moved from status ``was`` to ``now`` (None: open)."""
    open_, done = dict(state["open"]), dict(state["done"])  # copies: the state given is not changed
    open_.pop(key, None)
    done.pop(key, None)
    if now is None:
        open_[key] = entry
    else:
        done[key] = entry
    current = dict(state["current"])
    if was is not None:
        current[was] -= 1
    if now is not None:
        current[now] += 1
    return {**state, "open": open_, "done": done, "current": current}


def _retract_commitments(state: CommitmentsState, reflection: object, event_id: int) -> CommitmentsState:
    """Every commitment the reflection opened is dropped (whatever its status: it should never
    have been), and every one whose current close it made is open again, as before that close."""
    window = _retracting(state["reflections"], reflection)
    if window is None:
        return {**state, "refused": state["refused"] + 1}
    state = {**state, "reflections": window}
    for key, entry in [*state["open"].items(), *state["done"].items()]:
        was = entry.get("status")
        if entry.get("reflection") == reflection and was != "dropped":
            dropped: Commitment = {**_reopened(entry), "status": "dropped", "closed_id": event_id}
            state = {**_moved(state, key, dropped, was, "dropped"), "dropped": state["dropped"] + 1}
        elif was == "closed" and entry.get("closed_by_reflection") == reflection:
            state = _moved(state, key, _reopened(entry), was, None)
    return state


def _text(value: object) -> str | None:
    """A value read later as text (a due time): anything else is as good as absent."""
    return value if isinstance(value, str) else None


def since(entry: Commitment) -> int:
    """The event after which evidence for an open commitment must come: its opening, or its
    latest reopening (evidence that closed it before does not close it again)."""
    return int(entry.get("since_id") or entry["opened_id"])


def valid_evidence(evidence: object, opened_id: int, closing_id: int) -> bool:
    """Evidence is a non-empty list of ids of events after the opening and before the close
    (ids have no gaps, so every such id names an existing event)."""
    return (isinstance(evidence, list) and bool(evidence)
            and all(isinstance(e, int) and not isinstance(e, bool) and opened_id < e < closing_id
                    for e in evidence))


class Reflections:
    """How many reflections count (``count``: not retracted), the latest one that counts, and how
    many user messages came since the latest recorded (retracted or not: a retraction overrules
    what the mind concluded, it does not make the events it looked at new again; ``reflected_to``
    is the last event id any reflection covered). ``window`` holds the last ``RETRACTABLE``
    reflections (id, time and ``last_id``: their text stays in the ledger), so that retracting
    the latest makes the one before it the latest again.

    A reflection covers events ``first_id`` to ``last_id`` only when ``first_id <= last_id`` and
    both come before it: any other range (only a foreign writer records one) covers nothing, so
    it can neither skip history nor, with ``last_id`` at the largest id, end reflection for good."""

    name = "reflections"
    version = 3
    kinds: frozenset[str] | None = frozenset({ev.REFLECTION_RECORDED.name, ev.MESSAGE_RECEIVED.name,
                                              ev.REFLECTION_RETRACTED.name})
    content: frozenset[str] = frozenset()

    def initial(self) -> ReflectionsState:
        return {"count": 0, "latest": None, "turns_since": 0, "recorded": 0, "retracted": 0,
                "refused": 0, "reflected_to": 0, "window": []}

    def apply_run(self, state: ReflectionsState, events: list[Event]) -> ReflectionsState:
        """``apply`` of each of ``events`` in turn, the user messages between two other events
        counted in one step (each only adds one to ``turns_since``)."""
        message = ev.MESSAGE_RECEIVED.name
        return _counting(self.apply, state, events, "turns_since", lambda e: e.kind == message)

    def apply(self, state: ReflectionsState, event: Event) -> ReflectionsState:
        if event.kind == ev.MESSAGE_RECEIVED.name:
            return {**state, "turns_since": state["turns_since"] + 1}
        meta = event.meta
        if event.kind == ev.REFLECTION_RETRACTED.name:
            window = _retracting(state["window"], meta.get("reflection"))
            if window is None:
                return {**state, "refused": state["refused"] + 1}
            kept = [entry for entry in window if not entry.get("retracted")]
            return {**state, "count": state["count"] - 1, "retracted": state["retracted"] + 1,
                    "latest": _latest(kept[-1]) if kept else None, "window": window}
        last_id = _covered(meta, event.id)
        latest: LatestReflection = {"id": event.id, "ts": event.ts, "last_id": last_id}
        covered = max(last_id or 0, state["reflected_to"])
        return {**state, "count": state["count"] + 1, "latest": latest, "turns_since": 0,
                "recorded": state["recorded"] + 1, "reflected_to": covered,
                "window": _noted(state["window"], {"id": event.id, "ts": event.ts, "last_id": last_id})}


def _latest(entry: Noted) -> LatestReflection:
    """A window entry that is not retracted, as the latest reflection (Reflections' window
    entries carry their time and range until retracted)."""
    return {"id": entry["id"], "ts": entry["ts"], "last_id": entry["last_id"]}


def _covered(meta: dict[str, Any], event_id: int) -> int | None:
    """The last event a reflection covered, or None when its range names no earlier events."""
    first_id, last_id = meta.get("first_id"), meta.get("last_id")
    if type(first_id) is int and type(last_id) is int and 0 <= first_id <= last_id < event_id:
        return last_id
    return None
