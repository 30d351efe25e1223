"""Property tests for the mind's dynamics (docs/mind-model.md), on pure folds of random events.

Random sequences of the kinds the projections read (names, user turns, reflections, trait steps
with any delta, commitments opened, closed with random evidence, expired and reopened) are
folded with the real projections: replay is deterministic and equal to an incremental fold
through the JSON cache; traits stay in [0, 1] with bounded steps; every metric stays in [0, 1];
the stage is monotone; no commitment closes without valid evidence; the counters add up.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pmm.domain import dynamics, projections
from pmm.domain.events import OCEAN, Event
from pmm.domain.growth import MAX_TRAIT_STEP, RECENT_STEPS, valid_evidence

SETTINGS = settings(max_examples=120, deadline=None)
BASE = datetime(2025, 3, 1, tzinfo=UTC)
COMMITMENT_KINDS = ("commitment_opened", "commitment_closed", "commitment_expired",
                    "commitment_reopened")


def ts(minutes: int) -> str:
    return (BASE + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


DELTAS = st.one_of(
    st.floats(-1.0, 1.0),
    st.floats(allow_nan=True, allow_infinity=True),  # json reads NaN and Infinity back
    st.integers(-(10**300), 10**300),  # past ~1.8e308 an int no longer converts to float
    st.integers(-3, 3),
    st.sampled_from([0.05, -0.05, 0.0499999, 0.0500001, 1e-9, -0.0]),
    st.booleans(), st.none(), st.text(max_size=3),
)
TRAIT_NAMES = st.sampled_from(OCEAN) | st.sampled_from(["curiosity", "", "Openness"])
CONTENT = st.sampled_from(["kept: see the evidence", "x", "", " ", "\n"])
DUE = st.none() | st.integers(0, 200).map(ts)


@st.composite
def evidence_for(draw: st.DrawFn, opened: int | None, closing: int) -> Any:
    if opened is not None and closing - opened > 1 and draw(st.integers(0, 2)):
        return draw(st.lists(st.integers(opened + 1, closing - 1), min_size=1, max_size=3))
    item = st.one_of(st.integers(-2, closing + 2), st.booleans(), st.floats(0, closing),
                     st.text(max_size=2), st.none())
    return draw(st.one_of(st.lists(item, max_size=3), item, st.dictionaries(st.text(max_size=2), item)))


@st.composite
def mind_events(draw: st.DrawFn, max_events: int = 70) -> list[Event]:
    """Events as a ledger could hold them: ids 1..n, non-decreasing times, realistic shapes but
    arbitrary references and evidence, so many closes, expiries and reopens are refused."""
    out: list[Event] = []
    opened_ids: list[int] = []
    n = draw(st.integers(0, max_events))
    minute = 0
    while len(out) < n:
        i = len(out) + 1
        minute += draw(st.integers(0, 5))
        kind = draw(st.sampled_from([
            "mind_created", "mind_named", "message_received", "message_burst", "reflection_recorded",
            "trait_adjusted", "trait_adjusted", *COMMITMENT_KINDS, *COMMITMENT_KINDS[:2] * 2]))
        meta: dict[str, Any] = {}
        content = draw(CONTENT)
        if kind == "message_burst":  # enough user turns to reach the turn limit for expiry
            for _ in range(draw(st.sampled_from([1, 5, 20, 50]))):
                out.append(Event(len(out) + 1, ts(minute), "message_received", "hi", "{}", "", ""))
            continue
        if kind == "mind_created":
            meta = {"pmm_version": "0.1.0", **({"name": "Ada"} if draw(st.booleans()) else {})}
        elif kind == "mind_named":
            meta = {"name": draw(st.sampled_from(["Ada", "Echo", "Nova"]))}
        elif kind == "reflection_recorded":
            meta = {"first_id": 1, "last_id": max(1, i - 1), "trigger": "cadence"}
        elif kind == "trait_adjusted":
            meta = {"trait": draw(TRAIT_NAMES), "delta": draw(DELTAS)}
        elif kind == "commitment_opened":
            meta = {"source": draw(st.sampled_from(["user", "reflection", "conversation"]))}
            due = draw(DUE)
            if due is not None:
                meta["due"] = due
            opened_ids.append(i)
        else:
            known = bool(opened_ids) and draw(st.integers(0, 3)) > 0  # mostly a real commitment
            target = draw(st.sampled_from(opened_ids) if known else st.integers(-1, i + 1))
            meta = {"commitment": target}
            if kind == "commitment_closed":
                opened = target if target in opened_ids else None
                meta["evidence"] = draw(evidence_for(opened, i))
            elif kind == "commitment_expired":
                meta["reason"] = "due"
            elif (due := draw(DUE)) is not None:
                meta["due"] = due
        meta_json = json.dumps(meta, separators=(",", ":"))
        out.append(Event(i, ts(minute), kind, content, meta_json, "", ""))
    return out


def _round_trip(states: dict[str, Any]) -> dict[str, Any]:
    """What the projection cache stores and reads back."""
    return json.loads(json.dumps(states, sort_keys=True, allow_nan=False))


@SETTINGS
@given(mind_events(), st.lists(st.integers(1, 20), max_size=10))
def test_replay_is_deterministic_and_equals_an_incremental_cached_fold(
        events: list[Event], cuts: list[int]) -> None:
    once = projections.replay(events)
    assert projections.replay(list(events)) == once
    states = None
    start = 0
    for size in [*cuts, len(events)]:
        chunk = events[start:start + size]
        start += len(chunk)
        states = _round_trip(projections.replay(chunk, states))
    assert start == len(events)
    assert states == once
    assert json.dumps(states, sort_keys=True) == json.dumps(_round_trip(once), sort_keys=True)


@SETTINGS
@given(mind_events())
def test_traits_stay_in_bounds_and_move_by_bounded_steps(events: list[Event]) -> None:
    fold = projections.Fold()
    for event in events:
        before = fold.states["traits"]
        fold.add(event)
        after = fold.states["traits"]
        assert set(after["values"]) == set(OCEAN)
        for trait, value in after["values"].items():
            assert isinstance(value, float) and 0.0 <= value <= 1.0
            # 1e-12: the value is rounded to 6 decimals, so a full step can be 0.05 + 1 ulp
            assert abs(value - before["values"][trait]) <= MAX_TRAIT_STEP + 1e-12
        changed = [t for t in OCEAN if after["values"][t] != before["values"][t]]
        assert len(changed) <= 1
        if event.kind != "trait_adjusted":  # a reflection is noted, in case it is retracted
            assert all(after[k] == before[k] for k in ("values", "adjustments", "recent", "moved"))
        assert len(after["recent"]) <= RECENT_STEPS
        assert all(0.0 <= step <= MAX_TRAIT_STEP for step in after["recent"])
        assert after["moved"] >= before["moved"]


@SETTINGS
@given(mind_events())
def test_metrics_and_every_component_are_in_the_unit_interval(events: list[Event]) -> None:
    fold = projections.Fold()
    for event in events:
        fold.add(event)
        m = dynamics.metrics(fold.states)
        for name in ("ias", "gas", "trait_stability", "name_stability", "commitment_reliability",
                     "reflection_depth", "commitment_success", "trait_development", "engagement"):
            value = getattr(m, name)
            assert isinstance(value, float) and not math.isnan(value), name
            assert 0.0 <= value <= 1.0, (name, value)
        assert m.stage == dynamics.stage_of(m.reflections, m.turns, m.ias, m.gas)


UNIT = st.floats(0.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 100), st.integers(0, 600), UNIT, UNIT,
       st.integers(0, 50), st.integers(0, 400), UNIT, UNIT)
def test_stage_is_monotone(r: int, t: int, i: float, g: float,
                           dr: int, dt: int, di: float, dg: float) -> None:
    low = dynamics.stage_of(r, t, i, g)
    high = dynamics.stage_of(r + dr, t + dt, min(1.0, i + di), min(1.0, g + dg))
    assert dynamics.STAGES.index(low) <= dynamics.STAGES.index(high)


def test_stage_thresholds_never_decrease() -> None:
    columns = list(zip(*(dynamics.THRESHOLDS[s] for s in dynamics.STAGES[1:]), strict=True))
    for column in columns:
        assert list(column) == sorted(column)


@SETTINGS
@given(mind_events())
def test_no_commitment_closes_without_valid_evidence_and_counts_add_up(events: list[Event]) -> None:
    fold = projections.Fold()
    messages = commitment_events = 0
    for event in events:
        before = fold.states["commitments"]
        fold.add(event)
        after = fold.states["commitments"]
        messages += event.kind == "message_received"
        commitment_events += event.kind in COMMITMENT_KINDS
        if after["closed"] > before["closed"]:
            assert after["closed"] == before["closed"] + 1
            assert event.kind == "commitment_closed"
            key = str(event.meta["commitment"])
            assert key in before["open"] and key not in after["open"]
            evidence = event.meta["evidence"]
            opened_id = before["open"][key]["opened_id"]
            assert isinstance(evidence, list) and evidence
            assert all(type(e) is int and opened_id < e < event.id for e in evidence)
            assert valid_evidence(evidence, opened_id, event.id)
            assert event.content.strip()
            assert after["done"][key]["status"] == "closed"
        for counter in ("opened", "closed", "expired", "reopened", "refused", "turns"):
            assert after[counter] >= before[counter] >= 0
        # each commitment event moves exactly one counter; each user message one turn
        assert (after["opened"] + after["closed"] + after["expired"] + after["reopened"]
                + after["refused"]) == commitment_events
        assert after["turns"] == messages
        assert after["opened"] + after["reopened"] == len(after["open"]) + after["closed"] + after["expired"]
        assert len(after["open"]) + len(after["done"]) == after["opened"]
        assert not set(after["open"]) & set(after["done"])
        statuses = [entry["status"] for entry in after["done"].values()]
        assert statuses.count("closed") <= after["closed"]
        assert statuses.count("expired") <= after["expired"]


@SETTINGS
@given(mind_events(), st.integers(0, 250))
def test_overdue_lists_exactly_the_open_commitments_past_due_or_turns(
        events: list[Event], minutes: int) -> None:
    now = ts(minutes)
    states = projections.replay(events)
    commitments = states["commitments"]
    found = dynamics.overdue(states, now)
    ids = [cid for cid, _ in found]
    assert ids == sorted(set(ids))
    assert all(str(cid) in commitments["open"] for cid in ids)
    for key, entry in commitments["open"].items():
        past_due = bool(entry["due"]) and entry["due"] <= now
        too_long = commitments["turns"] - entry["turns_at"] >= dynamics.EXPIRE_AFTER_TURNS
        assert (int(key) in ids) == (past_due or too_long), (key, entry)


EVIDENCE_ITEM = st.one_of(st.integers(-2, 40), st.booleans(), st.floats(0, 40), st.text(max_size=2),
                          st.none())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 15), st.integers(0, 15), CONTENT, st.data())
def test_a_close_counts_exactly_when_the_page_says(before: int, between: int, statement: str,
                                                   data: st.DataObject) -> None:
    """One open commitment, one close: it counts iff evidence is a non-empty list of integer ids
    strictly between the opening and the close, and the statement is not blank."""
    rows: list[tuple[str, dict[str, Any]]] = [("message_received", {})] * before
    rows += [("commitment_opened", {"source": "user"})]
    rows += [("message_received", {})] * between
    opened_id, closing_id = before + 1, before + between + 2
    inside = st.lists(st.integers(opened_id + 1, closing_id - 1), min_size=1, max_size=4)
    evidence = data.draw(st.one_of(
        *([inside] if between else []), st.lists(st.integers(0, closing_id + 2), max_size=4),
        st.lists(EVIDENCE_ITEM, max_size=3), EVIDENCE_ITEM))
    rows.append(("commitment_closed", {"commitment": opened_id, "evidence": evidence}))
    events = [Event(i, ts(i), kind, statement if kind == "commitment_closed" else "x",
                    json.dumps(meta), "", "")
              for i, (kind, meta) in enumerate(rows, start=1)]
    states = projections.replay(events)["commitments"]
    ok = (isinstance(evidence, list) and len(evidence) > 0
          and all(type(e) is int and opened_id < e < closing_id for e in evidence)
          and statement.strip() != "")
    assert states["closed"] == int(ok)
    assert states["refused"] == int(not ok)
    assert (str(opened_id) in states["open"]) is not ok
