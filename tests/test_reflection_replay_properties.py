"""Replaying any mix of reflections, trait steps, retractions and commitment events, as pmm
writes them or as a foreign writer could craft them (ranges past the reflection, reversed or at
the largest id; retractions of anything; references that are not ids), never raises and keeps
docs/mind-model.md's invariants: each commitment is counted once by its status now, counters
only grow, a retraction drops the commitments its reflection opened, ``reflected_to`` only
names events before it, and the latest reflection is the newest one not retracted."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pmm.domain import dynamics, projections
from pmm.domain.events import OCEAN, Event
from pmm.domain.growth import RETRACTABLE, STATUSES
from pmm.domain.shapes import MAX_ID

KINDS = ("message_received", "reflection_recorded", "reflection_recorded", "trait_adjusted",
         "reflection_retracted", "commitment_opened", "commitment_closed", "commitment_expired",
         "commitment_reopened", "commitment_dropped")
COUNTERS = ("opened", "closed", "expired", "reopened", "dropped", "refused", "turns")
ODD = st.one_of(st.none(), st.booleans(), st.text(max_size=2), st.floats(0, 9), st.integers(-2, 0))


@st.composite
def ledgers(draw: st.DrawFn, max_events: int = 60) -> list[Event]:
    out: list[Event] = []
    reflections: list[int] = []
    opened: list[int] = []
    for i in range(1, draw(st.integers(0, max_events)) + 1):
        kind = draw(st.sampled_from(KINDS))
        meta: dict[str, Any] = {}

        def ref(known: list[int], i: int = i) -> Any:
            if known and draw(st.integers(0, 3)) > 0:
                return draw(st.sampled_from(known))  # mostly a real one
            return draw(st.one_of(st.integers(-1, i + 2), ODD))

        if kind == "reflection_recorded":
            first, last = draw(st.sampled_from([
                (1, max(0, i - 1)), (max(1, i - 3), i - 1), (1, MAX_ID), (i, i), (3, 1), (1, i + 5),
                (0, 0)]))
            meta = {"first_id": first, "last_id": last, "trigger": "cadence"}
            if draw(st.integers(0, 9)) == 0:
                meta = {"first_id": draw(ODD), "last_id": draw(ODD), "trigger": "x"}
            reflections.append(i)
        elif kind == "trait_adjusted":
            meta = {"trait": draw(st.sampled_from(OCEAN)), "delta": draw(st.sampled_from([0.05, -0.05, 0.3]))}
            if draw(st.booleans()):
                meta["reflection"] = ref(reflections)
        elif kind == "reflection_retracted":
            meta = {"reflection": ref(reflections), "source": "user"}
        elif kind == "commitment_opened":
            meta = {"source": "reflection"}
            if draw(st.booleans()):
                meta["reflection"] = ref(reflections)
            opened.append(i)
        elif kind != "message_received":
            meta = {"commitment": ref(opened)}
            if kind == "commitment_closed":
                meta["evidence"] = draw(st.lists(st.integers(0, i + 1), max_size=2))
                if draw(st.booleans()):
                    meta["reflection"] = ref(reflections)
            elif kind == "commitment_expired":
                meta["reason"] = "due"
        out.append(Event(i, f"2025-03-01T12:{i // 60 % 60:02d}:{i % 60:02d}.000000Z", kind, "done",
                         json.dumps(meta), "", ""))
    return out


@settings(max_examples=150, deadline=None)
@given(ledgers())
def test_replaying_any_reflection_history_keeps_the_invariants(events: list[Event]) -> None:
    fold = projections.Fold()
    retracted: set[int] = set()
    reflections: list[int] = []
    valid_last: list[int] = []
    for event in events:
        before = dict(fold.states)  # each projection's state is replaced, never changed
        fold.add(event)
        states = fold.states
        c, r = states["commitments"], states["reflections"]
        if event.kind == "reflection_recorded":
            reflections.append(event.id)
            first, last = event.meta.get("first_id"), event.meta.get("last_id")
            if type(first) is int and type(last) is int and 0 <= first <= last < event.id:
                valid_last.append(last)
        elif event.kind == "reflection_retracted" and r["retracted"] > before["reflections"]["retracted"]:
            target = event.meta["reflection"]
            assert target in reflections[-RETRACTABLE:] and target not in retracted
            retracted.add(target)
            for entry in [*c["open"].values(), *c["done"].values()]:
                assert entry.get("reflection") != target or entry["status"] == "dropped"
                assert entry.get("closed_by_reflection") != target
        # commitments: each counted once, by its status now; the event counters only grow
        assert len(c["open"]) + sum(c["current"].values()) == c["opened"]
        assert not set(c["open"]) & set(c["done"])
        for status in STATUSES:
            assert c["current"][status] == sum(e["status"] == status for e in c["done"].values())
        for counter in COUNTERS:
            assert c[counter] >= before["commitments"][counter]
        # reflections: what counts, what is latest, what is covered
        assert r["recorded"] == len(reflections) and r["retracted"] == len(retracted)
        assert r["count"] == r["recorded"] - r["retracted"]
        assert r["reflected_to"] == max(valid_last, default=0) < event.id
        kept = [rid for rid in reflections if rid not in retracted]
        latest = r["latest"]
        if kept and kept[-1] in reflections[-RETRACTABLE:]:
            assert latest is not None and latest["id"] == kept[-1]
            assert set(latest) == {"id", "ts", "last_id"}  # no text: the ledger has it
        elif not kept:
            assert latest is None
        assert r["refused"] == states["traits"]["refused"]  # the same retractions are refused
        for value in states["traits"]["values"].values():
            assert 0.0 <= value <= 1.0
        m = dynamics.metrics(states)
        assert 0.0 <= m.ias <= 1.0 and 0.0 <= m.gas <= 1.0
    # the JSON cache folds on to the same state
    half = len(events) // 2
    cached = json.loads(json.dumps(projections.replay(events[:half])))
    assert projections.replay(events[half:], cached) == projections.replay(events)
