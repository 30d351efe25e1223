"""Semantic recall finds what is said in other words, offline: vectors a writer computes are
stored in a derived table and reused, a reader stores nothing, a forged vector can skew the
ranking but is never trusted (it is checked, ignored and replaced), and without wordllama (or
its weights) recall is BM25 alone, with nothing downloaded.

The model is loaded once per process (about 0.5 s); these tests share it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import invoke, json_data

from pmm.domain import events as ev
from pmm.ledger import lookup, schema, vectors
from pmm.ledger.store import Ledger
from pmm.services import ranking, semantic

NOTES = ("I adopted a puppy last week", "the stock market fell sharply this morning",
         "my bike is a blue Brompton", "we watched a film about trains")
KINDS = (ev.OBSERVATION_RECORDED.name,)
ROOT = Path(__file__).resolve().parent.parent

@pytest.fixture(autouse=True, params=["plain", "numpy"])
def semantic_on(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Semantic recall as installed by default (conftest turns it off for other modules), on
    either path: plain Python (a small span, as here) or numpy (a span over PLAIN_SPAN)."""
    monkeypatch.setenv("PMM_SEMANTIC", "1")
    if request.param == "numpy":
        monkeypatch.setattr(semantic, "PLAIN_SPAN", -1)



@pytest.fixture(scope="module", autouse=True)
def model() -> None:
    """The test extra installs wordllama: semantic recall must be there, not skipped."""
    assert semantic.installed() and semantic.available()


def _mind(tmp_path: Path, notes: tuple[str, ...] = NOTES) -> Path:
    path = tmp_path / "mind.db"
    assert invoke("--mind", str(path), "init", "--name", "Ada").exit_code == 0
    for note in notes:
        assert invoke("--mind", str(path), "remember", note).exit_code == 0
    return path


def _nearest(path: Path, text: str, *, write: bool = False, limit: int = 10) -> list[tuple[str, float]]:
    with Ledger.open(path, write=write) as mind:
        found = semantic.nearest(mind, text, KINDS, limit)
    assert found is not None
    return [(event.content, score) for event, score in found]


def _stored(path: Path) -> dict[int, bytes]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT id, vec FROM event_vectors").fetchall())
    finally:
        conn.close()


def _sql(path: Path, sql: str, args: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}


def _health(path: Path) -> dict[str, dict[str, str]]:
    result = invoke("--mind", str(path), "health", "--json")
    assert result.exit_code == 0, result.stderr
    return {c["name"]: c for c in json_data(result.stdout)["checks"]}


def test_a_paraphrase_with_no_shared_word_ranks_above_unrelated_notes(tmp_path: Path) -> None:
    path = _mind(tmp_path)
    search = invoke("--mind", str(path), "search", "do I have a dog", "--json")
    assert search.exit_code == 0 and json_data(search.stdout) == []  # no word in common
    found = _nearest(path, "do I have a dog")
    assert found[0][0] == NOTES[0], found
    assert found[0][1] > 0.3 and all(score < found[0][1] - 0.2 for _, score in found[1:])
    assert all(0.0 < score <= 1.0 for _, score in found)  # cosines, only those above 0
    assert _nearest(path, "which bicycle do I ride")[0][0] == NOTES[2]
    assert _nearest(path, "")[:1] == []  # no word the model knows: nothing is similar


def test_the_rare_words_of_a_message_lead_its_meaning(tmp_path: Path) -> None:
    """Eight notes share the question's common words ("friend", "talked"); the one it is about
    shares none ("dog" / "puppy"). As a whole the question is nearest the eight; recall weighs
    each word by its rarity in the mind, and the puppy comes first."""
    places = ("work", "school", "the office", "lunch", "the gym", "home", "the park", "the shop")
    puppy = "I adopted a puppy last week"
    path = _mind(tmp_path, (*(f"my friend and I talked about our day at {p}" for p in places), puppy))
    question = "did my friend and I ever talk about a dog"
    with Ledger.open(path) as mind:
        words = ranking.query(question, None)
        weights = ranking.rarity(lookup.word_counts(mind, words), mind.head()[0])
        assert weights["dog"] > 10 * weights["friend"]  # in no note, against in all but one
        whole = semantic.nearest(mind, question, KINDS, 3)
        weighted = semantic.nearest(mind, question, KINDS, 3, weights=weights)
    assert whole is not None and weighted is not None
    assert puppy not in [e.content for e, _ in whole]  # what the weighting is for
    assert weighted[0][0].content == puppy


