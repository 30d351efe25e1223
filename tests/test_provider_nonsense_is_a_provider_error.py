"""What a provider says is checked where it enters: token counts of the wrong type, negative or
absurd, and JSON nested past Python's stack, are a malformed answer (exit 5, nothing stored),
never an "unexpected" exit 1 and never a nonsense count in the ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import invoke
from conftest import mind_events as events
from provider_servers import FakeServer

from pmm import errors
from pmm.providers.base import Message, Request
from pmm.providers.registry import ModelSpec, create
from pmm.services import reflection_answer

REQUEST = Request(messages=(Message("user", "Hello?"),), max_tokens=32)
NONSENSE = ["12", -5, 10**12, 3.5, True, [7], {"n": 1}]


CASES = [(p, s, -5) for p in ("openai", "ollama", "anthropic") for s in (False, True)] + \
    [("openai", False, v) for v in NONSENSE if v != -5]


@pytest.mark.parametrize(("protocol", "stream", "value"), CASES,
                         ids=[f"{p}-{'streamed' if s else 'whole'}-{v!r}" for p, s, v in CASES])
def test_a_nonsense_token_count_is_a_malformed_answer(protocol: str, stream: bool, value: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_PROVIDER_RETRIES", "0")
    with FakeServer(protocol) as server:
        server.push("usage", value=value)
        spec = ModelSpec("openai-compatible" if protocol == "openai" else protocol, server.model, server.url)
        provider = create(spec)
        try:
            with pytest.raises(errors.ProviderError) as caught:
                provider.complete(REQUEST, [].append if stream else None)
        finally:
            provider.close()
    assert caught.value.exit_code == 5
    assert "malformed answer" in caught.value.message and "not a token count" in caught.value.message


def test_a_whole_count_sent_as_a_float_is_accepted() -> None:
    with FakeServer("openai") as server:
        server.push("usage", value=9.0)
        provider = create(ModelSpec("openai-compatible", server.model, server.url))
        try:
            assert provider.complete(REQUEST).tokens_out == 9
        finally:
            provider.close()



def test_chat_with_a_negative_count_is_exit_5_and_stores_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_PROVIDER_RETRIES", "0")
    mind = tmp_path / "mind.db"
    with FakeServer("openai") as server:
        assert invoke("--mind", str(mind), "model", "add", "web", "openai-compatible:test-model",
                      "--base-url", server.url, "--use").exit_code == 0
        before = events(mind)
        server.push("usage", value=-5)
        result = invoke("--mind", str(mind), "chat", "-m", "hello")
    assert result.exit_code == 5, result.output
    assert "not a token count" in result.stderr and "Hint:" in result.stderr
    assert events(mind) == before


DEEP = "[" * 100_000 + "]" * 100_000


def test_reflection_json_nested_past_the_stack_is_a_provider_error() -> None:
    with pytest.raises(errors.ProviderError) as caught:
        reflection_answer.parse('{"reflection": "x", "traits": ' + DEEP + "}")
    assert "nested too deeply" in caught.value.message


def test_reflect_on_deeply_nested_json_is_exit_5_and_stores_nothing(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    with FakeServer("openai", text="Hello.") as server:
        assert invoke("--mind", str(mind), "model", "add", "web", "openai-compatible:test-model",
                      "--base-url", server.url, "--use").exit_code == 0
        assert invoke("--mind", str(mind), "chat", "-m", "I grow tomatoes.").exit_code == 0
        before = events(mind)
        server.text = DEEP
        result = invoke("--mind", str(mind), "reflect")
    assert result.exit_code == 5, result.output
    assert "nested too deeply" in result.stderr and "unexpected" not in result.stderr
    assert events(mind) == before
