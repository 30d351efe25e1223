"""Evidence recall: how often the turns that answer a question reach the prompt.

    .venv/bin/python bench/bench_recall.py [PATH ...] [--windows 2048,8192] [--json]

PATH: LoCoMo-format conversations (a conv-N.json file or a folder of them; default
../shared/data/locomo-dev). Each conversation is imported into a new mind the way `pmm import`
imports a chat export (speaker A as the user, speaker B as the mind, every turn at its session's
date as its original time; a shared photo's caption is kept as "[shares a photo: ...]"), then
every question of categories 1-4 (5 has no answer in the conversation) is given to the code
that builds a chat prompt (`pmm.services.context.build`, what `pmm recall` prints), with the
window of the model and chat's answer reserve (512 tokens, at most an eighth of the window).
At 2,048 tokens, the embedded model's window, tokens are counted with its own tokenizer, as `pmm chat` and `pmm recall` count them for
it (``--exact``); at other windows they are estimated, as for a remote model.

It prints, per category and window, the share of labelled evidence turns that are in the prompt,
beside two baselines given the same room (the prompt's budget less its system prompt and the
question, with the same token estimate per turn): the newest turns, and BM25 over every turn
(SQLite FTS5, porter stemming, every word of the question) filling the room best first.
"Questions" is the share whose evidence is all there.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pmm.domain import projections  # noqa: E402
from pmm.ledger.store import TS_FORMAT  # noqa: E402
from pmm.services import chat, chat_import, context, models, opening, semantic, tokens  # noqa: E402
from pmm.services.chat_import_read import Conversation, Message  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo-dev"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


def conversations(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        found += sorted(path.glob("*.json")) if path.is_dir() else [path]
    return found


def session_time(text: str) -> str:
    """LoCoMo's "1:56 pm on 8 May, 2023" as a ledger timestamp."""
    moment = datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")
    return moment.strftime(TS_FORMAT)


def load(path: Path) -> tuple[list[Conversation], list[dict[str, Any]]]:
    data = json.loads(path.read_text())
    user = data["speaker_a"]
    sessions = []
    numbers = sorted(int(m.group(1)) for key in data if (m := re.fullmatch(r"session_(\d+)", key)))
    for number in numbers:
        turns = data[f"session_{number}"]
        if not turns:
            continue
        ts = session_time(data[f"session_{number}_date_time"])
        messages = []
        for turn in turns:
            text = turn["text"]
            if turn.get("blip_caption"):
                text += f" [shares a photo: {turn['blip_caption']}]"
            role = "user" if turn["speaker"] == user else "assistant"
            messages.append(Message(turn["dia_id"], role, text, ts, None))
        sessions.append(Conversation(f"{path.stem}-s{number}", f"session {number}", ts, messages, Counter()))
    questions = [q for q in data["qa"] if q.get("category") in CATEGORIES]
    return sessions, questions


def build_mind(folder: Path, sessions: list[Conversation]) -> Path:
    path = folder / "mind.db"
    with opening.init(path, None) as mind:
        drafts, _ = chat_import.plan(sessions, "locomo", set())
        mind.append(drafts)
    return path


def baselines(turns: list[tuple[int, str]], question: str, room: int,
              cost: tokens.Cost) -> dict[str, set[int]]:
    """Event ids the newest-turns and BM25 baselines put in ``room`` tokens, each turn costed
    as a chat message."""
    def fill(order: list[tuple[int, str]]) -> set[int]:
        taken, left = set(), room
        for event_id, text in order:
            cost = turn_cost(text)
            if cost <= left:
                taken.add(event_id)
                left -= cost
        return taken

    def turn_cost(text: str) -> int:
        return cost.text(text) + (tokens.TEMPLATE_TOKENS if cost.exact else 4)

    newest = fill(list(reversed(turns)))
    words = re.findall(r"\w+", question.lower())
    query = " OR ".join('"' + w + '"' for w in dict.fromkeys(words))
    ranked = [(i, t) for i, t in BM25.execute(
        "SELECT rowid, content FROM turns WHERE turns MATCH ? ORDER BY rank", (query,))] if query else []
    return {"newest": newest, "bm25": fill(ranked)}


BM25 = sqlite3.connect(":memory:")


