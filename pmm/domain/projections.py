"""Projections: the mind's state as pure folds over its events.

A projection is ``initial()`` plus ``apply(state, event) -> state``: no I/O, no clock, no
randomness, and ``apply`` never mutates the state it is given. ``replay`` folds every projection
in one pass; ``kinds`` lets a projection skip events it does not read. States are plain JSON
values so the ledger can cache them next to the event id and hash they reflect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from itertools import compress, islice
from operator import itemgetter
from typing import Any, Protocol, TypeVar, cast

from pmm import errors
from pmm.domain import checks, costs
from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.domain.growth import Commitments, Reflections, Traits
from pmm.domain.states import (
    ActivityState,
    IdentityState,
    KeptSummary,
    ModelFields,
    ModelsState,
    Note,
    SpendState,
    StandingState,
    States,
    SummariesState,
    Switched,
    UsageRow,
    UsageState,
)
from pmm.domain.when import said_at

S = TypeVar("S")


class Projection(Protocol[S]):
    name: str
    version: int
    kinds: frozenset[str] | None  # None: every event
    content: frozenset[str]  # the kinds whose content apply reads: a replay reads no other's

    def initial(self) -> S: ...

    def apply(self, state: S, event: Event) -> S: ...


class Identity:
    """Who the mind is: its name and when it began."""

    name = "identity"
    version = 2
    kinds: frozenset[str] | None = frozenset({ev.MIND_CREATED.name, ev.MIND_NAMED.name})
    content: frozenset[str] = frozenset()

    def initial(self) -> IdentityState:
        return {"name": None, "created_at": None, "renamed": 0, "names": 0}

    def apply(self, state: IdentityState, event: Event) -> IdentityState:
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
    ``said_to``). ``pmm stats`` reports the span said from these (services/stats.py)."""

    name = "activity"
    version = 2
    kinds: frozenset[str] | None = None
    content: frozenset[str] = frozenset()

    def initial(self) -> ActivityState:
        return {"events": 0, "by_kind": {}, "first_ts": None, "last_ts": None,
                "backdated": 0, "said_from": None, "said_to": None}

    def apply(self, state: ActivityState, event: Event) -> ActivityState:
        by_kind, ts = state["by_kind"], event.ts
        new: ActivityState = {
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
    version = 2  # 2: model_changed (a cache folded without it is folded again)
    kinds: frozenset[str] | None = frozenset(
        {ev.MODEL_ADDED.name, ev.MODEL_CHANGED.name, ev.MODEL_REMOVED.name, ev.MODEL_SWITCHED.name})
    content: frozenset[str] = frozenset()

    def initial(self) -> ModelsState:
        return {"models": {}, "active": {role: None for role in ev.ROLES}, "switches": 0}

    def apply(self, state: ModelsState, event: Event) -> ModelsState:
        meta = event.meta
        name = meta["name"]
        if event.kind == ev.MODEL_ADDED.name:
            # The meta passed its kind's checks (checks.check_row): these are its declared fields.
            spec = cast(ModelFields, {k: v for k, v in meta.items() if k not in ("name", "v")})
            return {**state, "models": {**state["models"], name: spec}}
        if event.kind == ev.MODEL_CHANGED.name:
            if name not in state["models"]:
                return state  # only a crafted mind changes a model it never added
            spec = cast(ModelFields, {k: v for k, v in meta.items() if k not in ("name", "v", "changed")})
            return {**state, "models": {**state["models"], name: spec}}
        if event.kind == ev.MODEL_REMOVED.name:
            models = {k: v for k, v in state["models"].items() if k != name}
            active = {role: (None if cur and cur["name"] == name else cur)
                      for role, cur in state["active"].items()}
            return {**state, "models": models, "active": active}
        role = meta["role"]
        switched = cast(Switched, {k: v for k, v in meta.items() if k not in ("role", "v")})
        return {**state, "active": {**state["active"], role: switched},
                "switches": state["switches"] + 1}


class Usage:
    """Model usage per ``provider:model``: answers and reflections, tokens in, out and through
    the prompt cache, how many counts were estimated, the total latency of answers, and the
    cost at the prices each event recorded (``pmm.domain.costs``)."""

    name = "usage"
    version = 3  # 3: cache tokens, estimates and recorded prices
    kinds: frozenset[str] | None = frozenset({ev.RESPONSE_SENT.name, ev.REFLECTION_RECORDED.name})
    content: frozenset[str] = frozenset()

    def initial(self) -> UsageState:
        return {}

    def apply_run(self, state: UsageState, events: list[Event]) -> UsageState:
        """``apply`` of each of ``events`` in turn, skipping those it returns unchanged early."""
        apply = self.apply
        for event in events:
            text = event.meta_json
            if '"latency_ms"' in text or "\\" in text:
                state = apply(state, event)
        return state

    def apply(self, state: UsageState, event: Event) -> UsageState:
        text = event.meta_json
        if '"latency_ms"' not in text and "\\" not in text:
            return state  # no such key, however spelled (an escaped one needs a backslash)
        meta = event.meta
        if "latency_ms" not in meta or "provider" not in meta:
            return state  # an imported answer: no usage was measured
        label = f"{meta['provider']}:{meta.get('model', '?')}"
        row = state.get(label) or _NO_USAGE
        answer = event.kind == ev.RESPONSE_SENT.name
        # replay folds every answer through here: plain lookups, no helper calls for the common case
        tokens_in, tokens_out = meta.get("tokens_in") or 0, meta.get("tokens_out") or 0
        read, write = meta.get("tokens_cache_read") or 0, meta.get("tokens_cache_write") or 0
        spent, unpriced = row["spent"], row["unpriced"]
        paid = costs.spent(meta) if "price_in" in meta or "price_out" in meta else None
        if paid is None:
            unpriced = [unpriced[0] + tokens_in, unpriced[1] + tokens_out, unpriced[2] + read, unpriced[3] + write]
        else:
            before = spent.get(paid.currency, (0.0, 0.0))
            spent = {**spent, paid.currency: [before[0] + paid.cost, before[1] + paid.saved]}
        return {**state, label: {
            "answers": row["answers"] + answer,
            "reflections": row["reflections"] + (not answer),
            "tokens_in": row["tokens_in"] + tokens_in,
            "tokens_out": row["tokens_out"] + tokens_out,
            "latency_ms": row["latency_ms"] + (meta["latency_ms"] if answer else 0),
            "cache_read": row["cache_read"] + read,
            "cache_write": row["cache_write"] + write,
            "estimated": row["estimated"] + (meta.get("usage_estimated") is True),
            "spent": spent, "unpriced": unpriced,
        }}


_NO_USAGE: UsageRow = {"answers": 0, "reflections": 0, "tokens_in": 0, "tokens_out": 0, "latency_ms": 0,
                       "cache_read": 0, "cache_write": 0, "estimated": 0, "spent": {}, "unpriced": [0, 0, 0, 0]}


class Spend:
    """What each model spent per UTC day of the events' own times, by currency: answers,
    reflections and summaries that recorded their prices. ``pmm model set --max-cost`` caps it."""

    name = "spend"
    version = 1
    kinds: frozenset[str] | None = frozenset(
        {ev.RESPONSE_SENT.name, ev.REFLECTION_RECORDED.name, ev.SUMMARY_RECORDED.name})
    content: frozenset[str] = frozenset()

    def initial(self) -> SpendState:
        return {}

    def apply_run(self, state: SpendState, events: list[Event]) -> SpendState:
        """``apply`` of each of ``events`` in turn, skipping those it returns unchanged early."""
        apply = self.apply
        for event in events:
            if '"price_' in event.meta_json:
                state = apply(state, event)
        return state

    def apply(self, state: SpendState, event: Event) -> SpendState:
        if '"price_' not in event.meta_json:
            return state  # unpriced (most events of most minds): not worth parsing the meta again
        meta = event.meta
        paid = costs.spent(meta)
        if paid is None or "model_name" not in meta:
            return state
        day, name = event.ts[:10], str(meta["model_name"])
        models = state.get(day, {})
        amounts = models.get(name, {})
        amounts = {**amounts, paid.currency: amounts.get(paid.currency, 0.0) + paid.cost}
        return {**state, day: {**models, name: amounts}}


class Standing:
    """Standing memory, always in the prompt: the persona (the event that set it, its text and
    time) and the pinned notes still pinned, in the order they were pinned."""

    name = "standing"
    version = 1
    kinds: frozenset[str] | None = frozenset({ev.PERSONA_SET.name, ev.PERSONA_CLEARED.name,
                                              ev.NOTE_PINNED.name, ev.NOTE_UNPINNED.name})
    content: frozenset[str] = frozenset({ev.PERSONA_SET.name, ev.NOTE_PINNED.name})

    def initial(self) -> StandingState:
        return {"persona": None, "pinned": [], "personas": 0, "pins": 0, "unpins": 0}

    def apply(self, state: StandingState, event: Event) -> StandingState:
        kind = event.kind
        if kind == ev.NOTE_PINNED.name:
            entry: Note = {"id": event.id, "text": event.content, "ts": event.ts}
            return {**state, "pinned": [*state["pinned"], entry], "pins": state["pins"] + 1}
        if kind == ev.NOTE_UNPINNED.name:
            note = event.meta["note"]
            kept = [entry for entry in state["pinned"] if entry["id"] != note]
            if len(kept) == len(state["pinned"]):
                return state  # not a pinned note (only a file written outside pmm says so)
            return {**state, "pinned": kept, "unpins": state["unpins"] + 1}
        text = event.content if kind == ev.PERSONA_SET.name else ""
        persona: Note | None = {"id": event.id, "text": text, "ts": event.ts} if text.strip() else None
        return {**state, "persona": persona, "personas": state["personas"] + 1}


def standing(states: States) -> tuple[tuple[int, str] | None, list[tuple[int, str]]]:
    """What is always in the prompt, in prompt order: the persona as (event id, text), or None,
    then the pinned notes as (event id, text), oldest pin first."""
    state = states["standing"]
    persona = state["persona"]
    return ((persona["id"], persona["text"]) if persona else None,
            [(entry["id"], entry["text"]) for entry in state["pinned"]])


class Summaries:
    """The latest standing summary of the mind's reflections that no retraction has made stale
    (its id, time, text and the reflection ids it condenses), how many summaries were recorded,
    and the newest reflection it (with the summaries it folds in) covers (``covered_to``): the
    next summary condenses the reflections after it.

    A summary is stale once a reflection it covers is retracted, and so is every later summary
    that folds its text in (``previous``): the standing one is then the newest clean summary
    before it, or none, and the next summary is rebuilt from the reflections after that one.
    The last ``KEPT`` clean summaries are kept for that fall-back; covers are counted only when
    they name earlier events (a summary can condense only what was already written)."""

    name = "summaries"
    version = 2
    kinds: frozenset[str] | None = frozenset({ev.SUMMARY_RECORDED.name, ev.REFLECTION_RETRACTED.name})
    content: frozenset[str] = frozenset({ev.SUMMARY_RECORDED.name})
    KEPT = 16  # clean summaries kept to fall back on (16 cover at least 128 reflections normally)
    RETRACTED = 100  # retracted reflection ids remembered (only one of the last 100 is retractable)

    def initial(self) -> SummariesState:
        return {"count": 0, "latest": None, "covered_to": 0, "kept": [], "retracted": []}

    def apply(self, state: SummariesState, event: Event) -> SummariesState:
        kept: list[KeptSummary] = list(state["kept"])
        retracted: list[int] = list(state["retracted"])
        count = state["count"]
        if event.kind == ev.REFLECTION_RETRACTED.name:
            target = event.meta.get("reflection")
            if type(target) is not int or target in retracted:
                return state
            retracted = [*retracted, target][-self.RETRACTED:]
            stale = next((n for n, s in enumerate(kept) if target in s["covers"]), None)
            if stale is not None:
                kept = kept[:stale]  # it and every later summary folding its text in
        else:
            count += 1
            covers = sorted({c for c in event.meta.get("covers") or []
                             if type(c) is int and 0 < c < event.id})
            previous = event.meta.get("previous")
            follows = (kept[-1]["id"] if kept else None) == (previous if type(previous) is int else None)
            if covers and follows and not set(covers) & set(retracted):
                to = max([kept[-1]["to"] if kept else 0, *covers])
                summary: KeptSummary = {"id": event.id, "ts": event.ts, "text": event.content,
                                        "covers": covers, "to": to}
                kept = [*kept, summary][-self.KEPT:]
        latest = kept[-1] if kept else None
        return {"count": count, "kept": kept, "retracted": retracted,
                "latest": None if latest is None else {"id": latest["id"], "ts": latest["ts"],
                                                       "text": latest["text"], "covers": latest["covers"]},
                "covered_to": latest["to"] if latest else 0}


# Any: the fold applies each projection to its own state, by name (States has one key each).
ACTIVITY = Activity()  # the one projection of every event: the fold counts for it (``Fold``)
PROJECTIONS: tuple[Projection[Any], ...] = (Identity(), ACTIVITY, Models(), Usage(), Spend(),
                                       Traits(), Commitments(), Reflections(), Standing(),
                                       Summaries())
# The kinds whose content some projection reads: a replay reads no other event's content.
CONTENT_KINDS: frozenset[str] = frozenset().union(*(p.content for p in PROJECTIONS))


def projections_version() -> str:
    """Names and versions of every projection: a cache from other code is not reused."""
    return ",".join(f"{p.name}:{p.version}" for p in PROJECTIONS)


def initial_state() -> States:
    return cast(States, {p.name: p.initial() for p in PROJECTIONS})


_MERGED = ev.MIND_MERGED.name
_UNREADABLE = (TypeError, KeyError, ValueError, AttributeError, IndexError, OverflowError,
               RecursionError)
_ORIGINAL = '"original_ts"'  # only an event with it can be backdated (Activity reads its time)
RUN = 4096  # events folded together by add_all (what a replay reads at once)


class Fold:
    """An incremental replay: feed events one by one (``add``) or in runs (``add_all``) and
    read ``states`` at any time.

    ``Activity`` sees every event; most only move its counters, so the fold counts them
    (``_seen``: events by kind, in the order first met) and builds its state when ``states``
    is read: the state ``Activity.apply`` would have made, event by event. An event that could
    be backdated (its meta names ``original_ts``) goes through ``Activity.apply`` itself."""

    def __init__(self, states: States | None = None) -> None:
        self._states: States = states.copy() if states is not None else initial_state()
        every: list[tuple[str, Callable[[Any, Event], Any]]] = []
        self._by_kind: dict[str, list[tuple[str, Callable[[Any, Event], Any]]]] = {}
        for p in PROJECTIONS:
            if p is ACTIVITY:
                continue
            if p.kinds is None:
                every.append((p.name, p.apply))
            else:
                for kind in p.kinds:
                    self._by_kind.setdefault(kind, []).append((p.name, p.apply))
        self._every = tuple(every)
        # Each kind's projections in one tuple, in the order above (every kind's first): a bulk
        # import folds a million events through here, one lookup and one loop each.
        self._plan = {kind: (*self._every, *extra) for kind, extra in self._by_kind.items()}
        self._runs = tuple((p.name, p.kinds, _runner(p)) for p in PROJECTIONS if p is not ACTIVITY)
        # mind_merged events met, not folded: the states after one are a re-fold in canonical
        # order (pmm.domain.merging), which needs the states at its fork: the ledger's to give.
        self.merges: list[Event] = []
        # Activity's events not yet in its state: how many of each kind, the first and the last
        # time (``first`` as ``Activity.apply`` keeps it: the first that is not empty).
        self._seen: dict[str, int] = {}
        activity = self._states["activity"]
        self._first, self._last = activity["first_ts"], activity["last_ts"]

    @property
    def states(self) -> States:
        if self._seen:
            self._count()
        return self._states

    def _count(self) -> None:
        """Fold the events counted in ``_seen`` into Activity's state."""
        state = self._states["activity"]
        by_kind = dict(state["by_kind"])  # (a kind met before keeps its place, as apply keeps it)
        for kind, n in self._seen.items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        self._states["activity"] = {
            "events": state["events"] + sum(self._seen.values()), "by_kind": by_kind,
            "first_ts": self._first, "last_ts": self._last, "backdated": state["backdated"],
            "said_from": state["said_from"], "said_to": state["said_to"]}
        self._seen.clear()

    def _backdated(self, event: Event) -> None:
        """Activity's state with ``event`` (whose meta names ``original_ts``) folded in."""
        if self._seen:
            self._count()
        state = ACTIVITY.apply(self._states["activity"], event)
        self._states["activity"] = state
        self._first, self._last = state["first_ts"], state["last_ts"]

    def add(self, event: Event) -> None:
        kind = event.kind
        if kind == _MERGED:
            self.merges.append(event)
            return
        states = cast(dict[str, Any], self._states)  # by projection name: each its own state type
        if kind in ev.VERSIONED:  # an older version is read as the current one
            event = checks.upcast(event)
        try:
            if _ORIGINAL in event.meta_json:
                self._backdated(event)
            else:
                seen = self._seen
                seen[kind] = seen.get(kind, 0) + 1
                if not self._first:
                    self._first = event.ts
                self._last = event.ts
            for name, apply in self._plan.get(kind, self._every):
                states[name] = apply(states[name], event)
        except _UNREADABLE:
            raise _unreadable(event) from None

    def add_all(self, events: Iterable[Event]) -> States:
        """``add`` each of ``events`` in turn, read in runs (``add_run``); returns the states."""
        it = iter(events)
        while run := list(islice(it, RUN)):
            self.add_run(run)
        return self.states

    def _add_each(self, events: Iterable[Event]) -> States:
        """``add`` each of ``events`` in turn (one loop, the lookups hoisted out of it)."""
        states = cast(dict[str, Any], self._states)
        plan, every, seen, versioned = self._plan.get, self._every, self._seen, ev.VERSIONED
        merges, upcast, backdated = self.merges, checks.upcast, self._backdated
        first, last = self._first, self._last
        for event in events:
            kind = event[2]
            if kind == _MERGED:
                merges.append(event)
                continue
            if kind in versioned:
                event = upcast(event)
            try:
                ts = event[1]
                if _ORIGINAL in event[4]:
                    self._first, self._last = first, last
                    backdated(event)
                    first, last = self._first, self._last
                else:
                    seen[kind] = seen.get(kind, 0) + 1
                    if not first:
                        first = ts
                    last = ts
                for name, apply in plan(kind, every):
                    states[name] = apply(states[name], event)
            except _UNREADABLE:
                self._first, self._last = first, last
                raise _unreadable(event) from None
        self._first, self._last = first, last
        return self.states

    def add_run(self, events: list[Event]) -> None:
        """``add`` of each of ``events`` (a run read together): when none is a merge, of an older
        version or possibly backdated, Activity counts their kinds at once (the counts, and
        the first and last time, ``add`` would have kept) and each projection folds its own."""
        if not events:
            return
        counts = Counter(map(_KIND, events))
        try:
            plain = not counts.keys() & _SPECIAL and _ORIGINAL not in "".join(map(_META, events))
        except TypeError:  # a meta that is not text (a crafted file): add says which event
            plain = False
        if not plain:
            self._add_each(events)
            return
        # Each projection folds its own events of the run at once (``apply_run`` where it has
        # one): projections read only their own state, so the order between them is free.
        states = cast(dict[str, Any], self._states)
        saved = dict(states)
        if len(counts) == 1:
            groups = {events[0].kind: events}
        else:
            kinds = list(map(_KIND, events))
            groups = {kind: list(compress(events, map(kind.__eq__, kinds))) for kind in counts}
        try:
            for name, reads, run in self._runs:
                if reads is None:
                    mine = events
                else:
                    present = [group for kind, group in groups.items() if kind in reads]
                    if not present:
                        continue
                    # in the run's own order, which is not id order in a merged mind's re-fold
                    mine = present[0] if len(present) == 1 else [e for e in events if e.kind in reads]
                states[name] = run(states[name], mine)
        except (*_UNREADABLE, errors.IntegrityError):
            states.update(saved)  # folded again event by event: refused as add refuses it
            self._add_each(events)
            return
        seen = self._seen
        for kind, n in counts.items():
            seen[kind] = seen.get(kind, 0) + n
        if not self._first:
            self._first = next((ts for ts in map(_TS, events) if ts), events[-1].ts)
        self._last = events[-1].ts


def _runner(p: Projection[Any]) -> Callable[[Any, list[Event]], Any]:
    """``p.apply_run(state, events)``: ``events`` (of its kinds, in id order) folded in turn; a
    projection that has no ``apply_run`` of its own applies them one by one."""
    own: Callable[[Any, list[Event]], Any] | None = getattr(p, "apply_run", None)
    if own is not None:
        return own
    apply = p.apply

    def run(state: Any, events: list[Event]) -> Any:
        for event in events:
            state = apply(state, event)
        return state
    return run


_ID, _TS, _KIND, _META = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(4)  # of an Event
_SPECIAL = frozenset({_MERGED, *ev.VERSIONED})  # kinds add_run leaves to _add_each


def _unreadable(event: Event) -> errors.IntegrityError:
    # Only an event that never passed the schema (checks.check_row) gets here: a file crafted
    # or altered behind pmm's back. Refuse it by name instead of crashing.
    return errors.IntegrityError(
        f"event {event.id} ({event.kind}) does not have the shape its kind declares",
        hint="run `pmm verify` on this mind: it was altered or crafted outside pmm")


def replay(events: Iterable[Event], states: States | None = None) -> States:
    """Fold ``events`` into ``states`` (default: the initial states); returns the new states.
    A merged mind (``mind_merged`` events) needs ``replay_merged``: this leaves them out."""
    return Fold(states).add_all(events)


def replay_merged(events: Iterable[Event], markers: Iterable[Event],
                  between: Callable[[int, int], Iterable[Event]]) -> States:
    """Fold ``events`` (every event from the first, in id order) as a merged mind reads
    (pmm.domain.merging): at each ``mind_merged`` event, the states at its fork with the events
    between folded again in canonical order. ``markers`` are the mind's ``mind_merged`` events
    (to know the forks before the fold gets there); ``between(low, high)`` gives the events
    with ids from low to high (the events are read twice rather than held)."""
    from pmm.domain import merging

    markers = list(markers)
    forks = {f for m in markers if (f := merging.fork_of(m)) is not None}
    fold = Fold()
    at: dict[int, States] = {0: fold.states.copy()} if 0 in forks else {}
    keys = merging.Keys()
    for event in events:
        if event.kind == _MERGED:
            keys.add(event)
            fork = merging.fork_of(event)
            if fork is not None and fork in at:
                fold = Fold(at[fork])
                fold.add_all(merging.canonical(between(fork + 1, event.id - 1), keys))
        else:
            fold.add(event)
        if event.id in forks:
            at[event.id] = fold.states.copy()
    return fold.states
