"""The interactive `pmm chat` on a real terminal: answers streamed, slash commands, history,
Ctrl-C cancelling an answer without leaving half of it in the ledger, Ctrl-D leaving."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import PMM
from conftest import mind_kinds as kinds
from terminal import ANSI, Terminal


@pytest.fixture
def term(mind: Path):
    env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
    terminal = Terminal([PMM, "--mind", str(mind), "chat", "--max-tokens", "300"], env)
    yield terminal
    terminal.kill()


def test_a_session_answers_runs_commands_and_leaves_on_ctrl_d(term: Terminal, mind: Path,
                                                               private_dirs: Path) -> None:
    at = term.expect(r"Talking to Test through embedded")
    at = term.expect(r"you>", after=at)
    term.send("/help\r")
    at = term.expect(r"/trace \[ID\]", after=at)
    term.send("Say hello in five words.\r")
    term.until(lambda: kinds(mind)[-1] == "response_sent", timeout=120, what="the answer")
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
    assert term.wait() == 0
    history = private_dirs / "state" / "pmm" / "chat_history"
    assert "Say hello in five words." in history.read_text()


def test_ctrl_c_cancels_the_answer_and_saves_nothing_of_the_turn(term: Terminal, mind: Path) -> None:
    at = term.expect(r"you>")
    # On a loaded machine the small model can finish before the Ctrl-C lands; then the turn is
    # simply recorded and the next attempt tries again. One attempt must be cancelled.
    for _attempt in range(3):
        before = kinds(mind)
        term.send("Write a long story about a river and a mountain, with many details.\r")
        # Once the prompt has handed the terminal back (cooked mode) and the first words of the
        # answer are on screen, interrupt it mid-stream.
        term.until(term.cooked, timeout=60, what="the prompt to finish")
        start = len(term.raw)
        term.until(lambda start=start: len(ANSI.sub(b"", term.raw[start:]).split()) >= 3, timeout=120,
                   what="the first words of the answer")
        term.send("\x03")
        term.until(lambda at=at, before=before: "answer cancelled" in term.text()[at:]
                   or (len(kinds(mind)) > len(before) and kinds(mind)[-1] == "response_sent"),
                   timeout=120, what="the cancel (or the whole answer)")
        if "answer cancelled" in term.text()[at:]:
            break
        at = term.expect(r"you>", after=len(term.text()) - 200)
    else:
        raise AssertionError("three answers finished before Ctrl-C could cancel one")
    at = term.expect(r"you>", after=at)
    assert kinds(mind) == before, "a cancelled turn left events behind"
    # The session goes on: the next turn is recorded whole.
    term.send("Hi\r")
    term.until(lambda: kinds(mind)[-1] == "response_sent" and len(kinds(mind)) > len(before),
               timeout=120, what="the answer")
    assert kinds(mind)[len(before):][-2:] == ["message_received", "response_sent"]
    term.send("/exit\r")
    assert term.wait() == 0


def test_a_stream_cut_mid_answer_is_reported_and_saves_nothing(mind: Path) -> None:
    from conftest import run_pmm
    from provider_servers import FakeServer

    with FakeServer("openai", text="A streamed answer that the server will cut in the middle.") as server:
        run_pmm("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
                "--base-url", server.url, "--use", check=True)
        env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
        term = Terminal([PMM, "--mind", str(mind), "chat"], env)
        try:
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
        finally:
            term.kill()
