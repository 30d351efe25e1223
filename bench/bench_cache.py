"""The projection cache at any size (issue 15): a stale cache costs one replay per process at
most, then the first write caches it; a chat turn's own work does not grow with the history.

    .venv/bin/python bench/bench_cache.py [--sizes 10000,100000,1000000] [--turns 20] [--warm 30] [--kept 20000] [--repeats 3]

For each size: a synthetic mind (bench_ledger.synthetic_export, imported with `pmm import`), a
model on a loopback OpenAI-compatible server (tests/provider_servers.py) that answers at once,
then, with the cache made stale (as a projection version change leaves it):

- `pmm stats` and the first `pmm chat -m` (the real console script run in a fresh process, wall
  time) with the number of full replays that process did (``pmm.ledger.folded.replays``, read by
  an exit hook in that process), beside one replay's time measured the same way as
  bench_ledger.py's (``projections.replay`` over every event, in its own process: the limit);
- `pmm stats` again once that chat has cached the states (wall time);
- a chat turn's own work (bench_chat.BenchChat: everything but the model, in-process, median of
  ``--turns``, with the part spent in pmm.ledger.folded) on that mind, then after ``--kept`` commitments were opened and kept (closed with
  evidence; appended through pmm's own ledger, one transaction per 1,000).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_chat import VOCAB, BenchChat  # noqa: E402
from bench_ledger import PMM, synthetic_export  # noqa: E402
from provider_servers import FakeServer  # noqa: E402

from pmm.domain import events as ev  # noqa: E402
from pmm.domain.events import Draft  # noqa: E402
from pmm.ledger import folded  # noqa: E402
from pmm.ledger.store import Ledger  # noqa: E402

T = TypeVar("T")

# A fresh pmm process that reports, at exit, how many full replays it did.
COUNTED = """
import atexit, sys
from pmm.ledger import folded
atexit.register(lambda: print(f"REPLAYS {getattr(folded, 'replays', -1)}", file=sys.stderr))  # -1: not counted
from pmm.cli.boundary import main
main(sys.argv[1:])
"""


def counted(mind: Path, *args: str) -> tuple[float, int]:
    """Wall time of ``pmm --mind MIND ARGS`` in a new process, and the replays it did."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", COUNTED, "--mind", str(mind), *args],
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    line = next(x for x in proc.stderr.splitlines() if x.startswith("REPLAYS "))
    return wall, int(line.split()[1])


def stale(mind: Path) -> None:
    """Leave the cache as a projection version change does: every row from another version."""
    conn = sqlite3.connect(mind, isolation_level=None)
    try:
        conn.execute("UPDATE projection_cache SET version = 'cache:0;an older pmm'")
    finally:
        conn.close()


# The limit: a process that opens the mind and replays every event, and nothing else.
REPLAY = """
import sys, time
from pathlib import Path
from pmm.domain import projections
from pmm.ledger.store import Ledger
with Ledger.open(Path(sys.argv[1])) as m:
    t = time.perf_counter()
    projections.replay(m.events())
    print(time.perf_counter() - t)
"""


def one_replay(mind: Path) -> tuple[float, float]:
    """One replay's time, and the wall time of the whole process that did it (the faster of
    two: the first after an import may read the file from disk, the commands timed later do not)."""
    runs = []
    for _ in range(2):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", REPLAY, str(mind)], check=True,
                             capture_output=True, text=True).stdout
        runs.append((float(out), time.perf_counter() - started))
    return min(runs)


def keep_commitments(mind: Path, kept: int) -> None:
    """``kept`` commitments opened, then closed with evidence (the event just before the
    closes), through the ledger's own append: in batches of 1,000 per transaction."""
    with Ledger.open(mind, write=True) as ledger:
        for start in range(0, kept, 1000):
            size = min(1000, kept - start)
            first = ledger.head()[0] + 1
            drafts = [Draft(ev.COMMITMENT_OPENED.name, f"I will check item {start + i} tomorrow",
                            {"source": "user"}) for i in range(size)]
            drafts.append(Draft(ev.OBSERVATION_RECORDED.name, f"items {start} to {start + size} checked", {}))
            evidence = first + size
            drafts += [Draft(ev.COMMITMENT_CLOSED.name, "checked",
                             {"commitment": first + i, "evidence": [evidence], "source": "user"})
                       for i in range(size)]
            ledger.append(drafts)


