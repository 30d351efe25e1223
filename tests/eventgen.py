"""Hypothesis strategies for events, built from the declarations in pmm.domain.events: a meta
for any kind that its schema accepts, so property tests cover every kind and field as declared."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from pmm.domain.events import KINDS, LEDGER_ONLY, Draft
from pmm.domain.shapes import MAX_ID, Field

SAFE_INT = st.integers(-MAX_ID, MAX_ID)  # RFC 8785 numbers are IEEE doubles
# Doubles in [2**53, 1e21) print as long integers and read back as ints beyond RFC 8785's safe
# integer range; they are covered by their own test, the rest of the range here.
FINITE = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not 2**53 <= abs(x) < 1e21)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """A ledger timestamp: any real date and time from year 1 to 9999."""
    moment = draw(st.datetimes())
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
            f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z")


def _scalar(type_name: str, field: Field) -> st.SearchStrategy[Any]:
    if type_name == "str":
        if field.ts:
            return timestamps()
        if field.choices:
            return st.sampled_from(field.choices)
        return st.text(max_size=40)
    if type_name == "bool":
        return st.booleans()
    if type_name == "int":
        low = -MAX_ID if field.low is None else int(field.low)
        high = MAX_ID if field.high is None else int(field.high)
        return st.integers(low, high)
    if type_name == "number":
        if field.low is None and field.high is None:
            return SAFE_INT | FINITE
        return st.floats(field.low, field.high, allow_nan=False, allow_infinity=False)
    raise AssertionError(f"a new meta field type {type_name!r} needs a strategy here")


def value_for(field: Field) -> st.SearchStrategy[Any]:
    if field.type == "list":
        assert field.items is not None
        return st.lists(_scalar(field.items, field), max_size=4)
    return _scalar(field.type, field)


def meta_for(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    declared = KINDS[kind].meta
    required = {k: value_for(f) for k, f in declared.items() if f.required}
    optional = {k: value_for(f) for k, f in declared.items() if not f.required}
    return st.fixed_dictionaries(required, optional=optional)


# Every kind an append may write (LEDGER_ONLY kinds only come with what they record: the forget
# and upgrade tests make those).
DRAFTS = st.sampled_from(sorted(set(KINDS) - LEDGER_ONLY)).flatmap(
    lambda kind: st.builds(Draft, st.just(kind), st.text(max_size=120), meta_for(kind)))
