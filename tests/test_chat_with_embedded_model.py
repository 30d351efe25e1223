"""`pmm chat` with no configuration answers through the embedded SmolLM2 model, in-process.

Real model, real CLI, real mind file. The model's words are never asserted, only behaviour:
the answer alone on stdout, the turn recorded with its usage and context, the chain intact.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import mind_events as events
from conftest import run_pmm

FAST = ["--max-tokens", "24"]



def test_one_turn_prints_only_the_answer_and_records_the_turn(mind: Path) -> None:
    result = run_pmm("--mind", str(mind), "chat", "-m", "Hello, who are you?", *FAST)
    assert result.returncode == 0, result.stderr.decode()
    answer = result.stdout.decode().strip()
    assert answer
    new = events(mind)[1:]
    assert [e["kind"] for e in new] == ["session_started", "message_received", "response_sent"]
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


def test_piped_stdin_is_one_turn_and_json_gives_an_envelope(mind: Path) -> None:
    result = run_pmm("--mind", str(mind), "chat", "--json", *FAST, input="Tell me about rivers.\n")
    assert result.returncode == 0, result.stderr.decode()
    envelope = json.loads(result.stdout)
    assert envelope["answer"].strip()
    assert envelope["model"]["name"] == "embedded"
    assert envelope["response_id"] == envelope["message_id"] + 1
    stored = {e["id"]: e for e in events(mind)}
    assert stored[envelope["message_id"]]["content"] == "Tell me about rivers."
    assert stored[envelope["response_id"]]["content"] == envelope["answer"]
    assert envelope["tokens_out"] > 0 and envelope["latency_ms"] > 0


def test_later_turns_see_earlier_turns_and_recall_notes(mind: Path) -> None:
    first = json.loads(run_pmm("--mind", str(mind), "chat", "--json", "-m", "My favourite colour is teal.",
                               *FAST, check=True).stdout)
    note = run_pmm("--mind", str(mind), "remember", "--json", "The cat is called Quimbleworth",
                   check=True)
    note_id = json.loads(note.stdout)["id"]
    second = json.loads(run_pmm("--mind", str(mind), "chat", "--json", "-m",
                                "What is Quimbleworth?", *FAST, check=True).stdout)
    # The previous turn is in the context (recent turns), the note by full-text recall.
    assert {first["message_id"], first["response_id"]} <= set(second["context"])
    assert note_id in second["context"]
    trace = json.loads(run_pmm("--mind", str(mind), "trace", str(second["response_id"]), "--json",
                               check=True).stdout)
    assert [c["id"] for c in trace["context"]] == second["context"]
    assert trace["message"]["text"] == "What is Quimbleworth?"


def test_bad_requests_are_refused_before_anything_is_written(mind: Path) -> None:
    before = events(mind)
    empty = run_pmm("--mind", str(mind), "chat", "-m", "   ")
    assert empty.returncode == 2 and b"empty" in empty.stderr
    unknown = run_pmm("--mind", str(mind), "chat", "-m", "hi", "--model", "nope")
    assert unknown.returncode == 2 and b"nope" in unknown.stderr
    assert b"Traceback" not in unknown.stderr + empty.stderr
    assert events(mind) == before


def test_a_missing_model_file_is_a_provider_error_and_writes_no_turn(mind: Path, tmp_path: Path) -> None:
    run_pmm("--mind", str(mind), "model", "add", "gone", f"local:{tmp_path / 'gone.gguf'}", check=True)
    run_pmm("--mind", str(mind), "model", "use", "gone", check=True)
    before = events(mind)
    result = run_pmm("--mind", str(mind), "chat", "-m", "hello", *FAST)
    assert result.returncode == 5
    assert b"gone.gguf" in result.stderr and len(result.stderr.decode().strip().splitlines()) <= 2
    assert events(mind) == before


def test_chat_creates_the_default_mind_on_first_use(tmp_path: Path) -> None:
    result = run_pmm("chat", "-m", "hi", *FAST)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Created a new mind" in result.stderr
    assert result.stdout.strip()
