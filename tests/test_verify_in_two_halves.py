"""Large minds are verified in two processes; the split must find exactly what one pass finds
(the two halves of the chain, or, with --deep, the replay beside the chain)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from pmm import errors
from pmm.domain.events import Draft
from pmm.ledger.chain import ChainState, check_chain
from pmm.ledger.store import Ledger
from pmm.services import opening
from pmm.services.halves import check_in_two, in_child
from pmm.services.integrity import (
    DEEP_PARALLEL_FROM,
    Replayed,
    _deep_read,
    replay_check,
    verify_mind,
)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "mind.db"
    with opening.init(path, "Big") as mind:
        mind.append([Draft("observation_recorded", f"note {i}", {"source": "user"})
                     for i in range(999)])
    return path


def tamper(src: Path, dst: Path, event_id: int, sql: str) -> Path:
    shutil.copy(src, dst)
    conn = sqlite3.connect(dst)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute(sql, (event_id,))
    conn.commit()
    conn.close()
    return dst


def both_ways(path: Path, split: int) -> tuple[ChainState, ChainState]:
    with Ledger.open(path) as mind:
        halves = check_in_two(mind, split, None)
        single = check_chain(mind.prefix, mind.raw_rows(), ChainState())
    return halves, single


def test_an_intact_mind_verifies_in_two_halves(big: Path) -> None:
    halves, single = both_ways(big, 501)
    assert halves.problem is None and single.problem is None
    assert (halves.count, halves.last_id, halves.last_hash) == (1000, 1000, single.last_hash)


@pytest.mark.parametrize("event_id", [1, 300, 500, 501, 502, 999, 1000])
@pytest.mark.parametrize("sql", [
    "UPDATE events SET content = content || 'x' WHERE id = ?",
    "DELETE FROM events WHERE id = ?",
    "UPDATE events SET hash = (CASE WHEN hash LIKE 'f%' THEN 'e' ELSE 'f' END) || substr(hash, 2) WHERE id = ?",
])
def test_the_split_reports_the_same_first_problem(big: Path, tmp_path: Path, event_id: int, sql: str) -> None:
    path = tamper(big, tmp_path / "t.db", event_id, sql)
    halves, single = both_ways(path, 501)
    # Only a removed last event goes unseen by the chain alone (that needs a signed checkpoint).
    assert (single.problem is None) == (event_id == 1000 and sql.startswith("DELETE"))
    assert halves.problem == single.problem
    assert halves.count == single.count


# -- `verify --deep`: the replay runs in a child while the chain is checked here -------------------

def in_own(path: Path) -> Replayed:
    with Ledger.open(path) as own:
        return replay_check(own)


def deep_both_ways(path: Path) -> tuple[Replayed, Replayed]:
    forked = in_child(lambda: in_own(path))
    with Ledger.open(path) as mind:
        return forked(), replay_check(mind)


def _sealed(tmp_path: Path, events: int) -> Path:
    """A mind whose projection cache is sealed with this test's key (``big`` is the module's)."""
    path = tmp_path / "sealed.db"
    with opening.init(path, "Big") as mind:
        mind.append([Draft("observation_recorded", f"note {i}", {"source": "user"})
                     for i in range(events - 1)])
    return path


def test_the_deep_read_in_a_child_finds_what_it_finds_here(tmp_path: Path) -> None:
    sealed = _sealed(tmp_path, 1000)
    forked, here = deep_both_ways(sealed)
    assert forked == here == Replayed(None, "reflects event 1000; equals a full replay", True,
                                      sessions="reflects event 1000; equals the events")

    spaced = tamper(sealed, tmp_path / "meta.db", 700, "UPDATE events SET meta = '{\"source\": \"user\"}' WHERE id = ?")
    forked, here = deep_both_ways(spaced)
    assert forked == here and forked.bad_meta == 700
    assert forked.sessions is None  # past a meta that is not canonical: folded on its own

    forged = tamper(sealed, tmp_path / "cache.db", 0,
                    "UPDATE projection_cache SET state = replace(state, 'Big', 'Eve') WHERE ? = 0")
    forked, here = deep_both_ways(forged)
    assert forked == here and forked.cache.startswith("absent or stale") and forked.cache_ok


def test_an_error_in_the_child_is_the_error_here(big: Path, tmp_path: Path) -> None:
    """Not a traceback from the child and 'the child died': the child's own PmmError, exit code
    and hint included."""
    path = Path(shutil.copy(big, tmp_path / "gone.db"))
    with Ledger.open(path):
        path.unlink()  # this connection still reads it; the child's own cannot open it
        with pytest.raises(errors.MindNotFound) as raised:
            in_child(lambda: in_own(path))()
    assert raised.value.hint == "create one with `pmm init`, or pass --mind PATH"


def test_verify_deep_of_a_mind_past_the_threshold_reports_the_same(tmp_path: Path) -> None:
    path = _sealed(tmp_path, DEEP_PARALLEL_FROM + 1)
    report = verify_mind(path, deep=True)
    assert report.ok and report.events == DEEP_PARALLEL_FROM + 1
    assert report.deep == {"sqlite_quick_check": "ok", "meta_canonical": True,
                           "projection_cache": f"reflects event {DEEP_PARALLEL_FROM + 1}; equals a full replay",
                           "cache_matches_replay": True,
                           "snapshots": "3 checked, each equals a full replay", "snapshots_match_replay": True,
                           "sessions_table": f"reflects event {DEEP_PARALLEL_FROM + 1}; equals the events",
                           "sessions_match_events": True}


@pytest.mark.parametrize("event_id", [1, 100, 101, 102, 500, 999, 1000])
@pytest.mark.parametrize("sql", [
    "UPDATE events SET content = content || 'x' WHERE id = ?",
    "DELETE FROM events WHERE id = ?",
    "UPDATE events SET hash = (CASE WHEN hash LIKE 'f%' THEN 'e' ELSE 'f' END) || substr(hash, 2) WHERE id = ?",
    "UPDATE events SET id = 9223372036854775000 WHERE id = ?",
    "UPDATE events SET id = -id WHERE id = ?",
])
def test_the_deep_pieces_of_the_chain_report_the_same_first_problem(
        big: Path, tmp_path: Path, event_id: int, sql: str) -> None:
    """With --deep the chain is checked in pieces (of 100 ids here) by the replaying child and
    this process, each taking the next when free: the joined pieces find what one pass finds,
    and the replay and this process's checks are those of one process."""
    path = tamper(big, tmp_path / "t.db", event_id, sql)
    with Ledger.open(path) as mind:
        pieces = _deep_read(mind, True, None, piece=100)
        single = _deep_read(mind, False, None)
        alone = check_chain(mind.prefix, mind.raw_rows(), ChainState())
    assert pieces[0].problem == single[0].problem == alone.problem
    assert pieces[0].count == single[0].count == alone.count
    assert pieces[1:] == single[1:]
    assert (alone.problem is None) == (event_id == 1000 and sql.startswith("DELETE"))


def test_the_deep_pieces_count_every_event_once(big: Path) -> None:
    counted: list[int] = []
    with Ledger.open(big) as mind:
        state = _deep_read(mind, True, counted.append, piece=64)[0]
    assert state.problem is None and (state.count, state.last_id) == (1000, 1000)
    assert sum(counted) == 1000
