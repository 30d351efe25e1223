"""``pmm verify``: recompute every hash and check every link and id, in a mind file or an export."""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NotRequired, TypedDict

from pmm import errors
from pmm.domain import checkpoint
from pmm.domain.canonical import CanonicalMetas
from pmm.domain.checkpoint import Checkpoint
from pmm.domain.events import Event
from pmm.ledger.chain import (
    GENESIS_PREV,
    ChainState,
    RawRow,
    chain_prefix,
    check_chain,
    tombstone_problem,
)
from pmm.ledger.connection import SQLITE_MAGIC
from pmm.ledger.schema import ALTERED_HINT
from pmm.ledger.store import Ledger
from pmm.services import witness
from pmm.services.halves import PARALLEL_FROM, check_in_two, check_shared

if TYPE_CHECKING:  # a plain `pmm verify` reads no signature and no export
    from pmm.domain.states import States
    from pmm.ledger import session_table
    from pmm.ledger.jsonl import ExportReader
    from pmm.services import signatures
    from pmm.services.reports import VerdictJson

Progress = Callable[[int], None]
HashAt = Callable[[int], "str | None"]

DEEP_PARALLEL_FROM = 50_000  # --deep also replays every event: a child pays for itself sooner
# --deep's chain is checked in pieces of this many ids, each by whichever process is free
# first: about a quarter of a second of hashing, so the two end within about that.
DEEP_PIECE = 32_768


class Deep(TypedDict):
    """What ``--deep`` found: an export has only its meta checked."""

    sqlite_quick_check: NotRequired[str]
    meta_canonical: bool
    projection_cache: NotRequired[str]
    cache_matches_replay: NotRequired[bool]
    snapshots: NotRequired[str]  # the --as-of snapshots (pmm.ledger.past) against the same replay
    snapshots_match_replay: NotRequired[bool]
    sessions_table: NotRequired[str]
    sessions_match_events: NotRequired[bool]


class VerifyJson(TypedDict):
    """``pmm verify --json``: ``ok``, then ``VerifyReport``'s fields in its order."""

    ok: bool
    source: str
    source_kind: str
    mind_id: str
    ledger_format: int
    first_id: int
    events: int
    last_id: int
    head: str
    problem: str | None
    problem_event: int | None
    notes: list[str]
    deep: Deep | None
    signature: signatures.Position | None
    witness: VerdictJson | None
    hint: str | None
    anchored: bool


@dataclass
class VerifyReport:
    source: str
    source_kind: str  # "mind" or "export"
    mind_id: str = ""
    ledger_format: int = 0
    first_id: int = 1
    events: int = 0
    last_id: int = 0
    head: str = GENESIS_PREV
    problem: str | None = None
    problem_event: int | None = None
    notes: list[str] = field(default_factory=list)
    deep: Deep | None = None
    signature: signatures.Position | None = None
    witness: VerdictJson | None = None
    hint: str | None = None
    anchored: bool = True  # False: a partial export whose link to the event before it is unchecked

    @property
    def ok(self) -> bool:
        return self.problem is None

    def checkpoint(self) -> Checkpoint:
        return checkpoint.of(self.mind_id, self.last_id, self.head)

    def to_json(self) -> VerifyJson:
        return {"ok": self.ok, "source": self.source, "source_kind": self.source_kind,
                "mind_id": self.mind_id, "ledger_format": self.ledger_format,
                "first_id": self.first_id, "events": self.events, "last_id": self.last_id,
                "head": self.head, "problem": self.problem, "problem_event": self.problem_event,
                "notes": list(self.notes), "deep": self.deep, "signature": self.signature,
                "witness": self.witness, "hint": self.hint, "anchored": self.anchored}


