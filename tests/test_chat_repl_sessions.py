"""The REPL's conversation control on a real terminal: /retry asks again and the withdrawn
answer leaves the model's context, /new starts a session whose recent turns start empty,
`exit` or `quit` alone leave (never sent to the model), Ctrl-X Ctrl-E takes the input from
$EDITOR, and each mind keeps its own input history. The model is a loopback fake that records
every request."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import PMM, invoke, mind_events
from conftest import mind_kinds as kinds
from provider_servers import FakeServer
from terminal import Terminal

from pmm.cli import repl

ENV = {"TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}


def on_a_terminal(mind: Path, env: dict[str, str] | None = None) -> Terminal:
    return Terminal([PMM, "--mind", str(mind), "chat"], {**os.environ, **ENV, **(env or {})})


def fake_for(mind: Path, server: FakeServer) -> None:
    added = invoke("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
                   "--base-url", server.url, "--use")
    assert added.exit_code == 0, added.stderr


def sent(server: FakeServer) -> str:
    """Everything the last chat request showed the model."""
    body = [r for r in server.requests if r.method == "POST"][-1].body
    return "\n".join(m["content"] for m in body["messages"])


def answered(term: Terminal, mind: Path, count: int) -> None:
    term.until(lambda: kinds(mind).count("response_sent") == count, what=f"answer {count}")


def test_retry_new_and_exit_on_a_terminal(mind: Path) -> None:
    with FakeServer("openai", text="Wrong: the Moon is cheese.") as server:
        fake_for(mind, server)
        term = on_a_terminal(mind)
        try:
            at = term.expect(r"you>")
            term.send("What is the Moon made of?\r")
            answered(term, mind, 1)
            at = term.expect(r"Moon is cheese", after=at)
            server.text = "Rock: the Moon is mostly silicate rock."
            at = term.expect(r"you>", after=at)
            term.send("/retry\r")
            at = term.expect(r"mostly silicate rock", after=at)
            at = term.expect(r"no longer enters the model's context", after=at)
            assert "cheese" not in sent(server)
            assert kinds(mind)[-2:] == ["response_withdrawn", "response_sent"]
            at = term.expect(r"you>", after=at)
            term.send("/new Geology\r")
            at = term.expect(r"New session 'Geology'", after=at)
            at = term.expect(r"you>", after=at)
            server.text = "Fresh start."
            term.send("Hello there\r")
            answered(term, mind, 3)
            assert "Moon" not in sent(server).replace("Hello there", "")  # recent turns start empty
            starts = [e for e in mind_events(mind) if e["kind"] == "session_started"]
            assert [s["content"] for s in starts] == ["", "Geology"]
            at = term.expect(r"Fresh start", after=at)
            at = term.expect(r"you>", after=at)
            before = len(kinds(mind))
            term.send("exit\r")
            assert term.wait() == 0
            assert len(kinds(mind)) == before  # "exit" was not sent, nor kept
        finally:
            term.kill()


def test_quit_leaves_and_each_mind_keeps_its_own_history(tmp_path: Path, private_dirs: Path) -> None:
    minds = [tmp_path / "one.db", tmp_path / "two.db"]
    with FakeServer("openai", text="Noted.") as server:
        for number, mind in enumerate(minds, 1):
            assert invoke("--mind", str(mind), "init", "--name", f"M{number}").exit_code == 0
            fake_for(mind, server)
            term = on_a_terminal(mind)
            try:
                at = term.expect(r"you>")
                term.send(f"Words for mind {number}\r")
                answered(term, mind, 1)
                term.expect(r"you>", after=at + 1)
                term.send("QUIT\r")
                assert term.wait() == 0
            finally:
                term.kill()
            assert kinds(mind)[-1] == "response_sent"
    folder = private_dirs / "state" / "pmm" / "history"
    files = {}
    for number, mind in enumerate(minds, 1):
        mind_id = invoke("--mind", str(mind), "stats", "--json")
        assert mind_id.exit_code == 0
        found = [p for p in folder.iterdir() if f"Words for mind {number}" in p.read_text()]
        assert len(found) == 1
        files[number] = found[0]
    assert files[1] != files[2]
    assert "mind 2" not in files[1].read_text()
    assert not (private_dirs / "state" / "pmm" / "chat_history").exists()


def test_history_file_names_are_digests_never_paths() -> None:
    name = repl.history_name("../../etc/passwd")
    assert name == "chat-" + hashlib.sha256(b"../../etc/passwd").hexdigest()[:32]
    assert "/" not in name and name != repl.history_name("another-mind")


def test_ctrl_x_ctrl_e_takes_the_message_from_the_editor(mind: Path, tmp_path: Path) -> None:
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf "Written in the editor\\nover two lines\\n" > "$1"\n')
    editor.chmod(0o755)
    with FakeServer("openai", text="Edited text received.") as server:
        fake_for(mind, server)
        term = on_a_terminal(mind, {"EDITOR": str(editor), "VISUAL": str(editor)})
        try:
            at = term.expect(r"you>")
            term.send("draft")
            term.send("\x18\x05")  # Ctrl-X Ctrl-E
            answered(term, mind, 1)
            messages = [e["content"] for e in mind_events(mind) if e["kind"] == "message_received"]
            assert messages == ["Written in the editor\nover two lines"]
            term.expect(r"Edited text received", after=at)
            term.send("/exit\r")
            assert term.wait() == 0
        finally:
            term.kill()


@pytest.mark.parametrize("reflection_chosen", [False, True])
def test_model_in_the_repl_moves_chat_only_and_says_what_reflection_uses(
        mind: Path, capsys: pytest.CaptureFixture[str], reflection_chosen: bool) -> None:
    from pmm.services.chat import Chat

    with FakeServer("openai") as server:
        fake_for(mind, server)
        assert invoke("--mind", str(mind), "model", "add", "other", "openai-compatible:other-model",
                      "--base-url", server.url).exit_code == 0
        if reflection_chosen:
            assert invoke("--mind", str(mind), "model", "use", "srv", "--for", "reflection").exit_code == 0
        with Chat(mind, lambda _m: None, None, 64) as chat:
            capsys.readouterr()
            assert repl.dispatch(chat, "/model other") is False
            shown = capsys.readouterr().err
    switched = [e for e in mind_events(mind) if e["kind"] == "model_switched"]
    assert switched[-1]["meta"] == {"name": "other", "provider": "openai-compatible",
                                    "model": "other-model", "role": "chat"} | (
        {k: switched[-1]["meta"][k] for k in switched[-1]["meta"] if k.startswith("model_")})
    assert "Chat now uses other" in shown
    if reflection_chosen:
        assert "Reflection still uses srv (openai-compatible:test-model)." in shown
    else:
        assert "Reflection follows the chat model" in shown


def test_sessions_in_the_repl_lists_them_and_names_this_one(mind: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pmm.services.chat import Chat

    with FakeServer("openai", text="Hi.") as server:
        fake_for(mind, server)
        with Chat(mind, lambda _m: None, None, 64, title="Planning") as chat:
            capsys.readouterr()
            repl.dispatch(chat, "/sessions")
            assert capsys.readouterr().err == f"No sessions yet.\nThis session: {chat.session[:12]} (new)\n"
            chat.turn("Plan the week")
            repl.dispatch(chat, "/sessions")
            lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(chat.session[:12]) and lines[0].endswith("2 messages  Planning")
    assert lines[1] == f"This session: {chat.session[:12]}"
