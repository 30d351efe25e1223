"""The prompt's open commitments are the oldest first by id, whatever order the projections'
dict holds them in: states folded in memory keep insertion order, but a projection cache or a
snapshot read back from JSON has its keys sorted as text ("100" before "99"), and both must
plan the same prompt (pmm recall, --as-of with and without a snapshot, a chat turn)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from conftest import cli_json, run_in

from pmm.services.context import COMMITMENTS_SHOWN


def test_recall_shows_the_same_commitments_from_the_cache_and_from_a_fresh_fold(tmp_path: Path) -> None:
    mind = tmp_path / "m.db"
    run_in("--mind", str(mind), "init", check=True)
    for n in range(6):  # ids 2..7: then past 9, so that text order and id order differ
        run_in("--mind", str(mind), "remember", f"filler note {n}", check=True)
    for n in range(COMMITMENTS_SHOWN + 3):
        run_in("--mind", str(mind), "commitments", "open", f"promise number {n} about topic {n * 7}", check=True)
    cached = cli_json(mind, "recall", "what did I promise")
    with sqlite3.connect(mind) as conn:
        conn.execute("DELETE FROM projection_cache")  # the next read folds the events in memory
    folded = cli_json(mind, "recall", "what did I promise")
    assert json.dumps(cached, sort_keys=True) == json.dumps(folded, sort_keys=True)
    texts = json.dumps(folded)
    shown = [n for n in range(COMMITMENTS_SHOWN + 3) if f"promise number {n} " in texts]
    assert shown == list(range(COMMITMENTS_SHOWN))  # the oldest ten
