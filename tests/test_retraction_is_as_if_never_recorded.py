"""A retracted reflection counts as if it had never been recorded (docs/mind-model.md): on pure
folds of random reflections with trait steps (often pushing a trait against 0 or 1, where the
clamp makes the order matter) and commitments, the state after retractions equals a replay of
the same events without the retracted reflections' steps; a retraction that does not count
(twice, not a reflection) changes nothing but ``refused``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmm.domain import dynamics, projections
from pmm.domain.events import OCEAN, Event
from pmm.domain.shapes import MAX_ID

PUBLIC = ("values", "adjustments", "recent", "moved")


def event(i: int, kind: str, meta: dict[str, Any], content: str = "x") -> Event:
    return Event(i, f"2025-03-01T12:00:{i % 60:02d}.{i:06d}Z", kind, content, json.dumps(meta), "", "")


STEP = st.tuples(st.sampled_from(OCEAN[:2]), st.sampled_from([0.05, -0.05, 0.2, 0.03, -0.5]))
PLAN = st.lists(st.tuples(st.lists(STEP, max_size=3), st.booleans(), st.booleans()), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(PLAN, st.data())
def test_retracting_equals_never_having_taken_the_steps(plan: list[Any], data: st.DataObject) -> None:
    events: list[Event] = []
    without: list[Event] = []  # the same mind had the retracted reflections taken no steps
    reflections: list[int] = []
    retracted: set[int] = set()
    opened_by: dict[int, int] = {}
    for steps, opens, retract_one in plan:
        rid = len(events) + 1
        events.append(event(rid, "reflection_recorded", {"first_id": 1, "last_id": rid - 1, "trigger": "t"}))
        reflections.append(rid)
        mine = [event(len(events) + 1 + k, "trait_adjusted", {"trait": t, "delta": d, "reflection": rid})
                for k, (t, d) in enumerate(steps)]
        events += mine
        if opens:
            opened_by[len(events) + 1] = rid
            events.append(event(len(events) + 1, "commitment_opened", {"source": "reflection", "reflection": rid}))
        if retract_one:
            target = data.draw(st.sampled_from(reflections))
            events.append(event(len(events) + 1, "reflection_retracted", {"reflection": target}))
            retracted.add(target)
    without = [e for e in events if not (e.kind == "trait_adjusted" and e.meta["reflection"] in retracted)]
    states = projections.replay(events)
    expected = projections.replay(without)
    assert {k: states["traits"][k] for k in PUBLIC} == {k: expected["traits"][k] for k in PUBLIC}
    assert states["reflections"]["count"] == len(reflections) - len(retracted)
    latest = states["reflections"]["latest"]
    assert (latest and latest["id"]) == max(set(reflections) - retracted, default=None)
    commitments = states["commitments"]
    for cid, rid in opened_by.items():
        status = "open" if str(cid) in commitments["open"] else commitments["done"][str(cid)]["status"]
        assert status == ("dropped" if rid in retracted else "open")
    repeats = len([e for e in events if e.kind == "reflection_retracted"]) - len(retracted)
    assert states["reflections"]["refused"] == states["traits"]["refused"] == repeats
    m = dynamics.metrics(states)
    assert m.reflections == len(reflections) - len(retracted)
    # folding through the JSON cache gives the same state
    cached = json.loads(json.dumps(projections.replay(events[: len(events) // 2])))
    assert projections.replay(events[len(events) // 2:], cached) == states


def test_a_retraction_of_something_else_changes_nothing_but_refused() -> None:
    events = [event(1, "message_received", {}), event(2, "reflection_recorded", {"first_id": 1, "last_id": 1, "trigger": "t"}),
              event(3, "trait_adjusted", {"trait": "openness", "delta": 0.05, "reflection": 2})]
    base = projections.replay(events)
    after = projections.replay([event(4, "reflection_retracted", {"reflection": 1}),
                                event(5, "reflection_retracted", {"reflection": 99})], base)
    for name in ("traits", "commitments", "reflections"):
        assert {k: v for k, v in after[name].items() if k != "refused"} == \
            {k: v for k, v in base[name].items() if k != "refused"}
        assert after[name]["refused"] == base[name]["refused"] + 2


def test_the_reflections_projection_keeps_no_reflection_text() -> None:
    """Its window holds id, time and last_id of up to ``RETRACTABLE`` reflections: their text
    (up to 4,000 characters each) stays in the ledger, not in a cache written on every append."""
    events = [event(1, "message_received", {})]
    for i in range(2, 40):
        events.append(event(i, "reflection_recorded", {"first_id": 1, "last_id": i - 1, "trigger": "t"},
                            f"secret reflection text number {i}"))
    states = projections.replay(events)
    assert "secret reflection" not in json.dumps(states["reflections"])
    assert states["reflections"]["latest"] == {"id": 39, "ts": events[-1].ts, "last_id": 38}
    after = projections.replay([event(40, "reflection_retracted", {"reflection": 39})], states)
    assert after["reflections"]["latest"] == {"id": 38, "ts": events[-2].ts, "last_id": 37}


@pytest.mark.parametrize("first_id, last_id", [(1, MAX_ID), (3, 3), (2, 1), (1, 5), (0, 2**60)])
def test_a_reflection_covers_only_events_before_it(first_id: int, last_id: int) -> None:
    """A range that is reversed or names events not yet written (only a foreign writer records
    one) covers nothing: with last_id at the largest id it would end reflection for good."""
    events = [event(1, "message_received", {}), event(2, "reflection_recorded", {"first_id": 1, "last_id": 1, "trigger": "t"}),
              event(3, "reflection_recorded", {"first_id": first_id, "last_id": last_id, "trigger": "t"})]
    state = projections.replay(events)["reflections"]
    assert state["reflected_to"] == 1 and state["count"] == 2 and state["latest"]["id"] == 3
    assert state["latest"]["last_id"] is None
