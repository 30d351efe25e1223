"""Reads that must not grow with the mind (issue 15): search for a common word, health, trace of
an imported answer and its session, sessions; at 10k, 100k and 1M events.

    .venv/bin/python bench/bench_reads.py [--sizes 10000,100000,1000000] [--runs 5] [--json]

Each figure is printed beside a limit measured in the same run on the same file:

- search: SQLite's own ``count(*)`` of the FTS5 match (C code, no ranking), and what ranking
  every match cost (the query search ran before it bounded the ranked set);
- health: one indexed lookup (the head's hash by id), and the full verify the first check does;
- trace: the same event read by its id (one primary-key lookup);
- log -n 5: SQLite's own read of the five newest events;
- sessions -n 5: the sessions table's five newest rows read by SQLite (and ``pmm log -n 5``'s
  wall time beside: issue 15 wants the two within a few ms at every size), with the grouped
  query over every turn that pmm ran before the table as "before"; the ``chat -c`` and
  ``--session`` lookups in process, beside the same rows.

Commands are timed as users run them (wall time of the real ``pmm``, median of ``--runs``) and
in this process (the service's own work, without Python's start-up). ``pmm --version`` (pmm's
fast path, which loads no command) is shown at each size for scale: a command's own start-up
(the Typer app, opening the mind) is its wall time minus its own work. The minds come from bench_ledger.synthetic_export: sessions of
20 events, no ``reply_to`` (like an imported conversation), words from a 25-word vocabulary, so
"garden" is in about half of the events.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ledger import PMM, synthetic_export, timed  # noqa: E402

from pmm.services import browse, health, opening, sessions, trace  # noqa: E402


def wall(cmd: list[str], runs: int) -> float:
    """Median wall time of the real command (after one warm-up run), its output discarded."""
    def once() -> float:
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t
    once()
    return statistics.median(once() for _ in range(runs))


def in_process(work: Callable[[], Any], runs: int) -> float:
    work()
    return statistics.median(_once(work) for _ in range(runs))


def _once(work: Callable[[], Any]) -> float:
    t = time.perf_counter()
    work()
    return time.perf_counter() - t


def sqlite_time(path: Path, sql: str, args: tuple[Any, ...], runs: int) -> float:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return in_process(lambda: conn.execute(sql, args).fetchall(), runs)
    finally:
        conn.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds >= 0.001 else f"{seconds * 1e6:,.0f} µs"


# pmm sessions' grouped query over every turn before the sessions table (schema 6), for scale.
GROUPED = ("SELECT sid, min(id), max(id), count(*), min(said), max(said) FROM ("
           " SELECT id, coalesce(json_extract(meta, '$.session'), json_extract(meta, '$.source_id')) AS sid,"
           " coalesce(json_extract(meta, '$.original_ts'), ts) AS said FROM events"
           " WHERE kind IN ('message_received', 'response_sent', 'session_started'))"
           " GROUP BY sid ORDER BY max(said), max(id)")


def _with_read(mind: Path, work: Callable[[Any], Any]) -> Any:
    with opening.open_read(mind) as opened:
        return work(opened)


def measure(n: int, work: Path, runs: int) -> dict[str, dict[str, float]]:
    src, mind = work / f"src-{n}.jsonl", work / f"mind-{n}.db"
    synthetic_export(src, n)
    timed([PMM, "--mind", str(mind), "-q", "import", str(src)])
    src.unlink()
    pmm = [PMM, "--mind", str(mind)]
    middle_session = (n // 2) // 20  # a session in the middle of the mind
    message = middle_session * 20 + 3  # one of its messages (odd ids are messages)
    sid = f"s{middle_session}"
    found: dict[str, dict[str, float]] = {"pmm --version": {"wall": wall([PMM, "--version"], runs)}}

    def search() -> None:
        with opening.open_read(mind) as opened:
            if len(browse.search(opened, "garden", 20).hits) >= 20:
                browse.count(opened, "garden")

    found["search garden"] = {
        "wall": wall([*pmm, "search", "garden"], runs),
        "own": in_process(search, runs),
        "limit": sqlite_time(mind, "SELECT count(*) FROM events_fts WHERE events_fts MATCH ?", ("garden",), runs),
        "before": sqlite_time(mind, "SELECT rowid, snippet(events_fts, 0, '[', ']', '…', 12) FROM events_fts"
                              " WHERE events_fts MATCH ? ORDER BY rank LIMIT 20", ("garden",), min(runs, 3)),
    }
    full = timed([*pmm, "health"])  # the first check of this file: every event
    found["health"] = {
        "wall": wall([*pmm, "health"], runs),
        "own": in_process(lambda: health.check(mind), runs),
        "limit": sqlite_time(mind, "SELECT hash FROM events WHERE id = ?", (n,), runs),
        "before": full,
    }
    by_id = sqlite_time(mind, "SELECT * FROM events WHERE id = ?", (message,), runs)
    found["trace message"] = {
        "wall": wall([*pmm, "trace", str(message)], runs),
        "own": in_process(lambda: trace.trace(mind, str(message)), runs),
        "limit": by_id,
    }
    found["trace session"] = {
        "wall": wall([*pmm, "trace", sid], runs),
        "own": in_process(lambda: trace.trace(mind, sid), runs),
        "limit": by_id,
    }
    log_wall = wall([*pmm, "log", "-n", "5"], runs)
    found["log -n 5"] = {
        "wall": log_wall,
        "own": in_process(lambda: _with_read(mind, lambda m: browse.log(m, 5, None)), runs),
        "limit": sqlite_time(mind, "SELECT * FROM events ORDER BY id DESC LIMIT 5", (), runs),
    }
    newest = sqlite_time(mind, "SELECT * FROM session_summary ORDER BY last_said DESC, last_id DESC LIMIT 5",
                         (), runs)  # the table's own five newest rows
    found["sessions -n 5"] = {
        "wall": wall([*pmm, "sessions", "-n", "5"], runs),
        "own": in_process(lambda: sessions.listing(mind, 5), runs),
        "limit": newest,
        "log": log_wall,
        "before": sqlite_time(mind, GROUPED, (), 1),  # what pmm ran before the table (issue 15)
    }
    found["chat -c lookup"] = {
        "own": in_process(lambda: _with_read(mind, sessions.latest), runs),
        "limit": newest,
    }
    found["--session s12"] = {
        "own": in_process(lambda: _with_read(mind, lambda m: sessions.resolve(m, "s12")), runs),
        "limit": sqlite_time(mind, "SELECT * FROM session_summary WHERE session = ?", ("s12",), runs),
    }
    mind.unlink()
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=ROOT / "bench" / "data-reads")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    os.environ.setdefault("XDG_STATE_HOME", str(args.dir / "state"))  # the bench's own witness
    note = f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    results: dict[str, Any] = {"machine": note, "load": os.getloadavg()}
    if not args.json:
        print(f"# {note}; load {results['load'][0]:.2f}")
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            figures = measure(n, args.dir, args.runs)
            results[str(n)] = figures
            if args.json:
                continue
            print(f"\n## {n:,} events (load {os.getloadavg()[0]:.2f})")
            print(f"{'what':<16} {'pmm (wall)':>12} {'own work':>11} {'limit':>10}  {'own / limit':>11}  before")
            print(f"{'pmm --version':<16} {ms(figures['pmm --version']['wall']):>12}  (fast path: no command loaded)")
            for name, f in figures.items():
                if name == "pmm --version":
                    continue
                before = f" {ms(f['before'])}" if "before" in f else ""
                what = {"search garden": " (rank every match)", "health": " (first check: full verify)",
                        "sessions -n 5": " (the grouped query over every turn)"}.get(name, "")
                beside = f"; pmm log -n 5 {ms(f['log'])} wall, sessions - log {ms(f['wall'] - f['log'])}" \
                    if "log" in f else ""
                shown = ms(f["wall"]) if "wall" in f else "-"
                print(f"{name:<16} {shown:>12} {ms(f['own']):>11} {ms(f['limit']):>10}"
                      f"  {f['own'] / max(f['limit'], 1e-6):>10.0f}x {before}{what if before else ''}{beside}")
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
