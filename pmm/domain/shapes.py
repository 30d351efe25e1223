"""What a valid event looks like, field by field: the checks behind ``pmm.domain.events``.

Each kind's ``meta`` declaration (a ``Field`` per name) is compiled once into a plain function
that returns why a ``meta`` object does not fit, or ``None``. The same checks run when pmm
appends (``check_draft``) and when it reads someone else's chain (verify, import, restore), so
anything that passed is something the projections and commands can rely on. pydantic would do
this too, but at several times the cost per event, and verify has a bar of 300,000 events/s.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

MAX_ID = 2**53 - 1  # an event id, like any JSON integer, must survive a double
TS_TEXT = "YYYY-MM-DDTHH:MM:SS.ffffffZ (UTC)"
_TS_PARTS = r"(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z"
TS_PATTERN = re.compile(_TS_PARTS)
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
MAX_DEPTH = 32  # nesting allowed in the meta of a kind this pmm does not know

Check = Callable[[Any], "str | None"]


def real_day(year: int, month: int, day: int) -> bool:
    """Whether the regex-valid date exists (no 31 April, 29 February only in leap years)."""
    if year == 0 or day > _DAYS[month - 1]:
        return False
    return not (month == 2 and day == 29) or (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0))


def is_ts(value: str) -> bool:
    """Whether ``value`` is a ledger timestamp of a real moment."""
    match = TS_PATTERN.fullmatch(value)
    if match is None:
        return False
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    return (day <= 28 and year != 0) or real_day(year, month, day)


# verify's shortcut: the shape and the time of day here, the date once per day in DATES
TS_FAST = re.compile(rb"\d{4}-[01]\d-[0-3]\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z")
DATES: dict[bytes, bool] = {}


def is_ts_bytes(value: bytes) -> bool:
    """``is_ts`` for the stored bytes, remembering each date's verdict (a mind's events share
    few dates)."""
    if TS_FAST.fullmatch(value) is None:
        return False
    date = value[:10]
    ok = DATES.get(date)
    if ok is None:
        if len(DATES) > 4096:
            DATES.clear()
        ok = DATES[date] = is_ts(value.decode("ascii"))
    return ok


class Field(NamedTuple):
    """One ``meta`` field: its JSON type and, where it matters, what values are allowed.

    ``type`` is str, int, number, bool or list (``items`` names the element type); ``low`` and
    ``high`` bound numbers (and list elements); ``choices`` is an enum; ``ts`` means a ledger
    timestamp."""

    type: str
    required: bool = False
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    items: str | None = None
    ts: bool = False

    def describe(self) -> str:
        """The field in words, for docs/event-kinds.md."""
        text = f"list of {self.items}" if self.type == "list" else self.type
        if self.ts:
            text += f", a timestamp {TS_TEXT}"
        if self.choices:
            text += ", one of " + ", ".join(f"`{c}`" for c in self.choices)
        if self.low is not None and self.high is not None:
            text += f" from {_num(self.low)} to {_num(self.high)}"
        elif self.low is not None:
            text += f" of at least {_num(self.low)}"
        return text


def _num(value: float) -> str:
    return "2^53-1" if value == MAX_ID else (str(int(value)) if value == int(value) else str(value))


def _scalar(type_name: str, field: Field) -> Check:
    low, high, choices = field.low, field.high, frozenset(field.choices)
    if type_name == "str":
        if field.ts:
            return lambda v: None if type(v) is str and is_ts(v) else f"must be a timestamp {TS_TEXT}"
        if choices:
            allowed = ", ".join(field.choices)
            return lambda v: None if type(v) is str and v in choices else f"must be one of {allowed}"
        return lambda v: None if type(v) is str else "must be a string"
    if type_name == "bool":
        return lambda v: None if type(v) is bool else "must be true or false"
    if type_name == "int":
        lo = -MAX_ID if low is None else low
        hi = MAX_ID if high is None else high
        bad = f"must be an integer from {_num(lo)} to {_num(hi)}"
        return lambda v: None if type(v) is int and lo <= v <= hi else bad
    if type_name == "number":
        lo_f = -math.inf if low is None else low
        hi_f = math.inf if high is None else high
        word = "a number" if low is None and high is None else f"a number from {_num(lo_f)} to {_num(hi_f)}"

        def number(v: Any) -> str | None:
            if type(v) is int:  # canonical text writes an integral double such as 1e16 as digits
                try:
                    v = float(v)
                except OverflowError:
                    return f"must be {word}"
            if type(v) is float and math.isfinite(v) and lo_f <= v <= hi_f:
                return None
            return f"must be {word}"

        return number
    raise ValueError(f"unknown field type {type_name!r}")


def field_check(field: Field) -> Check:
    if field.type != "list":
        return _scalar(field.type, field)
    if field.items is None:
        raise ValueError("a list field names its items' type")
    item = _scalar(field.items, field)

    def items(v: Any) -> str | None:
        if type(v) is not list:
            return f"must be a list of {field.items}"
        for element in v:
            why = item(element)
            if why is not None:
                return f"has an element that {why}"
        return None

    return items


_STR, _INT, _INTS, _OTHER = 0, 1, 2, 3
_INT_SET = frozenset({int})


def compile_meta(kind: str, fields: dict[str, Field], version: int) -> Callable[[dict[str, Any]], str | None]:
    """One function that says why ``meta`` does not fit ``fields`` (``None`` when it does).

    Verify runs this on every event, so the common shapes (a string, a bounded integer, a list
    of bounded integers) are checked inline at C speed; the rest call their own check, and
    any failure is worded by the field's full check."""
    table: dict[str, tuple[int, float, float, Check]] = {}
    for name, f in fields.items():
        full = field_check(f)
        lo = -MAX_ID if f.low is None else f.low
        hi = MAX_ID if f.high is None else f.high
        if f.type == "str" and not (f.choices or f.ts):
            table[name] = (_STR, 0, 0, full)
        elif f.type == "int":
            table[name] = (_INT, lo, hi, full)
        elif f.type == "list" and f.items == "int":
            table[name] = (_INTS, lo, hi, full)
        else:
            table[name] = (_OTHER, 0, 0, full)
    table["v"] = (_OTHER, 0, 0, _version_check(kind, version))
    required = frozenset(name for name, f in fields.items() if f.required)
    order = tuple(name for name in fields if name in required)

    def check(meta: dict[str, Any]) -> str | None:
        for name, value in meta.items():
            spec = table.get(name)
            if spec is None:
                return f"{kind}: undeclared meta field {name!r}"
            code = spec[0]
            if code == _STR:
                if type(value) is str:
                    continue
            elif code == _INT:
                if type(value) is int and spec[1] <= value <= spec[2]:
                    continue
            elif code == _INTS and type(value) is list and (not value or (
                    set(map(type, value)) == _INT_SET and spec[1] <= min(value)
                    and max(value) <= spec[2])):
                continue
            why = spec[3](value)
            if why is not None:
                return why if name == "v" else f"{kind}: meta field {name!r} {why}"
        if required and not required <= meta.keys():
            missing = next(name for name in order if name not in meta)
            return f"{kind}: meta field {missing!r} is required"
        return None

    return check


