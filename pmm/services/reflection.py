"""``pmm reflect``: the mind looks back at its history, one window at a time, oldest first.

A reflection is shown one contiguous window of unreflected history: every event of the kinds
it reflects on (``SEEN_KINDS``) from just after the last reflection's ``last_id``, oldest first,
as many as fit the model's context window less the answer's limit and the fixed parts of the
prompt (a very long event is clipped, and its line says so; open commitments are shown fewer, or
clipped harder, rather than crowd out the events or the answer). Its ``first_id`` and ``last_id``
are exactly the first and last events shown, so the next window starts where this one ended:
every event is reflected on once. ``reflect`` works through the windows in order, one model
call and one transaction each, at most ``max_windows`` a run, then consolidates when enough
reflections have accumulated (``consolidation``).

The model's answer is validated part by part (``reflection_answer``); the reflection with every
resulting event (trait steps, commitments opened and closed with evidence, a first name,
overdue commitments expired) is appended in one transaction. A failure of the model is
remembered outside the chain (``reflection_backoff``), so a due-only run backs off; an answer
about nothing it was shown (checked against the text as shown, clipped) makes the next try of
that window show half as many events.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from pmm import errors
from pmm.domain import dynamics
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.domain.growth import MAX_TRAIT_STEP
from pmm.domain.states import States
from pmm.ledger import folded, lookup
from pmm.ledger.store import Ledger, now_ts
from pmm.services import consolidation, models, opening, tokens, usage
from pmm.services import reflection_answer as answer
from pmm.services import reflection_backoff as backoff
from pmm.services import reflection_window as window_
from pmm.services.dates import seconds_since
from pmm.services.reports import Change, Meta
from pmm.services.words import plural

__all__ = ["MAX_TRAIT_STEP", "MAX_WINDOWS", "Outcome", "Run", "expirations", "reflect"]
SEEN_KINDS = window_.SEEN_KINDS
MAX_WINDOWS = 10  # windows (model calls) one run reflects on at most; the rest waits
RETRIES_UNGROUNDED = 2  # a run tries a refused window again at once, each time with half of it


class OutcomeJson(TypedDict):
    recorded: bool
    reason: str
    model: str | None
    reflection: Meta | None  # its id and text, then its meta as stored (but ``rejected``)
    changes: list[Change]
    rejected: list[str]


class RunJson(OutcomeJson):
    """``pmm reflect --json``: the latest reflection's fields first, then the run's."""

    reflections: list[OutcomeJson]
    left: int
    next_id: int | None
    summary: Meta | None  # consolidation.Summary.as_json
    summaries: list[Meta]


@dataclass
class Outcome:
    """What one reflection did (``recorded`` False: nothing was due or another ran)."""

    recorded: bool
    reason: str
    reflection: Event | None = None
    events: list[Event] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    model: str | None = None
    applied: dict[int, float] = field(default_factory=dict)  # a trait step's event id: the step taken

    def as_json(self) -> OutcomeJson:
        changes: list[Change] = []
        for e in self.events:
            if e is not self.reflection:
                change: Change = {"id": e.id, "kind": e.kind, "content": e.content, "meta": e.meta}
                if e.id in self.applied:  # the step the trait took (clamped at 0 and 1), not the asked one
                    change["applied"] = self.applied[e.id]
                changes.append(change)
        return {"recorded": self.recorded, "reason": self.reason, "model": self.model,
                "reflection": None if self.reflection is None else {
                    "id": self.reflection.id, "text": self.reflection.content,
                    **{k: v for k, v in self.reflection.meta.items() if k != "rejected"}},
                "changes": changes, "rejected": self.rejected}


@dataclass
class Run:
    """What one ``pmm reflect`` did: the reflections recorded, in order, and why it stopped."""

    reason: str
    outcomes: list[Outcome] = field(default_factory=list)
    left: int = 0  # events of history left for the next run
    next_id: int | None = None  # where the next run starts, when history is left
    summary: consolidation.Summary | None = None  # the latest of ``summaries``
    summaries: list[consolidation.Summary] = field(default_factory=list)
    backed_off: bool = False  # a due-only run did not call the model: the last call failed

    @property
    def recorded(self) -> bool:
        return bool(self.outcomes)

    def as_json(self) -> RunJson:
        """The latest reflection's fields at the top (as one reflection reports itself), every
        reflection of the run in ``reflections``."""
        latest = self.outcomes[-1] if self.outcomes else Outcome(False, self.reason)
        return {**latest.as_json(), "recorded": self.recorded, "reason": self.reason,
                "reflections": [o.as_json() for o in self.outcomes], "left": self.left,
                "next_id": self.next_id,
                "summary": None if self.summary is None else self.summary.as_json(),
                "summaries": [s.as_json() for s in self.summaries]}


# -- the run -------------------------------------------------------------------------------------

def _due_now(states: States) -> tuple[bool, str]:
    latest = states["reflections"]["latest"]
    return dynamics.reflection_due(states, seconds_since(latest["ts"]) if latest else None)


def cadence(states: States) -> int:
    return dynamics.CADENCE_SECONDS[dynamics.metrics(states).stage]


class _Superseded(Exception):
    """Another reflection was recorded while this one waited for the model."""


def reflect(path: Path, *, if_due: bool = False, trigger: str = "manual", model_name: str | None = None,
            notify: opening.Notify = lambda _m: None, max_windows: int = MAX_WINDOWS,
            summarize: bool = False, recorded: Callable[[Outcome], None] = lambda _o: None,
            keep_going: Callable[[], bool] = lambda: True, budget: usage.Budget | None = None) -> Run:
    """Reflect on unreflected history, window by window, then consolidate when due (or when
    ``summarize``). ``recorded`` hears of each reflection as it is written; ``keep_going`` is
    asked before each further window. A failing window raises ``ProviderError`` with the
    windows before it kept, and the failure is remembered for the back-off. Every request is
    held to the model's daily cap and ``budget`` first (``BudgetExceeded``, not a failure of the
    model: no back-off)."""
    opening.open_read(path).close()  # a missing or foreign file is refused, never created
    with _single_reflection(path, wait=not if_due) as running:
        if not running:
            return Run("another reflection is running")
        mind = opening.open_write(path, notify)
        try:
            return _run(mind, path, if_due=if_due, trigger=trigger, model_name=model_name,
                        notify=notify, max_windows=max_windows, summarize=summarize,
                        recorded=recorded, keep_going=keep_going, budget=budget or usage.Budget())
        finally:
            mind.close()


def _run(mind: Ledger, path: Path, *, if_due: bool, trigger: str, model_name: str | None,
         notify: opening.Notify, max_windows: int, summarize: bool,
         recorded: Callable[[Outcome], None], keep_going: Callable[[], bool], budget: usage.Budget) -> Run:
    states, _ = folded.state(mind)
    model = models.pick(states, model_name, "reflection")
    models.require_trusted(mind.mind_id, model)  # said even when there is nothing to reflect on
    run = Run("")
    # The history there is now: events appended meanwhile (a chat) wait for their cadence.
    until, _ = mind.head()
    if if_due:
        waiting = _backed_off(path, "reflection", model, states)
        if waiting:
            return _left(mind, states, until, Run(waiting, backed_off=True))
    is_due, why = _due(mind, states)
    if if_due and not is_due:
        run = _left(mind, states, until, Run(why))  # nothing to reflect on yet, but a backlog
        _condense(mind, path, model, trigger, run, False, notify, keep_going, budget)  # of reflections may wait
        return run
    done = 0
    superseded = False
    retried = 0
    while done < max_windows and (done == 0 or keep_going()):
        try:
            outcome = _window(mind, path, model, trigger, done, notify, until, budget)
        except _Superseded:
            superseded = True
            break
        except errors.BudgetExceeded:
            raise  # the caps said no before anything was sent: no retry
        except errors.ProviderError:
            refused = backoff.last(path, "reflection")  # about nothing it was shown: at once again,
            if (retried < RETRIES_UNGROUNDED and refused is not None  # with half the window
                    and refused.first_id is not None and keep_going()):
                retried += 1
                notify("The answer was about nothing it was shown: trying again with half the window")
                continue
            raise
        if outcome is None:
            break
        done += 1
        retried = 0  # the retries are each window's
        outcome.reason = "catching up" if done > 1 else why if is_due else "asked for"
        run.outcomes.append(outcome)
        if outcome.reflection is not None:
            budget.add(outcome.reflection)
        recorded(outcome)
    states = folded.state(mind)[0]
    _left(mind, states, until, run)
    if superseded:
        run.reason = "another process recorded a reflection meanwhile; this one was not kept"
    elif not run.outcomes:
        run.reason = "nothing new to reflect on since the last reflection"
    elif run.left:
        bound = f"at most {plural(max_windows, 'window')} a run" if done >= max_windows else "asked to stop"
        run.reason = f"{plural(run.left, 'event')} of history left for the next run (from #{run.next_id}; {bound})"
    else:
        run.reason = "caught up"
    _condense(mind, path, model, trigger, run, summarize, notify, keep_going, budget, if_due)
    return run


def _left(mind: Ledger, states: States, until: int, run: Run) -> Run:
    """``run`` with the history left up to ``until`` and where the next run starts (None when
    nothing is left)."""
    start = _first_unreflected(states)
    run.left = lookup.count_between(mind, SEEN_KINDS, start, until)
    run.next_id = start if run.left else None
    return run


def _due(mind: Ledger, states: States) -> tuple[bool, str]:
    """Due by the stage's cadence when something new happened: a user message since the last
    reflection, or history the last run left unreflected (it stopped at its bound). The backlog
    is counted up to the last reflection recorded, retracted or not (a retraction does not make
    the history before it invisible)."""
    is_due, why = _due_now(states)
    reflections = states["reflections"]
    latest = reflections["latest"]
    window = reflections["window"]
    last = window[-1]["id"] if window else latest["id"] if latest else None
    if is_due or last is None or reflections["turns_since"]:
        return is_due, why
    behind = lookup.count_between(mind, SEEN_KINDS, _first_unreflected(states), last - 1)
    if not behind:
        return is_due, why
    waiting: States = {**states, "reflections": {**reflections, "turns_since": behind}}
    is_due, why = dynamics.reflection_due(waiting, seconds_since(latest["ts"]) if latest else None)
    return is_due, f"{plural(behind, 'event')} of history waiting from the last run; {why}"


def _backed_off(path: Path, step: str, model: models.Model, states: States) -> str | None:
    """Why a due-only run must not call the model yet (None: it may)."""
    failure = backoff.last(path, step)
    if failure is None or failure.model != model.name or not failure.left(cadence(states)):
        return None
    return failure.explain(step, cadence(states))


def _first_unreflected(states: States) -> int:
    """Just after the last event any reflection covered: a retracted one's window too (its
    conclusions are withdrawn, the events it looked at are not new again). A reflection whose
    range names no earlier events covers nothing (``growth.Reflections``)."""
    return int(states["reflections"]["reflected_to"]) + 1


def _window(mind: Ledger, path: Path, model: models.Model, trigger: str, done: int,
            notify: opening.Notify, until: int, budget: usage.Budget) -> Outcome | None:
    """Reflect on the next window of the events up to ``until`` (None: nothing left)."""
    states, _ = folded.state(mind)
    recorded_before = states["reflections"]["recorded"]
    start = _first_unreflected(states)
    first = lookup.following(mind, SEEN_KINDS, start, 1)
    if not first or first[0].id > until:
        return None
    refused = backoff.last(path, "reflection")  # the same window refused before: show half of it
    limit = None
    if (refused is not None and refused.model == model.name and refused.first_id == first[0].id
            and refused.shown):
        # down to one event; refused at one, the whole window again (with whatever came since),
        # so one event the model cannot answer about never stalls reflection for good
        limit = refused.shown // 2 if refused.shown > 1 else None
    try:
        request, shown = window_.request(mind, states, start, model.window(), until,
                                  tokens.Cost(model.token_counter(mind.mind_id)), limit)
    except errors.ProviderError as exc:
        backoff.record(path, "reflection", model.name, exc.message)
        raise
    seen = list(shown)
    if not seen:
        return None
    after = lookup.count_between(mind, SEEN_KINDS, seen[-1] + 1, until)
    about = done + 1 + math.ceil(after / len(seen))
    notify(f"Reflecting on events #{seen[0]}-#{seen[-1]} ({done + 1} of about {about})")
    budget.check(states, model, request)
    try:
        provider = models.connect(mind.mind_id, model)
        try:
            completion = provider.complete(request)
        finally:
            provider.close()
        usage.estimate(completion, request, model.token_counter(mind.mind_id))
        parsed = answer.parse(completion.text)
    except errors.ProviderError as exc:
        backoff.record(path, "reflection", model.name, exc.message)
        raise
    try:  # grounded in what the model was shown: the clipped text, not the full contents
        answer.require_grounded(parsed, shown)
    except errors.ProviderError as exc:  # about nothing it was shown: the next try shows half
        backoff.record(path, "reflection", model.name, exc.message, first_id=seen[0], shown=len(seen))
        raise
    backoff.clear(path, "reflection")
    meta: dict[str, Any] = {"first_id": seen[0], "last_id": seen[-1], "trigger": trigger,
                            "model_name": model.name, "provider": model.spec.provider,
                            "model": model.spec.model, "latency_ms": completion.latency_ms}
    usage.record(meta, completion, model)
    rejected: list[str] = []

    def drafts(reflection_id: int) -> list[Draft]:
        now = folded.state(mind)[0]
        if now["reflections"]["recorded"] != recorded_before:  # monotone: retractions do not count
            raise _Superseded()
        out = answer.consequences(now, parsed, reflection_id, rejected, shown=shown)
        kept = {d.meta["commitment"] for d in out if d.kind == ev.COMMITMENT_CLOSED.name}
        out += expirations(now, exclude=kept)
        rejected[:0] = parsed.rejected
        reflection_meta = {**meta, "rejected": rejected} if rejected else meta
        return [Draft(ev.REFLECTION_RECORDED.name, parsed.text, reflection_meta), *out]

    traits_before: dict[str, float] = {}

    def drafts_noting_traits(reflection_id: int) -> list[Draft]:
        out = drafts(reflection_id)
        traits_before.update(folded.state(mind)[0]["traits"]["values"])
        return out

    written = mind.append(drafts_noting_traits)  # _Superseded: another process reflected on this window
    traits_after = folded.state(mind)[0]["traits"]["values"]
    applied = {e.id: round(traits_after[e.meta["trait"]] - traits_before[e.meta["trait"]], 6) for e in written
               if e.kind == ev.TRAIT_ADJUSTED.name and e.meta.get("trait") in traits_before}
    return Outcome(True, "", written[0], written, rejected, model.name, applied)


def _condense(mind: Ledger, path: Path, model: models.Model, trigger: str, run: Run, summarize: bool,
              notify: opening.Notify, keep_going: Callable[[], bool], budget: usage.Budget,
              if_due: bool = True) -> None:
    """Summaries while enough reflections wait (the first one also when ``summarize``), at most
    ``consolidation.MAX_PER_RUN`` a run: a catch-up's backlog is condensed, not left behind."""
    while len(run.summaries) < consolidation.MAX_PER_RUN and keep_going() and (
            (summarize and not run.summaries) or consolidation.due(mind, folded.state(mind)[0])):
        summary = _consolidate(mind, path, model, trigger, if_due and not summarize, notify, budget)
        if summary is None:
            return
        budget.add(summary.event)
        run.summaries.append(summary)
        run.summary = summary


