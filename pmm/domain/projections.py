"""Projections: the mind's state as pure folds over its events.

A projection is ``initial()`` plus ``apply(state, event) -> state``: no I/O, no clock, no
randomness, and ``apply`` never mutates the state it is given. ``replay`` folds every projection
in one pass; ``kinds`` lets a projection skip events it does not read. States are plain JSON
values so the ledger can cache them next to the event id and hash they reflect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pmm import errors
from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.domain.when import said_at

State = dict[str, Any]


class Projection(Protocol):
    name: str
    version: int
    kinds: frozenset[str] | None  # None: every event

    def initial(self) -> State: ...

    def apply(self, state: State, event: Event) -> State: ...


class Identity:
    """Who the mind is: its name and when it began."""

    name = "identity"
    version = 2
    kinds: frozenset[str] | None = frozenset({ev.MIND_CREATED.name, ev.MIND_NAMED.name})

    def initial(self) -> State:
        return {"name": None, "created_at": None, "renamed": 0, "names": 0}

    def apply(self, state: State, event: Event) -> State:
        meta = event.meta
        if event.kind == ev.MIND_CREATED.name:
            named = "name" in meta
            return {**state, "name": meta.get("name", state["name"]), "created_at": event.ts,
                    "names": state["names"] + (1 if named else 0)}
        same = meta["name"] == state["name"]  # naming it what it is already called changes nothing
        return {**state, "name": meta["name"], "renamed": state["renamed"] + 1,
                "names": state["names"] + (0 if same else 1)}


class Activity:
    """How much has happened: events by kind, when the ledger recorded the first and the last
    (``first_ts``, ``last_ts``), and how many events were said at another time than recorded
    (imports: ``backdated``) with the earliest and latest of those times (``said_from``,
    ``said_to``). ``pmm stats`` reports the span said from these (services/overview.py)."""

    name = "activity"
    version = 2
    kinds: frozenset[str] | None = None

    def initial(self) -> State:
        return {"events": 0, "by_kind": {}, "first_ts": None, "last_ts": None,
                "backdated": 0, "said_from": None, "said_to": None}

    def apply(self, state: State, event: Event) -> State:
        by_kind, ts = state["by_kind"], event.ts
        new = {
            "events": state["events"] + 1,
            "by_kind": {**by_kind, event.kind: by_kind.get(event.kind, 0) + 1},
            "first_ts": state["first_ts"] or ts,
            "last_ts": ts,
            "backdated": state["backdated"],
            "said_from": state["said_from"],
            "said_to": state["said_to"],
        }
        # Only imports carry an original time: the substring test keeps every other event cheap.
        if '"original_ts"' in event.meta_json and (said := said_at(event)) != ts:
            low, high = new["said_from"], new["said_to"]  # fixed-format UTC: text order is time order
            new["backdated"] += 1
            new["said_from"] = said if low is None or said < low else low
            new["said_to"] = said if high is None or said > high else high
        return new


class Models:
    """The mind's model configuration: the models it knows by name, and which one answers
    chats and which one reflects (None: the embedded default)."""

    name = "models"
    version = 1
    kinds: frozenset[str] | None = frozenset(
        {ev.MODEL_ADDED.name, ev.MODEL_REMOVED.name, ev.MODEL_SWITCHED.name})

    def initial(self) -> State:
        return {"models": {}, "active": {role: None for role in ev.ROLES}, "switches": 0}

    def apply(self, state: State, event: Event) -> State:
        meta = event.meta
        name = meta["name"]
        if event.kind == ev.MODEL_ADDED.name:
            spec = {k: v for k, v in meta.items() if k not in ("name", "v")}
            return {**state, "models": {**state["models"], name: spec}}
        if event.kind == ev.MODEL_REMOVED.name:
            models = {k: v for k, v in state["models"].items() if k != name}
            active = {role: (None if cur and cur["name"] == name else cur)
                      for role, cur in state["active"].items()}
            return {**state, "models": models, "active": active}
        role = meta["role"]
        switched = {k: v for k, v in meta.items() if k not in ("role", "v")}
        return {**state, "active": {**state["active"], role: switched},
                "switches": state["switches"] + 1}


class Usage:
    """Model usage per ``provider:model``: answers and reflections, tokens in and out, and the
    total latency of answers."""

    name = "usage"
    version = 2
    kinds: frozenset[str] | None = frozenset({ev.RESPONSE_SENT.name, ev.REFLECTION_RECORDED.name})

    def initial(self) -> State:
        return {}

    def apply(self, state: State, event: Event) -> State:
        meta = event.meta
        if "latency_ms" not in meta or "provider" not in meta:
            return state  # an imported answer: no usage was measured
        label = f"{meta['provider']}:{meta.get('model', '?')}"
        row = state.get(label, {"answers": 0, "reflections": 0, "tokens_in": 0, "tokens_out": 0,
                                "latency_ms": 0})
        answer = event.kind == ev.RESPONSE_SENT.name
        return {**state, label: {
            "answers": row["answers"] + (1 if answer else 0),
            "reflections": row.get("reflections", 0) + (0 if answer else 1),
            "tokens_in": row["tokens_in"] + (meta.get("tokens_in") or 0),
            "tokens_out": row["tokens_out"] + (meta.get("tokens_out") or 0),
            "latency_ms": row["latency_ms"] + (meta["latency_ms"] if answer else 0),
        }}


MAX_TRAIT_STEP = 0.05  # the most one trait_adjusted event can move a trait
TRAIT_DEFAULT = 0.5
RECENT_STEPS = 10  # trait steps remembered for identity stability


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class Traits:
    """OCEAN traits: 0.5 each at first; each adjustment moves one trait by at most
    ``MAX_TRAIT_STEP`` and keeps it in [0, 1]."""

    name = "traits"
    version = 1
    kinds: frozenset[str] | None = frozenset({ev.TRAIT_ADJUSTED.name})

    def initial(self) -> State:
        return {"values": {t: TRAIT_DEFAULT for t in ev.OCEAN}, "adjustments": 0, "recent": [],
                "moved": 0.0}

    def apply(self, state: State, event: Event) -> State:
        meta = event.meta
        trait, delta = meta.get("trait"), meta.get("delta")
        if (trait not in state["values"] or isinstance(delta, bool)
                or not isinstance(delta, (int, float)) or delta != delta):
            return state  # an unknown trait or a non-number changes nothing
        try:
            step = _clamp(float(delta), -MAX_TRAIT_STEP, MAX_TRAIT_STEP)
        except OverflowError:  # an integer beyond any float (only a foreign file holds one)
            step = MAX_TRAIT_STEP if delta > 0 else -MAX_TRAIT_STEP
        old = state["values"][trait]
        new = round(_clamp(old + step, 0.0, 1.0), 6)
        applied = abs(new - old)
        return {"values": {**state["values"], trait: new}, "adjustments": state["adjustments"] + 1,
                "recent": (state["recent"] + [round(applied, 6)])[-RECENT_STEPS:],
                "moved": round(state["moved"] + applied, 6)}


class Commitments:
    """Commitments by the id of the event that opened them: open ones with their text, due time
    and the turn count when opened; kept (closed with evidence) and lapsed (expired) ones.

    A close counts only when the commitment is open and every evidence id names an event after
    the opening (or the latest reopening) and before the close; otherwise it is counted in ``refused`` and nothing else
    changes. ``turns`` counts user messages, for expiry by turns."""

    name = "commitments"
    version = 1
    kinds: frozenset[str] | None = frozenset({
        ev.COMMITMENT_OPENED.name, ev.COMMITMENT_CLOSED.name, ev.COMMITMENT_EXPIRED.name,
        ev.COMMITMENT_REOPENED.name, ev.MESSAGE_RECEIVED.name})

    def initial(self) -> State:
        return {"open": {}, "done": {}, "opened": 0, "closed": 0, "expired": 0, "reopened": 0,
                "refused": 0, "turns": 0}

    def apply(self, state: State, event: Event) -> State:
        kind = event.kind
        if kind == ev.MESSAGE_RECEIVED.name:
            return {**state, "turns": state["turns"] + 1}
        meta = event.meta
        if kind == ev.COMMITMENT_OPENED.name:
            entry = {"text": event.content, "opened_id": event.id, "opened_at": event.ts,
                     "due": _text(meta.get("due")), "turns_at": state["turns"],
                     "source": _text(meta.get("source"))}
            return {**state, "open": {**state["open"], str(event.id): entry}, "opened": state["opened"] + 1}
        key = str(meta.get("commitment"))
        if kind == ev.COMMITMENT_REOPENED.name:
            if key not in state["done"]:
                return {**state, "refused": state["refused"] + 1}
            entry = {**state["done"][key], "due": _text(meta.get("due")), "turns_at": state["turns"],
                     "since_id": event.id}
            entry.pop("status", None)
            entry.pop("closed_id", None)
            done = {k: v for k, v in state["done"].items() if k != key}
            return {**state, "open": {**state["open"], key: entry}, "done": done,
                    "reopened": state["reopened"] + 1}
        if key not in state["open"]:
            return {**state, "refused": state["refused"] + 1}
        entry = state["open"][key]
        if kind == ev.COMMITMENT_CLOSED.name:
            evidence = meta.get("evidence")
            if not valid_evidence(evidence, since(entry), event.id) or not event.content.strip():
                return {**state, "refused": state["refused"] + 1}
            status, counter = "closed", "closed"
        else:
            status, counter = "expired", "expired"
        rest = {k: v for k, v in state["open"].items() if k != key}
        done = {**state["done"], key: {**entry, "status": status, "closed_id": event.id}}
        return {**state, "open": rest, "done": done, counter: state[counter] + 1}


def _text(value: Any) -> str | None:
    """A value read later as text (a due time): anything else is as good as absent."""
    return value if isinstance(value, str) else None


def since(entry: dict[str, Any]) -> int:
    """The event after which evidence for an open commitment must come: its opening, or its
    latest reopening (evidence that closed it before does not close it again)."""
    return int(entry.get("since_id") or entry["opened_id"])


def valid_evidence(evidence: Any, opened_id: int, closing_id: int) -> bool:
    """Evidence is a non-empty list of ids of events after the opening and before the close
    (ids have no gaps, so every such id names an existing event)."""
    return (isinstance(evidence, list) and bool(evidence)
            and all(isinstance(e, int) and not isinstance(e, bool) and opened_id < e < closing_id
                    for e in evidence))


class Reflections:
    """How many reflections, the latest one, and how many user messages came since."""

    name = "reflections"
    version = 1
    kinds: frozenset[str] | None = frozenset({ev.REFLECTION_RECORDED.name, ev.MESSAGE_RECEIVED.name})

    def initial(self) -> State:
        return {"count": 0, "latest": None, "turns_since": 0}

    def apply(self, state: State, event: Event) -> State:
        if event.kind == ev.MESSAGE_RECEIVED.name:
            return {**state, "turns_since": state["turns_since"] + 1}
        latest = {"id": event.id, "ts": event.ts, "text": event.content,
                  "last_id": event.meta.get("last_id")}
        return {"count": state["count"] + 1, "latest": latest, "turns_since": 0}


class Standing:
    """Standing memory, always in the prompt: the persona (the event that set it, its text and
    time) and the pinned notes still pinned, in the order they were pinned."""

    name = "standing"
    version = 1
    kinds: frozenset[str] | None = frozenset({ev.PERSONA_SET.name, ev.PERSONA_CLEARED.name,
                                              ev.NOTE_PINNED.name, ev.NOTE_UNPINNED.name})

    def initial(self) -> State:
        return {"persona": None, "pinned": [], "personas": 0, "pins": 0, "unpins": 0}

    def apply(self, state: State, event: Event) -> State:
        kind = event.kind
        if kind == ev.NOTE_PINNED.name:
            entry = {"id": event.id, "text": event.content, "ts": event.ts}
            return {**state, "pinned": [*state["pinned"], entry], "pins": state["pins"] + 1}
        if kind == ev.NOTE_UNPINNED.name:
            note = event.meta["note"]
            kept = [entry for entry in state["pinned"] if entry["id"] != note]
            if len(kept) == len(state["pinned"]):
                return state  # not a pinned note (only a file written outside pmm says so)
            return {**state, "pinned": kept, "unpins": state["unpins"] + 1}
        text = event.content if kind == ev.PERSONA_SET.name else ""
        persona = {"id": event.id, "text": text, "ts": event.ts} if text.strip() else None
        return {**state, "persona": persona, "personas": state["personas"] + 1}


def standing(states: dict[str, State]) -> tuple[tuple[int, str] | None, list[tuple[int, str]]]:
    """What is always in the prompt, in prompt order: the persona as (event id, text), or None,
    then the pinned notes as (event id, text), oldest pin first."""
    state = states["standing"]
    persona = state["persona"]
    return ((persona["id"], persona["text"]) if persona else None,
            [(entry["id"], entry["text"]) for entry in state["pinned"]])


class Summaries:
    """The latest standing summary of the mind's reflections (its id, time, text and the
    reflection ids it condenses), how many there were, and the newest reflection any summary
    covers (``covered_to``): the next summary condenses the reflections after it."""

    name = "summaries"
    version = 1
    kinds: frozenset[str] | None = frozenset({ev.SUMMARY_RECORDED.name})

    def initial(self) -> State:
        return {"count": 0, "latest": None, "covered_to": 0}

    def apply(self, state: State, event: Event) -> State:
        covers = [c for c in event.meta.get("covers") or [] if isinstance(c, int)]
        latest = {"id": event.id, "ts": event.ts, "text": event.content, "covers": covers}
        return {"count": state["count"] + 1, "latest": latest,
                "covered_to": max([state["covered_to"], *covers])}


PROJECTIONS: tuple[Projection, ...] = (Identity(), Activity(), Models(), Usage(), Traits(),
                                       Commitments(), Reflections(), Standing(), Summaries())


def projections_version() -> str:
    """Names and versions of every projection: a cache from other code is not reused."""
    return ",".join(f"{p.name}:{p.version}" for p in PROJECTIONS)


def initial_state() -> dict[str, State]:
    return {p.name: p.initial() for p in PROJECTIONS}


_UNREADABLE = (TypeError, KeyError, ValueError, AttributeError, IndexError, OverflowError,
               RecursionError)


class Fold:
    """An incremental replay: feed events one by one (``add``) and read ``states`` at any time."""

    def __init__(self, states: dict[str, State] | None = None) -> None:
        self.states = dict(states) if states is not None else initial_state()
        every: list[tuple[str, Callable[[State, Event], State]]] = []
        self._by_kind: dict[str, list[tuple[str, Callable[[State, Event], State]]]] = {}
        for p in PROJECTIONS:
            if p.kinds is None:
                every.append((p.name, p.apply))
            else:
                for kind in p.kinds:
                    self._by_kind.setdefault(kind, []).append((p.name, p.apply))
        self._every = tuple(every)

    def add(self, event: Event) -> None:
        states = self.states
        try:
            for name, apply in self._every:
                states[name] = apply(states[name], event)
            extra = self._by_kind.get(event.kind)
            if extra:
                for name, apply in extra:
                    states[name] = apply(states[name], event)
        except _UNREADABLE:
            # Only an event that never passed the schema (events.check_row) gets here: a file
            # crafted or altered behind pmm's back. Refuse it by name instead of crashing.
            raise errors.IntegrityError(
                f"event {event.id} ({event.kind}) does not have the shape its kind declares",
                hint="run `pmm verify` on this mind: it was altered or crafted outside pmm") from None

    def add_all(self, events: Iterable[Event]) -> dict[str, State]:
        add = self.add
        for event in events:
            add(event)
        return self.states


def replay(events: Iterable[Event], states: dict[str, State] | None = None) -> dict[str, State]:
    """Fold ``events`` into ``states`` (default: the initial states); returns the new states."""
    return Fold(states).add_all(events)