def test_a_writer_stores_the_vectors_it_computed_and_reuses_them(tmp_path: Path) -> None:
    path = _mind(tmp_path)
    assert _stored(path) == {}
    _nearest(path, "do I have a dog", write=True)
    stored = _stored(path)
    assert sorted(stored) == [2, 3, 4, 5] and all(len(blob) == semantic.VECTOR_BYTES
                                                  for blob in stored.values())
    assert _health(path)["recall vectors"]["status"] == "ok"
    # Reused, not recomputed: give the film the puppy's (well-formed) vector and it ranks as
    # the puppy does. A forged vector can skew the ranking; the text stays the event's own.
    _sql(path, "UPDATE event_vectors SET vec = (SELECT vec FROM event_vectors WHERE id = 2)"
               " WHERE id = 5")
    found = dict(_nearest(path, "do I have a dog"))
    assert found[NOTES[3]] == pytest.approx(found[NOTES[0]])
    # the next turn computes only what is new
    assert invoke("--mind", str(path), "remember", "the vet says he is a healthy dog").exit_code == 0
    _nearest(path, "do I have a dog", write=True)
    again = _stored(path)
    assert sorted(again) == [2, 3, 4, 5, 6] and again[5] == stored[2]


def test_a_reader_computes_in_memory_and_stores_nothing(tmp_path: Path) -> None:
    path = _mind(tmp_path)
    before = _files(path)
    assert _nearest(path, "do I have a dog")[0][0] == NOTES[0]
    assert _files(path) == before and _stored(path) == {}


def _half(values: list[float]) -> bytes:
    import numpy as np

    return np.array(values, dtype="<f2").tobytes()


FORGED = {
    "too short": b"\x00" * 10,
    "too long": b"\x00" * (semantic.VECTOR_BYTES + 2),
    "not a blob": "a text where a vector goes",
    "NaN": _half([float("nan")] * semantic.DIM),
    "infinite": _half([float("inf")] + [0.0] * (semantic.DIM - 1)),
    "not unit length": _half([100.0] * semantic.DIM),
}


def test_forged_vectors_are_ignored_and_replaced(tmp_path: Path) -> None:
    extra = tuple(f"a note about the weather on day {n}" for n in range(2))
    path = _mind(tmp_path, NOTES + extra)  # events 2-7
    _nearest(path, "anything", write=True)
    good = _stored(path)
    # one forgery per event, the puppy's first; and a vector for an event that does not exist
    for event_id, forgery in zip(range(2, 8), sorted(FORGED, key=lambda f: f != "NaN"), strict=True):
        _sql(path, "UPDATE event_vectors SET vec = ? WHERE id = ?", (FORGED[forgery], event_id))
    _sql(path, "INSERT INTO event_vectors(id, vec) VALUES (99, ?)", (good[2],))
    check = _health(path)["recall vectors"]  # health sees the malformed ones without the model
    assert check["status"] == "warn" and "3 malformed" in check["detail"], check
    found = _nearest(path, "do I have a dog")  # a reader: computed again, in memory
    assert found[0] == (NOTES[0], pytest.approx(_nearest_score(path), abs=1e-4))
    assert {text for text, _ in found} <= set(NOTES + extra)  # id 99 names no event
    assert _stored(path) != good
    _nearest(path, "do I have a dog", write=True)  # a writer replaces them
    assert _stored(path) == {**good, 99: good[2]}
    assert _health(path)["recall vectors"]["status"] == "ok"


def _nearest_score(path: Path) -> float:
    """The puppy's similarity to the question as this model makes it, without the file."""
    question, puppy = semantic.embed(["do I have a dog", NOTES[0]])
    return float(question @ puppy)


def test_vectors_of_another_model_are_not_compared_and_health_repair_rebuilds_them(
        tmp_path: Path) -> None:
    path = _mind(tmp_path)
    _nearest(path, "anything", write=True)
    good = _stored(path)
    _sql(path, "UPDATE event_vectors SET vec = (SELECT vec FROM event_vectors WHERE id = 5)")
    _sql(path, "UPDATE pmm_meta SET value = 'wordllama 0.1 other' WHERE key = ?", (vectors.MODEL_KEY,))
    assert _health(path)["recall vectors"]["status"] == "warn"
    assert _nearest(path, "do I have a dog")[0][0] == NOTES[0]  # not the film's forged copies
    repaired = invoke("--mind", str(path), "health", "--repair")
    assert repaired.exit_code == 0 and "recall vectors" in repaired.stderr
    assert _stored(path) == good
    check = _health(path)["recall vectors"]
    assert check["status"] == "ok" and "4 stored for events 2-5" in check["detail"]


