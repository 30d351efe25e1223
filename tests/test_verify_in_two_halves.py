"""Large minds are verified in two processes; the split must find exactly what one pass finds."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from pmm.domain.events import Draft
from pmm.ledger.chain import ChainState, check_chain
from pmm.ledger.store import Ledger
from pmm.services import opening
from pmm.services.halves import check_in_two


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
