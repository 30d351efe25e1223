"""What ``--as-of`` snapshots (pmm.ledger.past) cost in file size for a mind with many kept
commitments: ``--kept`` commitments opened and closed first (bench_cache.keep_commitments), then
notes up to ``--events`` events, so every snapshot after them has that history.

    .venv/bin/python bench/bench_snapshots.py [--kept 20000] [--events 200000] [--dir DIR]

Prints the file size, the bytes the snapshot rows hold and the bytes of the cache's ``done`` row
(the history once), beside what the snapshots would hold if each repeated that row (the limit:
a snapshot should cost far less than a copy of the history). Run it with the code to compare.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cache import keep_commitments  # noqa: E402

from pmm.domain import events as ev  # noqa: E402
from pmm.domain.events import Draft  # noqa: E402
from pmm.ledger import past  # noqa: E402
from pmm.ledger.store import Ledger  # noqa: E402


def build(mind: Path, kept: int, events: int) -> None:
    Ledger.create(mind, Draft(ev.MIND_CREATED.name, "Mind created", {"name": "Bench", "pmm_version": "0.1.0"})).close()
    keep_commitments(mind, kept)
    with Ledger.open(mind, write=True) as ledger:
        while (head := ledger.head()[0]) < events:
            size = min(20_000, events - head)
            ledger.append([Draft(ev.OBSERVATION_RECORDED.name, f"note {head + i}", {"source": "user"})
                           for i in range(size)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kept", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="pmm-bench-snapshots-"))
    os.environ.setdefault("XDG_STATE_HOME", str(work / "state"))
    mind = work / "mind.db"
    mind.unlink(missing_ok=True)
    started = time.perf_counter()
    build(mind, args.kept, args.events)
    took = time.perf_counter() - started
    conn = sqlite3.connect(mind)
    try:
        conn.execute("VACUUM")
        snaps, snap_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(length(state)), 0) FROM projection_cache"
            " WHERE substr(name, 1, ?) = ?", (len(past.PREFIX), past.PREFIX)).fetchone()
        (done_bytes,) = conn.execute("SELECT coalesce(length(state), 0) FROM projection_cache"
                                     " WHERE name = 'mind:done'").fetchone()
    finally:
        conn.close()
    size = mind.stat().st_size
    print(f"{args.kept:,} kept commitments, {args.events:,} events (built in {took:.0f} s):"
          f" file {size / 1e6:.1f} MB; {snaps} snapshots hold {snap_bytes / 1e6:.2f} MB"
          f" ({snap_bytes / max(snaps, 1) / 1e3:.1f} kB each); the done row {done_bytes / 1e6:.2f} MB;"
          f" limit: each snapshot well under one copy of the done row ({done_bytes / 1e3:.1f} kB)")


if __name__ == "__main__":
    main()
