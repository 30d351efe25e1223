"""Commitment detection: precision, recall and F1 of the conversation rule (issue 12, bar:
precision at least 95%) beside the rule it replaced, on the labelled table of assistant sentences.

    .venv/bin/python bench/bench_commitments.py [--json]

The table is tests/data/commitment_sentences.tsv (label, split, sentence), shared with
tests/test_commitment_detector.py; `held-out` rows were written after the detector was frozen.
Each sentence is given to `commitment_in` as a one-sentence answer; it counts as detected when a
commitment would open. The baseline is the rule as it was before issue 12, reimplemented here.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pmm.domain import dynamics  # noqa: E402

TABLE = ROOT / "tests" / "data" / "commitment_sentences.tsv"

_OLD_PROMISE = re.compile(r"\bI(?: will|'ll|’ll| promise to| commit to)\b(?! not\b| never\b)", re.IGNORECASE)
_OLD_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def old_commitment_in(answer: str) -> str | None:
    """The rule before issue 12: the first statement with a first-person future, 4 to 30 words."""
    for sentence in _OLD_SENTENCE_END.split(answer):
        sentence = " ".join(sentence.split())
        if sentence.endswith("?") or not _OLD_PROMISE.search(sentence):
            continue
        if 4 <= len(sentence.split()) <= 30:
            return sentence
    return None


def load() -> list[tuple[bool, str, str]]:
    with TABLE.open(encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return [(row["label"] == "commit", row["split"], row["sentence"])
            for row in csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)]


def score(rows: list[tuple[bool, str, str]], detect: Callable[[str], str | None]) -> dict[str, object]:
    tp = fp = fn = 0
    false_pos, missed = [], []
    for want, _, sentence in rows:
        got = detect(sentence) is not None
        if got and want:
            tp += 1
        elif got:
            fp += 1
            false_pos.append(sentence)
        elif want:
            fn += 1
            missed.append(sentence)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"rows": len(rows), "positives": tp + fn, "true_pos": tp, "false_pos": fp, "false_neg": fn,
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "false_commitments": false_pos, "missed": missed}


def per_sentence_us(rows: list[tuple[bool, str, str]], detect: Callable[[str], str | None]) -> float:
    sentences = [s for _, _, s in rows]
    started = time.perf_counter()
    for _ in range(20):
        for sentence in sentences:
            detect(sentence)
    return (time.perf_counter() - started) / (20 * len(sentences)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    rows = load()
    splits = {"all": rows, "dev": [r for r in rows if r[1] == "dev"],
              "held-out": [r for r in rows if r[1] == "held-out"]}
    rules = {"new": dynamics.commitment_in, "old": old_commitment_in}
    report = {rule: {name: score(part, detect) for name, part in splits.items()}
              for rule, detect in rules.items()}
    timing = {rule: round(per_sentence_us(rows, detect), 1) for rule, detect in rules.items()}
    if args.json:
        print(json.dumps({"table": str(TABLE.relative_to(ROOT)), "results": report,
                          "us_per_sentence": timing}, indent=2))
        return
    print(f"{len(rows)} sentences ({sum(r[0] for r in rows)} commitments), "
          f"{len(splits['held-out'])} held out\n")
    print(f"{'rule':<5} {'rows':<9} {'n':>4} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>10} "
          f"{'recall':>7} {'F1':>6}")
    for rule, parts in report.items():
        for name, s in parts.items():
            print(f"{rule:<5} {name:<9} {s['rows']:>4} {s['true_pos']:>4} {s['false_pos']:>4} "
                  f"{s['false_neg']:>4} {s['precision']:>10.1%} {s['recall']:>7.1%} {s['f1']:>6.3f}")
    print(f"\ntime per sentence: new {timing['new']} us, old {timing['old']} us")
    for label, key in (("false commitments (new rule)", "false_commitments"), ("missed (new rule)", "missed")):
        found = report["new"]["all"][key]
        assert isinstance(found, list)
        print(f"\n{label}: {len(found)}")
        for sentence in found:
            print(f"  {sentence}")


if __name__ == "__main__":
    main()
