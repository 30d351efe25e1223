"""`kill -9` at random points while appending: no acknowledged event is lost, verify passes.

SPEC section 8. A helper process appends one event per transaction and prints each event's id
only after ``Mind.append`` returned (after COMMIT). It is killed with SIGKILL after a random,
seeded delay: some kills land while Python starts or the mind opens, most land inside an append
(the loop spends nearly all its time between BEGIN IMMEDIATE and the fsync of COMMIT). Every
trial appends to the same mind file, so each one also recovers whatever the previous kill left
behind (a hot WAL, a half-written frame).
"""

from __future__ import annotations

import json
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import run_pmm

TRIALS = 100
SEED = 20240901

HELPER = r'''
import sys
from pathlib import Path

from pmm.domain.events import Draft
from pmm.services import opening

path, trial = Path(sys.argv[1]), sys.argv[2]
out = sys.stdout
with opening.open_write(path, lambda _message: None) as mind:
    out.write("ready\n")
    out.flush()
    for i in range(1_000_000):
        content = f"trial {trial} note {i}"
        (event,) = mind.append([Draft("observation_recorded", content, {"source": "kill9"})])
        # Acknowledge only now: append returned, so COMMIT returned.
        out.write(f"{event.id} {content}\n")
        out.flush()
'''


def _acknowledged(stdout: bytes) -> list[tuple[int, str]]:
    """Complete ``id content`` lines the helper printed (a line cut by the kill is ignored)."""
    acks = []
    for line in stdout.decode().split("\n")[:-1]:  # the piece after the last newline is partial
        if line == "ready":
            continue
        event_id, content = line.split(" ", 1)
        acks.append((int(event_id), content))
    return acks


def _plan(rng: random.Random) -> tuple[str, float]:
    """When to kill: before the helper is ready (startup, open, WAL switch) or while appending."""
    roll = rng.random()
    if roll < 0.15:
        return "from-start", rng.uniform(0.0, 0.12)
    if roll < 0.35:
        return "after-ready", rng.uniform(0.0, 0.003)  # the first few transactions
    if roll < 0.75:
        return "after-ready", rng.uniform(0.003, 0.03)
    return "after-ready", rng.uniform(0.03, 0.12)


def _stored(path: Path) -> dict[int, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT id, content FROM events"))
    finally:
        conn.close()


def test_kill9_at_random_points_loses_no_acknowledged_event(mind: Path, tmp_path: Path) -> None:
    helper = tmp_path / "append_forever.py"
    helper.write_text(HELPER)
    rng = random.Random(SEED)
    all_acks: dict[int, str] = {}
    previous_head: tuple[int, str] | None = None
    acked_trials = 0
    unacked_trials = 0

    for trial in range(TRIALS):
        mode, delay = _plan(rng)
        proc = subprocess.Popen([sys.executable, str(helper), str(mind), str(trial)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            if mode == "after-ready":
                readable, _, _ = select.select([proc.stdout], [], [], 60)
                assert readable, f"trial {trial}: helper never became ready"
                first = proc.stdout.readline()  # type: ignore[union-attr]
                assert first == b"ready\n", (
                    f"trial {trial}: helper did not start: {first!r} {proc.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        where = f"trial {trial} ({mode}, kill after {delay * 1000:.1f} ms)"
        # It must have died by our SIGKILL, not by an error of its own before the kill.
        assert proc.returncode == -signal.SIGKILL, f"{where}: exit {proc.returncode}: {stderr.decode()}"

        acks = _acknowledged(stdout)
        acked_trials += bool(acks)
        unacked_trials += not acks
        ids = [event_id for event_id, _ in acks]
        assert ids == sorted(set(ids)), f"{where}: acknowledged ids not increasing: {ids}"
        if previous_head is not None and acks:
            assert ids[0] > previous_head[0], f"{where}: an id was reused: {ids[0]}"

        stored = _stored(mind)
        for event_id, content in acks:
            assert stored.get(event_id) == content, (
                f"{where}: acknowledged event {event_id} {content!r} is "
                f"{'missing' if event_id not in stored else 'changed: ' + repr(stored[event_id])}")
        all_acks.update(acks)

        result = run_pmm("verify", str(mind), "--json")
        assert result.returncode == 0, f"{where}: verify exited {result.returncode}: {result.stderr.decode()}"
        report = json.loads(result.stdout)
        assert report["ok"] is True
        assert report["events"] == report["last_id"] == len(stored) == max(stored)
        if acks:
            assert report["last_id"] >= ids[-1]
        if previous_head is not None:
            # Whatever verify saw committed before (acknowledged or not) is still there, unchanged.
            prev_id, prev_hash = previous_head
            conn = sqlite3.connect(f"file:{mind}?mode=ro", uri=True)
            try:
                row = conn.execute("SELECT hash FROM events WHERE id = ?", (prev_id,)).fetchone()
            finally:
                conn.close()
            assert row == (prev_hash,), f"{where}: event {prev_id} (the previous head) changed or vanished"
        previous_head = (report["last_id"], report["head"])

    # Nothing acknowledged in any trial went missing later, either.
    stored = _stored(mind)
    lost = {i: c for i, c in all_acks.items() if stored.get(i) != c}
    assert not lost, f"acknowledged events lost by the end: {sorted(lost)[:10]}"
    # The trials did what they are meant to: most killed a helper in the middle of appending,
    # and some killed it before it could acknowledge anything.
    assert acked_trials >= TRIALS // 2, acked_trials
    assert unacked_trials >= 5, unacked_trials
