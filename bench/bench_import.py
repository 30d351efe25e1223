"""`pmm import` speed and memory at several sizes, beside limits measured in the same run.

    .venv/bin/python bench/bench_import.py [--sizes 10000,100000,1000000] [--runs 1] [--million]

For each size it builds a synthetic export (bench_ledger.synthetic_export), imports it into a new
mind with the real `pmm` (events/s, the CPU seconds it and its reading process used, and the
peak RSS of the larger of the two), and measures:

- python floor: one Python loop that only reads the lines, decodes them and recomputes each hash
  (no shape check, no projections, no SQLite): what one core does with pmm's Python half alone;
- sqlite floor: SQLite's own `executemany` of the decoded rows into a bare events table, then
  pmm's indexes built on it, and the search index built from it (no checks, no projections):
  the C half, each part timed;
- two cores: the longest of the python floor, the insert with its indexes and the search index,
  which is what an import that overlaps them perfectly (as pmm's does: a reading process, the
  writer, and a thread building the search index beside it) could take at best.

Each figure is printed beside those limits, with the load (`uptime`) before each size: on a
shared machine, the ratios are the figures to compare. `--million` runs the 1M size alone.
"""

from __future__ import annotations

import argparse
import hashlib
import os
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

from bench_ledger import PMM, synthetic_export  # noqa: E402

from pmm.ledger import fts, jsonl, schema  # noqa: E402
from pmm.ledger.chain import chain_prefix, content_digest  # noqa: E402


def load() -> str:
    return os.getloadavg().__repr__()


def pmm_import(src: Path, mind: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (pmm and its reading process) and peak RSS (MB, the larger
    of the two) of one real import."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.Popen([PMM, "--mind", str(mind), "-q", "import", str(src)], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"pmm import failed with exit {proc.returncode}")
    return dt, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def python_floor(src: Path) -> float:
    """Read, decode and re-hash every event line: Python's share of an import, on one core."""
    decode, sha = jsonl.fast_decoder(), hashlib.sha256
    t = time.perf_counter()
    with open(src, "rb") as handle:
        header = decode(handle.readline())
        prefix = chain_prefix(header["ledger_format"], header["mind_id"])
        digests = header["ledger_format"] >= 2  # format 2 hashes the content's digest
        for raw in handle:
            obj = decode(raw)
            if "pmm" in obj:
                break
            parts = [prefix]
            for key in jsonl.EVENT_KEYS[:-1]:
                value = str(obj[key]).encode()
                if digests and key == "content":
                    value = obj.get("content_digest", "").encode() or content_digest(value).encode()
                parts += (len(value).to_bytes(8, "big"), value)
            if sha(b"".join(parts)).hexdigest() != obj["hash"]:
                raise SystemExit("python floor: a hash does not match")
    return time.perf_counter() - t


def sqlite_floor(src: Path, work: Path) -> tuple[float, float, float]:
    """(executemany into a bare table, pmm's indexes built after it, its search index built
    from it) in seconds, for rows decoded beforehand (not timed)."""
    decode = jsonl.fast_decoder()
    with open(src, "rb") as handle:
        handle.readline()
        rows = [tuple(obj.values()) for obj in map(decode, handle) if "pmm" not in obj]
    db = work / "floor.db"
    db.unlink(missing_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        conn.execute(schema.EVENTS_TABLE)
        t = time.perf_counter()
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        bare = time.perf_counter() - t
        for statement in schema.EVENTS_INDEXES:
            conn.execute(statement)
        indexes = time.perf_counter() - t - bare
        t = time.perf_counter()
        conn.execute(fts.table(schema.SCHEMA_VERSION))
        fts.rebuild(conn)
        conn.execute("COMMIT")
        search = time.perf_counter() - t
    finally:
        conn.close()
        db.unlink(missing_ok=True)
    return bare, indexes, search


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--runs", type=int, default=1, help="imports per size (the median is shown)")
    ap.add_argument("--dir", type=Path, default=ROOT / "bench" / "data-import")
    ap.add_argument("--million", action="store_true", help="run the 1,000,000-event size alone")
    args = ap.parse_args()
    if args.million:
        args.sizes = "1000000"
    work = args.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"# pmm import on {os.cpu_count()} cores; bar: >= 150,000 events/s, memory flat")
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            src = work / f"export-{n}.jsonl"
            synthetic_export(src, n)
            print(f"\n## {n:,} events ({src.stat().st_size / 1e6:.0f} MB), load {load()}")
            runs = []
            for i in range(args.runs):
                mind = work / f"mind-{n}-{i}.db"
                runs.append(pmm_import(src, mind))
                mind.unlink()
            dt = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            rss = max(r[2] for r in runs)
            py = python_floor(src)
            bare, indexes, search = sqlite_floor(src, work)
            full = bare + indexes + search
            best = max(py, bare + indexes, search)
            print(f"pmm import:                    {n / dt:>10,.0f} events/s ({dt:.2f} s,"
                  f" {cpu:.2f} s CPU), peak RSS {rss:.0f} MB")
            print(f"python floor (read+hash only): {n / py:>10,.0f} events/s ({py:.2f} s);"
                  f" import/floor = {py / dt:.2f}")
            print(f"sqlite executemany, bare:      {n / bare:>10,.0f} events/s ({bare:.2f} s)")
            print(f"sqlite + indexes:              {n / (bare + indexes):>10,.0f} events/s"
                  f" ({bare + indexes:.2f} s)")
            print(f"sqlite search index:           {n / search:>10,.0f} events/s ({search:.2f} s)")
            print(f"sqlite + indexes + search:     {n / full:>10,.0f} events/s ({full:.2f} s);"
                  f" import/floor = {full / dt:.2f}")
            print(f"one core doing both floors:    {n / (py + full):>10,.0f} events/s"
                  f" ({py + full:.2f} s); import/that = {(py + full) / dt:.2f}")
            print(f"two cores, overlapped ideally: {n / best:>10,.0f} events/s ({best:.2f} s);"
                  f" import/that = {best / dt:.2f}")
            print(f"load after: {load()}")
            src.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
