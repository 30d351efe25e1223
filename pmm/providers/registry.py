"""Which providers exist: parsing a ``provider:model`` spec and creating its adapter.

``create(spec)`` imports just the adapter a spec needs, so httpx and llama_cpp stay unloaded
until a command really talks to a model.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pmm import errors
from pmm.providers.base import EMBEDDED_MODEL, PROVIDERS, ModelSpec, Provider


def parse_spec(text: str, base_url: str | None = None, api_key_env: str | None = None) -> ModelSpec:
    """``provider:model`` (``local`` alone means the embedded model) into a ``ModelSpec``."""
    provider, _, model = text.strip().partition(":")
    provider = provider.lower()
    if provider == "local" and not model:
        model = EMBEDDED_MODEL
    if provider not in PROVIDERS or not model:
        raise errors.UsageError(
            f"bad model spec {text!r}: expected PROVIDER:MODEL with PROVIDER one of "
            + ", ".join(PROVIDERS),
            hint="e.g. ollama:llama3.1, openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest,"
            " openai-compatible:NAME --base-url URL, local:/path/to/model.gguf",
        )
    if provider == "openai-compatible" and not base_url:
        raise errors.UsageError("openai-compatible models need --base-url URL",
                                hint="e.g. --base-url http://127.0.0.1:8080/v1")
    if base_url is not None and "@" in _authority(base_url):
        # The URL is stored in the mind and travels with every export: never a credential in it.
        raise errors.UsageError("--base-url must not contain a user name or password",
                                hint="put the key in an environment variable and pass --api-key-env VAR")
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise errors.UsageError(f"bad --base-url {base_url!r}: it must start with http:// or https://")
    if api_key_env is not None and not api_key_env.replace("_", "").isalnum():
        raise errors.UsageError(f"bad --api-key-env {api_key_env!r}: give the variable's name, not the key")
    return ModelSpec(provider, model, base_url.rstrip("/") if base_url else None, api_key_env)


def _authority(url: str) -> str:
    try:
        return urlsplit(url).netloc
    except ValueError:  # e.g. an unclosed IPv6 bracket: judge the raw text instead
        return url.partition("://")[2].partition("/")[0]


def create(spec: ModelSpec) -> Provider:
    """The adapter for ``spec`` (imported on demand)."""
    if spec.provider in ("openai", "openai-compatible"):
        from pmm.providers.openai import OpenAIProvider

        return OpenAIProvider(spec)
    if spec.provider == "ollama":
        from pmm.providers.ollama import OllamaProvider

        return OllamaProvider(spec)
    if spec.provider == "anthropic":
        from pmm.providers.anthropic import AnthropicProvider

        return AnthropicProvider(spec)
    if spec.provider == "local":
        from pmm.providers.local import LocalProvider

        return LocalProvider(spec)
    raise errors.UsageError(f"unknown provider {spec.provider!r}")
