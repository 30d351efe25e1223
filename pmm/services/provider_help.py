"""What ``pmm model add --help`` says about providers, derived from the provider registry.

Command modules build their help when they are imported (``pmm --help`` imports them all), so
this module stays light: the registry's table and nothing else (no sqlite, no httpx).
"""

from __future__ import annotations

from pmm.providers import registry


def spec_help() -> str:
    """The SPEC argument: its shape and one example per provider."""
    return f"PROVIDER:MODEL, e.g. {registry.examples()}."


def providers_paragraph() -> str:
    """One paragraph naming every provider: what it is, and its key or endpoint defaults."""
    parts = []
    for info in registry.PROVIDERS:
        notes = [f"key ${info.key_env}"] if info.key_env else []
        if info.host_env:
            notes.append(f"${info.host_env} or {info.base_url}")
        if info.needs_base_url:
            notes.append("needs --base-url")
        parts.append(f"{info.name}: {info.summary}" + (f" ({', '.join(notes)})" if notes else ""))
    return "Providers: " + "; ".join(parts) + "."


def base_url_help() -> str:
    needs = [info.name for info in registry.PROVIDERS if info.needs_base_url]
    return "Server URL" + (f" (needed for {' and '.join(needs)})." if needs else ".")


def key_env_help() -> str:
    defaults = [info.key_env for info in registry.PROVIDERS if info.key_env]
    return "Environment variable holding the key" + (f" (default {' / '.join(defaults)})." if defaults else ".")
