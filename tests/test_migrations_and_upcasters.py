"""Minds written by older pmm releases are read as they are, upgraded by the first write (each
named migration recorded in the transaction that applies it), verify, and fold to the same
projections as a fresh replay; older event versions are read through their upcasters.

The fixture minds under tests/data/ were written by the pmm releases themselves:
``scripts/make_fixture_minds.sh`` unpacks each release's source (``git archive``) and runs its
own CLI (``init --name Ada`` and three ``remember``), and for schema 4 its ledger API (a
reflection and four version-1 ``trait_adjusted`` steps). ``mind-schema-N.db`` is schema N, made
by the last commit that wrote it (681cf5d^, 504caf0^, 557ed8b^, d9e8557). Each test works on a
copy.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import invoke, json_data

from pmm import __version__
from pmm.domain import checks, projections, upcasters
from pmm.domain import events as ev
from pmm.domain.events import Draft
from pmm.ledger import folded, lookup, schema
from pmm.ledger.store import Ledger

DATA = Path(__file__).parent / "data"
NOTES = ("my dogs were sleeping on the sofa", "a café au lait every morning",
         "I am running before breakfast")


def _copy(tmp_path: Path, version: int) -> Path:
    path = tmp_path / f"mind-schema-{version}.db"
    shutil.copyfile(DATA / f"mind-schema-{version}.db", path)
    return path


def _meta(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT key, value FROM pmm_meta").fetchall())
    finally:
        conn.close()


def _rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT * FROM events ORDER BY id").fetchall()
    finally:
        conn.close()


def _ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _replays_the_same(path: Path) -> dict:
    """The projections the ledger gives (its cache and what it folds in) against a fresh
    replay of every event: they must be equal."""
    with Ledger.open(path) as mind:
        states, _ = folded.state(mind)
        fresh = projections.replay(mind.events())
    assert states == fresh
    return fresh


def test_every_migration_is_named_numbered_and_known() -> None:
    numbers = [m.number for m in schema.MIGRATIONS]
    assert numbers == list(range(2, schema.SCHEMA_VERSION + 1))
    assert all(m.name.startswith(f"{m.number:04d}_") for m in schema.MIGRATIONS)
    known = {schema.INITIAL: 1, **{m.name: m.number for m in schema.MIGRATIONS}}
    assert known == schema.KNOWN
    assert all(schema.migration(m.number) is m for m in schema.MIGRATIONS)
    assert upcasters.missing(ev.VERSIONED) == []  # every older version of every kind is readable


def test_a_new_mind_records_every_migration_that_made_it(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    _ok("--mind", str(path), "init")
    with Ledger.open(path) as mind:
        history = schema.history(mind.conn)
    assert [name for name, _, _ in history] == list(schema.KNOWN)
    assert {by for _, _, by in history} == {__version__}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_old_release_s_mind_reads_then_upgrades_on_write(tmp_path: Path, version: int) -> None:
    path = _copy(tmp_path, version)
    before, rows = path.read_bytes(), _rows(path)
    assert _meta(path)["schema_version"] == str(version)
    # reads take the file as it is, and leave it byte for byte
    assert json_data(_ok("--mind", str(path), "stats", "--json"))["name"] == "Ada"
    assert [e["content"] for e in json_data(_ok("--mind", str(path), "log", "--json"))][-3:] == list(NOTES)
    _ok("verify", str(path))
    _replays_the_same(path)
    assert path.read_bytes() == before

    upgraded = invoke("--mind", str(path), "remember", "the vet said the dogs are fine")
    assert upgraded.exit_code == 0, upgraded.stderr
    assert f"from schema {version} to {schema.SCHEMA_VERSION}" in upgraded.stderr
    meta = _meta(path)
    assert meta["schema_version"] == str(schema.SCHEMA_VERSION)
    with Ledger.open(path) as mind:
        assert schema.differences(mind.conn, schema.SCHEMA_VERSION) == []
        history = schema.history(mind.conn)
    # exactly the migrations this pmm applied: what the old release did was never recorded
    assert [name for name, _, _ in history] == [m.name for m in schema.MIGRATIONS[version - 1:]]
    assert {by for _, _, by in history} == {__version__}
    layout = next(c for c in json_data(_ok("--mind", str(path), "health", "--json"))["checks"]
                  if c["name"] == "schema")  # health shows the recorded history
    assert layout["status"] == "ok" and all(name in layout["detail"] for name, _, _ in history)
    assert _rows(path)[:-1] == rows  # every event and hash kept
    _ok("verify", "--deep", str(path))
    _replays_the_same(path)
    hits = json_data(_ok("--mind", str(path), "search", "dog", "--json"))
    assert sorted(h["content"] for h in hits) == sorted([NOTES[0], "the vet said the dogs are fine"])


TRAIT_STEPS = {"openness": 0.3, "neuroticism": -3, "conscientiousness": 1e16, "agreeableness": 0.02}


def test_version_1_trait_steps_are_read_through_their_upcaster(tmp_path: Path) -> None:
    path = _copy(tmp_path, 4)
    stored = [(r[2], json.loads(str(r[4]))) for r in _rows(path) if r[2] == "trait_adjusted"]
    assert {m["trait"]: m["delta"] for _, m in stored} == TRAIT_STEPS
    assert all("v" not in m for _, m in stored)  # version 1, as the old release wrote them
    before = path.read_bytes()
    _ok("verify", "--deep", str(path))
    fresh = _replays_the_same(path)
    assert path.read_bytes() == before

    # the old release's own projection cache (sealed with its machine's key, so pmm no longer
    # trusts it) holds the traits it computed: the upcast steps move them exactly as it did
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    [(cached,)] = conn.execute("SELECT state FROM projection_cache").fetchall()
    conn.close()
    assert fresh["traits"]["values"] == json.loads(cached)["traits"]["values"]
    assert fresh["traits"]["values"] == {"openness": 0.55, "conscientiousness": 0.55,
                                         "extraversion": 0.5, "agreeableness": 0.52,
                                         "neuroticism": 0.45}
    # ... and exactly as the same steps written at version 2 do
    with Ledger.open(path) as mind:
        events = list(mind.events())
    upcast = [checks.upcast(e) for e in events]
    assert {json.loads(e.meta_json)["delta"] for e in upcast if e.kind == "trait_adjusted"} == {0.3, -1, 1, 0.02}
    assert all(json.loads(e.meta_json)["v"] == 2 for e in upcast if e.kind == "trait_adjusted")
    assert [e.hash for e in upcast] == [e.hash for e in events]
    assert projections.replay(upcast) == fresh

    # a write leaves the stored version-1 events as they were
    _ok("--mind", str(path), "remember", "after the upcaster")
    assert [(r[2], json.loads(str(r[4]))) for r in _rows(path) if r[2] == "trait_adjusted"] == stored
    _ok("verify", "--deep", str(path))
    _replays_the_same(path)


def test_a_trait_step_is_written_at_version_2_and_older_ones_stay_readable(tmp_path: Path) -> None:
    with Ledger.create(tmp_path / "mind.db", None) as mind:
        mind.append([Draft("trait_adjusted", "v2", {"trait": "openness", "delta": -0.05, "v": 2}),
                     Draft("trait_adjusted", "v1", {"trait": "openness", "delta": 7})])
        with pytest.raises(ValueError, match="from -1 to 1$"):
            checks.check_draft(Draft("trait_adjusted", "", {"trait": "openness", "delta": 7, "v": 2}))
        with pytest.raises(ValueError, match="newer than this pmm reads"):
            checks.check_draft(Draft("trait_adjusted", "", {"trait": "openness", "delta": 0.1, "v": 3}))
        with pytest.raises(ValueError, match=r"-1 to 1 \(version 1, read as version 2\)"):
            checks.check_draft(Draft("trait_adjusted", "", {"trait": "openness", "delta": "lots"}))
        assert folded.state(mind)[0]["traits"]["values"]["openness"] == 0.5  # -0.05, then +0.05
    _ok("verify", "--deep", str(tmp_path / "mind.db"))


@pytest.mark.parametrize(("meta", "why"), [
    ('{"delta":"lots","trait":"openness"}', "a number from -1 to 1 (version 1, read as version 2)"),
    ('{"delta":2,"trait":"openness","v":2}', "a number from -1 to 1"),
    ('{"delta":0.1,"trait":"openness","v":0}', "must be an integer of at least 1"),
])
def test_a_stored_trait_step_no_version_explains_is_refused(meta: str, why: str) -> None:
    problem = checks.check_row(b"2026-01-01T00:00:00.000000Z", b"trait_adjusted", b"", meta.encode())
    assert problem is not None and why in problem
    # and the projections read such an event as it is stored, never half upgraded
    event = ev.Event(1, "2026-01-01T00:00:00.000000Z", "trait_adjusted", "", meta, "0" * 64, "1" * 64)
    assert checks.upcast(event) is event


PLANTED = {
    # (key, value): a file at schema 2 claiming 0003 was applied would skip it if records decided
    "a record past the file's version": (
        "migration:0003_fts_porter", '{"applied_at":"2026-01-01T00:00:00.000000Z","pmm_version":"0.1.0"}'),
    "a name pmm does not know, carrying SQL": (
        "migration:0005_evil", "DROP TABLE events; CREATE TRIGGER t AFTER INSERT ON events BEGIN SELECT 1; END"),
    "a known name with a value pmm does not write": ("migration:0002_cache_mac", "DROP TABLE events"),
}


@pytest.mark.parametrize("planted", PLANTED, ids=list(PLANTED))
def test_planted_migration_records_never_run_or_skip_anything(tmp_path: Path, planted: str) -> None:
    path = _copy(tmp_path, 2)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO pmm_meta VALUES (?, ?)", PLANTED[planted])
    conn.commit()
    conn.close()
    before = path.read_bytes()
    assert json_data(_ok("--mind", str(path), "stats", "--json"))["name"] == "Ada"  # reads go on
    refused = invoke("--mind", str(path), "remember", "hello")
    assert refused.exit_code == 3, refused.stderr
    assert "altered outside pmm" in refused.stderr and "migration record" in refused.stderr
    failed = invoke("verify", str(path))  # and verify says so, as of a planted table
    assert failed.exit_code == 3 and "migration record" in failed.stderr
    assert path.read_bytes() == before


def test_a_record_that_is_history_changes_nothing_the_version_decides(tmp_path: Path) -> None:
    path = _copy(tmp_path, 2)
    record = '{"applied_at":"2025-05-05T05:05:05.000000Z","pmm_version":"0.0.1"}'
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO pmm_meta VALUES ('migration:0002_cache_mac', ?)", (record,))
    conn.commit()
    conn.close()
    _ok("--mind", str(path), "remember", "hello")
    with Ledger.open(path) as mind:
        assert schema.differences(mind.conn, schema.SCHEMA_VERSION) == []
        history = schema.history(mind.conn)
    assert history[0] == ("0002_cache_mac", "2025-05-05T05:05:05.000000Z", "0.0.1")
    assert [name for name, _, _ in history[1:]] == [m.name for m in schema.MIGRATIONS[1:]]
    _ok("verify", str(path))


def test_a_migration_and_its_records_are_one_transaction(tmp_path: Path) -> None:
    """Nothing inside ``migrate`` commits: rolled back (as a crash would), the file is whole at
    its old version, without a record."""
    path = _copy(tmp_path, 1)
    before = path.read_bytes()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    schema.migrate(conn, 1)
    assert conn.in_transaction
    assert conn.execute("SELECT value FROM pmm_meta WHERE key = 'schema_version'").fetchone() == (
        str(schema.SCHEMA_VERSION),)
    assert len(schema.history(conn)) == len(schema.MIGRATIONS)
    conn.execute("ROLLBACK")
    assert schema.history(conn) == [] and schema.differences(conn, 1) == []
    conn.close()
    assert path.read_bytes() == before


LINK_LOOKUPS = {"start": (lookup.START_SQL, ("s",)), "answers": (lookup.ANSWERS_SQL, ("s", 1, 10))}


def _plans(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {name: " ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
                for name, (sql, args) in LINK_LOOKUPS.items()}
    finally:
        conn.close()


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_migration_5_indexes_the_chat_links_and_keeps_every_hash(tmp_path: Path, version: int) -> None:
    """Schema 5's index lets trace look a session's start and answers (and so a message's answer)
    up instead of scanning every meta; the migration builds it from the events, touching none."""
    path = _copy(tmp_path, version)
    rows = _rows(path)
    before = " ".join(_plans(path).values())  # the kind index, then every meta of that kind
    assert "events_session" not in before
    upgraded = invoke("--mind", str(path), "remember", "linked")
    assert upgraded.exit_code == 0, upgraded.stderr
    assert _rows(path)[:-1] == rows  # every event and hash kept
    with Ledger.open(path) as mind:
        assert mind.schema_version == schema.SCHEMA_VERSION and schema.differences(mind.conn, schema.SCHEMA_VERSION) == []
        history = [name for name, _, _ in schema.history(mind.conn)]
    assert history[-3:] == ["0005_link_indexes", "0006_forgotten", "0007_session_summary"]
    plans = _plans(path)
    assert all("USING INDEX events_session" in plan for plan in plans.values()), plans
    _ok("verify", "--deep", str(path))

    # a mind made by import (built in bulk, its indexes made after the insert) has them too
    exported = tmp_path / "export.jsonl"
    _ok("--mind", str(path), "export", "-o", str(exported))
    fresh = tmp_path / "imported.db"
    _ok("--mind", str(fresh), "import", str(exported))
    with Ledger.open(fresh) as mind:
        assert schema.differences(mind.conn, schema.SCHEMA_VERSION) == []
    assert _plans(fresh) == plans
