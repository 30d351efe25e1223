"""``pmm run --autonomous``: a foreground loop that keeps the mind up to date on its own.

Each cycle expires overdue commitments (one transaction, only when there are any) and, when a
reflection is due and no back-off after a failure holds it, catches up on unreflected history
window by window (each window its own step and transaction), then consolidates when enough
reflections have accumulated (``reflection.reflect``). A cycle with nothing to do writes nothing: the
loop's own life (heartbeats, timings) is telemetry and never enters the chain. A stop request
(a signal, or the token budget) is honoured between steps. A step in progress when a signal
arrives gets ``$PMM_STOP_GRACE`` seconds to finish; then it is abandoned (``StepAbandoned``
unwinds it: its transaction rolls back, its model request is closed), so nothing is half-written
and a stalled model cannot keep the loop alive.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from pmm import errors, settings
from pmm.domain import costs
from pmm.domain import events as ev
from pmm.domain.events import Draft
from pmm.ledger import folded
from pmm.ledger.store import Ledger
from pmm.services import models, opening, reflection, usage
from pmm.services.words import plural

Notify = Callable[[str], None]
WAIT_SLICE = 1.0  # seconds: a signal delivered to another thread is still seen this soon


class SummaryJson(TypedDict):
    """``pmm run --json``: ``Summary``'s fields, in its order."""

    cycles: int
    reflections: int
    expired: int
    tokens: int
    cost: list[costs.CostJson]
    failures: int
    stopped_by: str
    abandoned: bool


@dataclass
class Summary:
    """What a run did so far (the CLI prints it however the run ended)."""

    cycles: int = 0
    reflections: int = 0
    expired: int = 0
    tokens: int = 0
    failures: int = 0
    stopped_by: str = "running"  # "signal", "interrupted", "max-cycles", "max-tokens", "budget" once stopped
    abandoned: bool = False  # a signal's grace ran out mid-step: that step wrote nothing
    budget: usage.Budget = field(default_factory=usage.Budget)  # --budget, and what the run spent

    def costs(self) -> list[costs.CostJson]:
        return self.budget.tally.as_json()["cost"]

    def line(self) -> str:
        parts = [_count(self.reflections, "reflection"), _count(self.expired, "commitment") + " expired",
                 _count(self.tokens, "token")]
        parts += [costs.money(c["amount"], c["currency"]) for c in self.costs()]
        if self.failures:
            parts.append(_count(self.failures, "failure"))
        if self.abandoned:
            parts.append("the step in progress was abandoned (a step is written whole or not at all)")
        return f"Stopped after {_count(self.cycles, 'cycle')}: {', '.join(parts)}"

    def as_json(self) -> SummaryJson:
        return {"cycles": self.cycles, "reflections": self.reflections, "expired": self.expired,
                "tokens": self.tokens, "cost": self.costs(), "failures": self.failures,
                "stopped_by": self.stopped_by,
                "abandoned": self.abandoned}


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def run(path: Path, *, interval: float, max_cycles: int | None, max_tokens: int | None,
        stop: threading.Event, notify: Notify, summary: Summary | None = None,
        budget: float | None = None) -> Summary:
    """Cycle until ``stop`` is set, ``max_cycles`` ran, ``max_tokens`` are spent or a step could
    pass ``budget`` (money, in the model's currency: that step is refused before its request).

    A provider failure (or a lock held past the timeout by another process) fails its cycle
    only: it is reported through ``notify`` and the next cycle tries again; so does a step the
    model's daily cap refuses (the cap lifts the next UTC day)."""
    summary = summary if summary is not None else Summary()
    if budget is not None and not 0 <= budget <= 1_000_000_000:
        raise errors.UsageError("--budget is an amount of money, between 0 and 1000000000")
    summary.budget.limit = budget
    with opening.open_read(path) as mind:  # a missing file or a non-mind is refused before the loop (exit 4)
        # so is a reflection model this machine's owner has not trusted (exit 2), not at cycle N
        chosen = models.active(folded.state(mind)[0], "reflection")
        models.require_trusted(mind.mind_id, chosen)
        if budget is not None and chosen.prices() is None:
            raise errors.UsageError(f"--budget needs prices: model {chosen.name!r} has none",
                                    hint=f"pmm model set {chosen.name} --price-in X --price-out Y (per million tokens)")
    while not stop.is_set():
        summary.cycles += 1
        notify(f"Cycle {summary.cycles}: " + _cycle(path, summary, stop, notify, max_tokens))
        if summary.stopped_by == "budget":
            return summary
        if max_tokens is not None and summary.tokens >= max_tokens:
            notify(f"Token budget spent ({summary.tokens:,} of {max_tokens:,})")
            summary.stopped_by = "max-tokens"
            return summary
        if max_cycles is not None and summary.cycles >= max_cycles:
            summary.stopped_by = "max-cycles"
            return summary
        _sleep(stop, interval)
    summary.stopped_by = "signal"
    return summary


