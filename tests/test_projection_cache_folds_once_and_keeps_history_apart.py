"""The projection cache costs at most one replay per process when it is stale, and a turn reads
and rewrites only what is small: counts and open items. The commitments no longer open (the
history) have a row of their own, read when something asks for them and sealed with the rest,
so a forged or stale history is never shown.

Replays are counted by ``pmm.ledger.folded.replays`` (the figure bench/bench_cache.py prints);
files are attacked with plain sqlite3, as an attacker who can write them would.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from conftest import invoke, json_data
from provider_servers import FakeServer

from pmm.domain import events as ev
from pmm.domain import projections
from pmm.domain.events import Draft
from pmm.ledger import cache, folded, seal, session_table
from pmm.ledger.store import Ledger


def _ok(mind: Path, *args: str) -> dict:
    result = invoke("--mind", str(mind), *args, "--json")
    assert result.exit_code == 0, result.output
    return json_data(result.stdout)


def _mind_with_history(tmp_path: Path) -> Path:
    """A mind with two kept commitments, one dropped and one open."""
    mind = tmp_path / "mind.db"
    _ok(mind, "init", "--name", "Ada")
    for text in ("water the garden", "call the plumber", "write the report", "read the book"):
        opened = _ok(mind, "commitments", "open", text)["id"]
        note = _ok(mind, "remember", f"about {text}")["id"]
        if text.startswith(("water", "call")):
            _ok(mind, "commitments", "close", str(opened), "--evidence", str(note), "--statement", "done")
        elif text.startswith("write"):
            _ok(mind, "commitments", "drop", str(opened), "--reason", "not needed")
    return mind


def _rows(mind: Path) -> dict[str, tuple[str, int, str, str]]:
    conn = sqlite3.connect(f"file:{mind}?mode=ro", uri=True)
    try:
        found = conn.execute("SELECT name, version, last_id, state, mac FROM projection_cache").fetchall()
    finally:
        conn.close()
    return {name: (version, last_id, state, mac) for name, version, last_id, state, mac in found}


def _sql(mind: Path, statement: str, args: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(mind, isolation_level=None)
    try:
        conn.execute(statement, args)
    finally:
        conn.close()


def _listing(mind: Path) -> list[tuple[int, str]]:
    return [(row["id"], row["status"]) for row in _ok(mind, "commitments", "list", "--all")["commitments"]]


def test_a_stale_cache_costs_one_replay_then_the_first_chat_caches_it(tmp_path: Path) -> None:
    """Each ``invoke`` is a fresh process (conftest forgets this process's folds)."""
    mind = _mind_with_history(tmp_path)
    listed = _listing(mind)
    with FakeServer("openai") as server:
        _ok(mind, "model", "add", "srv", "openai-compatible:test-model", "--base-url", server.url, "--use")
        _sql(mind, "UPDATE projection_cache SET version = 'cache:2;identity:1'")  # an older pmm's
        before = folded.replays
        assert _ok(mind, "stats")["projection_cache"] == "stale"  # read commands never write
        assert folded.replays == before + 1
        # the first chat reads the states four times and folds them into its write: one replay
        answer = _ok(mind, "chat", "-m", "hello")
        assert answer["answer"] and folded.replays == before + 2
    assert _ok(mind, "stats")["projection_cache"] == "current"
    assert _listing(mind) == listed
    assert folded.replays == before + 2
    assert invoke("--mind", str(mind), "verify", "--deep").exit_code == 0


def test_a_turn_neither_reads_nor_rewrites_the_history(tmp_path: Path) -> None:
    mind = _mind_with_history(tmp_path)
    done_before, hot_at = _rows(mind)[cache.DONE_KEY], _rows(mind)[cache.KEY][1]
    assert done_before[1] < hot_at  # the later writes (a note, an open) left the history alone
    with Ledger.open(mind) as opened:
        states, status = folded.state(opened)
        assert status.state == "current"
        folded.forget()
        states, _ = folded.state(opened)  # from the cache this time, not this process's fold
        assert isinstance(states["commitments"]["done"], cache.Deferred)
    _ok(mind, "remember", "a note, as a turn writes one")
    rows = _rows(mind)
    assert rows[cache.DONE_KEY] == done_before  # not rewritten
    assert rows[cache.KEY][1] == hot_at + 1  # the small row moved on
    assert "water the garden" not in rows[cache.KEY][2]  # the history is not in it
    assert len(json.loads(done_before[2])) == 3  # two kept, one dropped
    # a change to the history writes it again, at the same event as the rest
    kept = next(i for i, status in _listing(mind) if status == "closed")
    _ok(mind, "commitments", "reopen", str(kept))
    rows = _rows(mind)
    assert rows[cache.DONE_KEY][1] == rows[cache.KEY][1] and len(json.loads(rows[cache.DONE_KEY][2])) == 2
    # ... and, in the process that changed it, the next write finds it unchanged again
    with Ledger.open(mind, write=True) as writer:
        writer.append([Draft(ev.COMMITMENT_DROPPED.name, "no longer wanted",
                             {"commitment": kept, "source": "user"})])
        changed_at = _rows(mind)[cache.DONE_KEY][1]
        writer.append([Draft(ev.OBSERVATION_RECORDED.name, "a later note", {"source": "user"})])
    rows = _rows(mind)
    assert rows[cache.DONE_KEY][1] == changed_at == rows[cache.KEY][1] - 1
    assert invoke("--mind", str(mind), "verify", "--deep").exit_code == 0


def test_a_forged_history_row_is_never_shown_and_the_seal_binds_it(tmp_path: Path) -> None:
    mind = _mind_with_history(tmp_path)
    listed = _listing(mind)
    # the text changed, the digest in the sealed row kept: read, found not to match, replayed
    _sql(mind, "UPDATE projection_cache SET state = replace(state, '\"closed\"', '\"dropped\"')"
               " WHERE name = ?", (cache.DONE_KEY,))
    assert _listing(mind) == listed
    deep = _ok(mind, "verify", "--deep")
    assert deep["deep"]["cache_matches_replay"] is True and "stale" in deep["deep"]["projection_cache"]
    # the digest changed to match: the sealed row no longer holds, so the whole cache is stale
    _sql(mind, "UPDATE projection_cache SET state = replace(state, ?, ?) WHERE name = ?",
         (cache.DIGEST, cache.DIGEST + "0", cache.KEY))
    assert _ok(mind, "stats")["projection_cache"] == "stale"
    assert _listing(mind) == listed
    # a write that changes the history rebuilds both rows
    dropped = next(i for i, status in listed if status == "dropped")
    _ok(mind, "commitments", "reopen", str(dropped))
    assert _ok(mind, "stats")["projection_cache"] == "current"
    assert dict(_listing(mind))[dropped] == "open"
    assert invoke("--mind", str(mind), "verify", "--deep").exit_code == 0


def test_a_cache_in_the_old_one_row_format_is_rebuilt(tmp_path: Path) -> None:
    """Format 1 kept every state in one row, versioned by the projections alone: a cache that
    format wrote on this machine (sealed with its key) is stale, and the next write rebuilds it."""
    mind = _mind_with_history(tmp_path)
    listed = _listing(mind)
    with Ledger.open(mind) as opened:
        states = projections.replay(opened.events())
        head_id, head = opened.head()
        mind_id = opened.mind_id
    old_version = projections.projections_version()
    text = json.dumps(states, separators=(",", ":"), sort_keys=True)
    secret = seal.key(create=False)
    assert secret is not None
    _sql(mind, "DELETE FROM projection_cache")
    _sql(mind, "INSERT INTO projection_cache(name, version, last_id, last_hash, state, mac)"
               " VALUES ('mind', ?, ?, ?, ?, ?)",
         (old_version, head_id, head, text, seal.mac(secret, mind_id, old_version, head_id, head, text)))
    assert _ok(mind, "stats")["projection_cache"] == "stale"
    assert _listing(mind) == listed
    _ok(mind, "remember", "a write rebuilds the cache")
    rows = _rows(mind)
    assert set(rows) == {cache.KEY, cache.DONE_KEY, session_table.MARK} and rows[cache.KEY][0] == cache.version()
    assert _ok(mind, "stats")["projection_cache"] == "current"
    assert _listing(mind) == listed


def test_a_file_rolled_back_under_a_process_is_folded_again(tmp_path: Path) -> None:
    """This process's own fold holds only while the event it reflects keeps its hash: an older
    copy of the mind put back at the same path is read afresh."""
    mind = _mind_with_history(tmp_path)
    older = tmp_path / "older.db"
    shutil.copyfile(mind, older)
    count = _ok(mind, "stats")["events"]
    _ok(mind, "commitments", "open", "plant the tulips")
    assert _ok(mind, "stats")["events"] == count + 1
    assert _ok(mind, "stats")["commitments"]["open"] == 2
    older.replace(mind)
    stats = _ok(mind, "stats")
    assert stats["events"] == count and stats["commitments"]["open"] == 1
