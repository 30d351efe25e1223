"""The import's fast JSON decoder (pydantic_core) never reads a line differently from the strict one.

`pmm import` decodes each event line with ``jsonl.fast_decoder()`` and, where that refuses the
line, with the strict decoder; a line counts as an event only when its fields are an int id and
six strings. So the fast decoder is safe exactly when: whatever text it accepts as a value
holding no float, the strict decoder accepts too, with the same value (same types, same
strings, the last of duplicate keys). Floats are out because no event field may hold one (the
fast decoder reads ``1e999`` as infinity, which the strict one refuses). Held here on generated
JSON, on that JSON mutated byte by byte, and on the cases where the two are known to differ.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pmm.ledger import jsonl

FAST = jsonl.fast_decoder()
STRICT = jsonl._loads


def _no_float(value: Any) -> bool:
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(_no_float(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_float(v) for v in value)
    return True


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (``1 == True`` does not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_agree(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return  # the import decodes each line from UTF-8 first: its text holds no raw surrogate
    try:
        fast = FAST(text)
    except ValueError:
        return  # refused: the strict decoder has the line
    if not _no_float(fast):
        return  # a float: never an event field, so such a line goes to the strict decoder
    try:
        strict = STRICT(text)
    except ValueError as exc:
        raise AssertionError(f"fast read {text!r} as {fast!r}; strict refuses it: {exc}") from None
    assert _same(fast, strict), f"{text!r}: fast {fast!r}, strict {strict!r}"


# Text with what JSON escapes, what it must not hold raw, and what UTF-8 makes hard.
TRICKY = st.text(st.sampled_from(['"', "\\", "/", "\x00", "\x1f", "\x7f", "\u2028", "é", "日",
                                  "🧠", "\ud800", "\udfff", "a", " "]), max_size=8)
SCALARS = st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | TRICKY
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(TRICKY, inner, max_size=4), max_leaves=12)
# What a mutation inserts: JSON's own punctuation, escapes, numbers' parts and odd characters.
PIECES = st.sampled_from(['"', "\\", "\\u", "\\ud800", "\\udc00", "\\uD83E\\uDDE0", "\\x", "{",
                          "}", "[", "]", ",", ":", "-", "0", "01", "1e999", "e", ".", "NaN",
                          "Infinity", "true", "null", " ", "\t", "\n", "\r", "\x0c", "\x00",
                          "\ufeff", "\u00a0", "é", "9" * 40])


@settings(max_examples=400, deadline=None)
@given(VALUES, st.booleans())
def test_generated_json_reads_the_same(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert_agree(text)
    assert_agree(json.dumps({"id": 1, "content": value}, ensure_ascii=ascii_only) + "\n")


@settings(max_examples=1500, deadline=None)
@given(VALUES, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3), PIECES), max_size=4))
def test_mutated_json_never_reads_differently(value: Any, edits: list[tuple[int, int, str]]) -> None:
    text = json.dumps({"id": 3, "ts": "t", "content": value, "meta": "{}"}, ensure_ascii=False)
    for at, cut, piece in edits:
        at %= len(text) + 1
        text = text[:at] + piece + text[at + cut:]
    assert_agree(text)


KNOWN = [
    '{"a":"\\ud800"}', '{"a":"\\udc00\\ud800"}', '{"a":"\\ud800\\u0041"}', '{"a":"\\ud83e\\udde0"}',
    '{"a":1,"a":2}', '{"a":"x","a":"y"}', '{"a":"x"} y', '{"a":"x"}  \n', '\ufeff{"a":1}',
    '{"a":"\x01"}', '{"a":"\x7f"}', '{"a":01}', '{"a":NaN}', '{"a":1e400}', '{"a":-0}',
    '{"a":' + "9" * 4300 + "}", '{"a":' + "9" * 4301 + "}", '{"a":"\\x"}', '{"a":"\\/"}',
    ' {"a":1}', '{"a":1}\r\n', '{"a":1}\x00', '{"a":"\\u0000"}', '{"a":Infinity}', '{"a":[1,]}',
    '{"a":1,}', "{'a':1}", '{"a":"\t"}', '{"a":1}\x0c', '{"a":1}\u00a0', '{"a":-9223372036854775809}',
    '{"a":"\\uD800\\uDC00"}', '{"a":"\\u00e9"}', '{"a":"\u2028"}', '{"a":1} {"b":2}', "", " ", "[]",
    '"text"', "12", '{"id":1,"ts":"a","kind":"k","content":"c","meta":"{\\"x\\":1}",'
    '"prev_hash":"p","hash":"h"}',
]


def test_the_known_differences_go_to_the_strict_decoder() -> None:
    for text in KNOWN:
        assert_agree(text)
    # The two differences found: the fast decoder refuses lone surrogates (the strict one reads
    # them, and the import then refuses them by name), and reads 1e999 as a float.
    for text in ('{"a":"\\ud800"}', '{"a":"\\udc00"}'):
        try:
            FAST(text)
        except ValueError:
            pass
        else:
            raise AssertionError(f"fast decoder read {text!r}")
    assert FAST('{"a":1e999}') == {"a": float("inf")}
