"""Moving a mind: ``pmm export`` (JSONL or Markdown, streamed) and ``pmm import`` of a pmm JSONL."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NotRequired, TypedDict, TypeVar

from pmm import errors
from pmm.domain import events as ev
from pmm.domain.canonical import NOT_CANONICAL, CanonicalMetas
from pmm.domain.events import Event
from pmm.ledger import jsonl
from pmm.ledger.chain import GENESIS_PREV, ChainState, chain_prefix, check_chain, tombstone_problem
from pmm.ledger.store import Ledger
from pmm.services import files, opening

Progress = Callable[[int], None]
# Lines per decoder call in a bulk import: a batch that stays in the CPU's caches (the reading
# process took half as long again per event with 4,096 at 1M events).
READ_BATCH = 256
T = TypeVar("T")


@contextlib.contextmanager
def atomic_text_file(path: Path, *, reading: Iterable[Path] = ()) -> Iterator[IO[str]]:
    """``path`` as UTF-8 text under the one output policy (pmm.services.files): it appears whole
    or not at all, never over ``reading``, a mind or a device node."""
    with files.open_output(path, mode=0o600, reading=reading, what="export") as raw:
        handle = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        try:
            yield handle
        finally:
            handle.detach()  # flushes; open_output still owns (syncs, renames, closes) the file


@contextlib.contextmanager
def open_source(source: str, stdin: IO[bytes]) -> Iterator[tuple[IO[bytes], str]]:
    """An import source as a binary stream and a name for messages (``-`` is stdin)."""
    if source == "-":
        yield stdin, "stdin"
        return
    try:
        handle = open(Path(source).expanduser(), "rb")
    except OSError as exc:
        raise errors.InputRejected(f"cannot read {source}: {exc.strerror}") from None
    with handle:
        yield handle, source


def export(mind: Ledger, out: IO[str], *, fmt: str = "jsonl", since: int = 1,
           on_progress: Progress | None = None) -> int:
    """Stream the events from ``since`` to ``out``; returns how many were written."""
    if since < 1:
        raise errors.UsageError("--since must be 1 or more")
    if fmt == "md":
        from pmm.services import export_markdown

        return export_markdown.write(mind, _counting(mind.events(since=since), on_progress), out)
    events = _counting(mind.rows(since=since), on_progress)
    out.write(jsonl.header_line(mind.mind_id, mind.ledger_format, since))
    track = _Track(events)
    write = out.write
    for line in jsonl.event_lines(track, mind.forgotten()):
        write(line)
    last_id = track.last_id or since - 1
    head = track.last_hash or mind.hash_at(since - 1) or GENESIS_PREV
    out.write(jsonl.end_line(track.count, last_id, head))
    return track.count


class _Track:
    """Pass event rows through while remembering how many and the last one."""

    def __init__(self, rows: Iterator[Sequence[Any]]) -> None:
        self.rows = rows
        self.count = 0
        self.last_id = 0
        self.last_hash = ""

    def __iter__(self) -> Iterator[Sequence[Any]]:
        row: Sequence[Any] | None = None
        count = 0
        for row in self.rows:
            count += 1
            yield row
        self.count = count
        if row is not None:
            self.last_id, self.last_hash = row[0], row[6]


def _counting(events: Iterator[T], on_progress: Progress | None, every: int = 65536
              ) -> Iterator[T]:
    if on_progress is None:
        yield from events
        return
    n = 0
    for event in events:
        yield event
        n += 1
        if n == every:
            on_progress(n)
            n = 0
    on_progress(n)


class ImportJson(TypedDict):
    """``pmm import --json``: ``ImportResult``'s fields (``skipped`` for ChatGPT / Claude only)."""

    appended: int
    already_present: int
    created: bool
    mind_id: str
    head_id: int
    format: str  # jsonl, chatgpt or claude: what the file was read as
    skipped: NotRequired[dict[str, int]]  # what the ledger does not hold, by kind, with counts


class ExportJson(TypedDict):
    """``pmm export -o FILE --json``: what was written where."""

    file: str
    format: str  # jsonl or md
    events: int
    since: int
    mind_id: str
    head_id: int
    head: str


@dataclass
class ImportResult:
    appended: int
    already_present: int
    created: bool
    mind_id: str
    head_id: int
    format: str = "jsonl"
    skipped: dict[str, int] | None = None  # a conversations.json's left-out content, by kind

    def to_json(self) -> ImportJson:
        out: ImportJson = {"appended": self.appended, "already_present": self.already_present,
                           "created": self.created, "mind_id": self.mind_id,
                           "head_id": self.head_id, "format": self.format}
        if self.skipped is not None:
            out["skipped"] = dict(self.skipped)
        return out


