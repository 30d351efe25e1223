"""Model options (``pmm chat -o KEY VALUE``): which exist, what values they take, and the field
each wire protocol calls them by. Declared once: the CLI's check, its help and every adapter read
this table.

``temperature`` and ``max_tokens`` travel in ``Request``'s own fields (every request has them);
the rest travel in ``Request.options`` under pmm's names, and each adapter renames them with
``fields``. An option a protocol has no field for is refused before the request (``unsupported``),
never silently dropped.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from pmm import errors

LOCAL = "local"  # the in-process provider, which has no wire protocol


class Option(NamedTuple):
    name: str
    type: type  # int or float
    low: float
    high: float
    help: str
    fields: dict[str, str]  # protocol ("openai", "anthropic", "ollama", "local") -> its field name


_ALL = ("openai", "anthropic", "ollama", LOCAL)
OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("temperature", float, 0, 2, "sampling temperature (0: most predictable)",
           {p: "temperature" for p in _ALL}),
    Option("top_p", float, 0, 1, "nucleus sampling: the probability mass kept",
           {p: "top_p" for p in _ALL}),
    Option("top_k", int, 1, 100_000, "sample among the k likeliest tokens only",
           {"anthropic": "top_k", "ollama": "top_k", LOCAL: "top_k"}),
    Option("seed", int, 0, 2**31 - 1, "random seed, for repeatable answers where the model allows",
           {"openai": "seed", "ollama": "seed", LOCAL: "seed"}),
    Option("max_tokens", int, 1, 100_000, "longest answer in tokens (as --max-tokens)",
           {p: "max_tokens" for p in _ALL}),
    Option("frequency_penalty", float, -2, 2, "penalise tokens by how often they appeared",
           {"openai": "frequency_penalty", "ollama": "frequency_penalty", LOCAL: "frequency_penalty"}),
    Option("presence_penalty", float, -2, 2, "penalise tokens that appeared at all",
           {"openai": "presence_penalty", "ollama": "presence_penalty", LOCAL: "presence_penalty"}),
)}
IN_REQUEST = ("temperature", "max_tokens")  # Request fields of their own, not in Request.options

Value = int | float


def summary() -> str:
    """The options in one line each, for ``--help``."""
    return "; ".join(f"{o.name} ({o.type.__name__} {_num(o.low)}..{_num(o.high)})"
                     for o in OPTIONS.values())


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def parse(pairs: list[tuple[str, str]]) -> dict[str, Value]:
    """``-o KEY VALUE`` pairs checked and converted; an unknown key or a bad value is a usage
    error (exit 2). A key given twice: the last one counts."""
    found: dict[str, Value] = {}
    for key, text in pairs:
        option = OPTIONS.get(key.strip().lower().replace("-", "_"))
        if option is None:
            raise errors.UsageError(f"unknown model option {key!r}",
                                    hint="options: " + ", ".join(OPTIONS))
        value: Value
        try:
            if option.type is int:
                value = int(text.strip())
            else:
                value = float(text.strip())
        except ValueError:
            raise errors.UsageError(f"option {option.name} takes {'an integer' if option.type is int else 'a number'},"
                                    f" not {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value) or not option.low <= value <= option.high:
            raise errors.UsageError(f"option {option.name} must be from {_num(option.low)} to"
                                    f" {_num(option.high)}, not {text!r}")
        found[option.name] = value
    return found


def unsupported(options: dict[str, Value], protocol: str | None) -> list[str]:
    """The options the protocol (None: the local provider) has no field for."""
    where = protocol or LOCAL
    return [name for name in options if where not in OPTIONS[name].fields]


def fields(options: dict[str, Any], protocol: str) -> dict[str, Any]:
    """``Request.options`` under the protocol's own field names (options it lacks are left out:
    the caller refused them before the request, see ``unsupported``)."""
    return {OPTIONS[name].fields[protocol]: value for name, value in options.items()
            if name in OPTIONS and protocol in OPTIONS[name].fields}


def recorded(options: dict[str, Value]) -> list[str]:
    """The options as ``response_sent`` records them: ``["seed=7", "temperature=0.2"]``."""
    return [f"{name}={options[name]}" for name in sorted(options)]
