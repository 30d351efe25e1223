"""A new mind made by `pmm import` gets its search index from a second thread (pmm.ledger.bulk):
the index FTS5 checks against the events as sound, matching every event's text (NULs, quotes,
newlines, any script), and nothing of the scratch file it was built in is left behind."""

from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

from conftest import cli_json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_ledger import synthetic_export  # noqa: E402

ODD = ["nul\x00byte", 'a "quoted" word', "two\nlines\tand tabs", "café naïve", "日本語 テキスト",
       "emoji 😀 here", "back\\slash \\u0000 literal", "\u2028separator", "zebra"]


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(ODD) if rng.random() < 0.3 else "garden" for _ in range(6))


def test_the_index_of_a_bulk_import_is_sound_and_complete(tmp_path: Path) -> None:
    export = tmp_path / "odd.jsonl"
    synthetic_export(export, 9000, make_text=_text)  # several batches, some holding a NUL
    mind = tmp_path / "minds" / "mind.db"
    assert cli_json(mind, "import", str(export))["appended"] == 9000
    assert sorted(p.name for p in mind.parent.iterdir()) == ["mind.db"]  # no scratch file left
    conn = sqlite3.connect(mind)
    try:
        conn.execute("INSERT INTO events_fts(events_fts) VALUES ('integrity-check')")
        words = ("zebra", "nul", "naive", "テキスト", "garden", "quoted", "lines", "😀")

        def matches() -> list[list[int]]:
            return [[row[0] for row in conn.execute(
                "SELECT rowid FROM events_fts WHERE events_fts MATCH ? ORDER BY rowid",
                (f'"{word}"',))] for word in words]

        found = matches()
        assert all(found[:6]), found  # every word that tokenizes is found
        docs = conn.execute("SELECT count(*), min(id), max(id) FROM events_fts_docsize").fetchone()
        assert docs == (9000, 1, 9000)
        sizes = conn.execute("SELECT * FROM events_fts_docsize ORDER BY id").fetchall()
        # what a rebuild from the events makes: the same token counts and the same matches
        conn.execute("INSERT INTO events_fts(events_fts) VALUES ('rebuild')")
        assert conn.execute("SELECT * FROM events_fts_docsize ORDER BY id").fetchall() == sizes
        assert matches() == found
    finally:
        conn.close()
    assert cli_json(mind, "verify", "--deep")["ok"] is True
