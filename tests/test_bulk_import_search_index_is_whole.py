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


def test_the_side_index_is_built_with_its_own_merging_but_keeps_fts5s_config(tmp_path: Path) -> None:
    """The thread merges its segments less often (``bulk.AUTOMERGE``), but the config it hands
    over is the one FTS5 makes: any other would make the build rebuild the index it copied."""
    from pmm.ledger import bulk, fts, schema

    target = sqlite3.connect(tmp_path / "mind.db", isolation_level=None)
    try:
        target.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, content TEXT)")
        target.execute(fts.table(schema.SCHEMA_VERSION))
        with bulk.SideIndex(tmp_path / "side", schema.SCHEMA_VERSION, target) as side:
            target.execute("BEGIN")
            for start in range(1, 40_000, bulk.INDEX_BATCH):
                side.add([(i, "", "", f"word{i % 97} garden", "", "", "")
                          for i in range(start, min(start + bulk.INDEX_BATCH, 40_000))])
            side.finish()
            side.copy_into()
            assert fts.config_sound(target, schema.SCHEMA_VERSION)
            assert target.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH 'word5'"
                                  ).fetchone()[0] == len(range(5, 40_000, 97))
            target.execute("COMMIT")
    finally:
        target.close()
