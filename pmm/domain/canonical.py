"""Canonical JSON (RFC 8785) for event ``meta``: computed once, when an event is written."""

from __future__ import annotations

from typing import Any

_SAFE = 2**53 - 1


def _as_numbers(value: Any) -> Any:
    """JSON numbers are doubles (I-JSON): an integer past 2**53, as read back from a canonical
    ``1e16``, means the nearest double, exactly as a JavaScript reader would take it."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        if -_SAFE <= value <= _SAFE:
            return value
        return float(value)
    if isinstance(value, dict):
        return {k: _as_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_numbers(v) for v in value]
    return value


def canonical_json(value: dict[str, Any]) -> str:
    """Return the RFC 8785 text of a JSON object; ``ValueError`` for what JSON cannot hold."""
    import rfc8785  # lazy: only writers need it

    if not isinstance(value, dict):
        raise ValueError("meta must be a JSON object")
    try:
        return rfc8785.dumps(_as_numbers(value)).decode("utf-8")
    except RecursionError:  # hostile nesting: refused like any other value JSON cannot hold
        raise ValueError("meta is nested too deeply") from None
    except (rfc8785.CanonicalizationError, TypeError, OverflowError, UnicodeError) as exc:
        raise ValueError(f"meta is not canonical JSON: {exc}") from None
