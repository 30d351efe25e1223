"""`pmm model` end to end: models are events in the mind, `use` records the provider's model
digest, the conversation and the mind's identity carry over when the model changes, keys never
enter the mind, and switches from several processes at once keep one valid chain."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import PMM, cli_json, json_data, run_in, run_pmm
from conftest import mind_events as events
from provider_servers import FakeServer


def test_with_nothing_configured_the_embedded_model_is_in_use(mind: Path) -> None:
    listing = cli_json(mind, "model", "list")
    assert listing["active"] == {"chat": "embedded", "reflection": "embedded"}
    assert listing["models"][0] == {"name": "embedded", "provider": "local",
                                    "model": "SmolLM2-135M-Instruct", "builtin": True, "trusted": True}
    text = run_in("--mind", str(mind), "model", "list", check=True).stdout.decode()
    assert text.startswith("* embedded")


def test_switching_models_keeps_the_identity_and_the_conversation(mind: Path) -> None:
    with FakeServer("ollama", text="Ollama here, hello.") as ollama, \
            FakeServer("anthropic", text="Claude here, I remember.") as claude:
        added = cli_json(mind, "model", "add", "llama", f"ollama:{ollama.model}", "--base-url", ollama.url)
        assert added["provider"] == "ollama"
        used = cli_json(mind, "model", "use", "llama")
        assert used["model_hash"] == "sha256:" + "a" * 64  # the digest /api/tags reported
        first = cli_json(mind, "chat", "-m", "Remember the word marmalade.")
        assert first["answer"] == "Ollama here, hello." and first["model"]["name"] == "llama"

        cli_json(mind, "model", "add", "claude", "anthropic:claude-test", "--base-url", claude.url)
        cli_json(mind, "model", "use", "claude")
        second = cli_json(mind, "chat", "-m", "Which word did I ask you to remember?")
        assert second["answer"] == "Claude here, I remember."
        body = claude.requests[-1].body
        # The same mind: its name in the system prompt, the earlier turn in the messages.
        assert "You are Test" in body["system"][0]["text"]
        said = json.dumps(body["messages"])
        assert "marmalade" in said and "Ollama here, hello." in said
        assert set(second["context"]) >= {first["message_id"], first["response_id"]}

    switches = events(mind, "model_switched")
    assert [(s["meta"]["name"], s["meta"]["role"]) for s in switches] == [("llama", "chat"), ("claude", "chat")]
    responses = events(mind, "response_sent")
    assert [(r["meta"]["provider"], r["meta"]["model_name"]) for r in responses] == [
        ("ollama", "llama"), ("anthropic", "claude")]
    assert run_in("--mind", str(mind), "verify").returncode == 0


def test_models_travel_with_an_export(mind: Path, tmp_path: Path) -> None:
    run_in("--mind", str(mind), "model", "add", "gpt", "openai:gpt-4o-mini", check=True)
    run_in("--mind", str(mind), "model", "use", "gpt", "--for", "reflection", check=True)  # unreachable: a warning
    export = run_in("--mind", str(mind), "export", check=True).stdout
    copy = tmp_path / "copy.db"
    run_in("--mind", str(copy), "import", "-", input=export, check=True)
    listing = cli_json(copy, "model", "list")
    assert listing["active"] == {"chat": "embedded", "reflection": "gpt"}
    # the same mind on the same machine: its owner added the model here, so it stays trusted
    assert {"name": "gpt", "provider": "openai", "model": "gpt-4o-mini", "builtin": False,
            "trusted": True} in listing["models"]


def test_use_of_an_unreachable_provider_warns_and_records_no_hash(mind: Path) -> None:
    run_in("--mind", str(mind), "model", "add", "far", "openai-compatible:x",
            "--base-url", "http://127.0.0.1:9/v1", check=True)
    result = run_in("--mind", str(mind), "model", "use", "far")
    assert result.returncode == 0
    assert b"Warning: could not ask" in result.stderr
    (switch,) = events(mind, "model_switched")
    assert "model_hash" not in switch["meta"]


def test_bad_model_commands_are_refused_without_writing(mind: Path) -> None:
    before = events(mind)
    for args, needle in (
        (["model", "add", "x", "nonsense"], b"PROVIDER:MODEL"),
        (["model", "add", "x", "openai-compatible:m"], b"--base-url"),
        (["model", "add", "bad name", "ollama:m"], b"bad model name"),
        (["model", "add", "embedded", "ollama:m"], b"built-in"),
        (["model", "add", "x", "ollama:m", "--api-key-env", "sk-abc def"], b"variable's name"),
        (["model", "use", "nope"], b"no model named"),
        (["model", "use", "ollama:llama3"], b"pmm model add NAME ollama:llama3"),
        (["model", "remove", "embedded"], b"built in"),
        (["model", "remove", "nope"], b"no model named"),
    ):
        result = run_in("--mind", str(mind), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
        assert b"Traceback" not in result.stderr
    assert events(mind) == before
    run_in("--mind", str(mind), "model", "add", "x", "ollama:m", check=True)
    duplicate = run_in("--mind", str(mind), "model", "add", "x", "ollama:other")
    assert duplicate.returncode == 2 and b"already exists" in duplicate.stderr
    run_in("--mind", str(mind), "model", "use", "x", check=True)
    in_use = run_in("--mind", str(mind), "model", "remove", "x")
    assert in_use.returncode == 2 and b"in use for chat" in in_use.stderr
    run_in("--mind", str(mind), "model", "use", "embedded", check=True)
    run_in("--mind", str(mind), "model", "remove", "x", check=True)
    assert [m["name"] for m in cli_json(mind, "model", "list")["models"]] == ["embedded"]


def test_a_planted_key_never_reaches_the_mind_an_export_or_stderr(mind: Path) -> None:
    key = "sk-planted-4f1c9e7d2b8a6035"
    env = {"PLANTED_KEY": key}
    with FakeServer("openai", text="Keys stay outside.") as server:
        run_in("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
                "--base-url", server.url, "--api-key-env", "PLANTED_KEY", "--use", env=env, check=True)
        ok = run_in("--mind", str(mind), "chat", "-m", "hello", env=env)
        assert ok.returncode == 0, ok.stderr.decode()
        assert server.requests[-1].headers.get("authorization") == f"Bearer {key}"  # it was used
        server.push("401")
        # a real process: exit 5, and the key absent from what a shell would capture
        denied = run_pmm("--mind", str(mind), "chat", "-m", "hello again", env=env)
        assert denied.returncode == 5 and b"PLANTED_KEY" in denied.stderr
        info = run_in("--mind", str(mind), "model", "info", "srv", "--json", env=env)
        exported = run_in("--mind", str(mind), "export", env=env).stdout
        held = subprocess.Popen([PMM, "--mind", str(mind), "chat", "-m", "third"], env={**__import__("os").environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = held.communicate(timeout=60)
    secret = key.encode()
    for name, blob in (("stderr", ok.stderr + denied.stderr + info.stderr + err), ("stdout", ok.stdout + info.stdout + out),
                       ("export", exported)):
        assert secret not in blob, f"the key leaked into {name}"
    for path in mind.parent.iterdir():
        if path.is_file():
            assert secret not in path.read_bytes(), f"the key leaked into {path.name}"
    assert b"PLANTED_KEY" in exported  # the variable's name travels; its value does not


def test_four_processes_switching_at_once_keep_one_valid_chain(mind: Path) -> None:
    for name in ("a", "b", "c", "d"):
        run_in("--mind", str(mind), "model", "add", name, f"local:/nowhere/{name}.gguf", check=True)
    procs = [subprocess.Popen([PMM, "--mind", str(mind), "model", "use", name, "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name in ("a", "b", "c", "d") * 5]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
    switches = events(mind, "model_switched")
    # A switch to the model already in use appends nothing, decided inside the append's transaction.
    appended = [json_data(out.decode())["event_id"] for _, out, _ in results]
    assert len(switches) == len([i for i in appended if i is not None]) >= 4
    assert sorted(i for i in appended if i is not None) == [s["id"] for s in switches]
    assert all(a["meta"]["name"] != b["meta"]["name"] for a, b in zip(switches, switches[1:], strict=False))
    assert sorted({s["id"] for s in switches}) == [s["id"] for s in switches]
    final = cli_json(mind, "model", "list")["active"]["chat"]
    assert final == switches[-1]["meta"]["name"]
    report = json_data(run_in("--mind", str(mind), "verify", "--deep", "--json").stdout)
    assert report["ok"]