class StateClock:
    """Time spent reading, folding and sealing the projections (``pmm.ledger.folded``'s entry
    points, wrapped while a turn runs): the part of a turn this issue's row is about."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._saved = (folded.state, folded.Folding.__init__, folded.Folding.seal)

    def _timed(self, fn: Callable[..., T]) -> Callable[..., T]:
        def run(*args: Any, **kwargs: Any) -> T:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - started
        return run

    def __enter__(self) -> StateClock:
        state, init, seal = self._saved
        folded.state = self._timed(state)  # type: ignore[assignment]
        folded.Folding.__init__ = self._timed(init)  # type: ignore[method-assign]
        folded.Folding.seal = self._timed(seal)  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        folded.state, folded.Folding.__init__, folded.Folding.seal = self._saved  # type: ignore[method-assign]




def turn_ms(mind: Path, turns: int, warm: int) -> tuple[float, float]:
    """Medians of a chat turn's own work in one process, and of its projection-state part. The
    first ``warm`` turns are not timed: they warm SQLite's cache and make the newest
    events chat again (after ``keep_commitments`` they are commitments, which recall reads
    differently), so both figures are taken with the same kind of recent context."""
    rng = random.Random(3)
    samples, states = [], []
    with BenchChat(mind, lambda _m: None) as session:
        for i in range(turns + warm):
            words = [VOCAB[rng.randrange(50)] for _ in range(4)] + [VOCAB[rng.randrange(50, 50_000)] for _ in range(8)]
            with StateClock() as clock:
                started = time.perf_counter()
                session.turn(" ".join(words))
                spent = time.perf_counter() - started
            if i >= warm:
                samples.append(spent)
                states.append(clock.spent)
    return statistics.median(samples) * 1000, statistics.median(states) * 1000


def bench(n: int, work: Path, turns: int, warm: int, kept: int, repeats: int, server: FakeServer) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src, mind = work / "src.jsonl", work / "mind.db"
    synthetic_export(src, n)
    subprocess.run([PMM, "--mind", str(mind), "-q", "import", str(src)], check=True)
    src.unlink()
    subprocess.run([PMM, "--mind", str(mind), "-q", "model", "add", "srv", "openai-compatible:test-model",
                    "--base-url", server.url, "--use"], check=True, capture_output=True)
    replay, limit = one_replay(mind)
    print(f"## {n:,} events (load {os.getloadavg()[0]:.2f})")
    print(f"one replay: {replay:.2f} s; the process that does it (the limit): {limit:.2f} s wall")
    stale(mind)
    counted(mind, "chat", "-m", "hello there")  # first-chat costs that are not the cache's
    runs = []
    for _ in range(repeats):
        stale(mind)
        runs.append((counted(mind, "stats"),
                     counted(mind, "chat", "-m", "hello there"),  # still stale: stats never writes
                     counted(mind, "stats"),  # that chat's write cached it
                     counted(mind, "chat", "-m", "hello there")))
    for name, cold, warm in (("pmm stats", 0, 2), ("first pmm chat -m", 1, 3)):
        wall = statistics.median(run[cold][0] for run in runs)
        base = statistics.median(run[warm][0] for run in runs)
        replays = sorted({run[cold][1] for run in runs})
        again = sorted({run[warm][1] for run in runs})
        print(f"stale-cache `{name}`: {wall:.2f} s wall, replays {replays}; with the cache the"
              f" chat wrote: {base:.2f} s, replays {again}; the stale cache cost {wall - base:+.2f} s"
              f" = {(wall - base) / replay:.2f}x one replay (median of {repeats})")
    none, none_state = turn_ms(mind, turns, warm)
    keep_commitments(mind, kept)
    some, some_state = turn_ms(mind, turns, warm)
    print(f"chat turn's own work: {none:.1f} ms with no kept commitments (projection state {none_state:.1f} ms);"
          f" {some:.1f} ms with {kept:,} kept (projection state {some_state:.1f} ms; bar: < 20 ms)")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--warm", type=int, default=30, help="turns before the timed ones")
    ap.add_argument("--kept", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each stale/current pair (median)")
    ap.add_argument("--dir", type=Path, default=ROOT / "bench" / "data-cache")
    args = ap.parse_args()
    print(f"# {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()},"
          f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with FakeServer("openai", text="An answer.") as server:
        for n in (int(x) for x in args.sizes.split(",")):
            bench(n, args.dir, args.turns, args.warm, args.kept, args.repeats, server)


if __name__ == "__main__":
    main()
