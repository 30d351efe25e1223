"""Projections: the mind's state as pure folds over its events.

A projection is ``initial()`` plus ``apply(state, event) -> state``: no I/O, no clock, no
randomness, and ``apply`` never mutates the state it is given. ``replay`` folds every projection
in one pass; ``kinds`` lets a projection skip events it does not read. States are plain JSON
values so the ledger can cache them next to the event id and hash they reflect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pmm.domain import events as ev
from pmm.domain.events import Event

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
    version = 1
    kinds: frozenset[str] | None = frozenset({ev.MIND_CREATED.name, ev.MIND_NAMED.name})

    def initial(self) -> State:
        return {"name": None, "created_at": None, "renamed": 0}

    def apply(self, state: State, event: Event) -> State:
        meta = event.meta
        if event.kind == ev.MIND_CREATED.name:
            return {**state, "name": meta.get("name", state["name"]), "created_at": event.ts}
        return {**state, "name": meta["name"], "renamed": state["renamed"] + 1}


class Activity:
    """How much has happened: events by kind, sessions, messages, and the first/last time."""

    name = "activity"
    version = 1
    kinds: frozenset[str] | None = None

    def initial(self) -> State:
        return {"events": 0, "by_kind": {}, "first_ts": None, "last_ts": None}

    def apply(self, state: State, event: Event) -> State:
        by_kind = state["by_kind"]
        return {
            "events": state["events"] + 1,
            "by_kind": {**by_kind, event.kind: by_kind.get(event.kind, 0) + 1},
            "first_ts": state["first_ts"] or event.ts,
            "last_ts": event.ts,
        }


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
    """Model usage per ``provider:model``: answers, tokens in and out, total latency."""

    name = "usage"
    version = 1
    kinds: frozenset[str] | None = frozenset({ev.RESPONSE_SENT.name})

    def initial(self) -> State:
        return {}

    def apply(self, state: State, event: Event) -> State:
        meta = event.meta
        if "latency_ms" not in meta or "provider" not in meta:
            return state  # an imported answer: no usage was measured
        label = f"{meta['provider']}:{meta.get('model', '?')}"
        row = state.get(label, {"answers": 0, "tokens_in": 0, "tokens_out": 0, "latency_ms": 0})
        return {**state, label: {
            "answers": row["answers"] + 1,
            "tokens_in": row["tokens_in"] + (meta.get("tokens_in") or 0),
            "tokens_out": row["tokens_out"] + (meta.get("tokens_out") or 0),
            "latency_ms": row["latency_ms"] + meta["latency_ms"],
        }}


PROJECTIONS: tuple[Projection, ...] = (Identity(), Activity(), Models(), Usage())


def projections_version() -> str:
    """Names and versions of every projection: a cache from other code is not reused."""
    return ",".join(f"{p.name}:{p.version}" for p in PROJECTIONS)


def initial_state() -> dict[str, State]:
    return {p.name: p.initial() for p in PROJECTIONS}


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
        for name, apply in self._every:
            states[name] = apply(states[name], event)
        extra = self._by_kind.get(event.kind)
        if extra:
            for name, apply in extra:
                states[name] = apply(states[name], event)

    def add_all(self, events: Iterable[Event]) -> dict[str, State]:
        add = self.add
        for event in events:
            add(event)
        return self.states


def replay(events: Iterable[Event], states: dict[str, State] | None = None) -> dict[str, State]:
    """Fold ``events`` into ``states`` (default: the initial states); returns the new states."""
    return Fold(states).add_all(events)
