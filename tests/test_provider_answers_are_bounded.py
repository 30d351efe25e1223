"""A model provider cannot hang pmm or flood its memory: every request has a total deadline
(``PMM_PROVIDER_DEADLINE``) and a byte cap on its answer (``PMM_PROVIDER_MAX_BYTES``), for all three
HTTP protocols, streamed or not; API keys never leak, whatever form a library quotes them in.

The faults never end on their own (a body that trickles whitespace forever, a body that never
stops), so only the limits can end these requests: nothing here depends on the machine's speed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from provider_servers import FakeServer

from pmm import errors
from pmm.providers import _limits, _scrub
from pmm.providers.base import Message, Request
from pmm.providers.registry import ModelSpec, create

REQUEST = Request(messages=(Message("user", "Hello?"),), max_tokens=32)
PROTOCOLS = ["openai", "ollama", "anthropic"]
KEY_ENV = "FAKE_PROVIDER_KEY"
SECRET = "sk-planted-0123456789"


@pytest.fixture(params=PROTOCOLS)
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_ENV, SECRET)
    monkeypatch.setenv("PMM_PROVIDER_RETRIES", "0")
    with FakeServer(request.param) as fake:
        yield fake


def complete(server: FakeServer, stream: bool) -> errors.ProviderError:
    protocol = "openai-compatible" if server.protocol == "openai" else server.protocol
    provider = create(ModelSpec(protocol, server.model, server.url, KEY_ENV))
    pieces: list[str] = []
    try:
        with pytest.raises(errors.ProviderError) as caught:
            provider.complete(REQUEST, pieces.append if stream else None)
    finally:
        provider.close()
    assert SECRET not in str(caught.value) + (caught.value.hint or "")
    return caught.value


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_trickling_answer_fails_at_the_deadline(server: FakeServer, stream: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_PROVIDER_DEADLINE", "0.3")
    monkeypatch.setenv("PMM_PROVIDER_TIMEOUT", "60")  # each read is quick: only the deadline can end it
    server.push("trickle", every=0.02)
    started = time.monotonic()
    exc = complete(server, stream)
    assert "did not finish answering within 0.3 s" in exc.message
    assert "PMM_PROVIDER_DEADLINE" in (exc.hint or "") and "nothing was saved" in (exc.hint or "")
    assert time.monotonic() - started < 30  # the trickle itself never ends


def test_silence_before_the_headers_fails_at_the_deadline_not_the_read_timeout(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_PROVIDER_DEADLINE", "0.3")
    monkeypatch.setenv("PMM_PROVIDER_TIMEOUT", "60")
    server.push("hang", seconds=60)
    exc = complete(server, stream=False)
    assert "within 0.3 s" in exc.message and "PMM_PROVIDER_DEADLINE" in (exc.hint or "")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_endless_answer_stops_at_the_byte_cap(server: FakeServer, stream: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_PROVIDER_MAX_BYTES", "65536")
    server.push("endless")
    exc = complete(server, stream)
    assert "passed 65,536 bytes" in exc.message and "PMM_PROVIDER_MAX_BYTES" in (exc.hint or "")


def test_the_deadline_reaches_httpx_sockets() -> None:
    """The deadline is enforced under httpx, through its pools' network backend: if an httpx
    release moves them, this says so (the per-chunk checks alone would let one read overrun)."""
    import httpx

    with httpx.Client() as client:
        assert _limits.bind(client, _limits.Holder())


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "1e9"])
def test_a_bad_deadline_is_a_usage_error_naming_the_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_PROVIDER_DEADLINE", value)
    with FakeServer("openai") as server:
        provider = create(ModelSpec("openai-compatible", server.model, server.url))
        with pytest.raises(errors.UsageError) as caught:
            provider.complete(REQUEST)
        assert not server.requests  # refused before anything was sent
    assert "$PMM_PROVIDER_DEADLINE must be a number of seconds from" in caught.value.message
    assert caught.value.hint


KEYS_WITH_CONTROL_CHARACTERS = ["sk-first-half-1234\nsecond-half-5678", "sk-tab\tseparated-secret-99",
                                "sk-\u00fcnicode-key-1234", "sk-escape-\x1b-inside-the-key-42"]


@pytest.mark.parametrize("key", KEYS_WITH_CONTROL_CHARACTERS, ids=["newline", "tab", "non-ascii", "escape"])
def test_a_key_with_a_newline_is_refused_without_showing_it(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, key)
    with FakeServer("openai") as server:
        provider = create(ModelSpec("openai-compatible", server.model, server.url, KEY_ENV))
        with pytest.raises(errors.ProviderError) as caught:
            provider.complete(REQUEST)
    shown = caught.value.message + (caught.value.hint or "") + repr(caught.value.args)
    for piece in _scrub.secret_forms(key.strip()):
        assert piece not in shown
    assert KEY_ENV in caught.value.message


@pytest.mark.parametrize("quoted", [
    lambda k: repr(k), lambda k: repr(("Bearer " + k).encode()), lambda k: k.split("\n")[1],
    lambda k: k.split("\n")[0], lambda k: k.replace("\n", "\\n"), lambda k: k.replace("\n", "%0A"),
], ids=["repr", "bytes", "second-line", "first-line", "escaped", "url-encoded"])
def test_scrub_blanks_every_form_of_the_key(quoted: object) -> None:
    key = "sk-first-half-1234\nsecond-half-5678"
    text = f"server said: {quoted(key)} (sic)"  # type: ignore[operator]
    exc = errors.ProviderError(text, hint=f"not {quoted(key)}")  # type: ignore[operator]
    _scrub.scrub(exc, key)
    for piece in ("first-half-1234", "second-half-5678"):
        assert piece not in exc.message and piece not in (exc.hint or "")
    assert exc.message.startswith("server said: ") and "***" in exc.message
