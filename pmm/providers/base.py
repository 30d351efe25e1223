"""The one interface every model backend speaks, and the values that cross it.

A provider turns a ``Request`` (a stable system prompt, the conversation, per-turn context) into a
``Completion`` (the text, token usage, latency). With ``on_text`` it streams: each piece of the
answer is handed over as it arrives, and the returned ``Completion`` holds the whole answer.
Failures are ``pmm.errors.ProviderError`` (exit 5), translated inside the adapter; a
``KeyboardInterrupt`` while streaming propagates after the connection is closed.
API keys are read from the environment when a request is made and never leave the adapter.
Which providers exist, and the ``ModelSpec`` an adapter is made from: ``pmm.providers.registry``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol


class Message(NamedTuple):
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class Request:
    """One call to a model, ordered stable-first so that a provider's prompt cache can hold it.

    ``system`` is the stable part (identity, traits, standing memory): the same turn after turn.
    ``messages`` are the conversation, ending with the new user message; all but that last one
    are the same as the previous turn sent, plus the last exchange. ``context`` is per-turn
    material (recalled memory, the date line): it opens the last user message (``sent``), after
    everything a cache can hold, so it never invalidates the stable prefix (Anthropic's cache
    breakpoints, OpenAI's automatic prefix caching and llama.cpp's reuse of its KV cache all
    match a prompt from its start). ``json_schema`` asks for constrained structured output
    where the provider has it (response_format, Ollama ``format``, a grammar, Anthropic tool
    use); the text of the completion is then the JSON document. ``options`` holds the model
    options of ``pmm chat -o`` (``pmm.providers.options``).
    """

    messages: tuple[Message, ...]
    system: str = ""
    context: str = ""
    max_tokens: int = 512
    temperature: float = 0.7
    json_schema: dict[str, Any] | None = None
    # The messages before the last come back unchanged (plus the last exchange) in the next
    # turn's request; False once the conversation's oldest turns give way to room, when a cache
    # write of them would never be read.
    repeats: bool = True
    # model options beyond temperature and max_tokens (top_p, seed ...), under pmm's names:
    # each adapter renames them (``pmm.providers.options.fields``)
    options: dict[str, Any] = field(default_factory=dict)

    def sent(self) -> tuple[Message, ...]:
        """The messages as sent: ``context`` first in the last user message (a user message of
        its own when the conversation does not end with one)."""
        if not self.context:
            return self.messages
        if self.messages and self.messages[-1].role == "user":
            last = self.messages[-1]
            return (*self.messages[:-1], Message("user", f"{self.context}\n\n{last.content}"))
        return (*self.messages, Message("user", self.context))


@dataclass
class Completion:
    """A model's answer and what it cost, as the provider reported it.

    ``tokens_in`` is the whole prompt, as pmm has always recorded it; ``cache_read`` and
    ``cache_write`` are the parts of it that were read from and written to the provider's prompt
    cache (Anthropic's ``cache_read_input_tokens`` and ``cache_creation_input_tokens``, OpenAI's
    ``prompt_tokens_details.cached_tokens``, llama.cpp's ``timings.cache_n``), each priced at
    its own rate. None: the provider did not say (a server that ignores
    ``stream_options.include_usage``); ``pmm.services.usage`` then estimates the counts and sets
    ``estimated``.
    """

    text: str
    model: str
    tokens_in: int | None = None
    tokens_out: int | None = None
    finish_reason: str | None = None
    latency_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the system fingerprint
    cache_read: int | None = None
    cache_write: int | None = None
    estimated: bool = False


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
    """What ``pmm.providers.registry.create`` returns: an adapter made from a ``ModelSpec``."""

    def complete(self, request: Request, on_text: OnText | None = None) -> Completion:
        """Run ``request``; stream pieces to ``on_text`` when given. Raises ``ProviderError``."""
        ...

    def info(self) -> ModelInfo:
        """Ask the provider about the model (reachability, digest or version)."""
        ...

    def close(self) -> None: ...
