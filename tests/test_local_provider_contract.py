"""The provider contract's parts that apply to a model run in this process (the registry's
entries without a wire protocol, i.e. ``local``): completion streamed and whole, usage accounting,
structured output, info, and a clear ``ProviderError`` for a bad model file, all with every
network call refused. The network providers' contract: tests/test_provider_contract.py.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pmm import errors, settings
from pmm.providers import registry
from pmm.providers.base import Completion, Message, Request
from pmm.providers.registry import ModelSpec, create

IN_PROCESS = [info for info in registry.PROVIDERS if info.in_process]
SCHEMA = {"type": "object", "properties": {"mood": {"type": "string", "enum": ["calm", "curious"]},
                                           "energy": {"type": "integer"}}, "required": ["mood", "energy"]}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to reach the network, refused and recorded."""
    tried: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            tried.append(what)
            raise OSError(f"network refused by the test ({what})")
        return refused

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse(f"socket.{name}"))
    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse(f"socket.{name}"))
    return tried


@pytest.fixture(params=IN_PROCESS, ids=lambda info: info.name)
def in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    """The entry's default model (for local: the embedded SmolLM2), as `pmm model add` makes it."""
    monkeypatch.setenv(settings.LOCAL_THREADS.name, "1")  # two threads spin against each other on busy cores
    return registry.parse_spec(request.param.name)


class TestLocalProviderContract:
    """The contract's parts that apply to a model run in this process, with the network refused."""

    def request(self, **kw: Any) -> Request:
        return Request(messages=(Message("user", "Name one colour."),), system="You are terse.",
                       max_tokens=16, temperature=0.0, **kw)

    def check_usage(self, completion: Completion, limit: int) -> None:
        assert completion.tokens_in and completion.tokens_in > 5
        assert completion.tokens_out is not None and 0 < completion.tokens_out <= limit
        assert completion.latency_ms > 0 and completion.finish_reason

    def test_completion_streamed_and_whole_with_usage(self, in_process: ModelSpec, offline: list[str]) -> None:
        provider = create(in_process)
        whole = provider.complete(self.request())
        assert whole.text.strip() and whole.model == in_process.model
        self.check_usage(whole, 16)
        pieces: list[str] = []
        streamed = provider.complete(self.request(), pieces.append)
        assert pieces and "".join(pieces) == streamed.text
        self.check_usage(streamed, 16)  # counted by the adapter: llama.cpp reports none when streaming
        assert offline == []

    def test_structured_output(self, in_process: ModelSpec, offline: list[str]) -> None:
        request = Request(messages=(Message("user", "How do you feel? Answer in JSON."),), max_tokens=60,
                          temperature=0.0, json_schema=SCHEMA)
        data = json.loads(create(in_process).complete(request).text)
        assert data["mood"] in ("calm", "curious") and isinstance(data["energy"], int)
        assert offline == []

    def test_info_reports_the_file_digest(self, in_process: ModelSpec, offline: list[str]) -> None:
        info = create(in_process).info()
        assert (info.provider, info.model) == (in_process.provider, in_process.model)
        assert info.hash and info.hash.startswith("sha256:") and info.context_length
        assert offline == []

    @pytest.mark.parametrize("content", [None, b"not a model at all\n" * 64])
    def test_a_bad_model_file_is_a_provider_error(self, in_process: ModelSpec, offline: list[str],
                                                  tmp_path: Path, content: bytes | None) -> None:
        path = tmp_path / "model.gguf"
        if content is not None:
            path.write_bytes(content)
        provider = create(ModelSpec(in_process.provider, str(path)))
        with pytest.raises(errors.ProviderError) as caught:
            provider.complete(self.request())
        assert str(path) in caught.value.message and caught.value.hint
        assert "\n" not in caught.value.message and offline == []
