"""Sessions and conversation control, as llm's -c/--cid and aichat's sessions give them:
`pmm sessions` lists them (imported ones with their original times), `pmm chat -c` and
`--session ID` continue one (its recent turns, and only its, come back into the prompt),
`--title` names a new one, `-s` adds a system prompt for one run, `-o KEY VALUE` sets model
options that every provider receives under its own field names and that the answer records,
and `/retry` withdraws an answer so that it never enters the model's context again.

In-process, on real mind files, against loopback servers that record each request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_json, invoke, mind_events
from provider_servers import FakeServer

from pmm.services.chat import Chat

MARCH_1 = 1740823200  # 2025-03-01T10:00:00Z


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.stderr


@pytest.fixture
def served(mind: Path) -> Iterator[FakeServer]:
    with FakeServer("openai", text="An answer.") as server:
        ok("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
           "--base-url", server.url, "--use")
        yield server


def said(server: FakeServer) -> list[dict[str, Any]]:
    """The messages of the last chat request, system message included."""
    chats = [r for r in server.requests if r.method == "POST"]
    return chats[-1].body["messages"]


def chatgpt_export(path: Path) -> Path:
    def node(node_id: str, parent: str, child: str | None, role: str, text: str, at: int) -> dict[str, Any]:
        return {"id": node_id, "parent": parent, "children": [child] if child else [],
                "message": {"id": node_id, "author": {"role": role}, "create_time": at,
                            "content": {"content_type": "text", "parts": [text]}, "metadata": {}}}

    mapping = {"root": {"id": "root", "parent": None, "children": ["u1"], "message": None},
               "u1": node("u1", "root", "a1", "user", "Which bike folds smallest?", MARCH_1 + 10),
               "a1": node("a1", "u1", None, "assistant", "A Brompton folds smallest.", MARCH_1 + 70)}
    path.write_text(json.dumps([{"id": "conv-bike", "title": "Bikes", "create_time": MARCH_1,
                                 "mapping": mapping, "current_node": "a1"}]), encoding="utf-8")
    return path


def test_sessions_lists_titles_dates_and_counts_newest_last_imports_included(
        mind: Path, served: FakeServer, tmp_path: Path) -> None:
    ok("--mind", str(mind), "import", str(chatgpt_export(tmp_path / "c.json")), "--format", "chatgpt")
    ok("--mind", str(mind), "chat", "-m", "First words of the day", "--title", "Morning")
    ok("--mind", str(mind), "chat", "-m", "An untitled question")
    listed = cli_json(mind, "sessions")
    assert [s["title"] for s in listed] == ["Bikes", "Morning", "An untitled question"]
    assert [s["titled"] for s in listed] == [True, True, False]
    assert [s["messages"] for s in listed] == [2, 2, 2]
    bikes = listed[0]
    assert bikes["session"] == "conv-bike" and bikes["source"] == "chatgpt"
    assert bikes["first_said"].startswith("2025-03-01T10:00:00") and bikes["last_said"].startswith("2025-03-01T10:01:10")
    assert [s["session"] for s in cli_json(mind, "sessions", "--limit", "1")] == [listed[-1]["session"]]
    assert [s["title"] for s in cli_json(mind, "sessions", "--newest-first")][0] == "An untitled question"
    text = ok("--mind", str(mind), "sessions").splitlines()
    assert len(text) == 3 and text[0].startswith("conv-bike  2025-03-01 10:00 – 10:01  2 messages [chatgpt]  Bikes")
    assert text[-1].startswith(listed[-1]["session"][:12])


def test_continue_and_session_bring_back_that_sessions_turns_only(mind: Path, served: FakeServer) -> None:
    ok("--mind", str(mind), "chat", "-m", "My cat is called Miso", "--title", "Cats")
    first = cli_json(mind, "sessions")[0]["session"]
    ok("--mind", str(mind), "chat", "-m", "Unrelated talk about tea")
    second = cli_json(mind, "sessions")[-1]["session"]
    turn = cli_json(mind, "chat", "--session", first[:8], "-m", "What is my cat called?")
    assert turn["session"] == first
    contents = " ".join(m["content"] for m in said(served)[1:])
    assert "My cat is called Miso" in contents and "tea" not in contents
    # -c: the session with the newest activity, now the cat one again
    assert cli_json(mind, "chat", "-c", "-m", "And again?")["session"] == first
    assert "What is my cat called?" in " ".join(m["content"] for m in said(served))
    starts = [e for e in mind_events(mind) if e["kind"] == "session_started"]
    assert len(starts) == 2 and starts[0]["content"] == "Cats"  # continuing starts nothing new
    assert [(s["session"], s["messages"]) for s in cli_json(mind, "sessions")] == [(second, 2), (first, 6)]
    # a plain run still sees the mind's latest turns, as before
    ok("--mind", str(mind), "chat", "-m", "Plain")
    assert "And again?" in " ".join(m["content"] for m in said(served))


def test_continue_and_session_refuse_what_is_not_there(mind: Path, served: FakeServer) -> None:
    assert "no session to continue" in refused("--mind", str(mind), "chat", "-c", "-m", "hi")
    assert "there is no session 'nope'" in refused("--mind", str(mind), "chat", "--session", "nope", "-m", "hi")
    assert "--title names a new session" in refused("--mind", str(mind), "chat", "-c", "--title", "T", "-m", "hi")
    assert [e["kind"] for e in mind_events(mind)].count("message_received") == 0


def test_a_system_prompt_for_one_run_is_added_after_the_identity(mind: Path, served: FakeServer) -> None:
    ok("--mind", str(mind), "chat", "-m", "hello", "-s", "Answer only in French.")
    system = said(served)[0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are Test, a persistent mind.")
    assert "Answer only in French." in system["content"]
    ok("--mind", str(mind), "chat", "-m", "hello again")
    assert "French" not in said(served)[0]["content"]  # for that run only


@pytest.mark.parametrize(("protocol", "path"), [("openai", "body"), ("ollama", "options"),
                                                ("anthropic", "body")])
def test_model_options_reach_every_protocol_under_its_own_names_and_are_recorded(
        mind: Path, protocol: str, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    spec = {"openai": "openai-compatible:test-model", "ollama": "ollama:test-model",
            "anthropic": "anthropic:test-model"}[protocol]
    with FakeServer(protocol, text="Options heard.") as server:
        ok("--mind", str(mind), "model", "add", "srv", spec, "--base-url", server.url, "--use")
        given = ["-o", "temperature", "0.2", "-o", "top_p=0.5", "-o", "max_tokens", "40"]
        given += (["-o", "seed", "7", "-o", "frequency_penalty", "-0.5"] if protocol != "anthropic"
                  else ["-o", "top_k", "3"])
        turn = cli_json(mind, "chat", "-m", "hello", *given)
        body = [r for r in server.requests if r.method == "POST"][-1].body
    fields = body["options"] if path == "options" else body
    assert fields["temperature"] == 0.2 and fields["top_p"] == 0.5
    assert fields["num_predict" if protocol == "ollama" else "max_tokens"] == 40
    if protocol == "anthropic":
        assert fields["top_k"] == 3 and "seed" not in fields
    else:
        assert fields["seed"] == 7 and fields["frequency_penalty"] == -0.5
    response = [e for e in mind_events(mind) if e["id"] == turn["response_id"]][0]
    recorded = ["max_tokens=40", "temperature=0.2", "top_p=0.5"]
    recorded += ["seed=7", "frequency_penalty=-0.5"] if protocol != "anthropic" else ["top_k=3"]
    assert response["meta"]["options"] == sorted(recorded)
    assert cli_json(mind, "trace", str(turn["response_id"]))["options"] == sorted(recorded)
    assert "Options: " + ", ".join(sorted(recorded)) in ok("--mind", str(mind), "trace", str(turn["response_id"]))


def test_the_local_provider_passes_each_option_it_takes_by_a_name_llama_cpp_knows() -> None:
    """The embedded model's options go to llama-cpp-python's create_chat_completion as keyword
    arguments: each name must be one of its parameters (a wrong one would be a TypeError)."""
    import inspect

    llama_cpp = pytest.importorskip("llama_cpp")
    from pmm.providers import options

    taken = set(inspect.signature(llama_cpp.Llama.create_chat_completion).parameters)
    chosen = {name: 1 for name in options.OPTIONS if name not in options.IN_REQUEST}
    assert options.unsupported(chosen, None) == []
    assert set(options.fields(chosen, options.LOCAL)) <= taken


def test_bad_or_unsupported_options_are_usage_errors_before_any_request(
        mind: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    with FakeServer("anthropic") as server:
        ok("--mind", str(mind), "model", "add", "srv", "anthropic:test-model", "--base-url", server.url, "--use")
        before = len(mind_events(mind))
        assert "unknown model option 'warmth'" in refused("--mind", str(mind), "chat", "-m", "hi", "-o", "warmth", "1")
        assert "temperature must be from 0 to 2" in refused("--mind", str(mind), "chat", "-m", "hi", "-o", "temperature", "3")
        assert "takes a number" in refused("--mind", str(mind), "chat", "-m", "hi", "-o", "top_p", "high")
        assert "takes an integer" in refused("--mind", str(mind), "chat", "-m", "hi", "-o", "seed", "1.5")
        assert "needs a value" in refused("--mind", str(mind), "chat", "-m", "hi", "-o", "seed")
        assert "takes no seed option" in refused("--mind", str(mind), "chat", "-m", "hi", "-o", "seed", "7")
        assert "unexpected argument 'stray'" in refused("--mind", str(mind), "chat", "-m", "hi", "stray")
        assert not [r for r in server.requests if r.method == "POST"]
        assert len(mind_events(mind)) == before


def test_retry_withdraws_the_answer_and_it_never_enters_the_context_again(mind: Path, served: FakeServer) -> None:
    served.text = "Paris is the capital of Spain."
    with Chat(mind, lambda _m: None, None, 64) as chat:
        first = chat.turn("What is the capital of France?")
        served.text = "Paris is the capital of France."
        again = chat.retry()
        assert again.message.id == first.message.id
        asked = said(served)
        assert asked[-1]["content"].endswith("What is the capital of France?")
        assert not any("Spain" in m["content"] for m in asked)
        assert [m["content"] for m in asked[1:]].count("What is the capital of France?") == 1
        served.text = "You asked about France."
        chat.turn("capital of Spain? what did I ask about")
    events = mind_events(mind)
    withdrawn = [e for e in events if e["kind"] == "response_withdrawn"]
    assert len(withdrawn) == 1
    assert withdrawn[0]["meta"]["response"] == first.response.id
    assert withdrawn[0]["meta"]["message"] == first.message.id
    assert [e for e in events if e["id"] == again.response.id][0]["meta"]["reply_to"] == first.message.id
    assert first.response.id in [e["id"] for e in events]  # superseded, never deleted
    after = said(served)
    assert not any("capital of Spain." in m["content"] for m in after)  # neither recent nor recalled
    assert any("Paris is the capital of France." in m["content"] for m in after)
    assert cli_json(mind, "sessions")[0]["messages"] == 4  # the withdrawn answer is not counted


def test_retry_fails_cleanly_when_there_is_nothing_to_retry_or_the_model_fails(
        mind: Path, served: FakeServer) -> None:
    from pmm import errors

    with Chat(mind, lambda _m: None, None, 64) as chat:
        with pytest.raises(errors.UsageError, match="no answer in this session"):
            chat.retry()
        chat.turn("hello")
        before = mind_events(mind)
        served.push("500")
        served.push("500")
        served.push("500")
        served.push("500")
        with pytest.raises(errors.ProviderError):
            chat.retry()
        assert mind_events(mind) == before
        chat.new()
        with pytest.raises(errors.UsageError, match="no answer in this session"):
            chat.retry()


def test_continue_takes_the_latest_conversation_not_an_old_one_imported_after_it(
        mind: Path, served: FakeServer, tmp_path: Path) -> None:
    ok("--mind", str(mind), "chat", "-m", "Today's question", "--title", "Today")
    today = cli_json(mind, "sessions")[-1]["session"]
    ok("--mind", str(mind), "import", str(chatgpt_export(tmp_path / "c.json")))  # said in 2025
    assert [s["title"] for s in cli_json(mind, "sessions")] == ["Bikes", "Today"]
    assert cli_json(mind, "chat", "-c", "-m", "Where were we?")["session"] == today


def test_continue_or_session_on_a_mind_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    for how in (["-c"], ["--session", "abc123"]):
        absent = tmp_path / "none" / "mind.db"
        assert "no session to continue" in refused("--mind", str(absent), "chat", *how, "-m", "hi")
        assert not absent.exists() and not absent.parent.exists()


def test_a_promise_in_a_withdrawn_answer_is_dropped_with_it(mind: Path, served: FakeServer) -> None:
    served.text = "I will send you the report tomorrow."
    with Chat(mind, lambda _m: None, None, 64) as chat:
        chat.turn("Can you help with the report?")
        (promised,) = opened(mind)
        served.text = "Here is the report outline now."
        chat.retry()
    assert "send you the report" not in json.dumps(said(served))  # nor in the new answer's prompt
    assert opened(mind) == []
    dropped = mind_events(mind, "commitment_dropped")
    assert [e["meta"]["commitment"] for e in dropped] == [promised["id"]]


def opened(mind: Path) -> list[dict[str, Any]]:
    return [c for c in cli_json(mind, "commitments", "list")["commitments"] if c["status"] == "open"]
