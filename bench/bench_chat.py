"""A chat turn's own overhead (SPEC section 7: < 50 ms at 1,000,000 events).

    .venv/bin/python bench/bench_chat.py [--events 1000000] [--turns 30] [--write-results]

Builds a mind of N chat-like events whose words follow a Zipf law over a 50,000-word vocabulary
(so full-text recall meets both very common and rare words), then times `Chat.turn` in-process
with a provider that answers at once: everything but the model (state, recall, context, the
one-transaction append with its FTS and projection-cache updates). Prints the median and p90.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ledger import PMM, synthetic_export  # noqa: E402

from pmm.providers.base import Completion, ModelInfo, OnText, Request  # noqa: E402
from pmm.providers.registry import ModelSpec  # noqa: E402
from pmm.services import chat as chat_service  # noqa: E402

VOCAB = [f"w{i:05d}x" for i in range(50_000)]
CUMULATIVE = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(VOCAB))))


def zipf_text(rng: random.Random) -> str:
    top = CUMULATIVE[-1]
    return " ".join(VOCAB[bisect.bisect(CUMULATIVE, rng.random() * top)] for _ in range(rng.randint(8, 30)))


class Instant:
    """A provider that answers at once, so only pmm's own work is timed."""

    def __init__(self) -> None:
        self.spec = ModelSpec("local", "instant")

    def complete(self, request: Request, on_text: OnText | None = None) -> Completion:
        return Completion(text="An answer.", model="instant", tokens_in=100, tokens_out=3, latency_ms=1)

    def info(self) -> ModelInfo:
        return ModelInfo("local", "instant")

    def close(self) -> None:
        pass


class BenchChat(chat_service.Chat):
    def _provider(self, model):  # type: ignore[no-untyped-def]
        return Instant()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--dir", type=Path, default=ROOT / "bench" / "data-chat")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    src, mind = args.dir / "src.jsonl", args.dir / "mind.db"
    synthetic_export(src, args.events, make_text=zipf_text)
    subprocess.run([PMM, "--mind", str(mind), "-q", "import", str(src)], check=True)
    src.unlink()

    rng = random.Random(3)
    samples = []
    with BenchChat(mind, lambda _m: None) as session:
        for i in range(args.turns + 3):
            # A mix of common words (rank < 50), mid-frequency and rare ones.
            words = [VOCAB[rng.randrange(50)] for _ in range(4)] + [VOCAB[rng.randrange(50, 5000)] for _ in range(4)]
            words += [VOCAB[rng.randrange(5000, 50_000)] for _ in range(4)]
            t = time.perf_counter()
            turn = session.turn(" ".join(words))
            if i >= 3:  # the first turns warm SQLite's page cache
                samples.append(time.perf_counter() - t)
    samples.sort()
    median, p90 = statistics.median(samples), samples[int(len(samples) * 0.9) - 1]
    note = f"{platform.node()} {__import__('os').cpu_count()} cores, Python {platform.python_version()}"
    print(f"# {args.events:,} events on {note}")
    print(f"chat turn overhead: median {median * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms"
          f" over {len(samples)} turns (context of the last: {len(turn.prompt.context_ids)} events)")
    if args.write_results:
        path = ROOT / "bench" / "RESULTS.md"
        head, _, rest = path.read_text().partition("## ")
        block = (f"## Chat turn, {args.events:,} events — {date.today()} — {note}\n\n"
                 "| what | measured | bar |\n| --- | --- | --- |\n"
                 f"| chat turn overhead (all but the model) | median {median * 1000:.1f} ms,"
                 f" p90 {p90 * 1000:.1f} ms | < 50 ms |\n\n")
        path.write_text(head + block + "## " + rest)
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
