"""Verifying a large mind on two cores: the first half in a forked process, the second here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pmm import errors
from pmm.ledger.chain import GENESIS_PREV, ChainState, Problem, check_chain, id_problem
from pmm.ledger.store import Ledger

Progress = Callable[[int], None]

PARALLEL_FROM = 200_000  # below this, forking a checker costs more than it saves


def check_in_two(mind: Ledger, split: int, on_progress: Progress | None) -> ChainState:
    """Check ids below ``split`` in a forked process and the rest here, then join the halves.

    Hashing is CPU-bound and independent per event, so two cores halve the wall time. The
    second half starts from the *stored* hash of event ``split - 1``; the first half proves
    that hash right (it is the last one it checks), which links the halves.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    done = ctx.Value("q", 0)
    receive, send = ctx.Pipe(duplex=False)

    def first_half() -> None:
        with Ledger.open(mind.path) as own:
            state = check_chain(own.prefix, own.raw_rows(before=split), ChainState(),
                                lambda n: _add(done, n))
        send.send(state)

    child = ctx.Process(target=first_half, name="pmm-verify", daemon=True)
    child.start()
    send.close()
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
    try:
        first: ChainState = receive.recv()
    except EOFError:
        raise errors.PmmError("the verifying child process died") from None
    child.join()
    progress(0)
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


def _add(value: Any, n: int) -> None:
    with value.get_lock():
        value.value += n