def _consolidate(mind: Ledger, path: Path, model: models.Model, trigger: str, if_due: bool,
                 notify: opening.Notify, budget: usage.Budget) -> consolidation.Summary | None:
    states = folded.state(mind)[0]
    if if_due and (waiting := _backed_off(path, "consolidation", model, states)):
        notify(f"No summary: {waiting}")
        return None
    notify("Condensing reflections into a summary")
    try:
        summary = consolidation.consolidate(mind, states, model, trigger, budget)
    except errors.BudgetExceeded:
        raise
    except errors.ProviderError as exc:
        backoff.record(path, "consolidation", model.name, exc.message)
        raise
    backoff.clear(path, "consolidation")
    return summary


def expirations(states: States, exclude: Collection[int] = ()) -> list[Draft]:
    """``commitment_expired`` drafts for every overdue open commitment now."""
    return [Draft(ev.COMMITMENT_EXPIRED.name, reason, {"commitment": cid, "reason": reason})
            for cid, reason in dynamics.overdue(states, now_ts()) if cid not in exclude]


@contextlib.contextmanager
def _single_reflection(path: Path, wait: bool) -> Iterator[bool]:
    """One reflection per mind file at a time (a lock file in the user state dir): a cron
    ``--if-due`` that finds one running steps aside; a manual one waits for it."""
    import fcntl

    from pmm.paths import state_dir

    directory = state_dir() / "locks"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / f"reflect-{backoff.mind_key(path)}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
