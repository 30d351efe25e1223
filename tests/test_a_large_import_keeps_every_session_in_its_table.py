"""A bulk import into a new mind keeps the sessions table in parts, so that its memory stays flat
(pmm.ledger.session_table, ``SPILL``): with more sessions than that, each spread over the whole
export, the table it seals is still the fold of the events, row for row, withdrawals and
original times included.
"""

from __future__ import annotations

import random
from pathlib import Path

from conftest import cli_json

from pmm.domain.canonical import canonical_json
from pmm.ledger import jsonl, session_table
from pmm.ledger.chain import GENESIS_PREV, chain_prefix, event_hash
from pmm.ledger.store import Ledger
from pmm.services import import_reader

SESSIONS = session_table.SPILL * 2 + 500  # parts of nearly every row in each spill


def _export(path: Path, seed: int) -> int:
    """An export whose turns go to sessions picked at random (each spans the whole file), with
    starts (by session or source id), original times, and withdrawals of answers, of
    messages, twice, of later events and of no turn. Returns its number of events."""
    rng = random.Random(seed)
    mind_id = "%032x" % rng.getrandbits(128)
    prefix, prev = chain_prefix(2, mind_id), GENESIS_PREV
    rows: list[tuple[str, str, dict[str, object]]] = [
        ("mind_created", "Mind created", {"name": "Ada", "pmm_version": "0.1.0"})]
    sids = [f"s{n}" for n in range(SESSIONS)]
    for n, sid in enumerate(sids):
        if n % 3 == 0:
            rows.append(("session_started", f"Title {n}", {"session": sid}))
        elif n % 3 == 1:
            rows.append(("session_started", "", {"source": "chatgpt", "source_id": sid,
                                                 "original_ts": f"2024-0{1 + n % 9}-11T10:00:00.000000Z"}))
    turns: list[tuple[int, str]] = []
    for _ in range(SESSIONS * 3):
        sid = rng.choice(sids)
        meta: dict[str, object] = {"session": sid}
        if rng.random() < 0.2:
            meta["original_ts"] = f"2023-1{rng.randint(0, 2)}-2{rng.randint(0, 8)}T0{rng.randint(0, 9)}:00:00.000000Z"
        kind = rng.choice(["message_received", "response_sent"])
        rows.append((kind, f"turn of {sid}", meta))
        turns.append((len(rows), sid))
        if rng.random() < 0.03:
            target, of = rng.choice(turns)
            rows.append(("response_withdrawn", "withdrawn", {"response": target, "session": of}))
            if rng.random() < 0.3:  # the same one again: it counts once
                rows.append(("response_withdrawn", "again", {"response": target, "session": of}))
        if rng.random() < 0.005:
            rows.append(("response_withdrawn", "a later one", {"response": len(rows) + 5}))
            rows.append(("response_withdrawn", "no turn", {"response": 1}))
    with open(path, "w", encoding="utf-8") as out:
        out.write(jsonl.header_line(mind_id, 2, 1))
        for i, (kind, content, meta_dict) in enumerate(rows, 1):
            meta = canonical_json(meta_dict)
            ts = f"2025-01-01T00:00:{i % 60:02d}.{i:06d}Z"
            digest = event_hash(prefix, i, ts, kind, content, meta, prev)
            out.writelines(jsonl.event_lines([(i, ts, kind, content, meta, prev, digest)]))
            prev = digest
        out.write(jsonl.end_line(len(rows), len(rows), prev))
    return len(rows)


def test_a_table_kept_in_parts_is_the_fold_of_the_events(tmp_path: Path) -> None:
    export = tmp_path / "export.jsonl"
    count = _export(export, 5)
    assert export.stat().st_size > import_reader.PARALLEL_FROM  # the bulk path, read beside
    mind = tmp_path / "mind.db"
    result = cli_json(mind, "import", str(export))
    assert result["appended"] == count and result["created"] is True
    with Ledger.open(mind) as opened:
        kept = session_table.read(opened.conn, opened.mind_id, opened.head())
        assert kept is not None  # current and sealed here, every row's MAC sound
        folded = session_table.fold(opened.conn)
    assert len(folded) > 2 * session_table.SPILL
    assert {row.session: row for row in kept} == folded
    assert any(row.withdrawn for row in kept) and any(row.first_said < "2025" for row in kept)
    assert cli_json(mind, "verify", "--deep")["deep"]["sessions_match_events"] is True