def _cycle(path: Path, summary: Summary, stop: threading.Event, notify: Notify,
           max_tokens: int | None = None) -> str:
    """One cycle's steps; returns what it did, in words."""
    did: list[str] = []
    _STEP.began()
    try:
        expired = expire(path)
    except (errors.ProviderError, errors.MindLocked) as exc:
        summary.failures += 1
        return f"expiring commitments failed: {exc.message}"
    if expired:
        summary.expired += expired
        did.append(f"expired {_count(expired, 'overdue commitment')}")
    if stop.is_set():
        return "; ".join(did + ["stopping before the reflection step"])
    reflected: list[int] = []
    tokens_before, expired_before = summary.tokens, summary.expired

    def recorded(outcome: reflection.Outcome) -> None:
        assert outcome.reflection is not None
        meta = outcome.reflection.meta
        reflected.append(outcome.reflection.id)
        summary.reflections += 1
        summary.tokens += int(meta.get("tokens_in") or 0) + int(meta.get("tokens_out") or 0)
        summary.expired += sum(1 for e in outcome.events if e.kind == ev.COMMITMENT_EXPIRED.name)
        _STEP.began()  # the next window is a step of its own: abandoning it keeps this one

    def keep_going() -> bool:  # asked between windows of a catch-up
        return not stop.is_set() and (max_tokens is None or summary.tokens < max_tokens)

    _STEP.began()
    try:
        run = reflection.reflect(path, if_due=True, trigger="autonomous", notify=notify,
                                 recorded=recorded, keep_going=keep_going, budget=summary.budget)
    except errors.BudgetExceeded as exc:
        if exc.scope == "run":
            summary.stopped_by = "budget"
        else:
            summary.failures += 1
        return "; ".join(did + _reflected(reflected, summary.tokens - tokens_before,
                                          summary.expired - expired_before) + [exc.message])
    except (errors.ProviderError, errors.MindLocked) as exc:
        summary.failures += 1
        return "; ".join(did + _reflected(reflected, summary.tokens - tokens_before,
                                          summary.expired - expired_before)
                         + [f"reflection failed: {exc.message}"])
    for made in run.summaries:
        meta = made.event.meta
        summary.tokens += int(meta.get("tokens_in") or 0) + int(meta.get("tokens_out") or 0)
    if not run.recorded and run.summary is None:
        return "; ".join(did + [f"no reflection ({run.reason})"])
    said = _reflected(reflected, summary.tokens - tokens_before, summary.expired - expired_before)
    if run.left:
        said.append(f"{plural(run.left, 'event')} of history left for the next cycle")
    if run.summary is not None:
        condensed = sum(len(s.event.meta["covers"]) for s in run.summaries)
        said.append(f"condensed {_count(condensed, 'reflection')} into summary {run.summary.event.id}")
    return "; ".join(did + said)


def _reflected(ids: list[int], tokens: int, lapsed: int) -> list[str]:
    """The reflections of a cycle in words (their events, tokens, commitments they expired)."""
    if not ids:
        return []
    which = f"event {ids[0]}" if len(ids) == 1 else f"{len(ids):,} windows, events {ids[0]} to {ids[-1]}"
    more = f", {lapsed:,} more expired" if lapsed else ""
    return [f"reflected ({which}, {_count(tokens, 'token')}{more})"]


class _NothingToExpire(Exception):
    """Another process expired them first: roll back the empty transaction."""