# The canonical (RFC 8785) text of common values: what pmm itself writes. A string escapes
# only '"', '\\' and control characters, so no lone surrogate can match.
_CANON_STR = rb'"[^"\\\x00-\x1f]*(?:\\(?:["\\bfnrt]|u00[01][0-9a-f])[^"\\\x00-\x1f]*)*"'
_CANON_ID = rb"[1-9]\d{0,14}"  # 1 .. 10**15 - 1, inside 1 .. 2**53 - 1
_CANON_INT = rb"(?:0|-?[1-9]\d{0,14})"
_CANON_TS = (rb'"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d'
             rb'\.\d{6}Z"')  # days 29-31 and year 0000 onwards take the full check
# A number from 0 to under a million written plainly (prices): exponents take the full check
_CANON_PRICE = rb"(?:0|[1-9]\d{0,5})(?:\.\d{1,17})?"


def _canon_value(f: Field) -> bytes | None:
    """A pattern that only matches canonical values the field accepts, or ``None``."""
    if f.type == "str":
        if f.ts:
            return _CANON_TS
        if f.choices:
            return b"(?:" + b"|".join(re.escape(json.dumps(c).encode()) for c in f.choices) + b")"
        return _CANON_STR
    if f.type == "int" or (f.type == "list" and f.items == "int"):
        if f.low == 1 and f.high == MAX_ID:
            one = _CANON_ID
        elif f.low is None and f.high is None:
            one = _CANON_INT
        else:
            return None
        return one if f.type == "int" else rb"\[(?:" + one + rb"(?:," + one + rb")*)?\]"
    if f.type == "list" and f.items == "str":
        return rb"\[(?:" + _CANON_STR + rb"(?:," + _CANON_STR + rb")*)?\]"
    if f.type == "bool":
        return rb"(?:true|false)"
    if f.type == "number" and f.low == 0 and f.high is not None and f.high >= 1_000_000:
        return _CANON_PRICE
    return None