def measure(path: Path, windows: list[int], answer: int | None, similar: Any, counters: dict[int, Any],
            tally: dict[Any, list[int]], timings: list[float], used: dict[int, list[int]]) -> None:
    sessions, questions = load(path)
    with tempfile.TemporaryDirectory() as tmp:
        mind_path = build_mind(Path(tmp), sessions)
        with opening.open_read(mind_path) as mind:
            events = list(mind.events())
            states = projections.replay(events)
            dia = {e.id: e.meta["source_id"] for e in events if e.meta.get("source") == "locomo"
                   and e.meta.get("session")}
            turns = [(e.id, e.content) for e in events if e.id in dia]
            BM25.execute("DROP TABLE IF EXISTS turns")
            BM25.execute("CREATE VIRTUAL TABLE turns USING fts5(content,"
                         " tokenize='porter unicode61 remove_diacritics 2')")
            BM25.executemany("INSERT INTO turns(rowid, content) VALUES (?, ?)", turns)
            known = set(dia.values())
            for q in questions:
                evidence = {e for e in q["evidence"] if e in known}
                if not evidence:
                    continue
                for window in windows:
                    start = time.perf_counter()
                    count = counters.get(window)
                    prompt = context.build(mind, states, q["question"], window=window,
                                           answer_tokens=chat.answer_reserve(window, answer),
                                           similar=similar, count=count)
                    timings.append(time.perf_counter() - start)
                    used[window].append(prompt.tokens)
                    cost = tokens.Cost(count)
                    room = prompt.budget - cost.text(prompt.request.system) - cost.text(q["question"])
                    picks = {"pmm": set(prompt.context_ids),
                             **baselines(turns, q["question"], room, cost)}
                    for method, ids in picks.items():
                        present = {dia[i] for i in ids if i in dia} & evidence
                        key = (window, method, q["category"])
                        counts = tally.setdefault(key, [0, 0, 0, 0])
                        counts[0] += len(present)
                        counts[1] += len(evidence)
                        counts[2] += present == evidence
                        counts[3] += 1



def report(tally: dict[Any, list[int]], windows: list[int]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for window in windows:
        for method in ("pmm", "newest", "bm25"):
            row: dict[str, Any] = {}
            total = [0, 0, 0, 0]
            for category, name in CATEGORIES.items():
                counts = tally.get((window, method, category), [0, 0, 0, 0])
                total = [a + b for a, b in zip(total, counts, strict=True)]
                row[name] = counts[0] / counts[1] if counts[1] else None
            row["all"] = total[0] / total[1] if total[1] else None
            row["questions"] = total[2] / total[3] if total[3] else None
            row["evidence_turns"] = total[1]
            result[f"{window}/{method}"] = row
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path, default=[DEFAULT_DATA])
    ap.add_argument("--windows", default="2048,8192")
    ap.add_argument("--answer-tokens", type=int, default=None,
                    help="the answer reserve, as `pmm chat --max-tokens` (at most half the window;"
                         " default: chat's, 512 or an eighth of a smaller window)")
    ap.add_argument("--no-semantic", action="store_true",
                    help="BM25 alone, as without the semantic extra")
    ap.add_argument("--exact", default="2048",
                    help="windows whose tokens the embedded model's own tokenizer counts (comma-"
                         "separated; empty: estimate everywhere)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    counts: dict[int, Any] = {}
    if args.exact:
        counter = models.embedded().token_counter("")  # the built-in model: trusted everywhere
        if counter is None:
            print("the embedded model is not installed: tokens estimated everywhere", file=sys.stderr)
        else:
            counts = {int(w): counter for w in args.exact.split(",")}
    files = conversations(args.paths)
    if not files:
        sys.exit(f"no LoCoMo conversations under {' '.join(map(str, args.paths))}")
    similar = None if args.no_semantic else semantic.nearest
    if similar is not None and not semantic.available():
        print("the semantic extra is not installed: BM25 alone", file=sys.stderr)
        similar = None
    tally: dict[Any, list[int]] = {}
    timings: list[float] = []
    used: dict[int, list[int]] = defaultdict(list)
    for path in files:
        measure(path, windows, args.answer_tokens, similar, counts, tally, timings, used)
    result = report(tally, windows)
    result["build_ms_median"] = statistics.median(timings) * 1000
    result["prompt_tokens_median"] = {w: statistics.median(used[w]) for w in windows}
    result["exact_token_counts"] = sorted(counts)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    names = [*CATEGORIES.values(), "all", "questions"]
    print(f"{len(files)} conversations; evidence turns in the prompt (share), by category")
    print(f"{'window/method':<16}" + "".join(f"{n:>13}" for n in names))
    for key, row in result.items():
        if isinstance(row, dict) and "all" in row:
            print(f"{key:<16}" + "".join(f"{row[n]:>13.1%}" if row[n] is not None else f"{'-':>13}"
                                         for n in names))
    print(f"prompt build: median {result['build_ms_median']:.1f} ms; prompt tokens (median):"
          f" {result['prompt_tokens_median']}")


if __name__ == "__main__":
    main()
