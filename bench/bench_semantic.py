"""What semantic recall costs (pmm.services.semantic, the `semantic` extra).

    .venv/bin/python bench/bench_semantic.py [--events 1000000] [--turns 30]

Builds a mind of N chat-like events (the ledger benchmark's generator), then prints:
- the model load (a fresh interpreter: import numpy and wordllama, read the weights), median of 5;
- the embedding cost per event (the newest span's own texts, in one call);
- the first turn of a writer when the span has no stored vectors (computes and stores them all),
  and of a reader (computes them in memory, stores nothing);
- a turn with the span full of stored vectors, as a chat turn meets it (two new events since
  the last turn, whose vectors it computes and stores), median and p90: on a mind opened for
  that turn (`pmm chat -m`), on one kept open (the REPL), and on a reader (`pmm recall`);
- the size of the vector table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ledger import PMM, synthetic_export  # noqa: E402

from pmm.domain import events as ev  # noqa: E402
from pmm.domain.events import Draft  # noqa: E402
from pmm.ledger import vectors  # noqa: E402
from pmm.ledger.store import Ledger  # noqa: E402
from pmm.services import semantic  # noqa: E402

KINDS = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name, ev.OBSERVATION_RECORDED.name)
QUESTIONS = ["what did I say about the garden in the morning", "do I drink tea or coffee",
             "which goal did we plan for the evening", "why does the model reflect on memory"]


def load_time() -> float:
    code = ("import time; t = time.perf_counter()\n"
            "from pmm.services import semantic\n"
            "assert semantic.available()\n"
            "print(time.perf_counter() - t)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True).stdout) for _ in range(5)]
    return statistics.median(runs)


def timed(run) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    median, p90 = statistics.median(samples), samples[max(0, int(len(samples) * 0.9) - 1)]
    return f"median {median * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms over {len(samples)} turns"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--dir", type=Path, default=ROOT / "bench" / "data-semantic")
    args = ap.parse_args()
    if not semantic.available():
        sys.exit("semantic recall is not installed: pip install '.[semantic]'")
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    src, path = args.dir / "src.jsonl", args.dir / "mind.db"
    synthetic_export(src, args.events)
    subprocess.run([PMM, "--mind", str(path), "-q", "import", str(src)], check=True)
    src.unlink()
    note = f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"# {args.events:,} events, span {semantic.SPAN:,}, on {note}")
    print(f"model load (fresh interpreter): median {load_time() * 1000:.0f} ms")

    with Ledger.open(path) as mind:
        texts = list(vectors.texts(mind, vectors.span(mind, KINDS, semantic.SPAN)).values())
    spent = timed(lambda: semantic.embed(texts))
    print(f"embedding: {spent / len(texts) * 1e6:.1f} µs per event ({len(texts) / spent:,.0f} events/s,"
          f" {statistics.mean(map(len, texts)):.0f} characters each on average)")

    with Ledger.open(path) as mind:
        print(f"first turn, reader, no stored vectors: {timed(lambda: semantic.nearest(mind, QUESTIONS[0], KINDS, 50)) * 1000:.0f} ms")
    with Ledger.open(path, write=True) as mind:
        first = timed(lambda: semantic.nearest(mind, QUESTIONS[0], KINDS, 50))
    print(f"first turn, writer, no stored vectors (computes and stores them): {first * 1000:.0f} ms")

    def turns(write: bool, reopen: bool) -> list[float]:
        samples = []
        mind = Ledger.open(path, write=write)
        for turn in range(args.turns + 2):
            if reopen:
                mind.close()
                mind = Ledger.open(path, write=write)
            if write:  # what a chat turn appends: its message and the answer
                mind.append([Draft(ev.OBSERVATION_RECORDED.name, f"turn {turn}: {QUESTIONS[turn % 4]}", {"source": "user"}),
                             Draft(ev.OBSERVATION_RECORDED.name, f"an answer about {QUESTIONS[(turn + 1) % 4]}", {"source": "user"})])
            spent = timed(lambda: semantic.nearest(mind, QUESTIONS[turn % 4], KINDS, 50))  # noqa: B023
            if turn >= 2:
                samples.append(spent)
        mind.close()
        return samples

    print(f"turn, writer, span stored, a new open each turn (`pmm chat -m`; 2 new events each):"
          f" {percentiles(turns(True, True))}")
    print(f"turn, writer, span stored, the same open mind (the REPL; 2 new events each):"
          f" {percentiles(turns(True, False))}")
    print(f"turn, reader, span stored, a new open each turn (`pmm recall`): {percentiles(turns(False, True))}")
    with Ledger.open(path) as mind:
        count, low, high, bad = vectors.coverage(mind, semantic.VECTOR_BYTES)
    print(f"vector table: {count:,} vectors for events {low:,}-{high:,}"
          f" ({count * semantic.VECTOR_BYTES / 1e6:.1f} MB of vectors), {bad} malformed")
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
