"""`pmm verify --deep` checks every meta with Python's C encoder where that provably writes the
RFC 8785 text, and with the reference (rfc8785 via ``canonical_json``) everywhere else: the two
answers must be the same for every text, canonical or not.

The tricky cases are named one by one (unicode, escapes, floats, big integers, key order,
nesting); hypothesis then writes random JSON objects in canonical and in non-canonical ways and
mutates canonical texts one character at a time.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from eventgen import FINITE, SAFE_INT
from hypothesis import given, settings
from hypothesis import strategies as st

from pmm.domain.canonical import (
    CanonicalMetas,
    canonical_json,
    is_canonical,
    is_canonical_reference,
)


def _nested(depth: int) -> str:
    return '{"a":' + "[" * depth + "]" * depth + "}"


UNICODE = [
    '{"a":"é"}', '{"a":"\\u00e9"}', '{"é":1}', '{"a":"日本語"}', '{"a":"\U0001F600"}',
    '{"a":"\\ud83d\\ude00"}', '{"\U0001F600":1}', '{"a":"\u2028\u2029"}', '{"a":"\\u2028"}',
    '{"a":"\\ud800"}', '{"a":"\ud800"}', '{"a":"\\udfff"}', '{"\\ud800":1}', '{"a":"\ufeff"}',
    '{"a":"\\uffff"}', '{"a":"\uffff"}', '{"a":"\U0010ffff"}', '{"a":"\u0000"}',
]
ESCAPES = [
    '{"a":"\\b\\f\\n\\r\\t"}', '{"a":"\\u0008"}', '{"a":"\\u0009"}', '{"a":"\\u000a"}',
    '{"a":"\\u000A"}', '{"a":"\\u000c"}', '{"a":"\\u000d"}', '{"a":"\\u001f"}', '{"a":"\\u001F"}',
    '{"a":"\\u0000"}', '{"a":"\\""}', '{"a":"\\\\"}', '{"a":"\\/"}', '{"a":"/"}', '{"a":"\\u0022"}',
    '{"a":"\\u005c"}', '{"a":"\x7f"}', '{"a":"\\u007f"}', '{"a":"\\u0041"}', '{"a":"\\\\u0008"}',
    '{"a":"\t"}', '{"a":"\n"}',
]
FLOATS = [
    '{"a":1.5}', '{"a":-1.5}', '{"a":1.0}', '{"a":1}', '{"a":-0.0}', '{"a":0.0}', '{"a":0}',
    '{"a":-0}', '{"a":1.50}', '{"a":0.1}', '{"a":0.30000000000000004}', '{"a":1e16}',
    '{"a":10000000000000000}', '{"a":1e+16}', '{"a":1E16}', '{"a":1e21}', '{"a":1e+21}',
    '{"a":1e20}', '{"a":100000000000000000000}', '{"a":1e-6}', '{"a":0.000001}', '{"a":1e-7}',
    '{"a":1e-07}', '{"a":0.0001}', '{"a":0.00001}', '{"a":1e-5}', '{"a":5e-324}',
    '{"a":1.7976931348623157e+308}', '{"a":1e400}', '{"a":-1e400}', '{"a":NaN}',
    '{"a":Infinity}', '{"a":-Infinity}', '{"a":123456789012345680000}', '{"a":1234.5678}',
    '{"a":9007199254740993.5}', '{"a":2.5e-5}', '{"a":0.000025}', '{"a":.5}', '{"a":5.}',
    '{"a":1.5e2}', '{"a":150}', '{"a":01}',
]
BIG_INTS = [
    '{"a":9007199254740991}', '{"a":-9007199254740991}', '{"a":9007199254740992}',
    '{"a":9007199254740993}', '{"a":-9007199254740992}', '{"a":999999999999999}',
    '{"a":1000000000000000}', '{"a":1152921504606846976}', '{"a":1152921504606846977}',
    '{"a":' + "1" + "0" * 400 + "}", '{"a":"12345678901234567890"}', '{"a":[1,2,3]}',
]
KEY_ORDER = [
    '{"a":1,"b":2}', '{"b":2,"a":1}', '{"B":1,"a":2}', '{"a":2,"B":1}', '{"a":1,"a":1}',
    '{"a":1,"a":2}', '{"":1,"a":2}', '{"a":3,"\U0001F600":1,"\uff61":2}',
    '{"\U0001F600":1,"\uff61":2,"a":3}', '{"a":3,"\uff61":2,"\U0001F600":1}',
    '{"\ue000":1,"\U00010000":2}', '{"\U00010000":2,"\ue000":1}', '{"é":1,"z":2}', '{"z":2,"é":1}',
    '{"a":{"d":1,"c":2}}', '{"a":{"c":2,"d":1}}',
]
NESTED = [
    _nested(1), _nested(31), _nested(62), _nested(63), _nested(64), _nested(65), _nested(200),
    _nested(5000), _nested(100_000), '{"a":{"b":{"c":[{"d":null}]}}}', '{"a":[' + "{}," * 70 + "{}]}",
]
NOT_OBJECTS = [
    "", " ", "{}", "[]", "1", '"a"', "null", " {}", "{} ", "{ }", '{"a" :1}', '{"a": 1}',
    '{"a":1,}', '{"a":1}{}', '{"a":true,"b":false,"c":null}', '{"a":True}', "{'a':1}",
]
TRICKY = UNICODE + ESCAPES + FLOATS + BIG_INTS + KEY_ORDER + NESTED + NOT_OBJECTS


@pytest.mark.parametrize("text", TRICKY, ids=lambda t: repr(t)[:40])
def test_the_fast_check_answers_as_the_reference_does(text: str) -> None:
    assert is_canonical(text) == is_canonical_reference(text)
    assert CanonicalMetas()(text) == is_canonical_reference(text)


def test_the_tricky_cases_include_canonical_texts_of_each_sort() -> None:
    """The list is not all refusals: the fast path really answers yes on each family."""
    for family in (UNICODE, ESCAPES, FLOATS, BIG_INTS, KEY_ORDER, NESTED):
        assert any(is_canonical(t) for t in family)
        assert not all(is_canonical(t) for t in family)


JSON_LEAF = (st.none() | st.booleans() | SAFE_INT | st.integers() | FINITE | st.floats()
             | st.text(max_size=8) | st.sampled_from(["\ud800", "\U0001F600", "\uff61", "\x7f", "\x08"]))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=10)
OBJECTS = st.dictionaries(st.text(max_size=6), JSON_VALUE, max_size=5)
SETTINGS = settings(max_examples=300, deadline=None)


def _writings(value: dict[str, Any]) -> list[str]:
    """``value`` written canonically (when it can be) and in the ways JSON writers differ."""
    texts = []
    try:
        texts.append(canonical_json(value))
    except ValueError:
        pass
    for ascii_only in (True, False):
        for keys in (True, False):
            try:
                texts.append(json.dumps(value, ensure_ascii=ascii_only, sort_keys=keys,
                                        separators=(",", ":")))
            except ValueError:
                pass
    return texts


@SETTINGS
@given(OBJECTS)
def test_any_writing_of_any_object_gets_the_same_answer(value: dict[str, Any]) -> None:
    for text in _writings(value):
        assert is_canonical(text) == is_canonical_reference(text), text


@SETTINGS
@given(OBJECTS, st.data())
def test_one_character_changed_gets_the_same_answer(value: dict[str, Any], data: st.DataObject) -> None:
    texts = _writings(value)
    text = data.draw(st.sampled_from(texts)) if texts else "{}"
    at = data.draw(st.integers(0, len(text)))
    put = data.draw(st.sampled_from(list('0123456789.eE-+"\\u{}[],: a\x08é\U0001F600\uff61')))
    for changed in (text[:at] + put + text[at:], text[:at] + put + text[at + 1:], text[:at] + text[at + 1:]):
        assert is_canonical(changed) == is_canonical_reference(changed), changed


def test_the_memo_stays_bounded_and_right() -> None:
    check = CanonicalMetas(size=4)
    texts = ['{"n":%d}' % i for i in range(10)] + ['{"n":1.0}', '{"n": 1}']
    for _ in range(3):
        assert [check(t) for t in texts] == [is_canonical_reference(t) for t in texts]
    assert len(check._seen) <= 4