def test_a_schema_3_mind_is_read_as_it_is_then_migrated_keeping_every_hash(tmp_path: Path) -> None:
    path = _mind(tmp_path)
    # the layout pmm made at schema 3: no vector table (checked exactly, as pmm checks it)
    _sql(path, "DROP TABLE event_vectors")
    _sql(path, "UPDATE pmm_meta SET value = '3' WHERE key = 'schema_version'")
    _sql(path, "DELETE FROM pmm_meta WHERE key = 'migration:0004_event_vectors'")  # not applied yet
    _sql(path, "DROP INDEX events_session")  # nor schema 5's index
    _sql(path, "DELETE FROM pmm_meta WHERE key = 'migration:0005_link_indexes'")
    _sql(path, "DROP TABLE forgotten")  # nor schema 6's tombstones
    _sql(path, "DELETE FROM pmm_meta WHERE key = 'migration:0006_forgotten'")
    _sql(path, "DROP TABLE session_summary")  # nor schema 7's sessions table
    _sql(path, "DELETE FROM projection_cache WHERE name = 'sessions'")
    _sql(path, "DELETE FROM pmm_meta WHERE key = 'migration:0007_session_summary'")
    conn = sqlite3.connect(path)
    assert schema.differences(conn, 3) == []
    chain = conn.execute("SELECT id, prev_hash, hash FROM events ORDER BY id").fetchall()
    conn.close()
    before = _files(path)
    assert _nearest(path, "do I have a dog")[0][0] == NOTES[0]  # a reader: in memory
    assert _health(path)["recall vectors"]["detail"].startswith("none yet: an older layout")
    assert _files(path) == before

    upgraded = invoke("--mind", str(path), "remember", "he sleeps in a basket")
    assert upgraded.exit_code == 0 and f"from schema 3 to {schema.SCHEMA_VERSION}" in upgraded.stderr
    assert "rebuilding its search index" not in upgraded.stderr  # 3 -> 4 only adds a table
    conn = sqlite3.connect(path)
    assert schema.differences(conn, schema.SCHEMA_VERSION) == []
    assert conn.execute("SELECT value FROM pmm_meta WHERE key = 'schema_version'").fetchone() == (
        str(schema.SCHEMA_VERSION),)
    after = conn.execute("SELECT id, prev_hash, hash FROM events ORDER BY id").fetchall()
    conn.close()
    assert after[:-1] == chain and after[-1][1] == chain[-1][2]
    assert invoke("verify", str(path)).exit_code == 0
    _nearest(path, "do I have a dog", write=True)
    assert sorted(_stored(path)) == [2, 3, 4, 5, 6]


def test_the_span_bounds_what_is_searched_and_stored(tmp_path: Path) -> None:
    path = _mind(tmp_path)
    with Ledger.open(path, write=True) as mind:
        found = semantic.nearest(mind, "do I have a dog", KINDS, 10, span=3)
    assert found is not None and {e.id for e, _ in found} <= {3, 4, 5}  # the newest 3 events
    assert sorted(_stored(path)) == [3, 4, 5]
    # the next turn stores the new event's vector and drops those that left the span
    assert invoke("--mind", str(path), "remember", "the vet says he is a healthy dog").exit_code == 0
    with Ledger.open(path, write=True) as mind:
        semantic.nearest(mind, "do I have a dog", KINDS, 10, span=3)
    assert sorted(_stored(path)) == [4, 5, 6]


def _python(code: str, tmp_path: Path, pythonpath: list[str]) -> tuple[dict[str, object], str]:
    """Run ``code`` in a fresh interpreter, recording every network connection it attempts
    (an audit hook sees each one); ``code`` sets ``result``. Also returns what it printed."""
    prelude = (
        "import json, sys\n"
        "connects = []\n"
        "sys.addaudithook(lambda name, args: connects.append(repr(args)[:80])"
        " if name in ('socket.connect', 'socket.getaddrinfo') else None)\n")
    tail = "\nresult['connects'] = connects\nprint(json.dumps(result))\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    proc = subprocess.run([sys.executable, "-c", prelude + code + tail], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


RECALL = (
    "from pathlib import Path\n"
    "from pmm.ledger.store import Ledger\n"
    "from pmm.services import semantic\n"
    "with Ledger.open(Path({path!r}), write=True) as mind:\n"
    "    found = semantic.nearest(mind, 'do I have a dog', ['observation_recorded'], 5)\n"
    "result = {{'installed': semantic.installed(), 'available': semantic.available(),\n"
    "          'found': found}}\n"
    "from pmm.cli.boundary import main\n"
    "try:\n    main(['--mind', {path!r}, 'health'])\nexcept SystemExit as exc:\n"
    "    result['health_exit'] = exc.code\n")