@dataclass
class Checks:
    """What to prove beyond the chain: a signed checkpoint, and the witness (``None`` = off)."""

    signed: signatures.Signed | None = None
    signature_problem: str | None = None
    witness: witness.Mode | None = "verify"
    path: Path | None = None

    def known(self, mind_id: str) -> dict[int, str]:
        """Event hashes a check can lean on: the witnessed heads and the signed checkpoint."""
        found: dict[int, str] = {}
        if self.witness:
            with contextlib.suppress(OSError):  # an unreadable state dir costs the anchor only
                found = witness.known(mind_id, self.path)
        if self.signed is not None and self.signed.checkpoint.mind_id == mind_id:
            found[self.signed.checkpoint.size] = self.signed.checkpoint.head
        return found

    def apply(self, report: VerifyReport, hash_at: HashAt,
              current: Callable[[], Checkpoint] | None = None) -> None:
        """Run after the chain verified, with the file's hashes at hand (and, for a live mind
        file, a way to read its head now: a writer may have moved it on meanwhile)."""
        if not report.ok:
            return
        if self.signature_problem is not None:
            report.problem = f"signature: {self.signature_problem}"
            return
        if self.signed is not None:
            from pmm.services import signatures

            report.signature, problem = signatures.check_position(
                self.signed, report.mind_id, report.last_id, hash_at)
            if problem is not None:
                report.problem = f"signature: {problem}"
                return
        if self.witness is None:
            return
        if report.events == 0:  # an empty --since export: no head of its own to judge
            report.notes.append("no events: nothing for the witness to judge")
            return
        if report.source_kind == "export" and self.witness == "accept":
            # A received export may claim anything; only the mind file a user rolled back is
            # theirs to make the truth (an export that extends a mind would poison its history).
            report.problem = "cannot accept an export as this mind's head: only a mind file can be"
            report.hint = "accept the mind file itself: pmm verify MIND.db --accept-rollback"
            return
        try:
            # Verifying only judges: the mind's history is advanced by its writers alone. An
            # unanchored partial export may be a forgery that starts anywhere: not even its own
            # path's place is recorded.
            verdict = witness.observe(report.checkpoint(), hash_at, self.path, self.witness,
                                      remember=report.anchored, current=current,
                                      export=report.source_kind == "export")
        except OSError as exc:  # an unwritable state dir costs the check, not the verification
            report.notes.append(f"the witness is unavailable ({exc.strerror}: {exc.filename})")
            return
        report.witness = verdict.to_json()
        if not verdict.ok:
            report.problem = f"the witness: {verdict.message}"
            report.hint = verdict.hint(str(self.path) if self.path else "FILE")


def is_signature(path: Path) -> bool:
    """Whether ``path`` holds a signature (given where a mind was expected: ``pmm verify SIG``)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return False  # whoever reads it next reports why
    return head.startswith(b"untrusted comment:") or head.startswith(b"-----BEGIN SSH SIGNATURE-----")


def signature_checks(sig: Path | None, pub: Path | None, **kw: Any) -> Checks:
    """``Checks`` for ``--sig``/``--pub``: the signature itself is checked here, first; a bad public
    key file is refused (exit 6), a signature that does not hold becomes the report's problem."""
    if (sig is None) != (pub is None):
        raise errors.UsageError("--sig and --pub go together", hint="pmm verify FILE --sig SIG --pub KEY.pub.pem")
    checks = Checks(**kw)
    if sig is not None and pub is not None:
        from pmm.services import signatures

        public = signatures.load_public(pub)
        try:
            checks.signed = signatures.read_signature(sig, public)
        except errors.IntegrityError as exc:
            checks.signature_problem = exc.message
    return checks


def verify_file(path: Path, checks: Checks | None = None, *, deep: bool = False,
                total: Callable[[int], None] | None = None,
                on_progress: Progress | None = None) -> VerifyReport:
    """Verify a mind file or a JSONL export file (told apart by their first bytes)."""
    if path.exists() and path.is_file() and not is_sqlite(path):
        with open(path, "rb") as handle:
            return verify_export(handle, str(path), deep=deep, on_progress=on_progress, checks=checks)
    return verify_mind(path, deep=deep, total=total, on_progress=on_progress, checks=checks)


def is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(16) == SQLITE_MAGIC


