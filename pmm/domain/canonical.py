"""Canonical JSON (RFC 8785) for event ``meta``: computed once, when an event is written, and
checked again by ``pmm verify --deep`` (``is_canonical``, ``CanonicalMetas``)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any

_SAFE = 2**53 - 1
NOT_CANONICAL = "meta is not canonical JSON"  # the reason verify --deep and import give


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


def is_canonical_reference(text: str) -> bool:
    """Whether ``text`` is the canonical text of a JSON object, by definition: it reads as an
    object and ``canonical_json`` writes it back unchanged. ``is_canonical`` answers the same."""
    return _reference(text)[0]


def _reference(text: str) -> tuple[bool, Any]:
    """``is_canonical_reference(text)``, and the object ``text`` holds when it is canonical."""
    try:
        value = json.loads(text)
        if isinstance(value, dict) and canonical_json(value) == text:
            return True, value
    except (ValueError, RecursionError):  # hostile nesting is not canonical either
        pass
    return False, None


# -- the same answer at C speed -------------------------------------------------------------
#
# Python's own encoder, with sorted keys, no spaces and no ASCII escaping, writes exactly the
# RFC 8785 text of a value made only of:
#   * strings with no lone surrogate: both escape only '"', '\\' and U+0000-U+001F, and the same
#     way (\b \t \n \f \r, else \u00xx in lower case); everything else is written as itself;
#   * keys of the Basic Multilingual Plane: there, sorting by code point (Python) and by UTF-16
#     code unit (RFC 8785) agree;
#   * integers within +-(2**53 - 1): both write their decimal digits;
#   * finite floats whose repr is plain decimal with a fraction ("0.25", "-1234.5"): both write
#     that repr (rfc8785 starts from str(f) and only rewrites exponents and a trailing ".0");
#   * true, false, null, lists and objects nested well within the recursion limit.
# ``is_canonical`` answers with that encoder only when ``text`` can hold nothing else, and
# otherwise asks ``is_canonical_reference``. Text that decodes to a lone surrogate or to a
# character past U+FFFF only through escapes is not canonical by either (both would write
# the character itself, and ``text`` holds none), so the raw characters of ``text`` are what
# the gate looks at. tests/test_canonical_check_agrees_with_the_reference.py holds this.

_MAX_BRACKETS = 64  # '{' and '[' in the text bound its nesting, far below the recursion limit
_LONG_DIGITS = re.compile(r"[0-9]{16}")  # a longer integer may be past 2**53 (or a float)
_WIDE = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")


class _Unsure(Exception):
    """A number whose canonical text only the reference implementation writes."""


def _plain_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Unsure
    text = repr(value)
    if "e" in text or text.endswith(".0"):  # exponent forms and integral doubles differ
        raise _Unsure
    return value


def _no_constant(name: str) -> Any:
    raise _Unsure  # NaN and Infinity: refused by the reference, in its own words


def _refuse(value: Any) -> Any:
    raise TypeError  # never called: a decoded value holds only JSON types


_scan = json.JSONDecoder(parse_float=_plain_float, parse_constant=_no_constant).scan_once  # type: ignore[attr-defined]
_encode: Callable[[Any], str] = json.JSONEncoder(  # without the C accelerator: the same text
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False,
    allow_nan=False).encode
_c_encoder = getattr(_json_encoder, "c_make_encoder", None)
_c_string = getattr(_json_encoder, "c_encode_basestring", None)
if _c_encoder is not None and _c_string is not None:  # what that encoder runs, built once
    _chunks = _c_encoder(None, _refuse, _c_string, None, ":", ",", True, False, False)

    def _encode(value: Any) -> str:
        return "".join(_chunks(value, 0))


def is_canonical(text: str) -> bool:
    """``is_canonical_reference(text)``, computed with Python's C encoder where it provably
    writes the RFC 8785 text (see above), a few times faster."""
    return canonical_value(text)[0]


def canonical_value(text: str) -> tuple[bool, Any]:
    """``is_canonical(text)``, and the object ``text`` holds when it is canonical (else None):
    what ``json.loads(text)`` reads (a canonical text has no space around it, and its numbers
    are read as ``json.loads`` reads them)."""
    if (text.count("{") + text.count("[") > _MAX_BRACKETS or _LONG_DIGITS.search(text)
            or (not text.isascii() and _WIDE.search(text))):
        return _reference(text)
    try:
        value, end = _scan(text, 0)
    except _Unsure:
        return _reference(text)
    except (StopIteration, ValueError):  # not JSON at all, or not from its first character
        return False, None
    if end != len(text) or type(value) is not dict:
        return False, None
    try:
        return (True, value) if _encode(value) == text else (False, None)
    except (ValueError, TypeError, RecursionError):  # not expected; the reference decides
        return _reference(text)


class CanonicalMetas:
    """``is_canonical`` with a memo: a mind repeats its metas (every event of a session, say),
    so most are answered by one lookup. The memo holds at most ``size`` texts of at most
    ``LONGEST`` characters, so memory stays flat however many events are checked; of the
    short ones it keeps the object read too (``value``)."""

    SHORT = 1024  # the texts whose object is kept (a few times the text's size in memory)
    LONGEST = 4096  # the texts remembered at all (a meta may be 8 MiB; repeated ones are short)

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._seen: dict[str, tuple[bool, Any]] = {}

    def __call__(self, text: str) -> bool:
        seen = self._seen.get(text)
        if seen is None:
            seen = self._remember(text)
        return seen[0]

    def value(self, text: str) -> tuple[bool, Any]:
        """Whether ``text`` is canonical, and the object it holds when it is (else None)."""
        seen = self._seen.get(text)
        if seen is None:
            return self._remember(text)
        if seen[0] and seen[1] is None:  # a long text, read again
            return True, json.loads(text)
        return seen

    def _remember(self, text: str) -> tuple[bool, Any]:
        if len(self._seen) >= self._size:
            self._seen.clear()
        found = canonical_value(text)
        if len(text) <= self.SHORT:
            self._seen[text] = found
        elif len(text) <= self.LONGEST:
            self._seen[text] = (found[0], None)
        return found
