"""Every adapter keeps the same promises: it streams in order, counts usage, retries what is
worth retrying, and fails with one clear ``ProviderError`` that never shows the API key.

``TestProviderContract`` runs every network provider of the registry (pmm.providers.registry)
against a loopback server speaking its protocol (tests/provider_servers.py): a new entry is
tested without a line here (tests/test_local_provider_contract.py holds the in-process ones).
Protocol details (which field asks for JSON, Anthropic's cache marker) follow; the last class runs
the OpenAI-compatible adapter against a real llama-cpp-python server, one call per capability.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from provider_servers import CHAT_PATH, PROMPT_TOKENS, PROTOCOLS, FakeServer, split_pieces
from realmodel import free_port, llama_server, smollm2_gguf

from pmm import errors
from pmm.providers import _http, registry
from pmm.providers.base import Completion, Message, Provider, Request
from pmm.providers.registry import ModelSpec, ProviderInfo, create

SECRET = "sk-planted-SECRET-0123456789"
SCHEMA = {"type": "object", "properties": {"mood": {"type": "string", "enum": ["calm", "curious"]},
                                           "energy": {"type": "integer"}}, "required": ["mood", "energy"]}
REQUEST = Request(messages=(Message("user", "Hello?"),), system="You are Echo, a steady mind.",
                  context="Earlier you promised to be brief.", max_tokens=64, temperature=0.2)
NETWORK = [info for info in registry.PROVIDERS if not info.in_process]


def key_env(info: ProviderInfo) -> str:
    """The entry's default key variable, else one the test names (as --api-key-env would)."""
    return info.key_env or info.name.upper().replace("-", "_") + "_TEST_KEY"


def holds(value: Any, wanted: Any) -> bool:
    """Whether ``wanted`` is ``value`` or nested anywhere in it."""
    if value == wanted:
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(holds(item, wanted) for item in items)


def test_every_network_provider_has_a_fake_server_and_a_loadable_adapter() -> None:
    assert NETWORK
    for info in registry.PROVIDERS:
        assert info.protocol in (*PROTOCOLS, None), f"add {info.protocol!r} to tests/provider_servers.py"
        module, _, cls = info.adapter.partition(":")
        assert callable(getattr(importlib.import_module(module), cls)), info.adapter


@dataclass
class Harness:
    info: ProviderInfo
    server: FakeServer
    providers: list[Provider]

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def key_env(self) -> str:
        return key_env(self.info)

    def provider(self, base_url: str | None = None, model: str | None = None) -> Provider:
        # A provider with a default key variable finds it; the others are told its name.
        env = None if self.info.key_env else self.key_env
        spec = ModelSpec(self.name, model or self.server.model, base_url or self.server.url, env)
        made = create(spec)
        self.providers.append(made)
        return made

    def complete(self, request: Request = REQUEST, stream: bool = False) -> tuple[Any, list[str]]:
        pieces: list[str] = []
        result = self.provider().complete(request, pieces.append if stream else None)
        return result, pieces

    def fails(self, call: Callable[[], object]) -> errors.ProviderError:
        """Run ``call``, expect a ProviderError, and check the planted key is nowhere in it."""
        with pytest.raises(errors.ProviderError) as caught:
            call()
        exc = caught.value
        for text in (str(exc), exc.message, exc.hint or "", repr(exc.args)):
            assert SECRET not in text
        assert "\n" not in exc.message
        return exc


@pytest.fixture(params=NETWORK, ids=lambda info: info.name)
def harness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    info: ProviderInfo = request.param
    monkeypatch.setenv(key_env(info), SECRET)  # planted in every test: no error may ever show it
    monkeypatch.delenv(_http.ENV_RETRIES, raising=False)
    monkeypatch.delenv(_http.ENV_TIMEOUT, raising=False)
    monkeypatch.setattr(_http, "BACKOFF_BASE", 0.02)  # real backoff, shorter waits
    assert info.protocol is not None
    with FakeServer(info.protocol) as server:
        made = Harness(info, server, [])
        yield made
        for provider in made.providers:
            provider.close()


