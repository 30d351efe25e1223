"""A replay reads the events its own way (pmm.ledger.past.feed: runs of rows, only the content
a projection reads, no prev_hash, Activity counted by kind) and must end in the very states that
folding every stored event, one at a time, through every projection that reads its kind makes.

The reference here is that plain fold, written out again: every projection's ``apply`` on the
whole ``Event`` as stored (older versions upcast, ``mind_merged`` left out), in declaration
order. It is compared as JSON (keys in the order the states hold them, and sorted) with every
way pmm folds: ``replay_all``, ``Fold.add`` event by event, the cache that writes fold into
(``Folding``), ``--as-of``'s ``replay_to`` at every point, the snapshots a long mind stores, and
on the minds older releases wrote, merged minds and crafted events (the same error)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import run_in, unguarded
from eventgen import DRAFTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmm import errors
from pmm.domain import checks, projections
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.ledger import folded, past
from pmm.ledger.store import Ledger

DATA = Path(__file__).parent / "data"
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def reference(events: list[Event]) -> dict[str, Any]:
    """The states by the plain fold: each event through each projection of its kind."""
    states: dict[str, Any] = dict(projections.initial_state())
    for event in events:
        if event.kind == ev.MIND_MERGED.name:
            continue
        event = checks.upcast(event)
        for p in projections.PROJECTIONS:
            if p.kinds is None or event.kind in p.kinds:
                states[p.name] = p.apply(states[p.name], event)
    return states


def text(states: Any) -> tuple[str, str]:
    """States as JSON twice: in the order they hold their keys, and in sorted order."""
    states = {**states, "commitments": {**states["commitments"], "done": dict(states["commitments"]["done"])}}
    return json.dumps(states), json.dumps(states, sort_keys=True)


def one_by_one(events: list[Event]) -> dict[str, Any]:
    fold = projections.Fold()
    for event in events:
        fold.add(event)
    return dict(fold.states)


def assert_each_run_is_its_applies(events: list[Event]) -> None:
    """A projection's ``apply_run`` (its events of a run at once) is its ``apply`` in turn."""
    for p in projections.PROJECTIONS:
        run = getattr(p, "apply_run", None)
        if run is None:
            continue
        mine = [checks.upcast(e) for e in events
                if e.kind != ev.MIND_MERGED.name and (p.kinds is None or e.kind in p.kinds)]
        state = p.initial()
        for event in mine:
            state = p.apply(state, event)
        assert json.dumps(run(p.initial(), mine)) == json.dumps(state), p.name


