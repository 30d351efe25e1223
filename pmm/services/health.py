"""``pmm health``: is this mind in good shape? File, chain, projection cache, reflection cadence,
overdue commitments, and (only when asked, as it talks to providers) model reachability.

Each check is ``ok``, ``warn`` or ``fail`` with a one-line detail. A missing file or one that is
not a mind is not a check result but the usual ``MindFileError`` (exit 4), and a file whose
schema pmm did not make is refused when it is opened (exit 3): there is nothing to examine.
Nothing here writes, except ``repair``; nothing opens a socket unless ``online`` is set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from pmm import errors
from pmm.domain import dynamics
from pmm.domain import events as ev
from pmm.domain.states import States
from pmm.ledger import folded, fts, lookup
from pmm.ledger.chain import ChainState, check_chain
from pmm.ledger.store import Ledger, now_ts
from pmm.services import opening, witness
from pmm.services.words import plural

OK, WARN, FAIL = "ok", "warn", "fail"
# `health --strict` with warnings and no failure: "look at this mind", told apart from a failed
# check (3, 5) and from pmm itself failing (1). In the exit codes of `pmm --help`.
WARNINGS_EXIT = errors.WARNINGS
OVERDUE_CADENCES = 3  # a reflection this many cadences late is worth a warning


@dataclass
class Check:
    name: str
    status: str  # OK, WARN or FAIL
    detail: str


class CheckJson(TypedDict):
    name: str
    status: str
    detail: str


class ChainJson(TypedDict):
    """How the chain check went: ``full`` (every event now), else the events ``trusted`` (1 to
    that id, each checked by an earlier health check of this file, at ``trusted_since``) and
    the ``checked`` ones after them."""

    full: bool
    checked: int
    trusted: int
    trusted_since: str | None


class ReportJson(TypedDict):
    """``pmm health --json``."""

    mind: str
    healthy: bool
    strict: bool
    exit_code: int
    checks: list[CheckJson]
    chain: ChainJson | None


@dataclass
class Report:
    mind: str
    checks: list[Check] = field(default_factory=list)
    chain: ChainJson | None = None

    def failing(self, strict: bool) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL or (strict and c.status == WARN)]

    def healthy(self, strict: bool = False) -> bool:
        return not self.failing(strict)

    def exit_code(self, strict: bool = False) -> int:
        """0 healthy; 3 a check of the file itself failed (chain, schema, replay); 5 only model
        checks failed; 7 with ``strict``, warnings and no failure. Never 1: that is pmm itself failing."""
        failed = [c.name for c in self.checks if c.status == FAIL]
        if any(not name.startswith("model") for name in failed):
            return errors.IntegrityError.exit_code
        if failed:
            return errors.ProviderError.exit_code
        return WARNINGS_EXIT if self.failing(strict) else 0

    def as_json(self, strict: bool = False) -> ReportJson:
        return {"mind": self.mind, "healthy": self.healthy(strict), "strict": strict,
                "exit_code": self.exit_code(strict),
                "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks],
                "chain": self.chain}


def _migrations(history: list[tuple[str, str, str]]) -> str:
    """The recorded layout history, as "; made or migrated by 0001_initial (2026-12-01, pmm 0.1.0), ..."."""
    if not history:
        return ""  # a file from before pmm recorded its migrations
    return "; made or migrated by " + ", ".join(f"{name} ({at[:10]}, pmm {version})" for name, at, version in history)


def check(path: Path, *, online: bool = False, full: bool = False,
          total: Callable[[int], None] | None = None,
          on_progress: Callable[[int], None] | None = None) -> Report:
    """Run every check on the mind at ``path`` (``MindFileError`` when it is not a usable mind).

    The chain is checked from where the last check of this very file left off (``_chain``) and
    the search index by its ends and first entry; ``full`` checks every event and reads every
    index entry."""
    from pmm.ledger import schema

    report = Report(str(path))
    with opening.open_read(path) as mind:
        detail = (f"{path}: mind {mind.mind_id}, ledger format {mind.ledger_format},"
                  f" schema {mind.schema_version}, {path.stat().st_size:,} bytes")
        if mind.schema_version < schema.SCHEMA_VERSION:
            file = Check("file", WARN, detail + f"; an older layout (current: {schema.SCHEMA_VERSION}),"
                         " upgraded the next time pmm writes to it")
        else:
            file = Check("file", OK, detail)
        altered = mind.schema_problems()
        layout = (Check("schema", FAIL, "altered outside pmm: " + "; ".join(altered[:3])
                        + "; pmm will not write to it") if altered
                  else Check("schema", OK, "exactly the tables, indexes and triggers pmm creates"
                             + _migrations(schema.history(mind.conn))))
        head_id, _ = mind.head()
        damage = mind.index_problem() if full else lookup.index_glance(mind)
        coverage = lookup.index_coverage(mind) if full else lookup.index_summary(mind)
        index = _damaged(damage) if damage else _index(coverage, head_id)
        recall_vectors = _vectors(mind)
        chain, report.chain = _chain(mind, full, total, on_progress)
        try:
            states, cache = folded.state(mind)
        except (ValueError, KeyError, TypeError) as exc:  # events no pmm wrote (a tampered meta)
            states, broken = None, f"the events cannot be replayed ({type(exc).__name__}: {exc})"
    report.checks += [file, layout, chain]
    if states is None:
        report.checks.append(Check("projections", FAIL, broken))
        return report
    report.checks += [_cache(cache, head_id), index, recall_vectors, _reflection(states, path),
                      _commitments(states)]
    if online:
        report.checks += _models(states, mind.mind_id)
    return report


def _chain(mind: Ledger, full: bool, total: Callable[[int], None] | None,
           on_progress: Callable[[int], None] | None) -> tuple[Check, ChainJson]:
    """Every event checked once: a check that passed is remembered (``witness.note_verified``,
    outside the mind file), and the next one checks only what came after it, from the event it
    ended at (its hash recomputed, so the new events link to what was proved). Anything that
    makes the record not describe this file (another mind, another file at the path, that event
    gone or changed) means a full check. What the shortcut trusts is stated in the detail."""
    earlier = None if full else _earlier(mind)
    if earlier is None:
        return _full_chain(mind, total, on_progress)
    start = earlier.size
    first = lookup.get(mind, [start])
    linked = first[0].prev_hash if first and isinstance(first[0].prev_hash, str) else ""
    state = check_chain(mind.prefix, mind.raw_rows(since=start),
                        ChainState(last_id=start - 1, last_hash=linked), on_progress)
    since = earlier.when()
    summary: ChainJson = {"full": False, "checked": state.count, "trusted": start - 1,
                          "trusted_since": earlier.at}
    if state.problem is not None:
        return Check("chain", FAIL, f"event {state.problem.event_id}: {state.problem.reason}"
                     " (run `pmm verify` for details)"), summary
    newer = state.count - 1
    if newer:
        _remember(mind, state.last_id, state.last_hash)
    events = plural(state.last_id, "event")
    return Check("chain", OK, f"{events}, head {state.last_hash[:16]}…: 1-{start:,} verified by an"
                 f" earlier check ({since}), " + (f"{newer:,} newer checked now" if newer else "none newer")
                 + " (`pmm health --full` or `pmm verify` checks every event)"), summary


def _earlier(mind: Ledger) -> witness.Verified | None:
    """The last full (or resumed) check of this file, if it still holds what that check proved."""
    try:
        earlier = witness.verified(mind.mind_id, mind.path)
    except (OSError, errors.PmmError):
        return None
    if earlier is None or earlier.size > mind.head()[0] or mind.hash_at(earlier.size) != earlier.head:
        return None
    return earlier


def _full_chain(mind: Ledger, total: Callable[[int], None] | None,
                on_progress: Callable[[int], None] | None) -> tuple[Check, ChainJson]:
    from pmm.services.integrity import verify_mind

    verified = verify_mind(mind.path, total=total, on_progress=on_progress)
    summary: ChainJson = {"full": True, "checked": verified.events, "trusted": 0, "trusted_since": None}
    if verified.ok:
        if verified.events:
            _remember(mind, verified.last_id, verified.head)
        return Check("chain", OK, f"{plural(verified.events, 'event')} verified, head {verified.head[:16]}…"), summary
    where = f"event {verified.problem_event}: " if verified.problem_event else ""
    return Check("chain", FAIL, f"{where}{verified.problem} (run `pmm verify` for details)"), summary


def _remember(mind: Ledger, size: int, head: str) -> None:
    with contextlib.suppress(OSError, errors.PmmError):  # an unwritable state dir costs speed only
        witness.note_verified(mind.mind_id, mind.path, size, head)


def _cache(cache: folded.CacheStatus, head_id: int) -> Check:
    if cache.state == "current":
        return Check("projection cache", OK, f"current (reflects event {cache.last_id})")
    if cache.state == "behind":
        return Check("projection cache", OK, f"reflects event {cache.last_id}; the"
                     f" {head_id - cache.last_id:,} newer events are folded in on every read")
    return Check("projection cache", WARN, f"{cache.state} (or not written by pmm on this machine):"
                 f" every read replays all {head_id:,} events; the next write or"
                 " `pmm health --repair` rebuilds it")


def _index(coverage: tuple[int, int, int], head_id: int) -> Check:
    """The search index must cover exactly events 1..head; what it says about their words is
    never trusted (every hit is matched again against the event's text)."""
    documents, low, high = coverage
    if coverage == (head_id, 1 if head_id else 0, head_id):
        return Check("search index", OK, f"covers events 1-{head_id:,}" if head_id else "empty")
    return Check("search index", WARN, f"holds {documents:,} entries for ids {low:,}-{high:,}, but the"
                 f" mind has events 1-{head_id:,}: search and recall may miss events; the next"
                 " write or `pmm health --repair` rebuilds it")


def _damaged(problem: str) -> Check:
    """An index FTS5 itself refuses (its shadow tables are rows, outside the schema check):
    search fails on it, so it is a failure, though the events are untouched."""
    return Check("search index", FAIL, f"damaged ({problem}): search and recall fail on it;"
                 f" {fts.REPAIR_HINT}")


def _vectors(mind: Ledger) -> Check:
    """The semantic recall vectors: derived, checked before each use, made as recall needs
    them; whether the model is installed is asked of the disk (nothing is loaded)."""
    from pmm.ledger import vectors
    from pmm.services import semantic

    name = "recall vectors"
    if not semantic.installed():
        return Check(name, OK, "semantic recall is not installed: recall ranks by words alone"
                     " (install pmm[semantic] to add it)")
    count, low, high, bad = vectors.coverage(mind, semantic.VECTOR_BYTES)
    if not vectors.present(mind):
        return Check(name, OK, "none yet: an older layout, upgraded the next time pmm writes to it")
    if not count:
        return Check(name, OK, "none stored yet: made by the next chat turn (or `pmm health --repair`)")
    stored = f"{count:,} stored for events {low:,}-{high:,}"
    if vectors.model(mind) != semantic.expected_tag():
        return Check(name, WARN, f"{stored}, made by another model: recomputed on each recall"
                     " until the next chat turn or `pmm health --repair` replaces them")
    if bad:
        return Check(name, WARN, f"{stored}; {bad:,} malformed (ignored, so recomputed on each"
                     " recall): the next chat turn or `pmm health --repair` replaces them")
    return Check(name, OK, f"{stored} (the newest {semantic.SPAN:,} events are searched)")


def repair(path: Path) -> None:
    """Rebuild the search index and the projection cache from the events (one transaction),
    then the recall vectors of the newest events (another: they are derived from the events,
    and without the model installed they are only cleared)."""
    from pmm.ledger import vectors
    from pmm.services import semantic

    with opening.witnessed(Ledger.open(path, write=True)) as mind:
        mind.repair()
        with mind.transaction():
            vectors.clear(mind)
            semantic.fill(mind)


def _reflection(states: States, path: Path) -> Check:
    from pmm.services import models, reflection_backoff
    from pmm.services.dates import seconds_since

    reflections = states["reflections"]
    waiting = reflections["turns_since"]
    stage = dynamics.metrics(states).stage
    cadence = dynamics.CADENCE_SECONDS[stage]
    messages = f"{waiting:,} user message{'s' if waiting != 1 else ''}"
    failure = reflection_backoff.last(path, "reflection")
    with contextlib.suppress(errors.PmmError):  # the failures were another model's: cron tries now
        if failure is not None and failure.model != models.pick(states, None, "reflection").name:
            failure = None
    if failure is not None:  # this machine's record: cron and the autonomous loop wait
        return Check("reflection", WARN, failure.explain("reflection", cadence)
                     + " (`pmm reflect` tries now)")
    latest = reflections["latest"]
    if latest is None:
        if waiting:
            return Check("reflection", WARN, f"never reflected, with {messages} waiting"
                         " (run `pmm reflect`, or `pmm run --autonomous`)")
        return Check("reflection", OK, "no reflection yet, and nothing to reflect on")
    age = seconds_since(latest["ts"])
    said = f"the last {dynamics.span(age)} ago; {stage} reflects every {dynamics.span(cadence)}"
    if not waiting:
        return Check("reflection", OK, said + "; nothing new since")
    if age > OVERDUE_CADENCES * cadence:
        return Check("reflection", WARN, f"{said}; {messages} waiting: overdue (run `pmm reflect`)")
    return Check("reflection", OK, f"{said}; {messages} since")


def _commitments(states: States) -> Check:
    overdue = dynamics.overdue(states, now_ts())
    open_count = len(states["commitments"]["open"])
    if not overdue:
        return Check("commitments", OK, f"{open_count:,} open, none overdue")
    first_id, why = overdue[0]
    more = f" and {len(overdue) - 1:,} more" if len(overdue) > 1 else ""
    return Check("commitments", WARN, f"{len(overdue):,} of {open_count:,} open overdue (#{first_id}:"
                 f" {why}{more}); the next reflection or `pmm run --autonomous` expires them")


def _models(states: States, mind_id: str) -> list[Check]:
    """Ask the chat and the reflection model's providers whether they answer (network)."""
    from pmm.services import models

    checks: list[Check] = []
    seen: dict[str, Check] = {}
    for role in ev.ROLES:
        model = models.active(states, role)
        name = f"model ({role})"
        if model.name in seen:
            checks.append(Check(name, seen[model.name].status, seen[model.name].detail))
            continue
        try:
            info = models.probe(model, mind_id)
        except errors.PmmError as exc:
            result = Check(name, FAIL, f"{model.name} ({model.spec.label}): {exc.message}")
        else:
            version = f", version {info.version}" if info.version else ""
            result = Check(name, OK, f"{model.name} ({model.spec.label}) is reachable{version}")
        seen[model.name] = result
        checks.append(result)
    return checks