class TestProviderContract:
    def test_plain_completion(self, harness: Harness) -> None:
        completion, _ = harness.complete()
        assert completion.text == harness.server.text
        assert completion.model == harness.server.model
        (seen,) = harness.server.requests
        assert (seen.method, seen.path) == ("POST", CHAT_PATH[harness.server.protocol])
        assert seen.body["stream"] is False
        assert any(SECRET in value for value in seen.headers.values())  # the key went, in some header
        wire = json.dumps(seen.body)
        assert REQUEST.system in wire and REQUEST.context in wire and "Hello?" in wire

    def test_streaming_pieces_arrive_in_order_and_join_to_the_text(self, harness: Harness) -> None:
        completion, pieces = harness.complete(stream=True)
        assert pieces == split_pieces(harness.server.text)
        assert len(pieces) > 3
        assert "".join(pieces) == completion.text == harness.server.text
        assert harness.server.requests[0].body["stream"] is True

    @pytest.mark.parametrize("stream", [False, True])
    def test_usage_and_latency_are_recorded(self, harness: Harness, stream: bool) -> None:
        completion, _ = harness.complete(stream=stream)
        assert completion.tokens_in == PROMPT_TOKENS
        assert completion.tokens_out == len(split_pieces(harness.server.text))
        assert completion.latency_ms > 0
        assert completion.finish_reason

    @pytest.mark.parametrize("stream", [False, True])
    def test_unreported_usage_is_unknown_not_zero(self, harness: Harness, stream: bool) -> None:
        harness.server.push("no_usage")
        completion, _ = harness.complete(stream=stream)
        assert completion.text == harness.server.text
        assert (completion.tokens_in, completion.tokens_out, completion.cache_read) == (None, None, None)
        assert not completion.estimated  # estimating is pmm.services.usage's, with the prompt in hand

    @pytest.mark.parametrize("fault", ["cut", "truncate"])
    def test_stream_cut_mid_answer_fails_without_retry(self, harness: Harness, fault: str) -> None:
        harness.server.push(fault)
        pieces: list[str] = []
        exc = harness.fails(lambda: harness.provider().complete(REQUEST, pieces.append))
        assert "cut off" in exc.message
        assert 0 < len(pieces) < len(split_pieces(harness.server.text))
        assert len(harness.server.requests) == 1  # text was shown: a retry would repeat it

    def test_body_cut_short_fails(self, harness: Harness) -> None:
        harness.server.push("cut")
        assert "cut off" in harness.fails(lambda: harness.complete()).message

    @pytest.mark.parametrize(("fault", "stream"), [("malformed", False), ("malformed", True), ("shape", False)])
    def test_malformed_answer_fails(self, harness: Harness, fault: str, stream: bool) -> None:
        harness.server.push(fault)
        exc = harness.fails(lambda: harness.complete(stream=stream))
        assert exc.message.startswith("malformed answer from")

    @pytest.mark.parametrize("status", ["401", "403"])
    def test_refused_key_names_the_variable_not_the_key(self, harness: Harness, status: str) -> None:
        harness.server.push(status)
        exc = harness.fails(lambda: harness.complete())
        assert f"${harness.key_env}" in (exc.hint or "")
        assert status in exc.message
        assert len(harness.server.requests) == 1

    def test_rate_limit_honours_retry_after(self, harness: Harness) -> None:
        harness.server.push("429", retry_after="1")
        started = time.monotonic()
        completion, _ = harness.complete()
        assert time.monotonic() - started >= 0.95
        assert completion.text == harness.server.text
        assert len(harness.server.requests) == 2

    def test_retry_after_as_http_date(self, harness: Harness) -> None:
        from email.utils import formatdate

        harness.server.push("503", retry_after=formatdate(time.time() + 2, usegmt=True))
        started = time.monotonic()
        harness.complete()
        assert time.monotonic() - started >= 0.5  # whole seconds in the date: at least most of one
        assert len(harness.server.requests) == 2

    def test_long_retry_after_fails_at_once_saying_when(self, harness: Harness,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        real_sleep = time.sleep

        def sleep(seconds: float) -> None:
            assert seconds < 60, f"slept {seconds} s instead of failing"
            real_sleep(seconds)

        monkeypatch.setattr(time, "sleep", sleep)
        harness.server.push("429", retry_after="3600")
        started = time.monotonic()
        exc = harness.fails(lambda: harness.complete())
        assert time.monotonic() - started < 2
        assert "3600 s" in exc.message and "try again after" in (exc.hint or "")
        assert len(harness.server.requests) == 1

    def test_server_error_is_retried(self, harness: Harness) -> None:
        harness.server.push("500")
        completion, pieces = harness.complete(stream=True)
        assert completion.text == "".join(pieces) == harness.server.text  # nothing shown twice
        assert len(harness.server.requests) == 2

    def test_persistent_server_error_gives_up_after_bounded_tries(
            self, harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(_http.ENV_RETRIES, "2")
        for _ in range(5):
            harness.server.push("500")
        exc = harness.fails(lambda: harness.complete())
        assert "500" in exc.message and "3 tries" in exc.message
        assert len(harness.server.requests) == 3

    def test_rate_limit_that_persists_fails(self, harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(_http.ENV_RETRIES, "1")
        for _ in range(3):
            harness.server.push("429", retry_after="0")
        assert "429" in harness.fails(lambda: harness.complete()).message
        assert len(harness.server.requests) == 2

    def test_connection_dropped_before_answer_is_retried(self, harness: Harness) -> None:
        harness.server.push("reset")
        completion, _ = harness.complete()
        assert completion.text == harness.server.text
        assert len(harness.server.requests) == 2

    def test_refused_connection_fails_fast(self, harness: Harness) -> None:
        port = f":{harness.server.port}"
        dead = harness.provider(base_url=harness.server.url.replace(port, f":{free_port()}"))
        started = time.monotonic()
        exc = harness.fails(lambda: dead.complete(REQUEST))
        assert time.monotonic() - started < 3
        assert "cannot reach" in exc.message and "is the server running?" in exc.message

    def test_timeout(self, harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(_http.ENV_TIMEOUT, "0.3")
        harness.server.push("hang", seconds=5)
        started = time.monotonic()
        exc = harness.fails(lambda: harness.complete(stream=True))
        assert time.monotonic() - started < 3
        assert "within 0.3 s" in exc.message and _http.ENV_TIMEOUT in (exc.hint or "")

    @pytest.mark.parametrize("stream", [False, True])
    def test_structured_output(self, harness: Harness, stream: bool) -> None:
        harness.server.text = '{"mood": "calm", "energy": 3}'
        request = Request(messages=REQUEST.messages, json_schema=SCHEMA)
        completion, pieces = harness.complete(request, stream=stream)
        assert json.loads(completion.text) == {"mood": "calm", "energy": 3}
        if stream:
            assert "".join(pieces) == completion.text
        assert holds(harness.server.requests[0].body, SCHEMA)  # asked for, not just hoped for

    def test_info_finds_the_model(self, harness: Harness) -> None:
        info = harness.provider().info()
        assert (info.provider, info.model) == (harness.name, harness.server.model)
        assert info.version
        assert harness.server.requests[0].method == "GET"

    def test_info_on_unknown_model_fails_with_a_hint(self, harness: Harness) -> None:
        exc = harness.fails(lambda: harness.provider(model="no-such-model").info())
        assert "no-such-model" in exc.message
        assert exc.hint

    def test_planted_key_never_appears_in_errors(self, harness: Harness,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(_http.ENV_RETRIES, "0")
        for fault in ["401", "403", "404", "400", "429", "500", "malformed", "shape", "cut"]:
            harness.server.push(fault)
            harness.fails(lambda: harness.complete())
        assert all(r.body["messages"] for r in harness.server.requests)

    @pytest.mark.parametrize("raised", [KeyboardInterrupt, ValueError])
    def test_a_failing_callback_propagates_unchanged(self, harness: Harness, raised: type) -> None:
        def on_text(piece: str) -> None:
            raise raised("stop")

        with pytest.raises(raised):
            harness.provider().complete(REQUEST, on_text)
        assert len(harness.server.requests) == 1


class TestProtocolDetails:
    @pytest.mark.parametrize(("name", "field", "value"), [
        ("openai", "response_format", {"type": "json_schema", "json_schema": {
            "name": "pmm", "schema": SCHEMA, "strict": False}}),
        ("openai-compatible", "response_format", {"type": "json_object", "schema": SCHEMA}),
        ("ollama", "format", SCHEMA),
        ("anthropic", "tool_choice", {"type": "tool", "name": "respond"}),
    ])
    def test_structured_output_field(self, name: str, field: str, value: Any) -> None:
        with FakeServer(registry.get(name).protocol or "", text='{"mood": "calm", "energy": 3}') as server:
            create(ModelSpec(name, server.model, server.url, "UNSET_KEY_VAR")).complete(
                Request(messages=REQUEST.messages, json_schema=SCHEMA))
        body = server.requests[0].body
        assert body[field] == value
        if name == "anthropic":
            assert body["tools"][0]["input_schema"] == SCHEMA

    def test_anthropic_sends_the_turns_context_in_the_last_message(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
        with FakeServer("anthropic") as server:
            completion = create(ModelSpec("anthropic", server.model, server.url)).complete(REQUEST)
        (seen,) = server.requests
        # too short to be cached: no breakpoint (test_prompt_caching_pays.py has the long ones)
        assert seen.body["system"] == [{"type": "text", "text": REQUEST.system}]
        assert seen.body["messages"] == [{"role": "user", "content": [
            {"type": "text", "text": REQUEST.context}, {"type": "text", "text": "Hello?"}]}]
        assert seen.headers["anthropic-version"] == "2023-06-01" and seen.headers["x-api-key"] == SECRET
        assert (completion.tokens_in, completion.cache_read, completion.cache_write) == (12, 9, 0)

    @pytest.mark.parametrize("stream", [False, True])
    def test_anthropic_cache_tokens_are_read_apart(self, monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
        monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
        with FakeServer("anthropic") as server:
            server.push("usage", input=25, cache_read=1800, cache_write=120)
            completion = create(ModelSpec("anthropic", server.model, server.url)).complete(
                REQUEST, (lambda _p: None) if stream else None)
        assert (completion.tokens_in, completion.cache_read, completion.cache_write) == (1945, 1800, 120)

    @pytest.mark.parametrize(("details", "why"), [({"cache_n": 13}, "cached tokens of a 12-token prompt"),
                                                  ({"cache_read": "lots"}, "not a token count")])
    def test_nonsense_cache_counts_are_a_malformed_answer(self, details: dict[str, Any], why: str) -> None:
        with FakeServer("openai") as server:
            server.push("usage", **details)
            with pytest.raises(errors.ProviderError, match=why):
                create(ModelSpec("openai-compatible", server.model, server.url)).complete(REQUEST)

    def test_anthropic_overload_event_is_retried_only_before_text(self) -> None:
        with FakeServer("anthropic") as server:
            provider = create(ModelSpec("anthropic", server.model, server.url))
            server.push("error_event", pieces=0)
            pieces: list[str] = []
            assert provider.complete(REQUEST, pieces.append).text == server.text == "".join(pieces)
            assert len(server.requests) == 2
            server.push("error_event", pieces=2)
            with pytest.raises(errors.ProviderError, match="Overloaded"):
                provider.complete(REQUEST, pieces.append)
            assert len(server.requests) == 3

    def test_anthropic_structured_stream_hands_over_the_json_once(self) -> None:
        with FakeServer("anthropic", text='{"mood": "curious", "energy": 7}') as server:
            pieces: list[str] = []
            request = Request(messages=REQUEST.messages, json_schema=SCHEMA)
            completion = create(ModelSpec("anthropic", server.model, server.url)).complete(request, pieces.append)
        assert pieces == [completion.text]
        assert json.loads(completion.text) == {"mood": "curious", "energy": 7}

    @pytest.mark.parametrize("name", ["openai", "openai-compatible"])
    def test_openai_fields(self, name: str) -> None:
        with FakeServer("openai") as server:
            provider = create(ModelSpec(name, server.model, server.url, "UNSET_KEY_VAR"))
            completion = provider.complete(REQUEST, lambda piece: None)
        body = server.requests[0].body
        assert body["messages"] == [{"role": "system", "content": REQUEST.system},
                                    {"role": "user", "content": f"{REQUEST.context}\n\nHello?"}]
        assert body["stream_options"] == {"include_usage": True}
        token_field = "max_completion_tokens" if name == "openai" else "max_tokens"
        assert body[token_field] == REQUEST.max_tokens
        assert "authorization" not in server.requests[0].headers  # no key set: none sent
        assert completion.extra["system_fingerprint"] == "fp_test"

    def test_ollama_options_and_digest(self) -> None:
        with FakeServer("ollama") as server:
            provider = create(ModelSpec("ollama", server.model, server.url))
            provider.complete(REQUEST)
            info = provider.info()
            tagged = create(ModelSpec("ollama", f"{server.model}:latest", server.url)).info()
        assert server.requests[0].body["options"] == {"temperature": 0.2, "num_predict": 64}
        assert info.hash == "sha256:" + "a" * 64 == tagged.hash
        assert info.details["quantization_level"] == "Q4_1"

    def test_ollama_missing_model_says_how_to_pull_it(self) -> None:
        with FakeServer("ollama") as server:
            server.push("404")
            with pytest.raises(errors.ProviderError) as caught:
                create(ModelSpec("ollama", "llama9", server.url)).complete(REQUEST)
        assert caught.value.hint == "ollama pull llama9"


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    with llama_server() as url:
        yield url


def real_provider(url: str) -> Provider:
    return create(ModelSpec("openai-compatible", smollm2_gguf(), url))


def colour_request() -> Request:
    return Request(messages=(Message("user", "Name one colour."),), system="You are terse.",
                   max_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def whole(llama_url: str) -> Completion:
    """The one plain completion: plain, usage and streaming's comparison all read it."""
    return real_provider(llama_url).complete(colour_request())


class TestRealLlamaServer:
    """The OpenAI-compatible adapter against llama-cpp-python serving SmolLM2 (temperature 0): one
    real call per capability (the fake servers hold the rest of the contract)."""

    def test_plain_and_usage(self, whole: Completion) -> None:
        assert whole.text.strip()
        assert whole.model == smollm2_gguf()
        assert whole.tokens_in and whole.tokens_in > 5
        assert whole.tokens_out and 0 < whole.tokens_out <= 24
        assert whole.latency_ms > 0

    def test_streaming(self, llama_url: str, whole: Completion) -> None:
        pieces: list[str] = []
        completion = real_provider(llama_url).complete(colour_request(), pieces.append)
        assert len(pieces) > 1 and "".join(pieces) == completion.text
        assert completion.text == whole.text  # temperature 0
        assert completion.tokens_out is None or completion.tokens_out > 0  # this server sends no usage

    def test_structured_output(self, llama_url: str) -> None:
        completion = real_provider(llama_url).complete(
            Request(messages=(Message("user", "How do you feel? Answer in JSON."),), max_tokens=60,
                    temperature=0.0, json_schema=SCHEMA))
        data = json.loads(completion.text)
        assert data["mood"] in ("calm", "curious") and isinstance(data["energy"], int)

    def test_info(self, llama_url: str) -> None:
        info = real_provider(llama_url).info()
        assert info.model == smollm2_gguf() and info.hash is None
