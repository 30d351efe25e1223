"""``pmm merge OTHER``: join another copy of this mind that diverged from it (docs/merge.md).

The other copy (a mind file or a JSONL export, hostile input either way) is verified whole
before anything is written: every hash, link, id and shape. Its events after the last one both
copies share (the fork) are matched against this copy's: those this copy already holds (its own,
or copies it merged before: the same origin) and those it holds an equal of (same kind, content
and meta: the same note written on both, the same import) are skipped; the rest are appended as
new events, their references to other events mapped to the ids those have here, followed by one
``mind_merged`` event that records where each came from. One transaction; a merge that finds
nothing new writes nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from pmm import errors
from pmm.domain import events as ev
from pmm.domain import merging
from pmm.domain.canonical import canonical_json
from pmm.domain.events import Draft, Event
from pmm.ledger import jsonl
from pmm.ledger.chain import GENESIS_PREV, ChainState, chain_prefix, check_chain
from pmm.ledger.connection import SQLITE_MAGIC
from pmm.ledger.store import Ledger
from pmm.services import opening, portability
from pmm.services.words import plural

MAX_COPIES = 30_000  # events one merge copies: its mind_merged event stays well under 8 MiB
MERGED = ev.MIND_MERGED.name


class MergeJson(TypedDict):
    """``pmm merge --json``."""

    mind_id: str
    source: str  # "mind" (a mind file) or "export"
    fork_id: int  # the last event both copies share (0: none, not even the genesis)
    fork_hash: str
    ours: int  # events here after the fork
    theirs: int  # events of the other copy after the fork
    appended: int  # events written here (copies, and the mind_merged event when there is one)
    copied: int  # of the other copy's events, those appended as new events
    already_here: int  # theirs that are ours, or that this copy merged before
    duplicates: int  # theirs equal to one of ours (same kind, content and meta)
    extended: bool  # the other copy only continued this one: its events appended as they are
    head_id: int
    other_head_id: int
    other_head: str
    dry_run: bool


@dataclass
class MergeResult:
    mind_id: str
    source: str
    fork_id: int = 0
    fork_hash: str = GENESIS_PREV
    ours: int = 0
    theirs: int = 0
    copied: int = 0
    already_here: int = 0
    duplicates: int = 0
    extended: bool = False
    head_id: int = 0
    other_head_id: int = 0
    other_head: str = GENESIS_PREV
    dry_run: bool = False
    appended: int = 0
    drafts: list[Draft] = field(default_factory=list, repr=False)
    tail: list[Event] = field(default_factory=list, repr=False)  # an extension's events
    # the other copy's forgotten events' digests (ledger format 2), for an extension's tail
    tombstones: dict[int, str] = field(default_factory=dict, repr=False)

    def to_json(self) -> MergeJson:
        return {"mind_id": self.mind_id, "source": self.source, "fork_id": self.fork_id,
                "fork_hash": self.fork_hash, "ours": self.ours, "theirs": self.theirs,
                "appended": self.appended, "copied": self.copied,
                "already_here": self.already_here, "duplicates": self.duplicates,
                "extended": self.extended, "head_id": self.head_id,
                "other_head_id": self.other_head_id, "other_head": self.other_head,
                "dry_run": self.dry_run}

    def summary(self) -> str:
        """One line for the terminal."""
        if self.extended:
            what = f"the other copy continued this one: {plural(self.appended, 'event')} appended as they are"
        elif not self.appended:
            what = "nothing new: every event of the other copy is already here"
        else:
            what = (f"{plural(self.copied, 'event')} copied from the other copy"
                    f" (diverged after event {self.fork_id:,})")
        skipped = [f"{n:,} {word}" for n, word in (
            (self.already_here, "already here"),
            (self.duplicates, "duplicate" if self.duplicates == 1 else "duplicates")) if n]
        verb = "Would merge" if self.dry_run else "Merged"
        return f"{verb}: {what}" + (f"; skipped {', '.join(skipped)}" if skipped else "") + (
            f" (head {'would be' if self.dry_run else 'is now'} #{self.head_id})")


def merge(path: Path, other: Path, *, dry_run: bool = False,
          notify: Callable[[str], None] = lambda _: None) -> MergeResult:
    """Merge the copy at ``other`` into the mind at ``path`` (SPEC: every write one transaction)."""
    if not path.exists():
        raise errors.MindNotFound(f"no mind at {path}",
                                  hint="merge joins two copies of one mind: `pmm import` makes a new one")
    other = other.expanduser()
    with contextlib.suppress(OSError):
        if os.path.samefile(path, other):
            raise errors.UsageError(f"{other} is this mind's own file: there is nothing to merge")
    with _their_events(other) as (source, mind_id, fmt, events, tombstones):
        with Ledger.open(path) as mind:
            if mind.mind_id != mind_id:
                raise errors.InputRejected(
                    f"{other} holds mind {mind_id}, but {path} holds mind {mind.mind_id}",
                    hint="merge joins two copies of one mind; `pmm import` with --mind NEW.db reads another")
            if mind.ledger_format != fmt:
                raise errors.InputRejected(
                    f"{other} is in ledger format {fmt}, {path} in format {mind.ledger_format}",
                    hint="`pmm upgrade` the format-1 copy first (docs/ledger-format.md)")
            # the head before the plan reads anything (id and hash): the write goes on only from
            # it, so a write that lands while the plan reads the other copy is refused
            planned = mind.head()
            result = plan(mind, events, source, str(other))
            if result.head_id - result.appended != planned[0]:
                raise _changed(path)
            result.tombstones = {i: d for i, d in tombstones.items() if i > planned[0]}
    result.dry_run = dry_run
    if dry_run or not result.appended:
        return result
    with opening.witnessed(Ledger.open(path, write=True), notify=notify) as mind:
        if result.extended:
            if mind.head() != planned:
                raise _changed(path)
            mind.append_checked(result.tail, result.tombstones)
        else:
            def drafts(first_id: int) -> list[Draft]:
                if first_id != planned[0] + 1 or mind.head() != planned:
                    raise _changed(path)
                return result.drafts

            mind.append(drafts)
        from pmm.services import witness

        with contextlib.suppress(OSError):
            witness.note_merged(mind.mind_id, (result.other_head_id, result.other_head), mind.head())
    return result


def _changed(path: Path) -> errors.PmmError:
    return errors.InputRejected(f"{path} was written to while the merge was planned; nothing was merged",
                                hint="run `pmm merge` again")


@contextlib.contextmanager
def _their_events(other: Path) -> Iterator[tuple[str, str, int, Iterator[Event], dict[int, str]]]:
    """The other copy's events, each passed on only once its hash, link, id and shape are
    checked (a bad one raises InputRejected, exit 6): (source, mind id, format, events, and
    the digests of its forgotten events: whole once the events are read)."""
    try:
        with open(other, "rb") as probe:
            magic = probe.read(16)
    except OSError as exc:
        raise errors.InputRejected(f"cannot read {other}: {exc.strerror}") from None
    if magic == SQLITE_MAGIC:
        try:
            theirs = Ledger.open(other)
        except errors.MindFileError as exc:
            raise errors.InputRejected(f"{other} is not a mind pmm can merge: {exc.message}") from None
        with theirs:
            if altered := theirs.schema_problems():
                raise errors.InputRejected(f"{other} was altered outside pmm: {altered[0]}",
                                           hint=f"run `pmm verify {other}`")
            # closed before the file is: a statement left open would keep its read lock
            rows = _mind_events(theirs, other)
            try:
                yield "mind", theirs.mind_id, theirs.ledger_format, rows, theirs.forgotten() if theirs.tombstones else {}
            finally:
                rows.close()
        return
    with open(other, "rb") as handle:
        reader = jsonl.ExportReader(handle, str(other))
        with _naming(other):  # only around the reading: what the caller raises is its own
            header = reader.read_header()
            prefix = chain_prefix(header.ledger_format, header.mind_id)
            state = ChainState(last_id=header.since - 1)
            events = reader.events()
            first = next(events, None) if header.since > 1 else None
        if header.since > 1:  # a partial export: it links to whatever the mind holds before it
            if first is None:
                yield "export", header.mind_id, header.ledger_format, iter(()), {}
                return
            state.last_hash = first[1].prev_hash
            events = _prepend(first, events)
        from pmm.services import import_reader

        jsonl.fast_decoder()  # imported here, before the fork, not by the child
        # Read and checked on the second core (as `pmm import` reads a large export) while
        # this process compares the hashes with its own: nothing is written until all of it
        # has been read and checked.
        checked = import_reader.Checked(
            lambda: _batched(portability.checked_events(events, prefix, state, reader.forgotten)), None,
            size=portability.file_size(handle), fold=False, tombstones=reader.forgotten)
        batches = iter(checked)
        try:
            yield "export", header.mind_id, header.ledger_format, _named(other, _unbatched(batches)), reader.forgotten
        finally:  # a refusal part-way stops the reading process now, not when collected
            close = getattr(batches, "close", None)
            if close is not None:
                close()


@contextlib.contextmanager
def _naming(other: Path) -> Iterator[None]:
    """A refusal of the export's reader (which words it for ``pmm import``, where there is one
    file) said of ``other``: a merge has two files, and the user must know which is bad."""
    try:
        yield
    except errors.InputRejected as exc:
        raise _of(other, exc) from None


def _named(other: Path, events: Iterator[Event]) -> Iterator[Event]:
    """``events``, with a refusal met while they are read (the checks run as they are read,
    here or in the reading process) said of ``other``."""
    with _naming(other):
        yield from events


def _of(other: Path, exc: errors.InputRejected) -> errors.InputRejected:
    if str(other) in exc.message:
        return exc
    named = errors.InputRejected(f"{other}: {exc.message}", exc.hint)  # "OTHER: line N: ..."
    named.line = exc.line
    return named


def _batched(events: Iterator[Event], size: int = 4096) -> Iterator[list[Event]]:
    while batch := list(itertools.islice(events, size)):
        yield batch


def _unbatched(batches: Iterator[Sequence[Any]]) -> Iterator[Event]:
    """The events of ``batches`` (each an ``Event`` or, from the reading process, a plain tuple
    in its column order), one by one."""
    for batch in batches:
        for row in batch:
            yield row if isinstance(row, Event) else Event._make(row)


def _prepend(first: tuple[int, Event], rest: Iterator[tuple[int, Event]]) -> Iterator[tuple[int, Event]]:
    yield first
    yield from rest


def _mind_events(theirs: Ledger, name: Path, batch: int = 4096) -> Generator[Event, None, None]:
    state = ChainState()
    rows = theirs.raw_rows()
    while chunk := [row for _, row in zip(range(batch), rows, strict=False)]:
        before = state.count
        check_chain(theirs.prefix, chunk, state)
        if state.problem is not None:
            raise errors.InputRejected(f"{name} does not verify: {state.problem}",
                                       hint=f"run `pmm verify {name}`")
        for row in chunk[:state.count - before]:
            yield Event(row[0], *(value.decode() for value in row[1:7]))  # (a tombstone after them)


def plan(mind: Ledger, theirs: Iterator[Event], source: str, other: str) -> MergeResult:
    """What merging ``theirs`` (checked events in id order, read from ``other``: a refusal
    names it) into ``mind`` would append. Reads all of ``theirs`` (so all of it is verified)
    before it returns."""
    head_id, _ = mind.head()
    result = MergeResult(mind.mind_id, source, head_id=head_id)
    # closed whatever happens: an open statement would keep a read lock on the mind
    with contextlib.closing(mind.conn.execute("SELECT id, hash FROM events ORDER BY id")) as ours:
        after, last, fork, fork_hash = _diverging(mind, theirs, ours, head_id, other)
    result.other_head_id, result.other_head = last
    result.fork_id, result.fork_hash = fork, fork_hash
    result.theirs = len(after)
    result.ours = head_id - fork
    if not after:
        return result  # the other copy is this one, or behind it
    if fork == head_id:  # it continues this copy: its events as they are (an import of the tail)
        result.extended = True
        result.tail = after
        result.appended = len(after)
        result.head_id = head_id + len(after)
        return result
    _join(result, list(mind.events(since=fork + 1)), after, head_id, other, str(mind.path))
    return result


def _diverging(mind: Ledger, theirs: Iterator[Event], ours: Any, head_id: int, other: str
               ) -> tuple[list[Event], tuple[int, str], int, str]:
    """Their events after the last one this mind holds too (that one is the fork), their last
    event, and the fork's id and hash; ``ours`` is a cursor over this mind's (id, hash)."""
    fork, fork_hash = 0, GENESIS_PREV
    mine: dict[int, str] = {}
    after: list[Event] = []
    last = (0, GENESIS_PREV)
    for event in theirs:
        if last[0] == 0 and event.id > 1:  # a partial export: it must start before the fork
            if mind.hash_at(event.id - 1) != event.prev_hash:
                raise errors.InputRejected(
                    f"{other} starts at event {event.id}, and does not link to event"
                    f" {event.id - 1} of {mind.path}: it starts after the two diverged",
                    hint="export it whole (no --since), or merge its mind file")
            fork, fork_hash = event.id - 1, event.prev_hash
        last = (event.id, event.hash)
        if not after and event.id <= head_id:
            while event.id not in mine and (rows := ours.fetchmany(4096)):
                mine = dict(rows)
            if mine.get(event.id) == event.hash:
                fork, fork_hash = event.id, event.hash
                continue
        after.append(event)
        if len(after) > MAX_COPIES + 1024:  # room for their markers and the duplicates
            raise errors.InputRejected(
                f"{other} holds over {MAX_COPIES:,} events that {mind.path} does not: too many for"
                " one merge",
                hint="export it in parts with --since and merge them oldest first")
    return after, last, fork, fork_hash


def _join(result: MergeResult, ours: list[Event], theirs: list[Event], head_id: int,
          other: str, this_mind: str) -> None:
    """Match their events after the fork against ours; the drafts to append go in ``result``
    (a refusal names ``other``, and ``this_mind``: this mind's file)."""
    fork = result.fork_id
    our_keys = merging.Keys(e for e in ours if e.kind == MERGED)
    their_keys = merging.Keys(e for e in theirs if e.kind == MERGED)
    known: dict[str, int] = {}  # an origin's hash (or an alias's) -> the event here
    held: dict[int, set[merging.Key]] = {}  # the keys each of our events already has
    pool: dict[tuple[str, str, str], list[int]] = {}  # what each of ours holds -> its ids
    for e in ours:
        if e.kind == MERGED:
            continue
        keys = {our_keys.origin_of(e), *our_keys.alias.get(e.id, ())}
        held[e.id] = keys
        for key in keys:
            known.setdefault(key[2], e.id)
    mapping: dict[int, int] = {}
    used: set[int] = set()
    by_origin: set[int] = set()
    for x in theirs:
        if x.kind == MERGED:
            continue
        keys = {their_keys.origin_of(x), *their_keys.alias.get(x.id, ())}
        here = next((known[k[2]] for k in sorted(keys) if k[2] in known), None)
        if here is not None:
            mapping[x.id] = here
            used.add(here)
            by_origin.add(x.id)
    for e in ours:
        if e.kind != MERGED and e.id not in used:
            pool.setdefault((e.kind, e.content, e.meta_json), []).append(e.id)

    def local(ref: int) -> int:
        return ref if ref <= fork else mapping.get(ref, ref)

    copies: list[tuple[Event, str, dict[str, Any]]] = []
    same: list[tuple[int, merging.Key]] = []
    last = fork
    for x in theirs:
        if x.kind == MERGED:
            mapping[x.id] = last  # only a range's end names a marker: the event before it
            continue
        keys = {their_keys.origin_of(x), *their_keys.alias.get(x.id, ())}
        if x.id in by_origin:
            result.already_here += 1
            here = mapping[x.id]
        else:
            meta = _mapped(x.meta, local)
            text = canonical_json(meta)
            match = pool.get((x.kind, x.content, text))
            if match:
                here = match.pop(0)
                mapping[x.id] = here
                result.duplicates += 1
            else:
                if x.kind in ev.LEDGER_ONLY:  # a forget's or an upgrade's record: not a copy's to make
                    raise errors.InputRejected(
                        f"{other}'s event {x.id} ({x.kind}) came after it and {this_mind} parted, and"
                        " pmm merge cannot copy a forgetting or an upgrade (docs/merge.md)", hint=(
                            "merge before forgetting, or replace one copy by the other whole"
                            " (pmm export, then pmm import into a new file)"))
                here = head_id + len(copies) + 1
                mapping[x.id] = here
                copies.append((x, text, meta))
                held[here] = {their_keys.origin_of(x)}
        for key in sorted(keys):
            if key not in held.setdefault(here, set()):
                held[here].add(key)
                same.append((here, key))
        last = here
    if len(copies) > MAX_COPIES:
        raise errors.InputRejected(
            f"{other} holds {len(copies):,} events that {this_mind} does not: over {MAX_COPIES:,} for"
            " one merge",
            hint="export it in parts with --since and merge them oldest first")
    result.copied = len(copies)
    if not copies and not same:
        return  # merged before, and nothing new since: nothing to write
    drafts = [Draft(x.kind, x.content, meta) for x, _, meta in copies]
    drafts.append(Draft(MERGED, _line(result, len(copies)), _marker(result, theirs, copies, same,
                                                                     their_keys)))
    result.drafts = drafts
    result.appended = len(drafts)
    result.head_id = head_id + len(drafts)


def _mapped(meta: dict[str, Any], local: Callable[[int], int]) -> dict[str, Any]:
    """``meta`` with every reference to another event (``events.EVENT_REFERENCES``) mapped."""
    out = dict(meta)
    for name in ev.EVENT_REFERENCES.intersection(meta):
        value = meta[name]
        if type(value) is int:
            out[name] = local(value)
        elif type(value) is list:
            out[name] = [local(v) if type(v) is int else v for v in value]
    return out


def _line(result: MergeResult, copied: int) -> str:
    return (f"Merged {plural(copied, 'event')} from a copy of this mind that diverged after event"
            f" {result.fork_id:,} (its head: event {result.other_head_id:,})")


def _marker(result: MergeResult, theirs: list[Event], copies: list[tuple[Event, str, dict[str, Any]]],
            same: list[tuple[int, merging.Key]], their_keys: merging.Keys) -> dict[str, Any]:
    origins = [their_keys.origin_of(x) for x, _, _ in copies]
    meta: dict[str, Any] = {
        "fork": result.fork_id, "fork_hash": result.fork_hash,
        "other_head_id": result.other_head_id, "other_head": result.other_head,
        "other_branch": theirs[0].hash, "source": result.source}
    if copies:
        meta.update({"their_ids": [x.id for x, _, _ in copies],
                     "their_hashes": [x.hash for x, _, _ in copies],
                     "origin_ts": [o[0] for o in origins], "origin_ids": [o[1] for o in origins],
                     "origin_hashes": [o[2] for o in origins]})
    if same:
        meta.update({"same": [local for local, _ in same], "same_ts": [k[0] for _, k in same],
                     "same_ids": [k[1] for _, k in same], "same_hashes": [k[2] for _, k in same]})
    return meta
