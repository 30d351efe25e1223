"""`pmm chat` one-shot: with no configuration it creates the default mind and answers through the
embedded SmolLM2 model (the smoke test of this surface, real model, real process); the rest of
pmm's one-shot behaviour (the answer alone on stdout, the JSON envelope, context, refusals) runs
on a loopback fake of the OpenAI protocol, since it is about pmm, not the model.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import invoke, json_data, run_pmm
from conftest import mind_events as events
from provider_servers import FakeServer

REAL_MODEL = 600  # seconds: the embedded model on a machine whose cores are busy elsewhere
ANSWER = "Hello, I am a small test model."


def test_chat_creates_the_default_mind_and_the_embedded_model_answers_one_turn(private_dirs: Path) -> None:
    result = run_pmm("chat", "-m", "Hello, who are you?", "--max-tokens", "24", timeout=REAL_MODEL)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Created a new mind" in result.stderr
    answer = result.stdout.decode().strip()
    assert answer
    (mind,) = private_dirs.rglob("mind.db")
    new = [e for e in events(mind) if e["kind"] in ("session_started", "message_received", "response_sent")]
    assert [e["kind"] for e in new] == ["session_started", "message_received", "response_sent"]
    assert new[-1]["id"] == events(mind)[-1]["id"]
    session, message, response = new
    assert message["content"] == "Hello, who are you?"
    assert response["content"].strip() == answer
    meta = response["meta"]
    assert meta["provider"] == "local" and meta["model"] == "SmolLM2-135M-Instruct"
    assert meta["model_name"] == "embedded"
    assert meta["reply_to"] == message["id"]
    assert meta["session"] == message["meta"]["session"] == session["meta"]["session"]
    assert meta["tokens_in"] > 10 and 0 < meta["tokens_out"] <= 24
    assert meta["latency_ms"] > 0
    assert re.fullmatch(r"[0-9a-f]{16}", meta["prompt_xxh3"])
    assert run_pmm("--mind", str(mind), "verify").returncode == 0


@pytest.fixture
def server(mind: Path):
    with FakeServer("openai", text=ANSWER) as fake:
        added = invoke("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
                       "--base-url", fake.url, "--use")
        assert added.exit_code == 0, added.stderr
        yield fake


def chat(mind: Path, *args: str, input: str | None = None) -> dict:
    result = invoke("--mind", str(mind), "chat", "--json", *args, input=input)
    assert result.exit_code == 0, result.stderr
    return json_data(result.stdout)


def test_one_turn_prints_only_the_answer_and_records_the_turn(mind: Path, server: FakeServer) -> None:
    before = events(mind)[-1]["id"]
    result = run_pmm("--mind", str(mind), "chat", "-m", "Hello, who are you?")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == ANSWER
    new = events(mind, since=before + 1)
    assert [e["kind"] for e in new] == ["session_started", "message_received", "response_sent"]
    session, message, response = new
    meta = response["meta"]
    assert meta["provider"] == "openai-compatible" and meta["model"] == "test-model"
    assert meta["model_name"] == "srv" and meta["reply_to"] == message["id"]
    assert meta["session"] == message["meta"]["session"] == session["meta"]["session"]
    assert meta["tokens_in"] > 10 and meta["tokens_out"] > 0 and meta["latency_ms"] > 0
    assert re.fullmatch(r"[0-9a-f]{16}", meta["prompt_xxh3"])
    assert server.requests[-1].body["max_tokens"] > 0
    assert invoke("--mind", str(mind), "verify").exit_code == 0


def test_piped_stdin_is_one_turn_and_json_gives_an_envelope(mind: Path, server: FakeServer) -> None:
    envelope = chat(mind, input="Tell me about rivers.\n")
    assert envelope["answer"] == ANSWER
    assert envelope["model"]["name"] == "srv"
    assert envelope["response_id"] == envelope["message_id"] + 1
    stored = {e["id"]: e for e in events(mind)}
    assert stored[envelope["message_id"]]["content"] == "Tell me about rivers."
    assert stored[envelope["response_id"]]["content"] == envelope["answer"]
    assert envelope["tokens_out"] > 0 and envelope["latency_ms"] > 0


def test_later_turns_see_earlier_turns_and_recall_notes(mind: Path, server: FakeServer) -> None:
    first = chat(mind, "-m", "My favourite colour is teal.")
    note_id = json_data(invoke("--mind", str(mind), "remember", "--json",
                                "The cat is called Quimbleworth").stdout)["id"]
    second = chat(mind, "-m", "What is Quimbleworth?")
    # The previous turn is in the context (recent turns), the note by full-text recall.
    assert {first["message_id"], first["response_id"]} <= set(second["context"])
    assert note_id in second["context"]
    sent = "\n".join(m["content"] for m in server.requests[-1].body["messages"])
    assert "Quimbleworth" in sent and "teal" in sent
    trace = json_data(invoke("--mind", str(mind), "trace", str(second["response_id"]), "--json").stdout)
    assert [c["id"] for c in trace["context"]] == second["context"]
    assert trace["message"]["text"] == "What is Quimbleworth?"


def test_bad_requests_are_refused_before_anything_is_written(mind: Path) -> None:
    before = events(mind)
    empty = invoke("--mind", str(mind), "chat", "-m", "   ")
    assert empty.exit_code == 2 and "empty" in empty.stderr
    unknown = invoke("--mind", str(mind), "chat", "-m", "hi", "--model", "nope")
    assert unknown.exit_code == 2 and "nope" in unknown.stderr
    assert "Traceback" not in unknown.stderr + empty.stderr
    assert events(mind) == before


def test_a_missing_model_file_is_a_provider_error_and_writes_no_turn(mind: Path, tmp_path: Path) -> None:
    added = invoke("--mind", str(mind), "model", "add", "gone", f"local:{tmp_path / 'gone.gguf'}", "--use")
    assert added.exit_code == 0, added.stderr
    before = events(mind)
    result = run_pmm("--mind", str(mind), "chat", "-m", "hello")
    assert result.returncode == 5
    assert b"gone.gguf" in result.stderr and len(result.stderr.decode().strip().splitlines()) <= 2
    assert events(mind) == before
