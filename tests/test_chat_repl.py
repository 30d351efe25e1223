"""The interactive `pmm chat` on a real terminal: answers streamed, slash commands, history,
Ctrl-C cancelling an answer without leaving half of it in the ledger, Ctrl-D leaving.

One session runs on the embedded model (the smoke test of this surface); the streaming faults run
on a loopback fake whose answer the test holds back, so Ctrl-C always lands mid-stream."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from conftest import PMM, invoke
from conftest import mind_kinds as kinds
from provider_servers import FakeServer
from terminal import Terminal

ENV = {"TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
REAL_MODEL = 600  # seconds: the embedded model on a machine whose cores are busy elsewhere


def chat_on_a_terminal(mind: Path, *args: str) -> Terminal:
    return Terminal([PMM, "--mind", str(mind), "chat", *args], {**os.environ, **ENV})


@pytest.fixture
def faked(mind: Path):
    """The mind talking to a loopback OpenAI-compatible fake, and a terminal running `pmm chat`."""
    with FakeServer("openai", text="Zanzibar comes first. Then a long story the test may hold back.") as server:
        added = invoke("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
                       "--base-url", server.url, "--use")
        assert added.exit_code == 0, added.stderr
        term = chat_on_a_terminal(mind)
        try:
            yield server, term
        finally:
            term.kill()


def test_a_session_on_the_embedded_model_answers_runs_commands_and_leaves_on_ctrl_d(
        mind: Path, private_dirs: Path) -> None:
    term = chat_on_a_terminal(mind, "--max-tokens", "24")
    try:
        at = term.expect(r"Talking to Test through embedded", timeout=REAL_MODEL)
        at = term.expect(r"you>", after=at, timeout=REAL_MODEL)
        term.send("/help\r")
        at = term.expect(r"/trace \[ID\]", after=at)
        term.send("Say hello in five words.\r")
        term.until(lambda: kinds(mind)[-1] == "response_sent", timeout=REAL_MODEL, what="the answer")
        assert kinds(mind)[-3:] == ["session_started", "message_received", "response_sent"]
        at = len(term.text())
        term.send("/trace\r")
        at = term.expect(r"Model: embedded = local:SmolLM2-135M-Instruct", after=at)
        term.send("/model nope\r")
        at = term.expect(r"no model named 'nope'", after=at)
        term.send("/bogus\r")
        at = term.expect(r"unknown command /bogus", after=at)
        term.expect(r"you>", after=at)  # keys typed before the prompt is up would be lost
        term.send("\x04")  # Ctrl-D
        assert term.wait(REAL_MODEL) == 0
    finally:
        term.kill()
    (history,) = (private_dirs / "state" / "pmm" / "history").iterdir()  # this mind's own
    assert "Say hello in five words." in history.read_text()


def test_ctrl_c_mid_stream_cancels_the_answer_and_saves_nothing_of_the_turn(faked, mind: Path) -> None:
    server, term = faked
    at = term.expect(r"you>")
    before = kinds(mind)
    release = threading.Event()
    server.push("slow", release=release, pieces=1)  # "Zanzibar " now, the rest once released
    term.send("Tell me a long story.\r")
    at = term.expect(r"Zanzibar", after=at)  # streamed: the first piece is on the screen
    assert server.requests[-1].body["stream"] is True
    term.send("\x03")  # while the server holds the rest
    at = term.expect(r"answer cancelled: nothing of this turn was saved", after=at)
    release.set()
    at = term.expect(r"you>", after=at)
    assert kinds(mind) == before, "a cancelled turn left events behind"
    assert "comes first" not in term.text()
    # The session goes on: the next turn is recorded whole.
    term.send("Hi\r")
    term.until(lambda: len(kinds(mind)) > len(before) and kinds(mind)[-1] == "response_sent",
               what="the next answer")
    assert kinds(mind)[len(before):][-2:] == ["message_received", "response_sent"]
    term.expect(r"Zanzibar comes first\. Then a long story", after=at)
    term.send("/exit\r")
    assert term.wait() == 0


def test_a_stream_cut_mid_answer_is_reported_and_saves_nothing(faked, mind: Path) -> None:
    server, term = faked
    at = term.expect(r"you>")
    before = kinds(mind)
    server.push("cut")
    term.send("hello\r")
    at = term.expect(r"cut off", after=at)
    at = term.expect(r"nothing of this turn was saved", after=at)
    assert server.requests[-1].body["stream"] is True
    assert kinds(mind) == before
    term.expect(r"you>", after=at)
    term.send("hello again\r")
    term.until(lambda: kinds(mind)[-1] == "response_sent", what="the next answer")
    term.send("/exit\r")
    assert term.wait() == 0
