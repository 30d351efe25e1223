"""`pmm search` for a word in very many events ranks only the newest 10,000 matches (FTS5 scores
every match before it can sort, which grew with the mind), and says so: on stderr, and in each
--json hit's ``ranked_newest``. A rarer word is ranked among all its matches, as before."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import cli_json, invoke

from pmm.ledger import lookup

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_ledger import synthetic_export  # noqa: E402

EVENTS = 11_000  # about 10,450 turns: every one says "garden", the first hundred "heron" too


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    source, mind = folder / "src.jsonl", folder / "mind.db"
    turn = iter(range(10**9))
    synthetic_export(source, EVENTS, make_text=lambda r: "garden heron" if next(turn) < 100
                     else " ".join(["garden", *r.choices(["tea", "river", "garden"], k=r.randint(2, 9))]))
    with pytest.MonkeyPatch.context() as env:  # made once, in dirs of its own
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "HOME"):
            env.setenv(var, str(folder / var.lower()))
        assert invoke("--mind", str(mind), "-q", "import", str(source)).exit_code == 0
    return mind


def _matches(mind: Path, word: str) -> list[int]:
    import sqlite3

    conn = sqlite3.connect(f"file:{mind}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute(
            "SELECT rowid FROM events_fts WHERE events_fts MATCH ? ORDER BY rowid DESC", (word,))]
    finally:
        conn.close()


def test_a_common_word_is_ranked_among_its_newest_matches_and_says_so(big: Path) -> None:
    newest_first = _matches(big, "garden")
    assert len(newest_first) > lookup.RANKED
    result = invoke("--mind", str(big), "search", "garden", "-n", "5")
    assert result.exit_code == 0
    assert (f"More than {lookup.RANKED:,} matches (showing 5, the best of the newest {lookup.RANKED:,};"
            in result.stderr)  # not counted: the count would read every match
    hits = cli_json(big, "search", "garden", "-n", "50")
    ranked = set(newest_first[:lookup.RANKED])
    assert len(hits) == 50 and all(h["id"] in ranked for h in hits)
    assert {h["ranked_newest"] for h in hits} == {lookup.RANKED}
    # older matches are still reached by a window that holds fewer than the bound
    older = cli_json(big, "search", "garden", "--until", str(newest_first[lookup.RANKED]), "-n", "5")
    assert older and all(h["id"] <= newest_first[lookup.RANKED] for h in older)
    assert {h["ranked_newest"] for h in older} == {None}


def test_a_word_in_fewer_events_is_ranked_among_all_of_them(big: Path) -> None:
    herons = _matches(big, "heron")
    assert 0 < len(herons) < lookup.RANKED
    hits = cli_json(big, "search", "heron", "-n", "500")
    assert sorted(h["id"] for h in hits) == sorted(herons)  # the oldest events, all of them
    assert {h["ranked_newest"] for h in hits} == {None}
    result = invoke("--mind", str(big), "search", "heron", "-n", "5")
    assert "the newest" not in result.stderr and f"{len(herons)} matches (showing 5)" in result.stderr
