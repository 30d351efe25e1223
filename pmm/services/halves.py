"""Verifying a large mind on two cores: part of the work in a forked process, the rest here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from pmm import errors
from pmm.ledger.chain import GENESIS_PREV, ChainState, Problem, check_chain, id_problem
from pmm.ledger.store import Ledger

Progress = Callable[[int], None]
T = TypeVar("T")
U = TypeVar("U")

PARALLEL_FROM = 200_000  # below this, forking a checker costs more than it saves


def in_child(work: Callable[[], T]) -> Callable[[], T]:
    """Run ``work`` in a forked process (which opens its own connections: one is never shared
    across a fork); the function returned waits for the child and returns what ``work`` did,
    or raises the ``PmmError`` it raised (with its own exit code and hint, not a traceback)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def run() -> None:
        try:
            send.send((True, work()))
        except errors.PmmError as exc:
            send.send((False, (type(exc), exc.message, exc.hint)))

    child = ctx.Process(target=run, name="pmm-verify", daemon=True)
    child.start()
    send.close()

    def result() -> T:
        try:
            ok, done = receive.recv()
        except EOFError:
            raise errors.PmmError("the verifying child process died") from None
        finally:
            receive.close()
        child.join()
        if not ok:
            kind, message, hint = done
            raise kind(message, hint)
        return cast(T, done)

    return result


def check_in_two(mind: Ledger, split: int, on_progress: Progress | None) -> ChainState:
    """Check ids below ``split`` in a forked process and the rest here, then join the halves.

    Hashing is CPU-bound and independent per event, so two cores halve the wall time. The
    second half starts from the *stored* hash of event ``split - 1``; the first half proves
    that hash right (it is the last one it checks), which links the halves.
    """
    return check_in_two_beside(mind, split, on_progress, _nothing, _nothing_here)[0]


def check_in_two_beside(mind: Ledger, split: int, on_progress: Progress | None,
                        there: Callable[[Ledger], T], here: Callable[[], U]) -> tuple[ChainState, T, U]:
    """``check_in_two``, with more work for each process once its half of the chain is checked:
    ``there(own)`` in the child (on its own connection), ``here()`` in this process. Its
    result is the joined chain's state and what each of them returned. (``verify --deep``
    gives the child the replay and this process the rest, and splits the chain so that both
    finish about together.)"""
    import multiprocessing

    done = multiprocessing.get_context("fork").Value("q", 0)

    def first_half() -> tuple[ChainState, T]:
        with Ledger.open(mind.path) as own:
            state = check_chain(own.prefix, own.raw_rows(before=split), ChainState(),
                                lambda n: _add(done, n))
            return state, there(own)

    first_result = in_child(first_half)
    seen = 0

    def progress(n: int) -> None:
        nonlocal seen
        if on_progress is not None:
            total = done.value
            on_progress(n + total - seen)
            seen = total

    boundary = mind.hash_at(split - 1) or GENESIS_PREV
    second = check_chain(mind.prefix, mind.raw_rows(since=split),
                         ChainState(last_id=split - 1, last_hash=boundary), progress)
    found_here = here()
    first, found_there = first_result()
    progress(0)
    return _joined(mind, split, boundary, first, second), found_there, found_here


def _joined(mind: Ledger, split: int, boundary: str, first: ChainState, second: ChainState) -> ChainState:
    if first.problem is not None:
        return first
    if first.last_id != split - 1:  # the first half ended early: ids are missing at the seam
        following = mind.first_id_from(split)
        if following is not None:
            first.problem = id_problem(first.last_id + 1, following)
        return first
    if first.last_hash != boundary:
        first.problem = Problem(split, f"does not link to event {split - 1}")
        return first
    second.count += first.count
    return second


def _nothing(_: Ledger) -> None:
    return None


def _nothing_here() -> None:
    return None


def _add(value: Any, n: int) -> None:
    with value.get_lock():
        value.value += n
