"""`pmm run --autonomous`: an opt-in foreground loop that expires overdue commitments and
reflects when due, writes nothing in a cycle with nothing to do, keeps going past a provider
failure, stops at its token budget, and stops on SIGTERM (exit 0) or Ctrl-C (exit 130): between
steps, or after the step in progress, which gets $PMM_STOP_GRACE seconds before it is abandoned
(writing nothing), so a stalled model cannot keep it running.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import PMM, invoke, json_data
from conftest import mind_kinds as kinds
from provider_servers import PROMPT_TOKENS, FakeServer, split_pieces

from pmm.domain.events import Draft
from pmm.services import opening

REFLECTION = json.dumps({
    "reflection": "The user grows tomatoes; I want to learn more about gardens.",
    # #4: the message user_said appends after init and the two events of use_model
    "traits": [{"trait": "openness", "delta": 0.02, "evidence": [4], "reason": "gardens are interesting"}],
    "open": [], "close": [],
})
TOKENS = PROMPT_TOKENS + len(split_pieces(REFLECTION))  # what the fake server reports per call
PAST = "2000-01-01T00:00:00.000000Z"



def head(mind: Path) -> tuple[int, str]:
    conn = sqlite3.connect(f"file:{mind}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        conn.close()


def append(mind: Path, *drafts: Draft) -> list[int]:
    with opening.open_write(mind, lambda _m: None) as opened:
        return [e.id for e in opened.append(list(drafts))]


def user_said(mind: Path, text: str = "I grow tomatoes in my garden.") -> None:
    """A user message since the last reflection: a reflection is due (stage S0, none yet)."""
    append(mind, Draft("message_received", text, {"source": "pmm"}))


def use_model(mind: Path, url: str) -> None:
    added = invoke("--mind", str(mind), "model", "add", "fake", "openai-compatible:test-model",
                   "--base-url", url, "--use")
    assert added.exit_code == 0, added.stderr


def verified(mind: Path) -> bool:
    return invoke("verify", str(mind)).exit_code == 0


def run(mind: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`pmm run ARGS` in this process (the signal tests below run it as a process of its own)."""
    done = invoke("--mind", str(mind), "run", *args)
    return subprocess.CompletedProcess(["pmm", "run", *args], done.exit_code, done.stdout_bytes, done.stderr_bytes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def started(mind: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([PMM, "--mind", str(mind), "run", "--autonomous", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Watched:
    """A running loop whose stderr is read as it comes (a thread), so a test can wait for a line."""

    def __init__(self, mind: Path, *args: str) -> None:
        self.proc = started(mind, *args)
        self.err = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err += line

    def expect(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.err:
            assert time.monotonic() < deadline, f"no {text!r} on stderr: {self.err.decode()}"
            assert self.proc.poll() is None or self._reader.is_alive(), f"exited: {self.err.decode()}"
            time.sleep(0.01)

    def finish(self, timeout: float) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(30)
        return self.proc.returncode, self.err.decode()


def test_without_autonomous_it_refuses_and_explains(mind: Path) -> None:
    before = head(mind)
    done = run(mind)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "opt-in" in err and "--autonomous" in err and "Traceback" not in err
    assert head(mind) == before
    assert run(mind, "--interval", "0", "--max-cycles", "1").returncode == 2


def test_a_missing_mind_is_exit_4(tmp_path: Path) -> None:
    done = run(tmp_path / "absent.db", "--autonomous", "--max-cycles", "1")
    assert done.returncode == 4 and b"no mind file" in done.stderr
    assert not (tmp_path / "absent.db").exists()


def test_reflects_once_when_due_and_writes_nothing_when_nothing_is(mind: Path) -> None:
    with FakeServer("openai", text=REFLECTION) as server:
        use_model(mind, server.url)
        user_said(mind)
        before = len(kinds(mind))
        posts = len([r for r in server.requests if r.method == "POST"])
        done = run(mind, "--autonomous", "--max-cycles", "2", "--interval", "0", "--json")
        assert done.returncode == 0, done.stderr.decode()
        assert len([r for r in server.requests if r.method == "POST"]) == posts + 1
    new = kinds(mind)[before:]
    assert new == ["reflection_recorded", "trait_adjusted"]
    summary = json_data(done.stdout)
    assert summary == {"cycles": 2, "reflections": 1, "expired": 0, "tokens": TOKENS, "cost": [], "failures": 0,
                       "stopped_by": "max-cycles", "abandoned": False}
    err = done.stderr.decode()
    assert "Cycle 1: reflected" in err and "Cycle 2: no reflection (nothing new since the last reflection)" in err
    conn = sqlite3.connect(f"file:{mind}?mode=ro", uri=True)
    meta = json.loads(conn.execute("SELECT meta FROM events WHERE kind = 'reflection_recorded'").fetchone()[0])
    conn.close()
    assert meta["trigger"] == "autonomous"

    # Another run with nothing due appends nothing at all (no heartbeat in the chain).
    after = head(mind)
    done = run(mind, "--autonomous", "--max-cycles", "3", "--interval", "0")
    assert done.returncode == 0
    assert head(mind) == after
    assert "Stopped after 3 cycles: 0 reflections, 0 commitments expired, 0 tokens" in done.stderr.decode()
    assert verified(mind)


def test_overdue_commitments_are_expired(mind: Path) -> None:
    (late,) = append(mind, Draft("commitment_opened", "x", {"source": "user", "due": PAST}))
    (later,) = append(mind, Draft("commitment_opened", "y", {"source": "user", "due": PAST}))
    (open_,) = append(mind, Draft("commitment_opened", "z", {"source": "user"}))
    done = run(mind, "--autonomous", "--max-cycles", "1", "--interval", "0")
    assert done.returncode == 0, done.stderr.decode()
    err = done.stderr.decode()
    assert "Cycle 1: expired 2 overdue commitments" in err
    assert "Stopped after 1 cycle: 0 reflections, 2 commitments expired, 0 tokens" in err
    conn = sqlite3.connect(f"file:{mind}?mode=ro", uri=True)
    rows = conn.execute("SELECT id, meta FROM events WHERE kind = 'commitment_expired' ORDER BY id").fetchall()
    conn.close()
    assert [json.loads(m)["commitment"] for _, m in rows] == [late, later]
    assert rows[1][0] == rows[0][0] + 1 == open_ + 2  # one transaction, right after the opens
    listing = json_data(invoke("--mind", str(mind), "stats", "--json").stdout)
    assert listing["commitments"]["open"] == 1 and listing["commitments"]["expired"] == 2
    before = head(mind)
    assert run(mind, "--autonomous", "--max-cycles", "1", "--interval", "0").returncode == 0
    assert head(mind) == before  # already expired: nothing more to write


def test_a_provider_error_fails_the_cycle_not_the_run_and_backs_off(mind: Path) -> None:
    use_model(mind, f"http://127.0.0.1:{free_port()}/v1")
    user_said(mind)
    before = head(mind)
    done = run(mind, "--autonomous", "--max-cycles", "2", "--interval", "0")
    assert done.returncode == 0
    err = done.stderr.decode()
    assert "Cycle 1: reflection failed: cannot reach" in err
    # the failure is remembered: the next cycle backs off instead of calling the model again
    assert re.search(r"Cycle 2: no reflection \(the last reflection failed \d+ s ago \(cannot reach"
                     r".*; next try in (59|60) min\)", err)
    assert "Stopped after 2 cycles: 0 reflections, 0 commitments expired, 0 tokens, 1 failure" in err
    assert head(mind) == before
    assert "Traceback" not in err


def test_max_tokens_stops_the_loop(mind: Path) -> None:
    with FakeServer("openai", text=REFLECTION) as server:
        use_model(mind, server.url)
        user_said(mind)
        done = run(mind, "--autonomous", "--interval", "0", "--max-tokens", "10", "--json")
    assert done.returncode == 0, done.stderr.decode()
    summary = json_data(done.stdout)
    assert summary["stopped_by"] == "max-tokens"
    assert summary["cycles"] == 1 and summary["reflections"] == 1 and summary["tokens"] == TOKENS
    assert f"Token budget spent ({TOKENS} of 10)" in done.stderr.decode()


def test_sigterm_while_waiting_stops_within_seconds(mind: Path) -> None:
    proc = started(mind, "--interval", "300")
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()  # the first cycle is done: now it sleeps
        assert line.startswith("Cycle 1:"), line
        time.sleep(0.3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - sent < 60  # well before the 300 s wait would have ended
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Stopped after 1 cycle: 0 reflections, 0 commitments expired, 0 tokens" in err.decode()
    assert verified(mind)


def wait_for_the_model(server: FakeServer, proc: subprocess.Popen) -> None:
    """Until the running loop has asked the model for its reflection (so the cycle is mid-way)."""
    deadline = time.monotonic() + 120
    while not any(r.method == "POST" for r in server.requests):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)


def test_ctrl_c_while_waiting_is_exit_130(mind: Path) -> None:
    proc = started(mind, "--interval", "300")
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().decode().startswith("Cycle 1:")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # well before the 300 s wait would have ended
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert "Stopped after 1 cycle" in err.decode() and b"Traceback" not in err


EXIT = {signal.SIGTERM: 0, signal.SIGINT: 130}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_during_a_reflection_lets_it_finish(mind: Path, signum: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The signal arrives while the model is answering (the server holds the answer until the
    loop has said it will stop): the reflection is still recorded whole, then the loop ends
    without starting another cycle."""
    monkeypatch.setenv("PMM_STOP_GRACE", "600")  # the grace never runs out in this test
    with FakeServer("openai", text=REFLECTION) as server:
        use_model(mind, server.url)
        user_said(mind)
        release = threading.Event()
        server.push("slow", release=release)
        loop = Watched(mind, "--interval", "0")
        try:
            wait_for_the_model(server, loop.proc)
            loop.proc.send_signal(signum)  # mid-cycle: the model is answering
            loop.expect("Stopping after the current step")
        finally:
            release.set()
        code, text = loop.finish(timeout=120)
    assert code == EXIT[signum], text
    assert "Stopped after 1 cycle: 1 reflection, 0 commitments expired" in text
    assert kinds(mind).count("reflection_recorded") == 1
    assert verified(mind)


def test_a_second_signal_stops_at_once_and_writes_nothing_half(mind: Path) -> None:
    with FakeServer("openai", text=REFLECTION) as server:
        use_model(mind, server.url)
        user_said(mind)
        before = head(mind)
        release = threading.Event()  # never set: only the server's shutdown ends the answer
        server.push("slow", release=release)
        loop = Watched(mind, "--interval", "0")
        wait_for_the_model(server, loop.proc)
        loop.proc.send_signal(signal.SIGINT)
        loop.expect("Stopping after the current step")  # the first one is taken: now the second
        loop.proc.send_signal(signal.SIGINT)
        code, text = loop.finish(timeout=60)  # the model never answers: only the signal ends it
    assert code == 130, text
    assert "Stopped after 1 cycle: 0 reflections" in text and "Traceback" not in text
    assert head(mind) == before
    assert verified(mind)


def test_sigterm_abandons_a_stalled_step_after_the_grace(mind: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model trickles forever (each read is quick, the deadline is far off): once the grace
    runs out the step is abandoned, nothing of it is written, and the run ends."""
    monkeypatch.setenv("PMM_STOP_GRACE", "0.2")
    with FakeServer("openai", text=REFLECTION) as server:
        use_model(mind, server.url)
        user_said(mind)
        before = head(mind)
        server.push("trickle", every=0.05)
        proc = started(mind, "--interval", "0")
        try:
            wait_for_the_model(server, proc)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)  # the trickle alone would never end
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err.decode()  # a service manager's stop, done as asked
    assert took < 60  # the grace (0.2 s) ended it, not the trickle
    text = err.decode()
    assert "the step in progress was abandoned (a step is written whole or not at all)" in text, text
    assert "Traceback" not in text
    assert head(mind) == before
    assert verified(mind)


def _called_from(frame, name: str) -> bool:  # noqa: ANN001 (a frame)
    """Whether ``name`` is on the stack above ``frame`` (the witness is told through a hook)."""
    while frame is not None:
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False


def test_an_abandonment_that_comes_as_the_step_commits_lets_it_finish(
        mind: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM arrives and its grace runs out just after the step's COMMIT (while the witness
    learns the new head): the step is written, so it is not abandoned, and the summary counts it
    instead of claiming it wrote nothing. Deterministic: the signal is sent from a trace hook at
    that very call, which waits there until the grace thread has sent its abandonment."""
    import os
    import sys
    import threading

    from conftest import invoke, mind_events

    monkeypatch.setenv("PMM_STOP_GRACE", "0")
    (late,) = append(mind, Draft("commitment_opened", "x", {"source": "user", "due": PAST}))
    hook = opening.witness_head.__code__
    fired: list[bool] = []
    graces: list[threading.Thread] = []  # the grace thread the first signal starts

    def after_commit(frame, event, _arg):  # noqa: ANN001, ANN202 (sys.settrace's signature)
        if event == "call" and frame.f_code is hook and _called_from(frame, "transaction") and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs here and starts the grace thread
            deadline = time.monotonic() + 30
            while not graces and time.monotonic() < deadline:
                time.sleep(0.01)
            # with a grace of 0 it sends the abandonment to this thread at once, before it ends;
            # the signal is taken as this join returns: still after the COMMIT, before the summary
            graces[0].join(30)
        return None

    def started(*_: object) -> None:  # other threads (a test runner's own) may start meanwhile
        if threading.current_thread().name == "pmm-stop-grace":
            graces.append(threading.current_thread())

    threading.settrace(started)
    sys.settrace(after_commit)
    try:
        done = invoke("--mind", str(mind), "run", "--autonomous", "--interval", "0", "--max-cycles", "3",
                      "--json")  # bounded, so a lost signal fails the test instead of hanging it
    finally:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
    assert fired
    assert done.exit_code == 0, done.stderr
    summary = json_data(done.stdout)
    assert summary["abandoned"] is False and summary["expired"] == 1, summary
    assert [e["meta"]["commitment"] for e in mind_events(mind, "commitment_expired")] == [late]
