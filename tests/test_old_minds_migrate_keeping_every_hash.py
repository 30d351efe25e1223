"""A mind written by an older pmm is read as it is and upgraded by the first write, in one
transaction, keeping every event and every hash; after schema 3 its search stems words.

Old files are made the way that pmm made them: its statements (``schema.V1``, the indexes and
the migrations up to that version) in a plain sqlite3 file, filled with the events of a mind
this pmm wrote and the index entries the old writer added, one per event.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import invoke, json_data

from pmm.ledger import fts, schema

NOTES = ("my dog sleeps on the sofa", "a café au lait every morning", "I run before breakfast")


def _mind(tmp_path: Path) -> Path:
    path = tmp_path / "new.db"
    assert invoke("--mind", str(path), "init", "--name", "Ada").exit_code == 0
    for note in NOTES:
        assert invoke("--mind", str(path), "remember", note).exit_code == 0
    return path


def _as_version(source: Path, target: Path, version: int) -> None:
    """``source``'s events and identity in the layout pmm made at schema ``version``."""
    src = sqlite3.connect(source)
    rows = src.execute("SELECT * FROM events ORDER BY id").fetchall()
    # no migration records: the pmm that made these layouts wrote none
    meta = src.execute("SELECT key, value FROM pmm_meta WHERE key NOT GLOB 'migration:*'").fetchall()
    src.close()
    conn = sqlite3.connect(target, isolation_level=None)
    for statement in (*schema.V1, *schema.BASE_INDEXES):
        conn.execute(statement)
    for step in range(1, version):
        for statement in schema.migration(step + 1).steps:
            assert isinstance(statement, str), "an old layout made of SQL alone"
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.executemany("INSERT INTO pmm_meta VALUES (?, ?)",
                     [(k, str(version) if k == "schema_version" else v) for k, v in meta])
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO events_fts(rowid, content) SELECT id, content FROM events")
    conn.execute("INSERT INTO projection_cache(name, version, last_id, last_hash, state)"
                 " VALUES ('mind', 'old', 0, ?, '{}')", ("0" * 64,))
    assert schema.differences(conn, version) == [], "not the layout that pmm made"
    conn.close()


def _old(tmp_path: Path, version: int) -> Path:
    old = tmp_path / f"v{version}.db"
    _as_version(_mind(tmp_path), old, version)
    return old


def _chain(path: Path) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, prev_hash, hash FROM events ORDER BY id").fetchall()
    finally:
        conn.close()


