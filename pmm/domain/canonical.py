"""Canonical JSON (RFC 8785) for event ``meta``: computed once, when an event is written."""

from __future__ import annotations

from typing import Any


def canonical_json(value: dict[str, Any]) -> str:
    """Return the RFC 8785 text of a JSON object; ``ValueError`` for what JSON cannot hold."""
    import rfc8785  # lazy: only writers need it

    if not isinstance(value, dict):
        raise ValueError("meta must be a JSON object")
    try:
        return rfc8785.dumps(value).decode("utf-8")
    except (rfc8785.CanonicalizationError, TypeError) as exc:
        raise ValueError(f"meta is not canonical JSON: {exc}") from None