def import_pmm(path: Path, stream: IO[bytes], name: str, *, notify: Callable[[str], None],
               on_progress: Progress | None = None) -> ImportResult:
    """Verify a pmm JSONL, then write it in one transaction (SPEC section 4, ``import``).

    Into a new file the events stream into a private temp file that only appears when all of
    them checked out. Into an existing mind the whole export is checked first against a
    read-only view (so a refused import never touches the file), then written.
    """
    if not path.exists():
        files.remove_stale(path)  # what an import killed here before left (its temp mind, its index)
        reader = jsonl.ExportReader(stream, name)
        header = reader.read_header()
        if header.since != 1:
            raise errors.InputRejected(
                f"this export starts at event {header.since}; a new mind needs one from event 1",
                hint="export with no --since, or import into the mind it was taken from")
        prefix = chain_prefix(header.ledger_format, header.mind_id)
        from pmm.services import import_reader

        jsonl.fast_decoder()  # imported here, before the fork, not by the child
        checked = import_reader.Checked(
            lambda: _checked_batches(reader.batches(READ_BATCH), prefix, ChainState(), None,
                                     reader.forgotten),
            on_progress, size=file_size(stream), tombstones=reader.forgotten)
        count = Ledger.build_batches(path, header.mind_id, checked, lambda: checked.states,
                                     lambda: checked.snaps, tombstones=reader.forgotten,
                                     ledger_format=header.ledger_format)
        with Ledger.open(path) as built:
            opening.witness_head(built, created=True)
        notify(f"Created a new mind at {path}")
        return ImportResult(count, 0, True, header.mind_id, count)
    with _seekable(stream) as source:
        with Ledger.open(path) as mind:
            planned = _merge(mind, jsonl.ExportReader(source, name), write=False)
        if not planned.appended:
            return planned
        source.seek(0)
        with opening.witnessed(Ledger.open(path, write=True), notify=notify) as mind:
            return _merge(mind, jsonl.ExportReader(source, name), write=True,
                          on_progress=on_progress, expected=planned.appended)


def file_size(stream: IO[bytes]) -> int | None:
    """The size of a regular file behind ``stream``, or None (a pipe, a terminal)."""
    import os
    import stat

    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


@contextlib.contextmanager
def _seekable(stream: IO[bytes]) -> Iterator[IO[bytes]]:
    """The stream itself when it can be read twice, else a private spooled copy (stdin)."""
    try:
        seekable = stream.seekable()
    except (AttributeError, OSError):
        seekable = False
    if seekable:
        yield stream
        return
    import shutil
    import tempfile

    with tempfile.TemporaryFile() as copy:
        shutil.copyfileobj(stream, copy, 1 << 20)
        copy.seek(0)
        yield copy


def _merge(mind: Ledger, reader: jsonl.ExportReader, *, write: bool,
           on_progress: Progress | None = None, expected: int = 0) -> ImportResult:
    """Match the export against ``mind``'s chain; with ``write``, append the missing tail."""
    header = reader.read_header()
    prefix = chain_prefix(header.ledger_format, header.mind_id)
    events = reader.events()
    head_id, _ = mind.head()
    if head_id == 0 and mind.mind_id != header.mind_id:
        if not write:  # an empty mind takes the export's identity (when it is written)
            return ImportResult(sum(1 for _ in _checked(events, prefix, ChainState(), None,
                                                        reader.forgotten)),
                                0, False, header.mind_id, 0)
        mind.adopt_identity(header.mind_id, header.ledger_format)
    if mind.mind_id != header.mind_id:
        raise errors.InputRejected(
            f"this export is of mind {header.mind_id}, but {mind.path} holds mind {mind.mind_id}",
            hint="import into a new file with --mind NEW.db")
    if header.since > head_id + 1:
        raise errors.InputRejected(
            f"this export starts at event {header.since} but {mind.path} ends at event {head_id}:"
            f" events {head_id + 1}-{header.since - 1} are missing")
    present = 0
    state = ChainState(last_id=header.since - 1,
                       last_hash=mind.hash_at(header.since - 1) or GENESIS_PREV)
    for line, event in events:
        if event.id > head_id:
            tail = _checked(_prepend((line, event), events), prefix, state, on_progress,
                            reader.forgotten)
            break
        if event.id != state.last_id + 1 or mind.hash_at(event.id) != event.hash:
            raise errors.InputRejected(
                f"the export diverges from {mind.path} at event {event.id}",
                hint="the two chains differ from that event on; they cannot be merged",
                line=line)
        state.last_id, state.last_hash = event.id, event.hash
        present += 1
    else:
        return ImportResult(0, present, False, mind.mind_id, head_id)
    if header.ledger_format != mind.ledger_format:
        raise errors.InputRejected(
            f"this export is ledger format {header.ledger_format}, but {mind.path} is format"
            f" {mind.ledger_format}: their hashes differ from the first event on",
            hint="`pmm upgrade` both copies to format 2 first")
    appended = (mind.append_checked(tail, reader.forgotten, expected=expected) if write
                else sum(1 for _ in tail))
    return ImportResult(appended, present, False, mind.mind_id, head_id + appended)


def _prepend(first: tuple[int, Event], rest: Iterator[tuple[int, Event]]
             ) -> Iterator[tuple[int, Event]]:
    yield first
    yield from rest