def _layout(path: Path) -> tuple[str, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = conn.execute("SELECT value FROM pmm_meta WHERE key = 'schema_version'").fetchone()
        index = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events_fts'").fetchone()
        return version[0], index[0]
    finally:
        conn.close()


def _search(path: Path, text: str) -> list[str]:
    result = invoke("--mind", str(path), "search", text, "--json")
    assert result.exit_code == 0, result.stderr
    return [hit["content"] for hit in json_data(result.stdout)]


def _health(path: Path) -> tuple[int, dict[str, str]]:
    result = invoke("--mind", str(path), "health", "--json")
    return result.exit_code, {c["name"]: c["status"] for c in json_data(result.stdout)["checks"]}


CURRENT = str(schema.SCHEMA_VERSION)  # every migration ends here; 4 added the recall vectors
FILE_CHECKS = ("file", "schema", "chain", "search index", "projection cache")


def test_a_schema_2_mind_is_read_unchanged_then_migrated_to_stemmed_search(tmp_path: Path) -> None:
    old = _old(tmp_path, 2)
    chain, before = _chain(old), old.read_bytes()
    # readers take the file as it is: its unstemmed index is sound for its version
    log = invoke("--mind", str(old), "log", "--json")
    assert log.exit_code == 0 and [e["content"] for e in json_data(log.stdout)][-3:] == list(NOTES)
    assert _search(old, "dog") == [NOTES[0]]
    assert _search(old, "dogs") == []  # no stemming at schema 2
    assert invoke("verify", str(old)).exit_code == 0
    code, checks = _health(old)
    assert code == 0 and checks["file"] == "warn" and checks["search index"] == "ok"
    assert old.read_bytes() == before and _layout(old) == ("2", fts.TABLE_V1)

    upgraded = invoke("--mind", str(old), "remember", "the vet said the dogs are fine")
    assert upgraded.exit_code == 0 and f"Upgrading {old} from schema 2 to {CURRENT}" in upgraded.stderr
    assert _layout(old) == (CURRENT, fts.TABLE_V3)
    after = _chain(old)
    assert after[:-1] == chain  # every event and hash kept
    assert after[-1][0] == chain[-1][0] + 1 and after[-1][1] == chain[-1][2]  # on the old head
    conn = sqlite3.connect(old)
    assert schema.differences(conn, schema.SCHEMA_VERSION) == []  # exactly what a new mind has
    conn.close()
    assert invoke("verify", str(old)).exit_code == 0
    assert sorted(_search(old, "dogs")) == sorted(["the vet said the dogs are fine", NOTES[0]])
    assert _search(old, "cafe") == [NOTES[1]] and _search(old, "running") == [NOTES[2]]
    code, checks = _health(old)
    assert code == 0 and all(checks[name] == "ok" for name in FILE_CHECKS), checks
    again = invoke("--mind", str(old), "remember", "no upgrade this time")
    assert again.exit_code == 0 and "Upgrading" not in again.stderr


def test_a_schema_1_mind_is_read_then_migrated_through_2_to_3(tmp_path: Path) -> None:
    old = _old(tmp_path, 1)
    chain, before = _chain(old), old.read_bytes()
    stats = invoke("--mind", str(old), "stats", "--json")
    assert stats.exit_code == 0 and json_data(stats.stdout)["name"] == "Ada"
    assert invoke("verify", str(old)).exit_code == 0
    assert _health(old)[1]["file"] == "warn"
    assert old.read_bytes() == before
    upgraded = invoke("--mind", str(old), "remember", "after the upgrade")
    assert upgraded.exit_code == 0 and f"from schema 1 to {CURRENT}" in upgraded.stderr
    assert _layout(old) == (CURRENT, fts.TABLE_V3)
    assert _chain(old)[:-1] == chain
    conn = sqlite3.connect(old)
    assert schema.differences(conn, schema.SCHEMA_VERSION) == []
    conn.close()
    assert invoke("verify", str(old)).exit_code == 0
    assert _search(old, "dogs") == [NOTES[0]]
    stats = invoke("--mind", str(old), "stats", "--json")
    assert json_data(stats.stdout)["projection_cache"] == "current"


def test_a_schema_2_mind_whose_index_fts5_refuses_still_migrates(tmp_path: Path) -> None:
    """FTS5 will not even drop an index whose config it refuses: the migration empties it first."""
    old = _old(tmp_path, 2)
    conn = sqlite3.connect(old, isolation_level=None)
    conn.execute("UPDATE events_fts_config SET v = 99 WHERE k = 'version'")
    conn.close()
    chain = _chain(old)
    assert invoke("--mind", str(old), "search", "dog").exit_code == 3  # a reader reports it
    remembered = invoke("--mind", str(old), "remember", "dogs again")
    assert remembered.exit_code == 0, remembered.stderr
    assert _layout(old) == (CURRENT, fts.TABLE_V3) and _chain(old)[:-1] == chain
    assert sorted(_search(old, "dog")) == sorted(["dogs again", NOTES[0]])
    assert _health(old)[1]["search index"] == "ok"


def test_health_repair_on_a_schema_2_mind_migrates_it_and_rebuilds_what_is_derived(
        tmp_path: Path) -> None:
    old = _old(tmp_path, 2)
    chain = _chain(old)
    repaired = invoke("--mind", str(old), "health", "--repair")
    assert repaired.exit_code == 0 and "Rebuilt the search index" in repaired.stderr
    assert _layout(old) == (CURRENT, fts.TABLE_V3) and _chain(old) == chain  # nothing appended
    assert _search(old, "dogs") == [NOTES[0]]
    code, checks = _health(old)
    assert code == 0 and all(checks[name] == "ok" for name in FILE_CHECKS), checks


def test_an_altered_schema_2_mind_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    old = _old(tmp_path, 2)
    conn = sqlite3.connect(old, isolation_level=None)
    conn.execute("CREATE TRIGGER planted AFTER INSERT ON events BEGIN SELECT 1; END")
    conn.close()
    before = old.read_bytes()
    refused = invoke("--mind", str(old), "remember", "a note")
    assert refused.exit_code == 3 and "'planted'" in refused.stderr
    assert old.read_bytes() == before


@pytest.mark.parametrize(("version", "query", "kept"), [
    (2, "dogs", []), (3, "dogs", ["my dog"]),
    (2, "cafe", ["café"]), (3, "cafe", ["café"]),
    (2, "runn*", ["running"]),  # a prefix is not stemmed, a stored word is: no match at 3
    (3, "runn*", []),
])
def test_hits_are_confirmed_with_the_tokenizer_of_the_files_version(
        version: int, query: str, kept: list[str]) -> None:
    rows = [(text,) for text in ("my dog", "café", "running", "cats")]
    assert [row[0] for row in fts.confirm(query, rows, 0, version)] == kept


def test_each_version_has_its_own_index_and_pristine_config() -> None:
    assert fts.table(1) == fts.table(2) == fts.TABLE_V1 and fts.table(3) == fts.TABLE_V3
    assert ("table", "events_fts", "events_fts", fts.TABLE_V1) in schema.expected(2)
    assert ("table", "events_fts", "events_fts", fts.TABLE_V3) in schema.expected(3)
    for version in range(1, schema.SCHEMA_VERSION + 1):
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, content TEXT)")
        conn.execute(fts.table(version))
        assert fts.config_sound(conn, version) and fts.problem(conn, version) is None
        conn.close()
