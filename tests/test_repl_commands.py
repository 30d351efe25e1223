"""The REPL's slash commands come from one table: each /command runs its handler and says what
it says, /help lists the table, Tab completes its names. Driven in-process (no terminal) on a real
mind whose chat model is a fake loopback server; tests/test_chat_repl.py covers the terminal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import invoke
from provider_servers import FakeServer

from pmm.cli import repl
from pmm.services.chat import Chat


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[tuple[Chat, FakeServer]]:
    mind = tmp_path / "mind.db"
    with FakeServer("openai", text="Rivers run to the sea.") as server:
        for args in (["init", "--name", "Ada"],
                     ["model", "add", "srv", "openai-compatible:test-model", "--base-url", server.url,
                      "--use"],
                     ["commitments", "open", "Water the plants"]):
            result = invoke("--mind", str(mind), *args)
            assert result.exit_code == 0, result.output
        with Chat(mind, lambda _m: None, None, 64) as session:
            yield session, server


def said(capsys: pytest.CaptureFixture[str], chat: Chat, line: str, leaves: bool = False) -> str:
    """What ``line`` printed (the REPL speaks on stderr; stdout stays empty)."""
    capsys.readouterr()
    assert repl.dispatch(chat, line) is leaves
    out, err = capsys.readouterr()
    assert out == ""
    return err


def test_help_lists_every_command_of_the_table(chat, capsys) -> None:
    session, _ = chat
    shown = said(capsys, session, "/help")
    assert shown == repl.HELP + "\n"
    lines = shown.splitlines()
    assert lines[0] == "Commands:"
    listed = [line.split()[0] for line in lines[1:] if line.startswith("  /")]
    assert listed == list(repl.COMMANDS) == ["/help", "/model", "/models", "/new", "/retry",
                                             "/sessions", "/stats", "/usage", "/reflect", "/commitments",
                                             "/trace", "/exit"]
    assert "  /trace [ID]           why the last answer (or answer ID) is what it is" in lines
    assert "/quit" not in shown  # an alias, accepted but not listed


def test_each_command_runs_its_handler(chat, capsys) -> None:
    session, server = chat
    assert said(capsys, session, "/model") == "srv: openai-compatible:test-model\n"
    assert "  srv              openai-compatible:test-model" in said(capsys, session, "/models")
    assert said(capsys, session, "/stats").startswith(f"{session.mind.count()} events; 0 sessions, 0 messages")
    listed = said(capsys, session, "/commitments").splitlines()
    assert listed[0].startswith("Commitments: 1 opened") and listed[0].endswith(", 1 open")
    assert listed[1].split()[1:] == ["open", "Water", "the", "plants"]

    turn = session.turn("Where do rivers go?")
    assert turn.response.content == "Rivers run to the sea."
    traced = said(capsys, session, f"/trace {turn.response.id}")
    assert "Model: srv = openai-compatible:test-model" in traced
    assert said(capsys, session, "/stats").startswith(f"{turn.response.id:,} events; 1 session, 1 message")
    asked = [r for r in server.requests if r.method == "POST"]
    assert len(asked) == 1  # no command but a turn (or /reflect) asks the model for an answer


def test_errors_and_unknown_commands_are_reported_and_the_session_goes_on(chat, capsys) -> None:
    session, _ = chat
    refused = said(capsys, session, "/model nope")
    assert refused.startswith("Error: no model named 'nope'")
    assert "Hint:" in refused
    assert said(capsys, session, "/bogus now") == "unknown command /bogus; /help lists them\n"
    assert said(capsys, session, "/exit", leaves=True) == ""
    assert said(capsys, session, "/quit", leaves=True) == ""
    assert said(capsys, session, "/model") == "srv: openai-compatible:test-model\n"  # still usable


def test_tab_completes_the_names_in_the_table() -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    assert repl.completions("/") == list(repl.COMMANDS)
    assert repl.completions("/mo") == ["/model", "/models"]
    assert repl.completions("/co") == ["/commitments"]
    assert repl.completions("/model x") == []  # past the name: nothing to complete
    assert repl.completions("hello /mo") == []
    offered = list(repl._completer().get_completions(Document("/ref"), CompleteEvent(completion_requested=True)))
    assert [(c.text, c.start_position) for c in offered] == [("/reflect", -4)]
    assert repl.completions("/re") == ["/retry", "/reflect"]


def test_usage_shows_the_last_answer_the_run_prices_and_caps(chat, capsys) -> None:
    session, server = chat
    shown = said(capsys, session, "/usage")
    assert "No answer in this run yet." in shown and "srv has no prices: pmm model set srv --price-in" in shown
    result = invoke("--mind", str(session.mind.path), "model", "set", "srv", "--price-in", "2", "--price-out", "10",
                    "--max-cost", "1", "--currency", "EUR")
    assert result.exit_code == 0, result.output
    session.budget.limit = 0.5
    session.turn("Where do rivers go?")
    shown = said(capsys, session, "/usage")
    assert "Last answer: 12 in / 5 out, 0.000074 EUR" in shown and "This run: 1 answer, 12 in / 5 out" in shown
    assert "srv costs 2 in, 10 out, 2 cache read, 2 cache write per million tokens (EUR)" in shown
    assert "Daily cap: 0.000074 EUR of 1.0000 EUR spent today (UTC)" in shown
    assert "--budget 0.5: 0.000074 EUR spent" in shown