class _Forgetting:
    """The tombstones an export's reader fills as it reads (the forgotten events' digests), and
    the content_forgotten events met that record them: judged together once all is read. It
    also carries the stream's memo of canonical metas (``_check``)."""

    def __init__(self, tombstones: dict[int, str] | None, first_id: int) -> None:
        self.tombs = tombstones if tombstones is not None else {}
        self.records: list[tuple[int, str]] = []
        self.first_id = first_id
        self.canonical = CanonicalMetas()

    def judge(self) -> None:
        # A tombstone can only be judged once its record, later in the chain, has been read: a
        # refusal here still aborts the write (the caller's transaction or temp file).
        problem = tombstone_problem(self.tombs, self.records, self.first_id)
        if problem is not None:
            raise errors.InputRejected(str(problem))


def _checked(events: Iterator[tuple[int, Event]], prefix: bytes, state: ChainState,
             on_progress: Progress | None, tombstones: dict[int, str] | None = None,
             batch: int = 4096) -> Iterator[Event]:
    """Pass events through only after their hashes and links check out; raise on the first bad.
    ``tombstones`` (the reader's, filled as it reads) are the forgotten events' digests; the
    content_forgotten events that record them are checked against them at the end."""
    forgetting = _Forgetting(tombstones, state.last_id + 1)
    pending: list[tuple[int, Event]] = []
    for item in events:
        pending.append(item)
        if len(pending) == batch:
            yield from _check([e for _, e in pending], [n for n, _ in pending], prefix, state,
                              on_progress, forgetting)
            pending.clear()
    if pending:
        yield from _check([e for _, e in pending], [n for n, _ in pending], prefix, state,
                          on_progress, forgetting)
    forgetting.judge()


def _checked_batches(batches: Iterator[tuple[int, list[Event]]], prefix: bytes,
                     state: ChainState, on_progress: Progress | None,
                     tombstones: dict[int, str] | None = None) -> Iterator[list[Event]]:
    """``_checked`` for ``ExportReader.batches``: each list only once every event in it
    checked out."""
    forgetting = _Forgetting(tombstones, state.last_id + 1)
    for first_line, events in batches:
        yield _check(events, range(first_line, first_line + len(events)), prefix, state,
                     on_progress, forgetting)
    forgetting.judge()


def _check(events: list[Event], lines: Sequence[int], prefix: bytes, state: ChainState,
           on_progress: Progress | None, forgetting: _Forgetting) -> list[Event]:
    """``events`` (read from ``lines``), once their hashes and links check out (a forgotten
    one's against its tombstone: the digest its hash commits to) and each meta is canonical.

    The hash commits to the meta's bytes, so a meta that is not canonical (``-0.0``, a space,
    keys out of order) cannot be rewritten here: it is refused, with the reason
    ``pmm verify --deep`` gives, or the mind would fail that check once imported."""
    tombs = forgetting.tombs
    try:
        rows = [(e.id, e.ts.encode(), e.kind.encode(), e.content.encode(), e.meta_json.encode(),
                 e.prev_hash.encode(), e.hash.encode(),
                 None if (t := tombs.get(e.id)) is None else t.encode()) for e in events]
    except UnicodeEncodeError:  # JSON's "\ud800" decodes to text that has no UTF-8
        line = next(n for n, e in zip(lines, events, strict=True) if not all(map(_encodes, e[1:])))
        raise errors.InputRejected(
            "a field holds a lone surrogate (\\ud800-\\udfff), which is not text", line=line
        ) from None
    canonical = forgetting.canonical
    odd = next((i for i, e in enumerate(events) if not canonical(e.meta_json)), None)
    before = state.count
    check_chain(prefix, rows if odd is None else rows[:odd + 1], state)
    if state.problem is not None:
        line = lines[state.count - before]  # the checker stops at the first bad row
        raise errors.InputRejected(str(state.problem), line=line)
    if odd is not None:  # its hash and shape are sound: only its meta's bytes are not canonical
        raise errors.InputRejected(f"event {events[odd].id}: {NOT_CANONICAL}", line=lines[odd])
    if on_progress is not None:
        on_progress(len(events))
    forgetting.records.extend((e.id, e.meta_json) for e in events if e.kind == ev.CONTENT_FORGOTTEN.name)
    return events


def checked_events(events: Iterator[tuple[int, Event]], prefix: bytes, state: ChainState,
                   tombstones: dict[int, str] | None = None) -> Iterator[Event]:
    """An export's events (line, event), passed on once their hashes, links and shapes check
    out from ``state`` on; raises InputRejected (with the line) at the first bad one."""
    return _checked(events, prefix, state, None, tombstones)


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def checked_export(stream: IO[bytes], name: str) -> tuple[jsonl.Header, Iterator[Event]]:
    """A pmm JSONL export read as hostile input: its header, then its events, each passed on
    only once its hash, link and shape check out (``InputRejected``, exit 6, naming the line,
    at the first that does not; the end line is checked when they stop)."""
    reader = jsonl.ExportReader(stream, name)
    header = reader.read_header()
    prefix = chain_prefix(header.ledger_format, header.mind_id)
    return header, _checked(reader.events(), prefix, ChainState(last_id=header.since - 1), None)
