"""`pmm model set NAME ...` fixes a model's settings, even while it is in use, as one new
`model_changed` event (the ledger stays append-only; replay gives the new setting); nothing
different appends nothing. Trust follows `model add`. `model use X` when X is in use already
appends nothing either."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli_json, invoke, mind_events, mind_kinds, run_in
from provider_servers import FakeServer

from pmm.domain.projections import replay


def models_of(mind: Path) -> dict[str, dict]:
    return {m["name"]: m for m in cli_json(mind, "model", "list")["models"]}


def test_a_model_in_use_is_fixed_by_a_new_event_and_chat_goes_to_the_new_address(mind: Path) -> None:
    with FakeServer("openai", text="Answer from the right server.") as server:
        wrong = server.url.replace(str(server.port), "9")  # nothing listens on port 9
        run_in("--mind", str(mind), "model", "add", "box", "openai-compatible:test-model",
               "--base-url", wrong, "--use", check=True)
        # today's dead end: `remove` is refused while it is in use, `add` says it exists
        assert run_in("--mind", str(mind), "model", "remove", "box").returncode == 2
        again = invoke("--mind", str(mind), "model", "add", "box", "openai-compatible:test-model",
                       "--base-url", server.url)
        assert again.exit_code == 2 and "pmm model set box" in again.stderr
        before = mind_events(mind)

        done = cli_json(mind, "model", "set", "box", "--base-url", server.url, "--context-window", "4096",
                        "--price-in", "0.5", "--price-out", "1.5")
        assert done["changed"] is True
        assert done["changed_fields"] == ["base_url", "context_window", "price_in", "price_out"]
        assert done["trusted"] is True
        after = mind_events(mind)
        assert after[:len(before)] == before  # nothing rewritten: one event appended
        (changed,) = after[len(before):]
        assert changed["kind"] == "model_changed" and changed["id"] == done["event_id"]
        assert changed["meta"] == {"name": "box", "provider": "openai-compatible", "model": "test-model",
                                   "base_url": server.url, "context_window": 4096, "price_in": 0.5,
                                   "price_out": 1.5, "changed": done["changed_fields"]}
        box = models_of(mind)["box"]
        assert (box["base_url"], box["context_window"]) == (server.url, 4096)
        assert cli_json(mind, "model", "list")["active"]["chat"] == "box"  # still in use

        turn = cli_json(mind, "chat", "-m", "hello")
        assert turn["answer"] == "Answer from the right server."
    assert cli_json(mind, "verify", "--deep")["ok"]


def test_replay_alone_gives_the_new_setting(mind: Path) -> None:
    run_in("--mind", str(mind), "model", "add", "m", "ollama:llama3", "--context-window", "2048", check=True)
    run_in("--mind", str(mind), "model", "set", "m", "--spec", "ollama:qwen", "--base-url",
           "http://127.0.0.1:11435", check=True)
    from pmm.ledger.store import Ledger

    with Ledger.open(mind) as ledger:  # a full replay from the events, no cache
        state = replay(ledger.events())
    assert state["models"]["models"]["m"] == {"provider": "ollama", "model": "qwen",
                                               "base_url": "http://127.0.0.1:11435", "context_window": 2048}


def test_nothing_different_appends_nothing_and_says_so(mind: Path) -> None:
    run_in("--mind", str(mind), "model", "add", "m", "ollama:llama3", "--context-window", "2048", check=True)
    kinds = mind_kinds(mind)
    same = invoke("--mind", str(mind), "model", "set", "m", "--spec", "ollama:llama3", "--context-window", "2048")
    assert same.exit_code == 0 and "nothing changed" in same.stderr
    assert mind_kinds(mind) == kinds
    data = cli_json(mind, "model", "set", "m", "--context-window", "2048")
    assert data["event_id"] is None and data["changed"] is False and data["changed_fields"] == []
    assert mind_kinds(mind) == kinds


def test_an_empty_value_clears_a_setting(mind: Path) -> None:
    run_in("--mind", str(mind), "model", "add", "g", "openai:gpt-4o-mini", "--base-url", "http://127.0.0.1:9/v1",
           "--api-key-env", "MY_KEY", check=True)
    done = cli_json(mind, "model", "set", "g", "--base-url", "", "--api-key-env", "")
    assert done["changed_fields"] == ["base_url", "api_key_env"]
    assert "base_url" not in models_of(mind)["g"] and "api_key_env" not in models_of(mind)["g"]
    # openai-compatible has no default address: clearing it is refused, as add refuses it
    run_in("--mind", str(mind), "model", "add", "c", "openai-compatible:x", "--base-url", "http://127.0.0.1:9/v1",
           check=True)
    refused = invoke("--mind", str(mind), "model", "set", "c", "--base-url", "")
    assert refused.exit_code == 2 and "need --base-url" in refused.stderr


@pytest.mark.parametrize(("args", "said"), [
    (["--base-url", "http://user:pw@127.0.0.1:9/v1"], "user name or password"),
    (["--base-url", "ftp://127.0.0.1"], "must start with http"),
    (["--api-key-env", "sk-abc def"], "variable's name"),
    (["--context-window", "100"], "--context-window"),
    (["--price-in", "-1"], "--price-in"),
    (["--spec", "nonsense:x"], "bad model spec"),
    (["--spec", "openai-compatible:x"], "need --base-url"),
    ([], "nothing to change"),
])
def test_set_validates_as_add_does_and_changes_nothing(mind: Path, args: list[str], said: str) -> None:
    run_in("--mind", str(mind), "model", "add", "m", "ollama:llama3", check=True)
    kinds = mind_kinds(mind)
    result = invoke("--mind", str(mind), "model", "set", "m", *args)
    assert result.exit_code == 2 and said in result.stderr and "Traceback" not in result.stderr
    assert mind_kinds(mind) == kinds


def test_unknown_and_built_in_models_cannot_be_set(mind: Path) -> None:
    unknown = invoke("--mind", str(mind), "model", "set", "ghost", "--context-window", "4096")
    assert unknown.exit_code == 2 and "no model named 'ghost'" in unknown.stderr
    builtin = invoke("--mind", str(mind), "model", "set", "embedded", "--context-window", "4096")
    assert builtin.exit_code == 2 and "built-in" in builtin.stderr
    assert mind_kinds(mind) == ["mind_created"]
    nowhere = mind.with_name("none.db")
    missing = invoke("--mind", str(nowhere), "model", "set", "ghost", "--context-window", "4096")
    assert missing.exit_code == 2 and "no model named 'ghost'" in missing.stderr
    assert not nowhere.exists()  # nothing to change is no reason to create a mind


def test_a_setting_from_the_mind_file_stays_untrusted_until_the_owner_gives_the_endpoint(mind: Path) -> None:
    with FakeServer("openai") as server:
        run_in("--mind", str(mind), "model", "add", "box", "openai-compatible:test-model",
               "--base-url", server.url, "--use", check=True)
        run_in("--mind", str(mind), "model", "trust", "box", "--revoke", check=True)  # as if imported
        server.requests.clear()  # `--use` asked the server about the model while it was trusted
        window = cli_json(mind, "model", "set", "box", "--context-window", "4096")
        assert window["trusted"] is False  # a window is no reason to trust the host it came with
        refused = invoke("--mind", str(mind), "chat", "-m", "hello")
        assert refused.exit_code == 2 and "not trusted" in refused.stderr
        assert server.requests == []
        spec_only = cli_json(mind, "model", "set", "box", "--spec", "openai-compatible:other")
        assert spec_only["trusted"] is False  # the host is still the mind file's
        chosen = cli_json(mind, "model", "set", "box", "--spec", "openai-compatible:test-model",
                          "--base-url", server.url)
        assert chosen["trusted"] is True  # every part of the endpoint typed here, as with add
        assert cli_json(mind, "chat", "-m", "hello")["answer"]


def test_a_trusted_model_moved_elsewhere_stays_trusted(mind: Path) -> None:
    run_in("--mind", str(mind), "model", "add", "m", "ollama:llama3", check=True)
    moved = cli_json(mind, "model", "set", "m", "--base-url", "http://127.0.0.1:11435")
    assert moved["trusted"] is True
    assert models_of(mind)["m"]["trusted"] is True


def test_use_of_the_model_in_use_appends_nothing(mind: Path) -> None:
    run_in("--mind", str(mind), "model", "add", "a", "local:/nowhere/a.gguf", check=True)
    run_in("--mind", str(mind), "model", "use", "a", check=True)
    kinds = mind_kinds(mind)
    again = invoke("--mind", str(mind), "model", "use", "a")
    assert again.exit_code == 0 and "already uses a; nothing changed" in again.stderr
    assert cli_json(mind, "model", "use", "a")["event_id"] is None
    assert mind_kinds(mind) == kinds
    # reflection that only follows chat is not pinned to it: that switch is a real change
    pinned = cli_json(mind, "model", "use", "a", "--for", "reflection")
    assert pinned["event_id"] is not None
    assert cli_json(mind, "model", "use", "a", "--for", "reflection")["event_id"] is None
    # the built-in model is what an unswitched chat uses
    fresh = invoke("--mind", str(mind.with_name("fresh.db")), "model", "use", "embedded")
    assert fresh.exit_code == 0 and "nothing changed" in fresh.stderr
