"""The reading half of a bulk import on the second core: a forked process parses, checks and
hashes the export (``portability._checked_batches``) and folds the projections over it, and
sends the checked events through a pipe in batches, then the folded states, while this process
writes them (pmm.ledger.bulk: the events and their indexes, and on a thread the search index).

Not a thread: the reading is pure Python, and a thread holding the GIL for it would hold up the
writer at every row it binds (``executemany`` takes the GIL back after each row's step).

The child (``os.fork``) uses no SQLite connection and writes nothing but the pipe. A problem it finds is
sent as what it is (an ``InputRejected`` with its line) and raised here, so the import refuses
the file exactly as it does in one process; if the child dies, the import fails and nothing is
written. The pipe holds a batch or two at most (the child waits while this side writes), so
neither side's memory grows with the export.
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import os
import pickle
import signal
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from pmm import errors
from pmm.domain import projections
from pmm.domain.events import Event
from pmm.domain.states import States
from pmm.ledger import past

Progress = Callable[[int], None]

PIPE_BYTES = 1 << 20  # the pipe's buffer (Linux): the child runs a few batches ahead, so neither
# side waits on the other's turn at the CPU for every 64 KB (on a busy machine, each wait is a
# scheduler slice: with Linux's default buffer, most of a 1M-event import was spent waiting)
PARALLEL_FROM = 1 << 20  # an export file smaller than this (bytes) is read here: a fork costs more


class Checked:
    """Checked events in batches (lists of ``Event``s or of plain tuples in their column order),
    and once they are all read, ``states``: the projections folded over them."""

    def __init__(self, make: Callable[[], Iterator[list[Event]]], on_progress: Progress | None, *,
                 size: int | None = None, fold: bool = True, tombstones: dict[int, str] | None = None) -> None:
        self.make, self.on_progress, self.size = make, on_progress, size
        self.fold = fold  # False: only the checks (``pmm merge`` folds its own way); states stay None
        self.states: States | None = None
        self.snaps: list[past.Snap] = []  # the states at each snapshot point (pmm.ledger.past)
        # The reader's tombstones (forgotten events' digests): filled where the export is
        # read, so a child sends its copy with the states, into this same dict.
        self.tombstones = tombstones if tombstones is not None else {}

    def __iter__(self) -> Iterator[Sequence[Sequence[Any]]]:
        if (self.size is not None and self.size < PARALLEL_FROM) or not hasattr(os, "fork"):
            return self._here()
        return self._beside()

    def _here(self) -> Iterator[list[Event]]:
        folder, progress = _Folder(self.fold), self.on_progress
        for batch in self.make():
            folder.take(batch)
            if progress is not None:
                progress(len(batch))
            yield batch
        self.states, self.snaps = folder.states, folder.snaps

    def _beside(self) -> Iterator[list[tuple[Any, ...]]]:
        # os.fork, not multiprocessing: its child closes stdin, which may be the export itself.
        read_fd, write_fd = os.pipe()
        _widen(write_fd)
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code
            code = 1
            try:
                os.close(read_fd)  # so that the parent's death ends this process (EPIPE)
                with open(write_fd, "wb", buffering=0) as pipe:
                    _produce(self.make, pipe, self.fold, self.tombstones)
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        finished = False
        try:
            with open(read_fd, "rb", buffering=PIPE_BYTES) as pipe:
                read, unpack, events, rows = pipe.read, _FRAME.unpack, _EVENTS, marshal.loads
                while True:
                    head = read(_FRAME.size)
                    size, form = unpack(head) if len(head) == _FRAME.size else (0, b"")
                    body = read(size) if size else b""
                    if not body:
                        raise errors.PmmError("internal: the import's reading process died")
                    if form == events:
                        payload = rows(body)
                        if self.on_progress is not None:
                            self.on_progress(len(payload))
                        yield payload
                        continue
                    tag, payload = pickle.loads(body)
                    if tag == "done":
                        finished, (self.states, self.snaps, tombs) = True, payload
                        self.tombstones.update(tombs)
                        return
                    else:
                        raise _rebuilt(tag, payload)
        finally:
            if not finished:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # this side stopped first: a refusal, an error, Ctrl-C
            os.waitpid(pid, 0)


# Each message: its length and form, then its body. A batch of events is a list of plain
# tuples (ints and strs) in marshal's format, which both writes and reads them in about half
# pickle's time; the rest (the folded states, a refusal) are pickles.
_FRAME = struct.Struct(">Qc")
_EVENTS, _PICKLE = b"e", b"p"


def _widen(fd: int) -> None:
    import fcntl

    with contextlib.suppress(AttributeError, OSError):  # not Linux, or a lower system limit
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class _Folder:
    """The fold both halves run over checked batches: the projections (none when ``folding`` is
    off: ``pmm merge`` folds its own way) and the states at each snapshot point passed."""

    def __init__(self, folding: bool) -> None:
        self.folding, self.fold = folding, projections.Fold()
        self.snaps: list[past.Snap] = []

    def take(self, batch: list[Event]) -> None:
        if not self.folding:
            return
        fold, add, snaps, mask = self.fold, self.fold.add, self.snaps, past.MASK
        for event in batch:
            add(event)
            if not event.id & mask:
                past.add(snaps, (event.id, event.hash, fold.states.copy()))

    @property
    def states(self) -> States | None:
        return self.fold.states if self.folding else None


def _produce(make: Callable[[], Iterator[list[Event]]], pipe: IO[bytes], folding: bool = True,
             tombstones: dict[int, str] | None = None) -> None:
    """The child: run the checks and the fold, send each batch, then the states (``done``) or
    what went wrong."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to answer
    gc.disable()  # a short-lived process making no cycles: the collector's passes are waste
    dumps, protocol, frame, rows = pickle.dumps, pickle.HIGHEST_PROTOCOL, _FRAME.pack, marshal.dumps

    def send(message: tuple[str, Any]) -> None:
        body = dumps(message, protocol)
        pipe.write(frame(len(body), _PICKLE) + body)

    try:
        folder = _Folder(folding)
        for batch in make():
            folder.take(batch)
            body = rows(list(map(tuple, batch)))  # marshal takes plain tuples only
            pipe.write(frame(len(body), _EVENTS) + body)
        message: tuple[str, Any] = ("done", (folder.states, folder.snaps, dict(tombstones or {})))
    except BrokenPipeError:
        return  # the parent is gone (killed, or it stopped reading): nobody to tell
    except errors.InputRejected as exc:
        message = ("rejected", (exc.message, exc.hint, exc.line))
    except errors.PmmError as exc:
        message = ("failed", (exc.message, exc.hint, None))
    except BaseException as exc:  # said to the parent, which raises it
        message = ("failed", (f"internal: the import's reading process failed ({exc!r})", None, None))
    with contextlib.suppress(OSError):
        send(message)


def _rebuilt(tag: str, payload: tuple[str, str | None, int | None]) -> errors.PmmError:
    message, hint, line = payload
    if tag != "rejected":
        return errors.PmmError(message, hint)
    rejected = errors.InputRejected(message, hint)  # the message already names its line
    rejected.line = line
    return rejected
