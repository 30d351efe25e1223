"""`pmm trace` explains an answer: the message, the context events the model saw, the model,
tokens and latency; by response id, message id, session id or `last`; imported answers too."""

from __future__ import annotations

from pathlib import Path

from conftest import cli_json, run_in
from provider_servers import FakeServer

DATA = Path(__file__).parent / "data"


def test_trace_by_response_message_session_and_last(mind: Path) -> None:
    with FakeServer("openai", text="Teal is a fine colour.") as server:
        run_in("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
                "--base-url", server.url, "--use", check=True)
        note = cli_json(mind, "remember", "Favourite colour: teal")
        first = cli_json(mind, "chat", "-m", "What is my favourite colour, teal or red?")
    by_response = cli_json(mind, "trace", str(first["response_id"]))
    assert by_response["kind"] == "turn"
    assert by_response["message"]["text"] == "What is my favourite colour, teal or red?"
    assert by_response["response"]["text"] == "Teal is a fine colour."
    assert by_response["model"] == {"name": "srv", "provider": "openai-compatible", "model": "test-model"}
    assert by_response["tokens_in"] == 12 and by_response["tokens_out"] > 0
    assert by_response["latency_ms"] > 0 and len(by_response["prompt_xxh3"]) == 16
    assert [c["id"] for c in by_response["context"]] == [note["id"]]
    assert by_response["context"][0]["kind"] == "observation_recorded"
    assert by_response["changed"] == []
    assert cli_json(mind, "trace", str(first["message_id"])) == by_response
    assert cli_json(mind, "trace", "last") == by_response
    assert cli_json(mind, "trace") == by_response
    session = cli_json(mind, "trace", first["session"])
    assert session["kind"] == "session" and [t["response"]["id"] for t in session["turns"]] == [first["response_id"]]
    text = run_in("--mind", str(mind), "trace", str(first["response_id"]), check=True).stdout.decode()
    for needle in ("Asked (#", "Model: srv = openai-compatible:test-model", "tokens in",
                   f"#{note['id']} observation_recorded", "Changed:"):
        assert needle in text


def test_trace_of_an_imported_answer_says_what_was_not_recorded(mind: Path) -> None:
    run_in("--mind", str(mind), "import", "--format", "chatgpt", str(DATA / "chatgpt_conversations.json"), check=True)
    last = cli_json(mind, "trace")
    assert last["source"] == "chatgpt" and last["message"] is not None
    text = run_in("--mind", str(mind), "trace", check=True).stdout.decode()
    assert "Imported from chatgpt" in text


def test_trace_refuses_what_it_cannot_explain(mind: Path) -> None:
    for args, code, needle in ((["trace"], 2, b"no answers yet"), (["trace", "1"], 2, b"mind_created"),
                               (["trace", "999"], 2, b"no event 999"), (["trace", "x!"], 2, b"neither"),
                               (["trace", "abcdef0123"], 2, b"no session")):
        result = run_in("--mind", str(mind), *args)
        assert result.returncode == code and needle in result.stderr, (args, result.stderr)
