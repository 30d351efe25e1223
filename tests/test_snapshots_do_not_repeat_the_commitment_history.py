"""``--as-of`` snapshots (pmm.ledger.past) do not each hold a copy of the closed-commitment history
that the projection cache keeps once (its ``mind:done`` row): they refer to it, and a snapshot is
trusted only when what it refers to gives the history it sealed (its digest). So a mind with many
kept commitments does not pay for them once per snapshot, ``--as-of`` and ``verify --deep`` read
the same states as before, and snapshots of the older format (the history inline) are rewritten
in the new one at the next write.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import cli_json, invoke

from pmm.domain import events as ev
from pmm.domain import projections
from pmm.domain.events import Draft
from pmm.ledger import cache, past, seal
from pmm.ledger.store import Ledger

KEPT = 300


def _commitments(ledger: Ledger, n: int, tag: str) -> list[int]:
    """``n`` commitments opened (returns their ids)."""
    done = ledger.append([Draft(ev.COMMITMENT_OPENED.name, f"I will check {tag} item {i}", {"source": "user"})
                          for i in range(n)])
    return [e.id for e in done]


def _close(ledger: Ledger, ids: list[int]) -> None:
    (evidence,) = ledger.append([Draft(ev.OBSERVATION_RECORDED.name, "all checked", {"source": "user"})])
    ledger.append([Draft(ev.COMMITMENT_CLOSED.name, "checked", {"commitment": i, "evidence": [evidence.id],
                                                               "source": "user"}) for i in ids])


def _notes_until(ledger: Ledger, head: int) -> None:
    ledger.append([Draft(ev.OBSERVATION_RECORDED.name, f"note {i}", {"source": "user"})
                   for i in range(head - ledger.head()[0])])


def _mind(tmp_path: Path) -> tuple[Path, list[int]]:
    """``KEPT`` commitments kept before the first snapshot point, one opened before it and kept
    after it (between the two snapshots), and one opened and still open: 2 snapshots."""
    mind = tmp_path / "mind.db"
    cli_json(mind, "init", "--name", "Ada")
    with Ledger.open(mind, write=True) as ledger:
        kept = _commitments(ledger, KEPT, "early")
        _close(ledger, kept)
        (late,) = _commitments(ledger, 1, "late")
        _commitments(ledger, 1, "open")
        _notes_until(ledger, past.SPACING + 100)
        _close(ledger, [late])
        _notes_until(ledger, 2 * past.SPACING + 100)
    return mind, kept


def _snapshot_texts(mind: Path) -> dict[int, str]:
    conn = sqlite3.connect(mind)
    try:
        return {int(name[len(past.PREFIX):]): state for name, state in conn.execute(
            "SELECT name, state FROM projection_cache WHERE name LIKE 'snap:%'")}
    finally:
        conn.close()


def _as_of(mind: Path, point: int) -> tuple[dict, list]:
    stats = cli_json(mind, "stats", "--as-of", str(point))
    listed = cli_json(mind, "commitments", "list", "--all", "--as-of", str(point))
    rows = listed["commitments"] if isinstance(listed, dict) else listed
    return stats, sorted((c["text"], c["status"]) for c in rows)


def _replayed(mind: Path, point: int) -> dict:
    with Ledger.open(mind) as ledger:
        return json.loads(past.dump(projections.replay(ledger.events(until=point))))


def test_snapshots_refer_to_the_history_and_read_as_a_replay(tmp_path: Path) -> None:
    mind, _ = _mind(tmp_path)
    texts = _snapshot_texts(mind)
    assert sorted(texts) == [past.SPACING, 2 * past.SPACING]
    for text in texts.values():  # none repeats the kept commitments' texts
        assert "early item" not in text and len(text) < 20_000, len(text)
    for point in (past.SPACING + 3, 2 * past.SPACING + 3):
        stats, listed = _as_of(mind, point)
        assert stats["as_of"]["replayed_from"] == point - 3  # from the snapshot
        statuses = dict(listed)
        assert sum(1 for text, status in listed if "early item" in text and status == "closed") == KEPT
        # the late one was open at the first snapshot and kept after it
        assert statuses["I will check late item 0"] == ("open" if point < 2 * past.SPACING else "closed")
        assert statuses["I will check open item 0"] == "open"
        with Ledger.open(mind) as ledger:
            assert past.sealed(ledger, point - 3) == _replayed(mind, point - 3)
    deep = cli_json(mind, "verify", str(mind), "--deep")
    assert deep["ok"] and deep["deep"]["snapshots"] == "2 checked, each equals a full replay"


def test_a_history_changed_behind_the_snapshot_is_not_trusted(tmp_path: Path) -> None:
    """The done row altered (a forger with no key, or a reopen since): the snapshot does not
    resolve to the history it sealed, so --as-of replays instead and shows the truth."""
    mind, kept = _mind(tmp_path)
    conn = sqlite3.connect(mind, isolation_level=None)  # the cache has no guards: anyone can write it
    try:
        conn.execute("UPDATE projection_cache SET state = replace(state, 'early item 7\"', 'forged item\"')"
                     " WHERE name = 'mind:done'")
    finally:
        conn.close()
    with Ledger.open(mind) as ledger:
        assert past.sealed(ledger, past.SPACING) is None
    stats, listed = _as_of(mind, past.SPACING + 3)
    assert stats["as_of"]["replayed_from"] == 0
    assert ("I will check early item 7", "closed") in listed and not any("forged" in t for t, _ in listed)


def test_older_snapshots_are_rewritten_at_the_next_write(tmp_path: Path) -> None:
    """A snapshot an older pmm wrote (format 1: the history inline, sealed under the cache's
    version) is trusted no more as it is; the next write rewrites it in the new format."""
    mind, _ = _mind(tmp_path)
    with Ledger.open(mind, write=True) as ledger, ledger.transaction():
        states = projections.replay(ledger.events(until=past.SPACING))
        text = past.dump(states)  # exactly what format 1 stored
        old, event_hash = cache.version(), ledger.hash_at(past.SPACING)
        mac = seal.mac(seal.key(create=True), ledger.mind_id, past.SEALED_AS + old, past.SPACING,
                       event_hash, text)
        ledger.conn.execute("UPDATE projection_cache SET version = ?, state = ?, mac = ? WHERE name = ?",
                            (old, text, mac, f"{past.PREFIX}{past.SPACING}"))
        assert past.outdated(ledger.conn)
    assert "early item" in _snapshot_texts(mind)[past.SPACING]
    with Ledger.open(mind) as ledger:
        assert past.sealed(ledger, past.SPACING) is None  # not read as it is: another format
    cli_json(mind, "remember", "a note after the upgrade")  # the next write migrates it
    texts = _snapshot_texts(mind)
    assert sorted(texts) == [past.SPACING, 2 * past.SPACING]
    assert "early item" not in texts[past.SPACING]
    with Ledger.open(mind) as ledger:
        assert not past.outdated(ledger.conn)
        assert past.sealed(ledger, past.SPACING) == _replayed(mind, past.SPACING)
    stats, _ = _as_of(mind, past.SPACING + 3)
    assert stats["as_of"]["replayed_from"] == past.SPACING
    deep = cli_json(mind, "verify", str(mind), "--deep")
    assert deep["ok"] and deep["deep"]["snapshots_match_replay"] is True


def test_an_older_snapshot_sealed_elsewhere_is_dropped_not_rewritten(tmp_path: Path) -> None:
    mind, _ = _mind(tmp_path)
    conn = sqlite3.connect(mind, isolation_level=None)  # the cache has no guards: anyone can write it
    try:
        conn.execute("UPDATE projection_cache SET version = ?, mac = 'forged' WHERE name = ?",
                     (cache.version(), f"{past.PREFIX}{past.SPACING}"))
    finally:
        conn.close()
    cli_json(mind, "remember", "a note")
    assert sorted(_snapshot_texts(mind)) == [2 * past.SPACING]


@pytest.mark.parametrize("key", ["²", "٣", "9" * 5000, "-1", ""])
def test_a_done_row_with_keys_that_are_not_ids_is_read_without_a_crash(tmp_path: Path, key: str) -> None:
    """The done row has no seal of its own and is read before the snapshot's digest is checked:
    a key that only looks like digits ("²" passes ``str.isdigit``, 5,000 digits pass it but not
    ``int``) leaves the snapshot untrusted, never a crash."""
    mind, _ = _mind(tmp_path)
    conn = sqlite3.connect(mind, isolation_level=None)
    try:
        (state,) = conn.execute("SELECT state FROM projection_cache WHERE name = 'mind:done'").fetchone()
        done = json.loads(state)
        done[key] = next(iter(done.values()))
        conn.execute("UPDATE projection_cache SET state = ? WHERE name = 'mind:done'", (json.dumps(done),))
    finally:
        conn.close()
    stats, listed = _as_of(mind, past.SPACING + 3)
    assert stats["as_of"]["replayed_from"] == 0  # the snapshot is not trusted: a replay instead
    assert ("I will check early item 7", "closed") in listed
    deep = invoke("--mind", str(mind), "verify", "--deep", "--json")
    assert deep.exit_code in (0, 3) and "report" not in deep.stderr, deep.stderr
