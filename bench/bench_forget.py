"""`pmm forget` and `pmm verify` on a ledger-format-2 mind (issue 17's bars).

    .venv/bin/python bench/bench_forget.py [--events 1000000] [--runs 3] [--dir DIR]

Builds a mind of N chat-like events (a synthetic export, imported), then prints, each beside its
bar and beside limits measured in the same run on the same file:

- `pmm forget ID --yes` (wall, median of --runs, a different event each run): bar under 1 s at
  1,000,000 events. Limits: `pmm remember` (what any write command costs: start-up, the WAL
  switch, a commit, the hand-back) and the search index's merge alone (FTS5 `optimize` after a
  delete, in-process: the part of a forget that grows with the mind).
- `pmm verify` (events/s, median): bar at least 300,000 events/s. Limits: the rows read and
  hashed as format 2 does (the content digest, then the event hash) in a tight Python loop, and
  `pmm verify` of the same events written as ledger format 1 (what the digest costs).

The machine's load is printed with the figures: on a busy machine prefer the ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ledger import PMM, synthetic_export  # noqa: E402

FORGET_BAR = 1.0  # seconds, at 1,000,000 events
VERIFY_BAR = 300_000  # events per second


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def python_floor(path: Path) -> float:
    """CPU seconds to read every row and hash it as format 2 does, in a tight loop."""
    cpu = time.process_time()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.text_factory = bytes
    sha256, join, domain = hashlib.sha256, b"".join, b"pmm-content-v2\x00"
    for row in conn.execute("SELECT id, ts, kind, content, meta, prev_hash, hash FROM events ORDER BY id"):
        sha256(join((row[1], row[2], sha256(domain + row[3]).hexdigest().encode(), row[4], row[5]))).hexdigest()
    conn.close()
    return time.process_time() - cpu


def merge_alone(path: Path, event_id: int) -> float:
    """Seconds for the search index's delete-and-merge of one event, in-process, rolled back."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        start = time.perf_counter()
        old = conn.execute("SELECT content FROM events WHERE id = ?", (event_id,)).fetchone()[0]
        conn.execute("INSERT INTO events_fts(events_fts, rowid, content) VALUES ('delete', ?, ?)",
                     (event_id, old))
        conn.execute("INSERT INTO events_fts(events_fts) VALUES ('optimize')")
        took = time.perf_counter() - start
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, help="where to build the mind (default: a temp dir)")
    ap.add_argument("--no-format-1", action="store_true", help="skip verifying the same events as format 1")
    args = ap.parse_args()
    n, runs = args.events, args.runs
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        env = {**os.environ, "XDG_STATE_HOME": str(work / "state"), "XDG_DATA_HOME": str(work / "data"),
               "XDG_CONFIG_HOME": str(work / "config"), "PYTHONPATH": str(ROOT)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        print(f"# {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()},"
              f" SQLite {sqlite3.sqlite_version}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        src, mind = work / "src.jsonl", work / "mind.db"
        synthetic_export(src, n)
        subprocess.run([PMM, "--mind", str(mind), "-q", "import", str(src)], check=True, env=env)
        src.unlink()
        scale = n / 1_000_000
        print(f"\n## {n:,} events ({load()}); wall seconds, medians of {runs}")

        # --no-witness: the format-1 copy below has the same mind id (the same seed), which the
        # witness would call a fork; what is measured is the chain's check
        cmd = [PMM, "--mind", str(mind), "-q", "verify", "--no-witness"]
        wall(cmd, env)  # warm the page cache and the bytecode
        took = statistics.median(wall(cmd, env) for _ in range(runs))
        floor = statistics.median(python_floor(mind) for _ in range(runs))
        print(f"  pmm verify (format 2)        {took:7.3f} s = {n / took:>11,.0f} events/s"
              f"  (bar: at least {VERIFY_BAR:,}/s: {'met' if n / took >= VERIFY_BAR else 'NOT met'})")
        print(f"  limit: Python loop, format-2 hashing {floor:.3f} CPU = {n / floor:,.0f} events/s")

        remember = [PMM, "--mind", str(mind), "-q", "remember", "a note"]
        wall(remember, env)
        write = statistics.median(wall(remember, env) for _ in range(runs))
        merge = statistics.median(merge_alone(mind, n // 3 + k) for k in range(runs))
        forgets = [wall([PMM, "--mind", str(mind), "-q", "forget", str(n // 2 + k), "--yes"], env)
                   for k in range(runs)]
        took = statistics.median(forgets)
        bar = FORGET_BAR * max(scale, 0.001) if n < 1_000_000 else FORGET_BAR
        print(f"  pmm forget ID --yes          {took:7.3f} s (runs {', '.join(f'{t:.3f}' for t in forgets)})"
              f"  (bar: under {FORGET_BAR:.0f} s at 1,000,000 events"
              + (f": {'met' if took < bar else 'NOT met'})" if n >= 1_000_000 else ")"))
        print(f"  limit: pmm remember (any write) {write:.3f} s; the index's delete and merge alone {merge:.3f} s")

        took = statistics.median(wall(cmd, env) for _ in range(runs))
        print(f"  pmm verify after {runs} forgets  {took:7.3f} s = {n / took:>11,.0f} events/s")
        mind.unlink()

        if not args.no_format_1:  # the same events as format 1 (an older pmm's), verified the same way
            synthetic_export(src, n, ledger_format=1)
            old = work / "format1.db"
            subprocess.run([PMM, "--mind", str(old), "-q", "import", str(src)], check=True, env=env)
            src.unlink()
            cmd = [PMM, "--mind", str(old), "-q", "verify", "--no-witness"]
            wall(cmd, env)
            took = statistics.median(wall(cmd, env) for _ in range(runs))
            print(f"  limit: pmm verify of the same events as format 1 {took:.3f} s = {n / took:,.0f} events/s"
                  f" ({load()})")
        shutil.rmtree(work / "state", ignore_errors=True)


if __name__ == "__main__":
    main()
