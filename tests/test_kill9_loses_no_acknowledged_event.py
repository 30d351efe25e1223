"""`kill -9` while appending: no acknowledged event is lost, verify passes.

SPEC section 8. A writer appends one event per transaction and prints each event's id only after
``Ledger.append`` returned (after COMMIT). It is killed with SIGKILL at points chosen from its own
progress output: while it opens the mind (recovering what the previous kill left, switching the
journal), right after it is ready (the first transaction), and right after its 1st, 2nd, 5th, 20th
or 50th acknowledgement, when it is inside the next append (the loop spends nearly all its time
between BEGIN IMMEDIATE and the fsync of COMMIT); a seeded sub-millisecond jitter moves the kill
around inside that transaction. Every trial appends to the same mind file, so each one also
recovers whatever the previous kill left behind (a hot WAL, a half-written frame).

The writers are forked from one helper that has imported pmm already: a trial costs a fork, not
an interpreter's start-up (which holds no mind file, so killing it proves nothing).
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import invoke, json_data

KILL_POINTS = [("opening", 0), ("ready", 0), ("ack", 1), ("ack", 2), ("ack", 5), ("ack", 20), ("ack", 50)]
ROUNDS = 15  # 7 kill points x 15 rounds: 105 trials (SPEC section 8: 100)
SEED = 20240901

# Reads one line per trial on stdin, forks a writer for it, reports how the writer ended.
FORKER = r'''
import os, sys, traceback
from pathlib import Path

from pmm.domain.events import Draft
from pmm.services import opening

path = Path(sys.argv[1])
for command in sys.stdin:
    trial = command.strip()
    pid = os.fork()
    if pid == 0:
        try:
            out = sys.stdout
            out.write(f"opening {os.getpid()}\n")
            out.flush()
            with opening.open_write(path, lambda _message: None) as mind:
                out.write("ready\n")
                out.flush()
                for i in range(1_000_000):
                    content = f"trial {trial} note {i}"
                    (event,) = mind.append([Draft("observation_recorded", content, {"source": "kill9"})])
                    # Acknowledge only now: append returned, so COMMIT returned.
                    out.write(f"{event.id} {content}\n")
                    out.flush()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(f"\ndead {os.waitstatus_to_exitcode(status)}\n")
    sys.stdout.flush()
'''


class Lines:
    """Lines from a pipe, with a deadline per line (never a read that could block forever)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer = fd, b""

    def next(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no line from the writer within {timeout} s: {self.buffer!r}"
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 65536)
                assert chunk, f"the forker exited: {self.buffer!r}"
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def _trial(forker: subprocess.Popen, lines: Lines, trial: int, point: str, count: int,
           jitter: float) -> tuple[list[tuple[int, str]], int]:
    """Start a writer, kill it at ``point``; its acknowledged ``(id, content)`` and exit status."""
    assert forker.stdin is not None
    forker.stdin.write(f"{trial}\n".encode())
    forker.stdin.flush()
    first = lines.next()
    assert first.startswith("opening "), first
    pid = int(first.split()[1])
    acks: list[tuple[int, str]] = []
    if point != "opening":
        assert lines.next() == "ready"
        while len(acks) < count:
            event_id, content = lines.next().split(" ", 1)
            acks.append((int(event_id), content))
    time.sleep(jitter)
    os.kill(pid, signal.SIGKILL)
    while True:
        line = lines.next()
        if line.startswith("dead "):
            return acks, int(line.split()[1])
        if line and line[0].isdigit() and " " in line:  # acknowledged before the kill landed
            event_id, content = line.split(" ", 1)
            acks.append((int(event_id), content))


def _stored(path: Path) -> dict[int, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT id, content FROM events"))
    finally:
        conn.close()


def test_kill9_at_chosen_points_loses_no_acknowledged_event(mind: Path, tmp_path: Path) -> None:
    helper = tmp_path / "forker.py"
    helper.write_text(FORKER)
    rng = random.Random(SEED)
    all_acks: dict[int, str] = {}
    previous_head: tuple[int, str] | None = None
    forker = subprocess.Popen([sys.executable, str(helper), str(mind)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert forker.stdout is not None
    lines = Lines(forker.stdout.fileno())
    try:
        for trial, (point, count) in enumerate(KILL_POINTS * ROUNDS):
            jitter = rng.uniform(0, 0.001)
            acks, status = _trial(forker, lines, trial, point, count, jitter)
            where = f"trial {trial} (killed at {point} {count}, +{jitter * 1000:.2f} ms)"
            # It must have died by our SIGKILL, not by an error of its own before the kill.
            assert status == -signal.SIGKILL, f"{where}: exit {status}"
            assert len(acks) >= count
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

            result = invoke("verify", str(mind), "--json")
            assert result.exit_code == 0, f"{where}: verify exited {result.exit_code}: {result.stderr}"
            report = json_data(result.stdout)
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
    finally:
        if forker.stdin:
            forker.stdin.close()
        try:
            forker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            forker.kill()
            forker.wait()
    assert forker.returncode == 0, forker.stderr.read().decode()  # type: ignore[union-attr]

    # Nothing acknowledged in any trial went missing later, either.
    stored = _stored(mind)
    lost = {i: c for i, c in all_acks.items() if stored.get(i) != c}
    assert not lost, f"acknowledged events lost by the end: {sorted(lost)[:10]}"
