"""Several processes appending to one mind at once: no fork, no lost event, no "database is locked".

SPEC sections 2 and 8. Writers are real processes using the library, released together by a
barrier file. A last test shows the schema itself (UNIQUE prev_hash, the append-only triggers)
stops a fork, an UPDATE or a DELETE made with plain ``sqlite3``, whatever the code above it does.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import invoke, json_data

from pmm.ledger.chain import chain_prefix, event_hash

WRITERS = 4
PER_WRITER = 500  # SPEC section 8: 4 processes, 500 each (the hand-overs between them are asserted below)
PER_OPEN = 40

# Opens the mind once and appends one event per transaction (a long-lived writer such as chat).
HELD_OPEN = r'''
import json, os, sys, time
from pathlib import Path

from pmm.domain.events import Draft
from pmm.services import opening

path, tag, n, barrier = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
barrier.with_name(f"ready-{tag}").touch()
while not barrier.exists():
    time.sleep(0.001)
acked = []
with opening.open_write(path, lambda _message: None) as mind:
    for i in range(n):
        (event,) = mind.append([Draft("observation_recorded", f"{tag} {i}", {"source": tag})])
        acked.append(event.id)
        time.sleep(0.0005)  # give the others a turn, so the writers really interleave
print(json.dumps(acked))
'''

# Opens, appends and closes for every event, as `pmm remember` does (exercises the WAL switch
# on open and the journal switch back on close while other writers hold the file).
OPEN_PER_EVENT = r'''
import json, sys, time
from pathlib import Path

from pmm.services import opening

path, tag, n, barrier = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
barrier.with_name(f"ready-{tag}").touch()
while not barrier.exists():
    time.sleep(0.001)
acked = []
for i in range(n):
    acked.append(opening.remember(path, f"{tag} {i}", lambda _message: None).id)
    time.sleep(0.0005)  # give the others a turn, so the writers really interleave
print(json.dumps(acked))
'''


def _run_writers(script: str, mind: Path, tmp_path: Path, per_writer: int
                 ) -> list[tuple[str, list[int], subprocess.CompletedProcess[bytes]]]:
    helper = tmp_path / "writer.py"
    helper.write_text(script)
    barrier = tmp_path / "go"
    procs = []
    for w in range(WRITERS):
        tag = f"writer{w}"
        procs.append((tag, subprocess.Popen(
            [sys.executable, str(helper), str(mind), tag, str(per_writer), str(barrier)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    deadline = time.monotonic() + 120  # let every interpreter start and reach the barrier
    while len(list(tmp_path.glob("ready-*"))) < WRITERS:
        if time.monotonic() > deadline or any(p.poll() is not None for _, p in procs):
            for _, p in procs:
                p.kill()
            raise AssertionError(f"the writers did not all reach the barrier: {[p.poll() for _, p in procs]}")
        time.sleep(0.01)
    barrier.touch()
    results = []
    for tag, proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for _, p in procs:
                p.kill()
            raise
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        results.append((tag, json.loads(stdout) if proc.returncode == 0 else [], done))
    return results


def _check(mind: Path, results: list[tuple[str, list[int], subprocess.CompletedProcess[bytes]]],
           per_writer: int) -> None:
    for tag, _, proc in results:
        err = proc.stderr.decode()
        assert "locked" not in err.lower(), f"{tag} saw a lock error: {err}"
        assert proc.returncode == 0, f"{tag} exited {proc.returncode}: {err}"

    conn = sqlite3.connect(f"file:{mind}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, content, meta, prev_hash FROM events ORDER BY id").fetchall()
    finally:
        conn.close()
    total = 1 + WRITERS * per_writer  # genesis + everyone's events
    assert [r[0] for r in rows] == list(range(1, total + 1)), "ids are not 1..N without gaps"
    assert len({r[3] for r in rows}) == total, "two events share a parent: the chain forked"
    by_id = {r[0]: r[1] for r in rows}
    for tag, acked, _ in results:
        assert len(acked) == per_writer
        assert acked == sorted(acked), f"{tag}'s own appends came back out of order"
        assert [by_id[i] for i in acked] == [f"{tag} {i}" for i in range(per_writer)], (
            f"{tag}: an acknowledged event is missing or holds another writer's content")
        mine = [r for r in rows if r[1].startswith(tag + " ")]
        assert len(mine) == per_writer, f"{tag}: {len(mine)} events stored, expected {per_writer}"
    # The writers really interleaved (otherwise this test proved nothing about concurrency).
    owners = [r[1].split(" ")[0] for r in rows[1:]]
    switches = sum(a != b for a, b in zip(owners, owners[1:], strict=False))
    assert switches >= WRITERS, f"writers did not overlap (only {switches} hand-overs)"

    result = invoke("verify", str(mind), "--json")
    assert result.exit_code == 0, result.stderr
    report = json_data(result.stdout)
    assert report["ok"] and report["events"] == report["last_id"] == total


def test_four_writers_appending_at_once_never_fork(mind: Path, tmp_path: Path) -> None:
    results = _run_writers(HELD_OPEN, mind, tmp_path, PER_WRITER)
    _check(mind, results, PER_WRITER)


def test_four_writers_opening_per_event_never_fork(mind: Path, tmp_path: Path) -> None:
    results = _run_writers(OPEN_PER_EVENT, mind, tmp_path, PER_OPEN)
    _check(mind, results, PER_OPEN)
    # The last writer to close folds the WAL back: the file stands alone afterwards.
    assert not Path(f"{mind}-wal").exists() or os.path.getsize(f"{mind}-wal") == 0


def _rows(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT * FROM events ORDER BY id").fetchall()


def test_schema_refuses_fork_update_and_delete(mind: Path) -> None:
    assert invoke("--mind", str(mind), "remember", "second").exit_code == 0
    assert invoke("--mind", str(mind), "remember", "third").exit_code == 0
    conn = sqlite3.connect(mind, isolation_level=None)
    try:
        before = _rows(conn)
        mind_id = conn.execute("SELECT value FROM pmm_meta WHERE key='mind_id'").fetchone()[0]
        fmt = int(conn.execute("SELECT value FROM pmm_meta WHERE key='ledger_format'").fetchone()[0])
        prefix = chain_prefix(fmt, mind_id)
        _, ts, kind, _, meta, parent, _ = before[2]  # event 3's parent is event 2

        # A fork: a well-formed, correctly hashed second child of event 2, appended as event 4.
        fork = (4, ts, kind, "a rival third event", meta, parent,
                event_hash(prefix, 4, ts, kind, "a rival third event", meta, parent))
        # And a second genesis (a chain restarted inside the same file).
        restart = (4, ts, kind, "x", meta, "0" * 64, "f" * 64)
        for row in (fork, restart):
            with pytest.raises(sqlite3.IntegrityError, match="prev_hash|append-only"):
                conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            # Defence in depth: with every trigger gone, the UNIQUE index alone still refuses.
            conn.execute("BEGIN")
            triggers = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'")]
            assert triggers, "the events table has no guard triggers"
            for name in triggers:
                conn.execute(f"DROP TRIGGER {name}")
            with pytest.raises(sqlite3.IntegrityError, match="UNIQUE.*prev_hash"):
                conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            conn.execute("ROLLBACK")

        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET content = 'rewritten' WHERE id = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET hash = hash WHERE id = 3")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("INSERT INTO events SELECT * FROM events WHERE id = 3"
                         " ON CONFLICT(id) DO UPDATE SET content = 'upserted'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events WHERE id = 3")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")

        # Inside an explicit transaction too: the failed statement leaves nothing behind.
        conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("DELETE FROM events WHERE id >= 2")
        conn.execute("COMMIT")
        assert _rows(conn) == before
    finally:
        conn.close()
    result = invoke("verify", str(mind), "--json")
    assert result.exit_code == 0, result.stderr
    assert json_data(result.stdout)["events"] == 3


def test_schema_refuses_replacing_an_event(mind: Path) -> None:
    """INSERT OR REPLACE deletes the old row without firing DELETE triggers (SQLite only fires
    them for REPLACE with recursive_triggers on): an overwrite the schema must refuse as well."""
    assert invoke("--mind", str(mind), "remember", "second").exit_code == 0
    conn = sqlite3.connect(mind, isolation_level=None)
    try:
        before = _rows(conn)
        _, ts, kind, _, meta, prev, digest = before[1]
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT OR REPLACE INTO events VALUES (2, ?, ?, 'replaced', ?, ?, ?)",
                         (ts, kind, meta, prev, digest))
        # The same through the UNIQUE prev_hash index: a new event 3 that claims event 2's
        # parent would silently delete event 2 and fork the chain.
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("REPLACE INTO events VALUES (3, ?, ?, 'rival', ?, ?, ?)",
                         (ts, kind, meta, prev, "e" * 64))
        assert _rows(conn) == before
    finally:
        conn.close()