def test_without_wordllama_recall_is_bm25_alone(tmp_path: Path) -> None:
    path = _mind(tmp_path)
    code = "sys.modules['wordllama'] = None  # as if it were not installed\n" + RECALL.format(path=str(path))
    result, printed = _python(code, tmp_path, [str(ROOT)])
    assert result["installed"] is False and result["available"] is False and result["found"] is None
    assert result["health_exit"] in (0, None) and result["connects"] == []
    assert "recall vectors: semantic recall is not installed" in printed
    assert _stored(path) == {}  # a writer, yet nothing to store


def test_without_its_weights_wordllama_is_unavailable_and_nothing_is_downloaded(
        tmp_path: Path) -> None:
    import wordllama

    shim = tmp_path / "shim"
    shutil.copytree(Path(wordllama.__file__).parent, shim / "wordllama",
                    ignore=shutil.ignore_patterns("*.safetensors", "__pycache__"))
    path = _mind(tmp_path)
    result, printed = _python(RECALL.format(path=str(path)), tmp_path, [str(shim), str(ROOT)])
    assert "recall vectors: semantic recall is not installed" in printed
    assert result["installed"] is False and result["available"] is False and result["found"] is None
    assert result["connects"] == [] and not (tmp_path / "home" / ".cache" / "wordllama").exists()
    assert _stored(path) == {}


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["log"], ["health"]])
def test_commands_that_do_not_recall_never_import_the_model(tmp_path: Path, args: list[str]) -> None:
    path = _mind(tmp_path, NOTES[:1])
    code = (f"from pmm.cli.boundary import main\ntry:\n    main(['--mind', {str(path)!r}, *{args!r}])\n"
            "except SystemExit:\n    pass\n"
            "result = {'loaded': sorted(m for m in sys.modules if m.split('.')[0] in"
            " ('wordllama', 'numpy', 'tokenizers', 'safetensors'))}\n")
    assert _python(code, tmp_path, [str(ROOT)])[0]["loaded"] == []


def test_a_mind_kept_open_reads_the_file_again_once_another_process_wrote_to_it(
        tmp_path: Path) -> None:
    """The REPL keeps the span in memory between turns; another connection's commit (here a
    forged vector) makes it read the table again, so memory never hides what the file holds."""
    path = _mind(tmp_path)
    with Ledger.open(path, write=True) as mind:
        def ranked() -> dict[str, float]:
            found = semantic.nearest(mind, "do I have a dog", KINDS, 10)
            assert found is not None
            return {event.content: score for event, score in found}

        first = ranked()
        assert ranked() == first  # the next turn, from memory
        _sql(path, "UPDATE event_vectors SET vec = (SELECT vec FROM event_vectors WHERE id = 2)"
                   " WHERE id = 5")
        forged = ranked()
        assert forged[NOTES[3]] == pytest.approx(forged[NOTES[0]])


def test_a_writer_that_cannot_have_the_lock_ranks_all_the_same_and_stores_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _mind(tmp_path)
    monkeypatch.setenv("PMM_LOCK_TIMEOUT", "0.05")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    with Ledger.open(path, write=True) as mind:
        other.execute("BEGIN IMMEDIATE")  # another pmm in the middle of a write
        found = semantic.nearest(mind, "do I have a dog", KINDS, 10)
        assert found is not None and found[0][0].content == NOTES[0]
        other.execute("ROLLBACK")
        assert _stored(path) == {}
        semantic.nearest(mind, "do I have a dog", KINDS, 10)  # the next turn
    other.close()
    assert sorted(_stored(path)) == [2, 3, 4, 5]


def test_pmm_recall_finds_a_paraphrase_unless_pmm_semantic_is_0(tmp_path: Path) -> None:
    path = _mind(tmp_path)

    def recalled(env: dict[str, str] | None = None) -> list[str]:
        result = invoke("--mind", str(path), "recall", "do I have a dog", "--json", env=env)
        assert result.exit_code == 0, result.stderr
        plan = json_data(result.stdout)
        return [i["text"] for s in plan["sections"] if s["name"] == "recalled" for i in s["items"]]

    assert NOTES[0] in recalled()
    assert recalled({"PMM_SEMANTIC": "0"}) == []  # no word in common: BM25 alone finds nothing
    bad = invoke("--mind", str(path), "recall", "do I have a dog", env={"PMM_SEMANTIC": "yes"})
    assert bad.exit_code == 2 and "PMM_SEMANTIC" in bad.stderr
