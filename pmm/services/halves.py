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
    import multiprocessing

    done = multiprocessing.get_context("fork").Value("q", 0)

    def first_half() -> ChainState:
        with Ledger.open(mind.path) as own:
            return check_chain(own.prefix, own.raw_rows(before=split), ChainState(),
                               lambda n: _add(done, n))

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
    first = first_result()
    progress(0)
    return _joined(mind, split, boundary, first, second)


def check_shared(mind: Ledger, piece: int, on_progress: Progress | None,
                 there: Callable[[Ledger], T], here: Callable[[], U]) -> tuple[ChainState, T, U]:
    """The chain checked in pieces of ``piece`` ids by two processes, each taking the next piece
    once its own work is done (``there(own)`` in a forked child, on its own connection;
    ``here()`` in this process): however long the two works take, both processes end within
    about one piece of each other (``verify --deep``: the replay and the sessions table in the
    child, quick_check here). Each piece starts from the *stored* hash of the event before
    it and is joined to the pieces before it as ``check_in_two`` joins its halves."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    # by the number of events, not the head's id: a forged id near 2**63 makes one long last piece
    lows = range(1, max(1, mind.count()) + 1, piece)
    taken, done = ctx.Value("q", 0), ctx.Value("q", 0)

    def pieces(own: Ledger, report: Progress) -> list[tuple[int, ChainState]]:
        checked: list[tuple[int, ChainState]] = []
        while True:
            with taken.get_lock():
                index = taken.value
                taken.value += 1
            if index >= len(lows):
                return checked
            low = lows[index]
            rows = own.raw_rows(since=low if index else None,  # the first piece: odd ids too
                                before=lows[index + 1] if index + 1 < len(lows) else None)
            start = ChainState(last_id=low - 1, last_hash=_boundary(own, low))
            checked.append((low, check_chain(own.prefix, rows, start, report)))

    def in_own() -> tuple[T, list[tuple[int, ChainState]]]:
        with Ledger.open(mind.path) as own:
            found = there(own)
            return found, pieces(own, lambda n: _add(done, n))

    child = in_child(in_own)
    seen = 0

    def progress(n: int) -> None:
        nonlocal seen
        _add(done, n)
        if on_progress is not None:
            total = done.value
            on_progress(total - seen)
            seen = total

    found_here = here()
    mine = pieces(mind, progress)
    found_there, theirs = child()
    progress(0)
    ordered = sorted(mine + theirs, key=lambda checked: checked[0])
    joined = ordered[0][1]
    for low, state in ordered[1:]:
        joined = _joined(mind, low, _boundary(mind, low), joined, state)
    return joined, found_there, found_here


def _boundary(mind: Ledger, low: int) -> str:
    """The stored hash a piece from ``low`` starts from (the genesis link for the first)."""
    return (mind.hash_at(low - 1) if low > 1 else None) or GENESIS_PREV


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


def _add(value: Any, n: int) -> None:
    with value.get_lock():
        value.value += n