def verify_mind(path: Path, *, deep: bool = False, total: Callable[[int], None] | None = None,
                on_progress: Progress | None = None, checks: Checks | None = None) -> VerifyReport:
    with Ledger.open(path) as mind:
        report = VerifyReport(str(path), "mind", mind.mind_id, mind.ledger_format)
        if total is not None:
            total(mind.count())
        head_id = mind.head()[0]
        two_cores = (os.cpu_count() or 1) > 1
        found: tuple[Replayed, OwnChecks] | None = None
        if deep:
            state, replayed, here = _deep_read(mind, head_id >= DEEP_PARALLEL_FROM and two_cores, on_progress)
            found = replayed, here
        elif head_id >= PARALLEL_FROM and two_cores:
            state = check_in_two(mind, head_id // 2 + 1, on_progress)
        else:
            state = check_chain(mind.prefix, mind.raw_rows(), ChainState(), on_progress)
        _record(report, state)
        if report.ok and mind.tombstones:
            _record_tombstones(report, mind.forgotten(),
                               ((e.id, e.meta_json) for e in mind.events(kind="content_forgotten")))
        if found is not None:
            replayed = found[0]
            if replayed.sessions is None or state.problem is not None:
                # the replay's read of each event is the fold only of a sound chain of canonical
                # metas (text kinds, ids from 1): else the sessions are folded on their own
                replayed.sessions, replayed.sessions_ok = _sessions(mind)
            report.deep = _deep_mind(report, *found)
        if report.ok and (altered := mind.schema_problems()):  # planted triggers, views, tables
            report.problem, report.hint = "altered outside pmm: " + "; ".join(altered[:3]), ALTERED_HINT
        if checks is not None:
            checks.apply(report, _signed_hash_at(mind, checks, report),
                         lambda: checkpoint.of(mind.mind_id, *mind.head()))
    return report


def _signed_hash_at(mind: Ledger, checks: Checks, report: VerifyReport) -> HashAt:
    """``mind.hash_at``, except at a signed checkpoint from before ``pmm upgrade``: there the
    event's hash in the format-1 chain, recomputed from the stored events (the only proof a
    signature over a format-1 head can have: a ``ledger_upgraded`` event's record of that head
    is the file's own claim). When an event it covers is forgotten it cannot be recomputed,
    and the signature must be made again."""
    signed = checks.signed.checkpoint if checks.signed is not None else None
    if signed is None or mind.ledger_format < 2 or not report.ok:
        return mind.hash_at
    upgraded = [e.meta for e in mind.events(kind="ledger_upgraded")]
    covered = [m for m in upgraded if signed.size <= m.get("format1_events", 0)]
    if not covered or mind.hash_at(signed.size) == signed.head:
        return mind.hash_at
    old = mind.format1_hash_at(signed.size)
    if old is None:
        report.hint = ("the signature names a checkpoint of the format-1 chain (before `pmm upgrade`)"
                       " that covers a forgotten event, so it cannot be recomputed: sign again (pmm sign)")
        return mind.hash_at
    if old == signed.head:
        report.notes.append(f"the signature is over the format-1 chain (before `pmm upgrade`):"
                            f" recomputed from the stored events, event {signed.size} had the"
                            " signed hash")

    def hash_at(event_id: int) -> str | None:
        return old if event_id == signed.size else mind.hash_at(event_id)

    return hash_at


def verify_export(stream: IO[bytes], name: str, *, deep: bool = False,
                  on_progress: Progress | None = None, checks: Checks | None = None) -> VerifyReport:
    """Check a JSONL export, every line of it. Input that is not a pmm export at all is
    ``NotAMind`` (exit 4) whether it came as a file or on stdin; a pmm export that is wrong
    anywhere (its header included) is the report's problem (exit 3)."""
    from pmm.ledger.jsonl import ExportReader

    report = VerifyReport(name, "export")
    reader = ExportReader(stream, name)
    try:
        header = reader.read_header()
    except errors.InputRejected as exc:
        if not reader.is_export:
            raise errors.NotAMind(f"{name} is neither a pmm mind file nor a pmm export",
                                  hint=exc.message) from None
        report.problem = f"not a valid pmm export: {exc.message}"
        return report
    report.mind_id, report.ledger_format, report.first_id = (
        header.mind_id, header.ledger_format, header.since)
    events = _UntilRejected(reader.events())
    start = ChainState(last_id=header.since - 1)
    known = checks.known(header.mind_id) if checks is not None else {}
    seen = _Hashes(set(known))
    if header.since > 1:
        first = events.peek()
        if first is not None:
            start.last_hash = first[1].prev_hash
        anchor = known.get(header.since - 1)
        if anchor is not None and first is not None:
            if anchor != start.last_hash:
                report.problem_event = header.since
                report.problem = (f"does not link to event {header.since - 1} as pmm knows it "
                                  "(from the witness or the signature): forked or forged")
                return report
            seen.found[header.since - 1] = anchor
        else:
            report.anchored = False
            report.notes.append(
                f"partial export from event {header.since}: its link to event "
                f"{header.since - 1} can only be checked against the mind")
    metas_ok = _MetaCheck() if deep else None
    records: list[tuple[int, str]] = []
    state = check_chain(chain_prefix(header.ledger_format, header.mind_id),
                        _raw(events, metas_ok, seen, reader.forgotten, records), start, on_progress)
    _record(report, state)
    if report.ok:
        _record_tombstones(report, reader.forgotten, records)
    if metas_ok is not None:
        report.deep = {"meta_canonical": metas_ok.bad is None}
        if metas_ok.bad is not None and report.ok:
            report.problem_event, report.problem = metas_ok.bad, "meta is not canonical JSON"
    if report.ok:
        for _ in events:  # drain to check the end line
            pass
    rejected = events.rejected
    if rejected is not None and report.ok:
        report.problem = f"not a valid pmm export: {rejected.message}"
        report.problem_event = _rejected_event(reader, rejected, header.since)
    if checks is not None:
        checks.apply(report, seen.found.get)
    return report


def _rejected_event(reader: ExportReader, rejected: errors.InputRejected, since: int) -> int | None:
    """The first bad event a refused line stands for: the event that line should have held, or,
    at the end line, the first event it claims that never came (None: only the end line lies)."""
    if rejected.line is None or rejected.line < 2:
        return None
    if reader.end_at is not None and rejected.line >= reader.end_at:
        claims = reader.end_last_id
        if type(claims) is int and claims > reader.last_id:
            return reader.last_id + 1
        return None
    return since + rejected.line - 2


class _Hashes:
    """The hashes of a few chosen events, caught as an export streams past."""

    def __init__(self, wanted: set[int]) -> None:
        self.wanted = wanted
        self.found: dict[int, str] = {}


class _UntilRejected:
    """Export events that stop cleanly at the first bad line (keeping the error), so what was
    checked before it is still reported.

    A plain iterator, not a generator: peeking must not be able to end the stream. (A throwaway
    generator around the reader's, once closed, closes the reader's too, and then only the
    peeked event was ever checked.)
    """

    def __init__(self, events: Iterator[tuple[int, Event]]) -> None:
        self._next = events.__next__
        self.pending: list[tuple[int, Event]] = []
        self.rejected: errors.InputRejected | None = None
        self.done = False

    def __iter__(self) -> _UntilRejected:
        return self

    def __next__(self) -> tuple[int, Event]:
        if self.pending:
            return self.pending.pop()
        if self.done:
            raise StopIteration
        try:
            return self._next()
        except StopIteration:
            self.done = True
            raise
        except errors.InputRejected as exc:
            self.done, self.rejected = True, exc
            raise StopIteration from None

    def peek(self) -> tuple[int, Event] | None:
        """The next event without consuming it (None at the end)."""
        item = next(self, None)
        if item is not None:
            self.pending.append(item)
        return item


class _MetaCheck:
    def __init__(self) -> None:
        self.bad: int | None = None
        self.canonical = CanonicalMetas()

    def __call__(self, event: Event) -> None:
        if self.bad is None and not self.canonical(event.meta_json):
            self.bad = event.id


def _raw(events: Iterable[tuple[int, Event]], check: _MetaCheck | None,
         seen: _Hashes, tombstones: dict[int, str], records: list[tuple[int, str]]) -> Iterator[RawRow]:
    """Export events as the checker's rows, each with its tombstone (read from its own line);
    ``records`` collects the content_forgotten events on the way."""
    forgetting = "content_forgotten"
    for _, e in events:
        if check is not None:
            check(e)
        if e.id in seen.wanted:
            seen.found[e.id] = e.hash
        if e.kind == forgetting:
            records.append((e.id, e.meta_json))
        tomb = tombstones.get(e.id)
        yield (e.id, e.ts.encode(), e.kind.encode(), e.content.encode(), e.meta_json.encode(),
               e.prev_hash.encode(), e.hash.encode(), None if tomb is None else tomb.encode())


def _record_tombstones(report: VerifyReport, tombstones: dict[int, str],
                       records: Iterable[tuple[int, str]]) -> None:
    """The forgotten events' tombstones against the content_forgotten events that record them."""
    found = tombstone_problem(tombstones, records, report.first_id)
    if found is not None:
        report.problem_event, report.problem = found.event_id, found.reason


def _record(report: VerifyReport, state: ChainState) -> None:
    report.events, report.last_id, report.head = state.count, state.last_id, state.last_hash
    if state.problem is not None:
        report.problem_event = state.problem.event_id
        report.problem = state.problem.reason


@dataclass
class Replayed:
    """What ``--deep`` learns by reading every event: the first meta that is not canonical, and
    how the projection cache compares with a full replay (picklable: it may come from a child)."""

    bad_meta: int | None
    cache: str
    cache_ok: bool
    snapshots: str = "none stored"
    snapshots_ok: bool = True
    # the sessions table against the events read here (None: decided apart, ``_sessions``)
    sessions: str | None = None
    sessions_ok: bool = True


@dataclass
class OwnChecks:
    """What ``--deep`` checks in this process (beside the replaying child): SQLite's own check."""

    quick_check: str


def _deep_read(mind: Ledger, fork: bool, on_progress: Progress | None,
               piece: int = DEEP_PIECE) -> tuple[ChainState, Replayed, OwnChecks]:
    """``--deep``'s reads of every event: the chain, the replay, and the checks of this process.
    With ``fork`` a child replays (and checks the sessions table from what it reads) while this
    process runs quick_check; then both check the chain, a piece at a time: the wall time is
    half the work, not the sum (whichever of the replay and the checks here is the longer)."""
    if fork:
        return check_shared(mind, piece, on_progress, replay_check, functools.partial(_here, mind))
    state = check_chain(mind.prefix, mind.raw_rows(), ChainState(), on_progress)
    return state, replay_check(mind), _here(mind)


def _here(mind: Ledger) -> OwnChecks:
    return OwnChecks(mind.quick_check())


def _sessions(mind: Ledger) -> tuple[str, bool]:
    """The sessions table against a fold of its own (in its own snapshot: the table, its mark
    and the events): for a mind whose replay could not decide (``Replayed.sessions``)."""
    from pmm.ledger import sessions as session_rows  # --deep only

    with mind.read_transaction():
        return session_rows.check(mind)


def replay_check(mind: Ledger) -> Replayed:
    """Every meta canonical, the cache equal to a full replay and the sessions table equal to
    the events' sessions, from one read of the events (in one snapshot: a writer appending
    meanwhile cannot make the cache or the table look wrong). Past a meta that is not
    canonical the sessions are left to ``_sessions``: its fold in SQL reads canonical metas
    as Python does, and only those."""
    from pmm.domain import projections  # --deep only, as the cache and the snapshots
    from pmm.ledger import folded, past
    from pmm.ledger import sessions as session_rows

    canonical = CanonicalMetas()
    bad: int | None = None
    with mind.read_transaction():
        cached = folded.cached(mind)
        sessions = session_rows.Checking(mind)
        stored = set(past.ids(mind.conn)) if mind.schema_version >= 2 else set()
        seen: dict[int, States] = {}
        fold = projections.Fold()

        def keep(event_id: int, states: States) -> None:
            seen[event_id] = states.copy()

        for events in past.runs(mind, 1):  # read and folded as a replay does (past.feed)
            if bad is None:
                bad = _metas(events, canonical, sessions.folding)
            if any(events[0].id <= i <= events[-1].id for i in stored):
                past.fold_split(fold, events, stored.__contains__, keep)
            else:
                fold.add_run(events)
        full = fold.states
        if fold.merges:  # a merged mind reads back from each fork (docs/merge.md)
            full = folded.replay_all(mind)
            first = fold.merges[0].id  # (past.store keeps no snapshot from there on)
            seen.update({i: folded.replay_all(mind, i) for i in seen if i >= first})
        snapshots, snapshots_ok = _snapshots_check(mind, stored, seen)
        said, said_ok = sessions.said() if bad is None else (None, True)
        if cached is None:
            return Replayed(bad, "absent or stale (ignored; a full replay is used)", True, snapshots,
                            snapshots_ok, said, said_ok)
        states, last_id = cached
        rest = projections.Fold(states)
        past.feed(mind, rest, last_id + 1)
        cache_ok = (folded.replay_all(mind) if rest.merges else rest.states) == full
    cache = f"reflects event {last_id}; " + ("equals a full replay" if cache_ok else "DIFFERS from a full replay")
    return Replayed(bad, cache, cache_ok, snapshots, snapshots_ok, said, said_ok)


def _metas(events: list[Event], canonical: CanonicalMetas, folding: session_table.Folding | None) -> int | None:
    """The first of ``events`` whose meta is not canonical (None: none); when there is none,
    each event of the sessions' kinds into ``folding`` (when there is one), its meta read once."""
    from pmm.ledger.session_table import KINDS

    if folding is None:
        return next((e.id for e in events if not canonical(e.meta_json)), None)
    value, found = canonical.value, []
    for e in events:
        kind = e.kind
        if kind not in KINDS:
            if not canonical(e.meta_json):
                return e.id
            continue
        ok, meta = value(e.meta_json)
        if not ok:
            return e.id
        if type(e.id) is int and isinstance(e.ts, str):  # as session_table.fold reads them
            found.append((e.id, e.ts, kind, meta))
    folding.add_in_order(found)
    return None


def _snapshots_check(mind: Ledger, stored: set[int], seen: dict[int, States]) -> tuple[str, bool]:
    """Each stored snapshot against the replay's states at its event: one that differs is a
    problem; one this machine did not seal (or for an event the chain does not hold) is
    ignored by --as-of, and said so."""
    from pmm.ledger import past

    if not stored:
        return "none stored", True
    differ, ignored = [], 0
    done = functools.cache(past.done_row(mind))  # parsed once for every snapshot: only compared here
    for event_id in sorted(stored):
        states = past.sealed(mind, event_id, done)
        if states is None or event_id not in seen:
            ignored += 1
        elif states != json.loads(past.dump(seen[event_id])):
            differ.append(event_id)
    checked_n = len(stored) - ignored
    said = f"{checked_n:,} checked"
    said += (f", DIFFERENT from a full replay at {', '.join(f'#{i:,}' for i in differ[:5])}" if differ
             else ", each equals a full replay" if checked_n else "")
    if ignored:
        said += f"; {ignored:,} not sealed by this machine or stale (ignored by --as-of)"
    return said, not differ


def _deep_mind(report: VerifyReport, found: Replayed, here: OwnChecks) -> Deep:
    """SQLite's own check, canonical meta, the projection cache against a full replay and the
    sessions table against the events."""
    quick = here.quick_check
    problems = []
    if quick != "ok":
        problems.append(f"SQLite quick_check: {quick}")
    if found.bad_meta is not None:
        problems.append(f"event {found.bad_meta}: meta is not canonical JSON")
    if not found.cache_ok:
        problems.append("the projection cache does not equal a full replay")
    if not found.snapshots_ok:
        problems.append("an --as-of snapshot does not equal a full replay")
    if not found.sessions_ok:
        problems.append("the sessions table does not equal the events' sessions")
    if problems and report.ok:
        report.problem = "; ".join(problems)
    return {"sqlite_quick_check": quick, "meta_canonical": found.bad_meta is None,
            "projection_cache": found.cache, "cache_matches_replay": found.cache_ok,
            "snapshots": found.snapshots, "snapshots_match_replay": found.snapshots_ok,
            "sessions_table": found.sessions or "", "sessions_match_events": found.sessions_ok}
