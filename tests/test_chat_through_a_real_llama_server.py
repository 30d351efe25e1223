"""End to end against a real model server: llama-cpp-python's OpenAI-compatible server running
SmolLM2-135M on 127.0.0.1. `pmm model add/use` then `pmm chat`, as a user with a local server
would; the model's words are never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_pmm
from realmodel import llama_server, smollm2_gguf


@pytest.fixture(scope="module")
def server_url():
    with llama_server() as url:
        yield url


def test_chat_through_the_server_records_usage_and_continues_the_mind(mind: Path, server_url: str) -> None:
    run_pmm("--mind", str(mind), "model", "add", "box", f"openai-compatible:{smollm2_gguf()}",
            "--base-url", server_url, "--context-window", "1024", check=True)
    used = json.loads(run_pmm("--mind", str(mind), "model", "use", "box", "--json", check=True).stdout)
    assert used["model_version"]  # the server reports the model (its `created` time)
    first = run_pmm("--mind", str(mind), "chat", "--json", "--max-tokens", "24", "-m", "Hello! Say something short.")
    assert first.returncode == 0, first.stderr.decode()
    turn = json.loads(first.stdout)
    assert turn["answer"].strip() and turn["model"]["name"] == "box"
    assert turn["tokens_in"] > 10 and 0 < turn["tokens_out"] <= 24 and turn["latency_ms"] > 0
    second = json.loads(run_pmm("--mind", str(mind), "chat", "--json", "--max-tokens", "24", "-m",
                                "And now one more short sentence.", check=True).stdout)
    assert {turn["message_id"], turn["response_id"]} <= set(second["context"])
    info = json.loads(run_pmm("--mind", str(mind), "model", "info", "box", "--json", check=True).stdout)
    assert info["roles"] == ["chat", "reflection"] and info["reported"]["version"]
    assert run_pmm("--mind", str(mind), "verify", "--deep").returncode == 0


def test_piped_chat_through_the_server_prints_only_the_answer(mind: Path, server_url: str) -> None:
    run_pmm("--mind", str(mind), "model", "add", "box", f"openai-compatible:{smollm2_gguf()}",
            "--base-url", server_url, "--use", check=True)
    result = run_pmm("--mind", str(mind), "chat", "--max-tokens", "16", input="What is a river?")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.strip() and not result.stdout.startswith(b"{")
