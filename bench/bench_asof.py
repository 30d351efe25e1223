"""`--as-of` at any size (issue 17, part 3): the mind replayed up to an earlier event, from the
nearest snapshot (pmm.ledger.past) or, without one, from the first event.

    .venv/bin/python bench/bench_asof.py [--sizes 10000,100000,1000000] [--runs 3] [--json]

For each size: a synthetic mind (bench_ledger.synthetic_export, imported with `pmm import`, whose
fold stores a snapshot every 16,384 events), then the wall time of `pmm stats --as-of ID --json`
(the real console script in a fresh process, median of ``--runs``) in the middle and near the
end, with the snapshots and then without them (their rows deleted), beside the limit: one
process that opens the mind and replays every event (bench_cache.one_replay). Also `pmm recall
--as-of` in the middle once (it indexes the events up to the point in memory: no bar).

Bars: `--as-of` on a 1,000,000-event mind under 3 s; under 300 ms where a snapshot covers it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_cache import one_replay  # noqa: E402
from bench_ledger import PMM, synthetic_export  # noqa: E402


def wall(mind: Path, *args: str, runs: int) -> float:
    """Median wall time of ``pmm --mind MIND ARGS`` in fresh processes (after one untimed run)."""
    times = []
    for n in range(runs + 1):
        started = time.perf_counter()
        subprocess.run([PMM, "--mind", str(mind), "-q", *args], check=True, capture_output=True)
        if n:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def replayed(mind: Path, point: int) -> int:
    """How many events `stats --as-of` folded for ``point`` (its JSON says where it began)."""
    out = subprocess.run([PMM, "--mind", str(mind), "stats", "--as-of", str(point), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return int(json.loads(out)["data"]["as_of"]["replayed"])


def drop_snapshots(mind: Path) -> None:
    conn = sqlite3.connect(mind, isolation_level=None)
    try:
        conn.execute("DELETE FROM projection_cache WHERE substr(name, 1, 5) = 'snap:'")
    finally:
        conn.close()


def bench(n: int, work: Path, runs: int) -> dict[str, float]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src, mind = work / "src.jsonl", work / "mind.db"
    synthetic_export(src, n)
    subprocess.run([PMM, "--mind", str(mind), "-q", "import", str(src)], check=True)
    src.unlink()
    replay, limit = one_replay(mind)
    points = {"middle": n // 2 + n // 100, "near the end": n - max(1, n // 10_000)}
    found: dict[str, float] = {"limit": limit, "replay": replay}
    print(f"## {n:,} events (load {os.getloadavg()[0]:.2f})")
    print(f"one full replay: {replay:.2f} s; the process that does it (the limit): {limit:.2f} s wall")
    for snaps in (True, False):
        if not snaps:
            drop_snapshots(mind)
        for where, point in points.items():
            key = f"{where}, {'with' if snaps else 'without'} snapshots"
            found[key] = wall(mind, "stats", "--as-of", str(point), "--json", runs=runs)
            folded = replayed(mind, point)
            bar = 0.3 if snaps and folded < point else 3.0
            print(f"pmm stats --as-of {point:,} ({key}): {found[key]:.3f} s wall, {folded:,} events"
                  f" replayed; {found[key] / limit:.2f}x the limit (bar at 1M: < {bar:g} s)")
    middle = points["middle"]
    found["recall middle"] = wall(mind, "recall", "garden river", "--as-of", str(middle), "--json", runs=1)
    print(f"pmm recall --as-of {middle:,} (no snapshots; indexes {middle:,} events in memory):"
          f" {found['recall middle']:.2f} s wall (no bar)")
    shutil.rmtree(work, ignore_errors=True)
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=ROOT / "bench" / "data-asof")
    ap.add_argument("--json", action="store_true", help="also print every figure as JSON at the end")
    args = ap.parse_args()
    print(f"# {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()},"
          f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    results = {str(n): bench(n, args.dir, args.runs) for n in (int(x) for x in args.sizes.split(","))}
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