def compile_fast(fields: dict[str, Field], version: int
                 ) -> tuple[re.Pattern[bytes], tuple[bytes, ...]] | None:
    """A pattern for the canonical text of metas that fit ``fields`` (declared fields only, in
    canonical order, each with a value its field accepts), and the ``"name":``
    bytes of the required ones; ``None`` when a field has no pattern (numbers other than
    prices: their bounds are checked in full). Only ever a shortcut: what it does not match goes through
    ``parse_meta`` and the compiled check.

    A member matches only with its own field's value pattern, so any text the pattern
    matches is an object of declared fields with valid values. A required field's
    ``"name":`` cannot occur inside a string of such text (every quote there is escaped), so
    finding it proves the field present."""
    members = [(b"v", b'"v":(?:' + b"|".join(b"%d" % n for n in range(1, version + 1)) + b")")]
    for name, f in fields.items():
        value = _canon_value(f)
        if value is None or not name.isascii():
            return None
        members.append((name.encode(), re.escape(json.dumps(name).encode()) + b":" + value))
    members.sort()  # canonical order (for ASCII names, byte order)
    # Members in order, each optional, each followed by a comma that another member follows
    # or by the closing brace: no leading, trailing or missing comma, and one pass, linear.
    body = b"".join(b"(?:" + p + rb'(?:,(?=")|(?=\}))' + b")?" for _, p in members)
    required = tuple(json.dumps(name).encode() + b":" for name, f in fields.items() if f.required)
    return re.compile(rb"\{" + body + rb"\}"), required


def _version_check(kind: str, version: int) -> Check:
    def check(value: Any) -> str | None:
        if type(value) is not int or value < 1:
            return f"{kind}: meta field 'v' (the kind's version) must be an integer of at least 1"
        if value > version:
            return (f"{kind} version {value} is newer than this pmm reads ({version});"
                    " upgrade pmm to read this mind")
        return None

    return check


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_decode, _scan = _decoder.decode, _decoder.scan_once  # type: ignore[attr-defined]


def parse_meta(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """``meta`` text as an object, strictly (no NaN, no Infinity, no lone surrogates, bounded
    nesting); or ``None`` and why not."""
    try:  # the scanner alone is twice as fast as decode(); decode() words what it refuses
        value, end = _scan(text, 0)
        if end != len(text):
            raise ValueError
    except (StopIteration, ValueError, RecursionError):
        try:
            value = _decode(text)
        except RecursionError:
            return None, "meta is nested too deeply"
        except ValueError as exc:  # includes a number with more digits than Python converts
            return None, f"meta is not valid JSON ({str(exc)[:80]})"
    if type(value) is not dict:
        return None, "meta is not a JSON object"
    if "\\u" in text and not _unicode_ok(value, 0):
        return None, "meta holds a lone surrogate (\\ud800-\\udfff) or is nested too deeply"
    return value, None


def _unicode_ok(value: Any, depth: int) -> bool:
    """Every string encodes as UTF-8 (``\\ud800`` in JSON text decodes to a lone surrogate)."""
    if depth > MAX_DEPTH:
        return False
    if type(value) is str:
        return not _SURROGATE.search(value)
    if type(value) is dict:
        return all(_unicode_ok(k, depth) and _unicode_ok(v, depth + 1) for k, v in value.items())
    if type(value) is list:
        return all(_unicode_ok(v, depth + 1) for v in value)
    return True


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def depth_ok(value: Any, depth: int = 0) -> bool:
    """Nesting of at most ``MAX_DEPTH`` (only the meta of unknown kinds can nest at all)."""
    if depth > MAX_DEPTH:
        return False
    if type(value) is dict:
        return all(depth_ok(v, depth + 1) for v in value.values())
    if type(value) is list:
        return all(depth_ok(v, depth + 1) for v in value)
    return True