def expire(path: Path) -> int:
    """Append ``commitment_expired`` for every overdue open commitment, in one transaction;
    returns how many (0: nothing was written)."""
    with opening.open_read(path) as mind:
        if not reflection.expirations(folded.state(mind)[0]):
            return 0
    with opening.open_write(path, lambda _m: None) as mind:

        def drafts(_first_id: int) -> list[Draft]:
            found = reflection.expirations(folded.state(mind)[0])  # again, inside the write lock
            if not found:
                raise _NothingToExpire()
            return found

        try:
            return len(mind.append(drafts))
        except _NothingToExpire:
            return 0


def _sleep(stop: threading.Event, seconds: float) -> None:
    """Wait ``seconds`` or until ``stop`` is set. In slices: a signal lands on the main thread
    only if no other thread (a local model's workers) takes it; then it is seen at the next slice."""
    import time

    end = time.monotonic() + seconds
    while not stop.is_set():
        left = end - time.monotonic()
        if left <= 0:
            return
        stop.wait(min(left, WAIT_SLICE))


class _Step:
    """The step in progress, as the abandonment sees it. A step that has begun its COMMIT is
    never abandoned: it is written, and "abandoned, wrote nothing" would be untrue. It finishes
    (what follows a COMMIT is quick) and the loop ends at its next look at ``stop``."""

    commits_at_start = 0

    def began(self) -> None:
        self.commits_at_start = Ledger.commits_begun

    def committing(self) -> bool:
        return Ledger.commits_begun != self.commits_at_start


_STEP = _Step()


class StepAbandoned(KeyboardInterrupt):
    """Raised on the main thread when a stop signal's grace ran out with a step still running.
    A KeyboardInterrupt, so no ``except Exception`` on the way can swallow it."""


@dataclass
class Stopping:
    """What ``stop_on_signals`` saw: the first signal (None while running)."""

    signum: int | None = None
    grace: float = 0.0

    @property
    def interrupted(self) -> bool:
        """Ctrl-C: SPEC's "interrupted" (exit 130). SIGTERM is a service manager's stop: exit 0."""
        return self.signum == signal.SIGINT


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, notify: Notify) -> Iterator[Stopping]:
    """SIGINT and SIGTERM set ``stop``: the loop finishes its step, then ends. If the step is
    still running ``$PMM_STOP_GRACE`` seconds later, it is abandoned (``StepAbandoned`` raised on
    the main thread) unless it has begun its COMMIT (``_Step``); a second signal interrupts at once (``KeyboardInterrupt``). Either way a
    transaction in progress rolls back. Handlers are restored after."""
    seen = Stopping(grace=settings.STOP_GRACE.get())
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    wanted = [signal.SIGINT, signal.SIGTERM]
    previous = {s: signal.getsignal(s) for s in wanted}
    main = threading.main_thread().ident
    ended = threading.Event()
    abandoning = threading.Event()
    # Held while the grace timer fires, so the loop cannot end and restore the old handlers
    # between the timer's last look and its signal (the old SIGTERM handler would kill us).
    firing = threading.Lock()

    def request(signum: int) -> None:
        # This thread must not take the signals meant for the main thread (see _sleep).
        signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
        name = signal.Signals(signum).name
        notify(f"Stopping after the current step (it has {seen.grace:g} s; {name} again stops at once)")
        stop.set()
        if ended.wait(seen.grace) or main is None:
            return
        with firing:
            if ended.is_set():
                return
            abandoning.set()
            # A real signal, aimed at the main thread: it also breaks a blocking read (EINTR),
            # where a flag would wait for the read to return.
            signal.pthread_kill(main, signum)

    spared = False  # the abandonment came as the step was committing, and let it finish

    def handler(signum: int, _frame: object) -> None:
        nonlocal spared
        if seen.signum is not None:
            if abandoning.is_set() and not spared:
                if _STEP.committing():
                    spared = True  # it is written, or about to be: let it finish (a signal
                    return         # after this one still interrupts at once)
                raise StepAbandoned
            raise KeyboardInterrupt
        seen.signum = signum
        # Not here but in a thread: this handler runs on the main thread between any two
        # bytecodes, perhaps inside stop.wait() holding the event's lock, or inside a write to
        # stderr; setting the event or printing from here could deadlock or fail.
        threading.Thread(target=request, args=(signum,), name="pmm-stop-grace", daemon=True).start()

    for s in wanted:
        signal.signal(s, handler)
    try:
        yield seen
    finally:
        with firing:
            ended.set()
        for s, old in previous.items():
            signal.signal(s, old)