def assert_every_fold_agrees(path: Path, points: int = 12) -> None:
    folded.forget()
    with Ledger.open(path) as mind:
        events = list(mind.events())
        assert_each_run_is_its_applies(events)
        merged = any(e.kind == ev.MIND_MERGED.name for e in events)
        first_merge = next((e.id for e in events if e.kind == ev.MIND_MERGED.name), None)
        plain = events if not merged else [e for e in events if e.id < (first_merge or 0)]
        if not merged:
            want = text(reference(events))
            assert text(folded.replay_all(mind)) == want
            assert text(one_by_one(events)) == want
            assert text(projections.Fold().add_all(iter(events))) == want
            assert text(folded.state(mind)[0])[1] == want[1]  # the cache (stored with keys sorted)
        else:  # a merged mind reads as replay_merged folds it, event by event
            markers = [e for e in events if e.kind == ev.MIND_MERGED.name]
            want = text(projections.replay_merged(
                iter(events), markers, lambda low, high: (e for e in events if low <= e.id <= high)))
            assert text(folded.replay_all(mind)) == want
            assert text(folded.state(mind)[0])[1] == want[1]
        step = max(1, len(plain) // points)
        for n in range(0, len(plain), step):
            upto = plain[n].id
            prefix = [e for e in plain if e.id <= upto]
            assert text(folded.replay_all(mind, upto)) == text(reference(prefix)), upto
            states, base = past.replay_to(mind, upto)  # (from the first event or a stored point)
            assert text(states)[base > 0] == text(reference(prefix))[base > 0], upto


def mind_of(folder: Path, batches: list[list[Draft]]) -> Path:
    """A new mind in ``folder`` holding ``batches``, each appended in one write."""
    path = folder / "mind.db"
    run_in("--mind", str(path), "init", "--name", "Fast", check=True)
    with Ledger.open(path, write=True) as mind:
        for batch in batches:
            mind.append(batch)
    return path


@SETTINGS
@given(batches=st.lists(st.lists(DRAFTS, min_size=1, max_size=6), min_size=1, max_size=6))
def test_every_kind_in_any_order_folds_as_the_plain_fold(batches: list[list[Draft]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        assert_every_fold_agrees(mind_of(Path(tmp), batches))


@given(batches=st.lists(st.lists(DRAFTS, min_size=1, max_size=6), min_size=2, max_size=6),
       order=st.randoms(use_true_random=False))
@SETTINGS
def test_events_out_of_id_order_fold_in_the_order_given(batches: list[list[Draft]], order: Any) -> None:
    """A merged mind folds the events after its fork again in canonical order, which is not id
    order (pmm.domain.merging): a run that mixes kinds must keep the order it is given."""
    with tempfile.TemporaryDirectory() as tmp, Ledger.open(mind_of(Path(tmp), batches)) as mind:
        events = list(mind.events())
    order.shuffle(events)
    assert text(projections.Fold().add_all(events)) == text(reference(events))


def test_a_mind_built_through_the_cli_folds_as_the_plain_fold(tmp_path: Path) -> None:
    path = tmp_path / "mind.db"
    run_in("--mind", str(path), "init", "--name", "Cli", check=True)
    for args in (["remember", "a note"], ["remember", "--pin", "always say hello"],
                 ["persona", "set", "a calm voice"], ["rename", "Cli Two"], ["remember", "another note"],
                 ["unpin", "3"]):
        run_in("--mind", str(path), *args, check=True)
    with Ledger.open(path, write=True) as mind:
        opened = mind.head()[0] + 1
        mind.append([Draft(ev.COMMITMENT_OPENED.name, "I will write tests", {"source": "user"}),
                     Draft(ev.OBSERVATION_RECORDED.name, "tests written", {}),
                     Draft(ev.COMMITMENT_CLOSED.name, "done: tests written",
                           {"commitment": opened, "evidence": [opened + 1], "source": "user"}),
                     Draft(ev.MESSAGE_RECEIVED.name, "said long ago",
                           {"source": "import", "original_ts": "2001-02-03T04:05:06.000000Z"}),
                     Draft(ev.TRAIT_ADJUSTED.name, "", {"trait": "openness", "delta": 0.05, "v": 2})])
    assert_every_fold_agrees(path)


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_an_old_release_s_mind_folds_as_the_plain_fold(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.db"
    shutil.copyfile(DATA / f"mind-schema-{version}.db", path)
    assert_every_fold_agrees(path)  # (version 4 holds version 1 trait steps: upcast)


def test_a_merged_mind_folds_as_replay_merged_does(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    run_in("--mind", str(a), "init", "--name", "Echo", check=True)
    run_in("--mind", str(a), "remember", "before the copies parted", check=True)
    run_in("--mind", str(a), "export", "-o", str(tmp_path / "shared.jsonl"), check=True)
    run_in("--mind", str(b), "import", str(tmp_path / "shared.jsonl"), check=True)
    run_in("--mind", str(a), "remember", "a note written on the laptop", check=True)
    run_in("--mind", str(b), "remember", "--pin", "a pin written on the desktop", check=True)
    run_in("--mind", str(a), "merge", str(b), check=True)
    run_in("--mind", str(a), "remember", "after the merge", check=True)
    assert_every_fold_agrees(a)


def test_the_snapshots_of_a_long_mind_are_the_plain_fold_at_their_points(tmp_path: Path) -> None:
    path = tmp_path / "long.db"
    run_in("--mind", str(path), "init", "--name", "Long", check=True)
    end = past.SPACING + 300
    with Ledger.open(path, write=True) as mind:
        while (head := mind.head()[0]) < end:  # the write that passes the point stores its snapshot
            n = min(2000, end - head)
            mind.append([Draft(ev.MESSAGE_RECEIVED.name, f"turn {head + i}", {"session": "s"}) if i % 3
                         else Draft(ev.RESPONSE_SENT.name, f"answer {head + i}",
                                    {"session": "s", "latency_ms": 5, "provider": "p", "tokens_in": 3})
                         for i in range(n)])
    with Ledger.open(path) as mind:
        events = list(mind.events())
        at = [e for e in events if e.id <= past.SPACING]
        stored = past.sealed(mind, past.SPACING)
        assert stored is not None
        assert text(stored)[1] == text(reference(at))[1]
    with Ledger.open(path, write=True) as mind:
        mind.repair()  # the cache and the snapshots folded again from the first event
    with Ledger.open(path) as mind:
        assert text(past.sealed(mind, past.SPACING))[1] == text(reference(at))[1]
    assert_every_fold_agrees(path, points=4)


@pytest.mark.parametrize("meta", ["{}", "[1]", "not json", '{"provider": "x", "original_ts": 1}'])
def test_a_crafted_event_is_refused_as_the_event_by_event_fold_refuses_it(tmp_path: Path,
                                                                           meta: str) -> None:
    path = tmp_path / "crafted.db"
    run_in("--mind", str(path), "init", check=True)
    with Ledger.open(path, write=True) as mind:
        mind.append([Draft(ev.OBSERVATION_RECORDED.name, f"note {i}", {}) for i in range(20)]
                    + [Draft(ev.MODEL_ADDED.name, "", {"name": "m", "provider": "ollama", "model": "x"})]
                    + [Draft(ev.OBSERVATION_RECORDED.name, "after", {})])
        target = mind.head()[0] - 1
    conn = unguarded(path)
    conn.execute("UPDATE events SET meta = ? WHERE id = ?", (meta, target))
    conn.close()
    with Ledger.open(path) as mind:
        events = list(mind.events())
        with pytest.raises(errors.IntegrityError) as by_one:
            one_by_one(events)
        with pytest.raises(errors.IntegrityError) as fast:
            folded.replay_all(mind)
    assert str(fast.value) == str(by_one.value)
    assert f"event {target}" in str(fast.value)
