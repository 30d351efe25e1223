"""Ledger benchmarks (SPEC section 7): build a mind of N events, then time the real commands.

    .venv/bin/python bench/bench_ledger.py [--events 1000000] [--write-results]

Prints one line per figure; with --write-results it also rewrites the ledger table in
bench/RESULTS.md. Wall times are medians where a command is cheap enough to repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pmm.ledger import jsonl  # noqa: E402
from pmm.ledger.chain import FORMAT_VERSION, GENESIS_PREV, chain_prefix, event_hash  # noqa: E402

PMM = str(Path(sys.executable).with_name("pmm"))
# Measure pmm as users run it: with Python's bytecode cache (some sandboxes turn it off).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
WORDS = ["mind", "ledger", "memory", "trait", "reflect", "commit", "answer", "question", "model", "identity", "stable", "grow", "user", "note", "tea", "coffee", "garden", "river", "light", "morning", "evening", "plan", "goal", "reason", "because"]


def synthetic_export(path: Path, n: int, seed: int = 7,
                     make_text: Callable[[random.Random], str] | None = None,
                     ledger_format: int = FORMAT_VERSION) -> None:
    """A valid pmm JSONL export of ``n`` chat-like events (sessions of ~20 turns); ``make_text``
    writes each message (default: 8 to 30 words of a small vocabulary). ``ledger_format`` 1
    makes the export an older pmm wrote (bench_forget.py compares the two)."""
    rng = random.Random(seed)
    if make_text is None:
        make_text = lambda r: " ".join(r.choices(WORDS, k=r.randint(8, 30)))  # noqa: E731
    mind_id = "%032x" % rng.getrandbits(128)
    prefix = chain_prefix(ledger_format, mind_id)
    prev = GENESIS_PREV
    ts0 = 1_700_000_000
    with open(path, "w", encoding="utf-8") as out:
        out.write(jsonl.header_line(mind_id, ledger_format, 1))
        batch = []
        for i in range(1, n + 1):
            session = (i - 1) // 20
            if i == 1:
                kind, content, meta = "mind_created", "Mind created", '{"name":"Bench","pmm_version":"0.1.0"}'
            elif (i - 1) % 20 == 0:
                kind, content, meta = "session_started", f"Session {session}", '{"session":"s%d"}' % session
            else:
                kind = "message_received" if i % 2 else "response_sent"
                content = make_text(rng)
                meta = '{"session":"s%d"}' % session
            t = ts0 + i
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % (i % 1_000_000)
            digest = event_hash(prefix, i, ts, kind, content, meta, prev)
            batch.append((i, ts, kind, content, meta, prev, digest))
            prev = digest
            if len(batch) == 10000:
                out.writelines(jsonl.event_lines(_events(batch)))
                batch.clear()
        out.writelines(jsonl.event_lines(_events(batch)))
        out.write(jsonl.end_line(n, n, prev))


def _events(rows):
    from pmm.domain.events import Event

    return [Event(*r) for r in rows]


def timed(cmd: list[str], stdout=subprocess.DEVNULL, stdin=None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=stdout, stdin=stdin)
    return time.perf_counter() - t


def median_wall(cmd: list[str], runs: int) -> float:
    for _ in range(2):
        timed(cmd)
    return statistics.median(timed(cmd) for _ in range(runs))


REPLAY = """
import sys, time
from pathlib import Path
from pmm.domain import projections
from pmm.ledger.store import Ledger
with Ledger.open(Path(sys.argv[1])) as m:
    t = time.perf_counter()
    states = projections.replay(m.events())
    dt = time.perf_counter() - t
# VmHWM, not ru_maxrss: on Linux the latter keeps the parent's peak across exec.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
print(dt, int(hwm) / 1024, states["activity"]["events"])
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=ROOT / "bench" / "data")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    n = args.events
    work = args.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # the bench's own witness: a mind made again at the same path is a new mind, not a fork of
    # the one an earlier run (or another checkout's) left witnessed there
    os.environ["XDG_STATE_HOME"] = str(work / "state")
    src, mind = work / "src.jsonl", work / "mind.db"
    env_note = f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"# {n:,} events on {env_note}")

    t = time.perf_counter()
    synthetic_export(src, n)
    print(f"generate export: {time.perf_counter() - t:.1f} s ({src.stat().st_size / 1e6:.0f} MB)")
    results: dict[str, tuple[float, str]] = {}

    dt = timed([PMM, "--mind", str(mind), "-q", "import", str(src)])
    results["import"] = (n / dt, f"{n / dt:,.0f} events/s ({dt:.2f} s)")
    dt = timed([PMM, "--mind", str(mind), "verify"])
    results["verify"] = (n / dt, f"{n / dt:,.0f} events/s ({dt:.2f} s)")
    with open(work / "out.jsonl", "wb") as out:
        dt = timed([PMM, "--mind", str(mind), "export"], stdout=out)
    results["export"] = (n / dt, f"{n / dt:,.0f} events/s ({dt:.2f} s)")
    same = (work / "out.jsonl").read_bytes() == src.read_bytes()
    print(f"export is byte-identical to the imported file: {same}")
    with open(src, "rb") as inp:
        dt = timed([PMM, "--mind", str(work / "verify-export"), "verify", "-"], stdin=inp)
    results["verify export (stdin)"] = (n / dt, f"{n / dt:,.0f} events/s ({dt:.2f} s)")

    out = subprocess.run([sys.executable, "-c", REPLAY, str(mind)], check=True,
                         capture_output=True, text=True).stdout.split()
    results["replay"] = (float(out[0]), f"{float(out[0]):.2f} s, peak RSS {float(out[1]):.0f} MB")
    for name, cmd in (("stats (warm cache)", ["stats"]), ("log -n 20", ["log"]),
                      ("search", ["search", "garden"])):
        dt = median_wall([PMM, "--mind", str(mind), *cmd], 5)
        results[name] = (dt, f"{dt * 1000:.0f} ms")
    for name, cmd in (("pmm --version", ["--version"]), ("pmm --help", ["--help"])):
        dt = median_wall([PMM, *cmd], 21)
        results[name] = (dt, f"{dt * 1000:.0f} ms median of 21")
    for name, (_, text) in results.items():
        print(f"{name}: {text}")
    if args.write_results:
        write_results(results, n, env_note)
    shutil.rmtree(work, ignore_errors=True)


def write_results(results: dict[str, tuple[float, str]], n: int, env_note: str) -> None:
    bars = {
        "import": ">= 100,000 events/s", "verify": ">= 300,000 events/s",
        "export": ">= 200,000 events/s", "verify export (stdin)": "(no bar)",
        "replay": "< 3 s and < 200 MB", "stats (warm cache)": "< 500 ms",
        "log -n 20": "< 500 ms", "search": "< 500 ms",
        "pmm --version": "< 150 ms", "pmm --help": "< 150 ms",
    }
    lines = [f"## Ledger, {n:,} events — {date.today()} — {env_note}", "",
             "| what | measured | bar |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v[1]} | {bars.get(k, '')} |" for k, v in results.items()]
    path = ROOT / "bench" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n\nNewest first. Produced by the scripts in bench/.\n\n"
    head, _, rest = old.partition("## ")
    path.write_text(head + "\n".join(lines) + "\n\n" + ("## " + rest if rest else ""))
    print(json.dumps({k: v[1] for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
