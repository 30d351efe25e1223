"""End to end against a real model server: llama-cpp-python's OpenAI-compatible server running
SmolLM2-135M on 127.0.0.1. `pmm model add/use`, then a chat turn, as a user with a local server
would; the model's words are never asserted. (What pmm does with any OpenAI-compatible answer
runs on the loopback fake elsewhere; this holds that a real server's answers fit.)"""

from __future__ import annotations

from pathlib import Path

from conftest import invoke, json_data
from realmodel import llama_server, smollm2_gguf


def pmm_json(mind: Path, *args: str) -> dict:
    result = invoke("--mind", str(mind), *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json_data(result.stdout)


def test_chat_through_the_server_answers_and_records_usage(mind: Path) -> None:
    with llama_server(startup_timeout=600) as server_url:
        pmm_json(mind, "model", "add", "box", f"openai-compatible:{smollm2_gguf()}",
                 "--base-url", server_url, "--context-window", "1024")
        used = pmm_json(mind, "model", "use", "box")
        assert used["model_version"]  # the server reports the model (its `created` time)
        turn = pmm_json(mind, "chat", "--max-tokens", "16", "-m", "Hello! Say something short.")
        info = pmm_json(mind, "model", "info", "box")
    assert turn["answer"].strip() and turn["model"]["name"] == "box"
    assert turn["tokens_in"] > 10 and 0 < turn["tokens_out"] <= 16 and turn["latency_ms"] > 0
    assert info["roles"] == ["chat", "reflection"] and info["reported"]["version"]
    assert pmm_json(mind, "verify", "--deep")["ok"]


def test_the_readme_s_llama_cpp_line_works_without_warnings(mind: Path) -> None:
    """The README's `openai-compatible:NAME` against `python -m llama_cpp.server`, which lists the
    model under its GGUF path: no warning on `use`, reachable in `info`, and a chat turn."""
    with llama_server(startup_timeout=600) as server_url:
        invoke("--mind", str(mind), "model", "add", "box", "openai-compatible:smollm", "--base-url", server_url)
        used = invoke("--mind", str(mind), "model", "use", "box")
        info = json_data(invoke("--mind", str(mind), "model", "info", "box", "--json").stdout)
        turn = invoke("--mind", str(mind), "chat", "--max-tokens", "8", "-m", "Hi")
    assert used.exit_code == 0 and "Warning" not in used.stderr, used.stderr
    assert info["reachable"] is True and info["reported"]["details"]["served_as"] == smollm2_gguf()
    assert turn.exit_code == 0 and turn.stdout.strip() and "Warning" not in turn.stderr
