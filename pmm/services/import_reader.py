"""The reading half of a bulk import on the second core: a forked process parses, checks and
hashes the export (``portability._checked``) and folds the projections over it, and sends the
checked events through a pipe in batches, then the folded states, while this process writes
them (SQLite: the events, their indexes, the search index).

The child opens no SQLite connection and writes nothing but the pipe. A problem it finds is
sent as what it is (an ``InputRejected`` with its line) and raised here, so the import refuses
the file exactly as it does in one process; if the child dies, the import fails and nothing is
written. The pipe holds a batch or two at most (the child waits while this side writes), so
neither side's memory grows with the export.
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import signal
from collections.abc import Callable, Iterator
from typing import Any

from pmm import errors
from pmm.domain import projections
from pmm.domain.events import Event
from pmm.domain.states import States

Progress = Callable[[int], None]

BATCH = 1024  # events per message: about 400 KB of an ordinary chat export
PIPE_BYTES = 1 << 20  # the pipe's buffer (Linux): the child runs a few batches ahead, so neither
# side waits on the other's turn at the CPU for every 64 KB (on a busy machine, each wait is a
# scheduler slice: with Linux's default buffer, most of a 1M-event import was spent waiting)
PARALLEL_FROM = 1 << 20  # an export file smaller than this (bytes) is read here: a fork costs more


class Checked:
    """Checked events, and once they are all read, ``states``: the projections folded over them."""

    def __init__(self, make: Callable[[], Iterator[Event]], on_progress: Progress | None, *,
                 size: int | None = None) -> None:
        self.make, self.on_progress, self.size = make, on_progress, size
        self.states: States | None = None

    def __iter__(self) -> Iterator[Event]:
        import multiprocessing

        if ((self.size is not None and self.size < PARALLEL_FROM)
                or "fork" not in multiprocessing.get_all_start_methods()):
            return self._here()
        return self._beside(multiprocessing.get_context("fork"))

    def _here(self) -> Iterator[Event]:
        fold, progress, n = projections.Fold(), self.on_progress, 0
        for event in self.make():
            fold.add(event)
            yield event
            n += 1
            if n == BATCH and progress is not None:
                progress(n)
                n = 0
        if progress is not None:
            progress(n)
        self.states = fold.states

    def _beside(self, ctx: Any) -> Iterator[Event]:
        receive, send = ctx.Pipe(duplex=False)
        _widen(send.fileno())
        child = ctx.Process(target=_produce, args=(self.make, send, receive), name="pmm-import-reader",
                            daemon=True)
        child.start()
        send.close()
        finished = False
        try:
            while True:
                try:
                    tag, payload = pickle.loads(receive.recv_bytes())
                except EOFError:
                    raise errors.PmmError("internal: the import's reading process died") from None
                if tag == "events":
                    if self.on_progress is not None:
                        self.on_progress(len(payload))
                    yield from map(Event._make, payload)
                elif tag == "done":
                    finished, self.states = True, payload
                    return
                else:
                    raise _rebuilt(tag, payload)
        finally:
            receive.close()
            if not finished:
                child.kill()  # this side stopped first (a refusal, an error, Ctrl-C)
            child.join()


def _widen(fd: int) -> None:
    import fcntl

    with contextlib.suppress(AttributeError, OSError):  # not Linux, or a lower system limit
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _produce(make: Callable[[], Iterator[Event]], send: Any, receive: Any) -> None:
    """The child: run the checks and the fold, send each batch, then the states (``done``) or
    what went wrong."""
    # The fork copied the pipe's reading end too: closed, so that when the parent dies the
    # next send fails (EPIPE) and this process ends, instead of waiting on a pipe it holds itself.
    receive.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to answer
    gc.disable()  # a short-lived process making no cycles: the collector's passes are waste
    dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
    try:
        fold = projections.Fold()
        add = fold.add
        batch: list[tuple[Any, ...]] = []
        for event in make():
            add(event)
            batch.append(tuple(event))
            if len(batch) == BATCH:
                send.send_bytes(dumps(("events", batch), protocol))
                batch = []
        if batch:
            send.send_bytes(dumps(("events", batch), protocol))
        message: tuple[str, Any] = ("done", fold.states)
    except errors.InputRejected as exc:
        message = ("rejected", (exc.message, exc.hint, exc.line))
    except errors.PmmError as exc:
        message = ("failed", (exc.message, exc.hint, None))
    except BaseException as exc:  # said to the parent, which raises it
        message = ("failed", (f"internal: the import's reading process failed ({exc!r})", None, None))
    try:
        send.send_bytes(dumps(message, protocol))
    except OSError:
        pass  # the parent is gone (killed, or it stopped reading): nobody to tell
    send.close()


def _rebuilt(tag: str, payload: tuple[str, str | None, int | None]) -> errors.PmmError:
    message, hint, line = payload
    if tag != "rejected":
        return errors.PmmError(message, hint)
    rejected = errors.InputRejected(message, hint)  # the message already names its line
    rejected.line = line
    return rejected
