"""Time travel (issue 17, part 3): `--as-of ID|DATE` on stats, commitments list, log and recall
shows the mind as it was at that event, exactly as a mind holding only the events up to it would
show it; `pmm diff` says what changed between two points, or two minds, and which reflection
moved a trait; snapshots every 16,384 events make it fast, and a forged one changes nothing.

Real mind files, the real CLI (in-process for output, subprocesses for exit codes), a loopback
model server for the reflection; snapshot rows are attacked with plain sqlite3.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

from conftest import cli_json, invoke, json_data, mind_events, run_pmm
from provider_servers import FakeServer

from pmm.domain import events as ev
from pmm.domain import projections
from pmm.domain.events import Draft
from pmm.ledger import past
from pmm.ledger.store import Ledger


def _ok(mind: Path, *args: str) -> dict:
    return cli_json(mind, *args)


def _history(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """Ada's mind: a note, a commitment opened, evidence, the commitment closed, a rename."""
    mind = tmp_path / "mind.db"
    _ok(mind, "init", "--name", "Ada")
    ids = {"note": _ok(mind, "remember", "the user likes green tea")["id"]}
    ids["opened"] = _ok(mind, "commitments", "open", "I will brew the green tea")["id"]
    ids["evidence"] = _ok(mind, "remember", "the green tea was brewed")["id"]
    ids["closed"] = _ok(mind, "commitments", "close", str(ids["opened"]), "-e", str(ids["evidence"]),
                        "-s", "brewed")["id"]
    ids["renamed"] = _ok(mind, "rename", "Bea")["id"]
    return mind, ids


def _file_bytes(mind: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(mind.parent.glob(mind.name + "*")))).hexdigest()


def test_stats_commitments_and_log_as_of_an_event_show_that_event_s_mind(tmp_path: Path) -> None:
    mind, ids = _history(tmp_path)
    before = _file_bytes(mind)
    then = _ok(mind, "stats", "--as-of", str(ids["evidence"]))
    assert then["name"] == "Ada" and then["events"] == ids["evidence"] == then["head_id"]
    assert then["as_of"]["id"] == ids["evidence"] and then["commitments"]["open"] == 1
    assert then["by_kind"] == {"mind_created": 1, "observation_recorded": 2, "commitment_opened": 1}
    now = _ok(mind, "stats")
    assert now["name"] == "Bea" and now["commitments"]["closed"] == 1

    listed = _ok(mind, "commitments", "list", "--as-of", str(ids["closed"] - 1))
    assert [(c["id"], c["status"]) for c in listed["commitments"]] == [(ids["opened"], "open")]
    listed = _ok(mind, "commitments", "list", "--as-of", str(ids["closed"]))
    assert [(c["id"], c["status"]) for c in listed["commitments"]] == [(ids["opened"], "closed")]

    logged = _ok(mind, "log", "--as-of", str(ids["opened"]))
    assert [e["id"] for e in logged] == list(range(1, ids["opened"] + 1))
    assert [e["id"] for e in _ok(mind, "log", "--as-of", str(ids["closed"]), "-n", "1")] == [ids["closed"]]
    assert _file_bytes(mind) == before  # read commands: nothing written, not even the cache


def test_as_of_equals_a_replay_of_the_events_up_to_that_point(tmp_path: Path) -> None:
    mind, _ = _history(tmp_path)
    with Ledger.open(mind) as ledger:
        events = list(ledger.events())
        for k in range(1, len(events) + 1):
            states, _ = past.replay_to(ledger, k)
            assert states == projections.replay(events[:k]), k


def test_a_date_means_the_last_event_recorded_at_or_before_it(tmp_path: Path) -> None:
    mind, ids = _history(tmp_path)
    stored = {e["id"]: e for e in _ok(mind, "log", "-n", "100")}
    ts = stored[ids["opened"]]["ts"]  # ...T08:39:33.482647Z: the second it was recorded in
    second = ts[:19] + "Z"
    found = _ok(mind, "stats", "--as-of", second)["as_of"]
    recorded_then = [i for i, e in stored.items() if e["ts"][:19] <= ts[:19]]
    assert found["id"] == max(recorded_then) and found["asked"] == second
    assert _ok(mind, "stats", "--as-of", "2999-01-01")["as_of"]["id"] == ids["renamed"]  # later: the head


def test_a_point_outside_the_mind_is_a_usage_error(tmp_path: Path) -> None:
    mind, ids = _history(tmp_path)
    for command in (["stats"], ["commitments", "list"], ["log"], ["recall", "tea"]):
        for point, says in (("0", "no event #0"), (str(ids["renamed"] + 1), f"no event #{ids['renamed'] + 1}"),
                            ("1999-01-01", "no event recorded at or before 1999-01-01"),
                            ("last tuesday", "neither an event id nor a date")):
            proc = run_pmm("--mind", str(mind), *command, "--as-of", point)
            err = proc.stderr.decode()
            assert proc.returncode == 2, (command, point, err)
            assert err.startswith("Error: ") and says in err and "Traceback" not in err, err
            assert proc.stdout == b""


def test_recall_as_of_sees_only_the_past_and_ranks_by_its_statistics(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    _ok(mind, "init", "--name", "Ada")
    _ok(mind, "remember", "the user likes green tea in the morning")
    _ok(mind, "remember", "the garden needs water")
    point = _ok(mind, "remember", "green tea with lemon is nice")["id"]
    _ok(mind, "export", "-o", str(tmp_path / "then.jsonl"))
    copy = tmp_path / "copy.db"
    _ok(copy, "import", str(tmp_path / "then.jsonl"))  # the mind as it was: nothing later
    for i in range(6):
        _ok(mind, "remember", f"green tea again, cup {i}")

    def recalled(plan: dict) -> list[tuple[int, float]]:
        (section,) = [s for s in plan["sections"] if s["name"] == "recalled"]
        return [(item["id"], item["score"]) for item in section["items"]]

    before = _file_bytes(mind)
    then = _ok(mind, "recall", "green tea", "--as-of", str(point), "--window", "4096")
    assert then["as_of"]["id"] == point and _file_bytes(mind) == before  # its index was in memory
    assert recalled(then) == recalled(_ok(copy, "recall", "green tea", "--window", "4096"))
    assert max(i for i, _ in recalled(then)) <= point
    assert any(i > point for i, _ in recalled(_ok(mind, "recall", "green tea", "--window", "4096")))


def test_diff_between_a_point_before_and_after_a_reflection_names_the_trait_it_moved(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    _ok(mind, "init", "--name", "Ada")
    with FakeServer("openai") as server:
        _ok(mind, "model", "add", "srv", "openai-compatible:test-model", "--base-url", server.url, "--use")
        _ok(mind, "model", "trust", "srv", "--yes")
        server.text = "Noted."
        turn = _ok(mind, "chat", "-m", "I water my plants every morning.")
        before = mind_events(mind)[-1]["id"]
        server.text = json.dumps({
            "reflection": "The user waters the plants every morning: a routine.", "open": [], "close": [],
            "traits": [{"trait": "conscientiousness", "delta": 0.05, "evidence": [turn["message_id"]],
                        "reason": "a daily routine"}]})
        reflected = _ok(mind, "reflect")
    reflection = reflected["reflection"]["id"]
    found = _ok(mind, "diff", str(before))
    (moved,) = found["traits"]
    assert moved["trait"] == "conscientiousness" and moved["delta"] > 0
    assert [m["reflection"] for m in moved["moved_by"]] == [reflection]
    assert found["reflections"] == {"before": 0, "after": 1}
    said = invoke("--mind", str(mind), "diff", str(before), "now")
    assert said.exit_code == 0, said.stderr
    assert f"conscientiousness 0.50 -> 0.55 (+0.05), moved by reflection #{reflection}" in said.stdout
    assert _ok(mind, "diff", str(before), str(before))["traits"] == []  # a point against itself


def test_diff_says_what_changed_in_plain_english_and_json(tmp_path: Path) -> None:
    mind, ids = _history(tmp_path)
    found = _ok(mind, "diff", str(ids["note"]), str(ids["renamed"]))
    assert found["name"] == {"before": "Ada", "after": "Bea", "changed": True}
    assert [c["id"] for c in found["commitments"]["opened"]] == [ids["opened"]]
    assert [c["id"] for c in found["commitments"]["closed"]] == [ids["opened"]]
    assert found["events"]["added"] == ids["renamed"] - ids["note"]
    assert found["events"]["by_kind"] == {"commitment_closed": 1, "commitment_opened": 1, "mind_named": 1,
                                          "observation_recorded": 1}
    text = invoke("--mind", str(mind), "diff", str(ids["note"]), str(ids["renamed"])).stdout
    assert "Name: Ada -> Bea" in text and "Commitments: 1 opened, 1 closed" in text
    assert "Events: +4" in text
    backwards = run_pmm("--mind", str(mind), "diff", str(ids["renamed"]), str(ids["note"]))
    assert backwards.returncode == 2 and b"give the earlier point first" in backwards.stderr


def test_diff_of_two_minds_reads_an_export_as_hostile_input(tmp_path: Path) -> None:
    mind, ids = _history(tmp_path)
    export = tmp_path / "mind.jsonl"
    _ok(mind, "export", "-o", str(export))
    other = tmp_path / "other.db"
    _ok(other, "init", "--name", "Cy")
    to_export = _ok(mind, "diff", str(ids["note"]), str(export))
    assert to_export["after"]["source_kind"] == "export" and to_export["same_mind"] is True
    assert to_export["name"]["after"] == "Bea" and to_export["after"]["point"]["id"] == ids["renamed"]
    to_other = _ok(mind, "diff", "now", str(other))
    assert to_other["same_mind"] is False and to_other["name"] == {"before": "Bea", "after": "Cy", "changed": True}
    assert "not traced across two minds" not in "\n".join(to_other["summary"])  # no trait moved

    lines = export.read_text().splitlines()
    lines[3] = lines[3].replace("green", "GREEN")  # a hash that no longer matches
    forged = tmp_path / "forged.jsonl"
    forged.write_text("\n".join(lines) + "\n")
    listing = sorted(p.name for p in tmp_path.iterdir())
    proc = run_pmm("--mind", str(mind), "diff", "1", str(forged))
    err = proc.stderr.decode()
    assert proc.returncode == 6 and err.startswith("Error: ") and "line 4" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no temp file, nothing written
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\x00\xff binary")
    assert run_pmm("--mind", str(mind), "diff", "1", str(empty)).returncode == 6


def _big(tmp_path: Path, n: int) -> Path:
    """A mind of ``n`` events appended through pmm's own ledger (its fold stores the snapshots)."""
    mind = tmp_path / "big.db"
    _ok(mind, "init", "--name", "Ada")
    with Ledger.open(mind, write=True) as ledger:
        ledger.append([Draft(ev.OBSERVATION_RECORDED.name, f"note {i} about the garden", {"source": "user"})
                       for i in range(n - 2)])
        ledger.append([Draft(ev.MIND_NAMED.name, "Renamed to Bea", {"name": "Bea"})])
    return mind


def test_snapshots_every_16384_events_bound_the_replay_and_are_checked(tmp_path: Path) -> None:
    mind = _big(tmp_path, 2 * past.SPACING + 100)
    with Ledger.open(mind) as ledger:
        assert past.ids(ledger.conn) == [past.SPACING, 2 * past.SPACING]
    then = _ok(mind, "stats", "--as-of", str(past.SPACING + 10))
    assert then["as_of"]["replayed_from"] == past.SPACING and then["as_of"]["replayed"] == 10
    assert then["name"] == "Ada" and then["events"] == past.SPACING + 10
    deep = _ok(mind, "verify", str(mind), "--deep")
    assert deep["ok"] and deep["deep"]["snapshots_match_replay"] is True
    assert deep["deep"]["snapshots"] == "2 checked, each equals a full replay"


def test_a_forged_snapshot_changes_nothing_and_a_wrong_sealed_one_fails_verify(tmp_path: Path) -> None:
    mind = _big(tmp_path, past.SPACING + 50)
    point = str(past.SPACING + 5)
    conn = sqlite3.connect(mind, isolation_level=None)
    try:  # an attacker who can write the file, but has no key of this machine's
        conn.execute("UPDATE projection_cache SET state = replace(state, '\"name\":\"Ada\"', '\"name\":\"Eve\"')"
                     " WHERE name = ?", (f"snap:{past.SPACING}",))
    finally:
        conn.close()
    then = _ok(mind, "stats", "--as-of", point)
    assert then["name"] == "Ada" and then["as_of"]["replayed_from"] == 0  # replayed from the start
    head = str(past.SPACING + 50)
    conn = sqlite3.connect(mind, isolation_level=None)
    try:  # the sealed cache row (its history a digest) copied under a snapshot's name
        conn.execute("INSERT INTO projection_cache SELECT 'snap:' || last_id, version, last_id, last_hash,"
                     " state, mac FROM projection_cache WHERE name = 'mind'")
    finally:
        conn.close()
    assert _ok(mind, "stats", "--as-of", head)["name"] == "Bea"
    deep = _ok(mind, "verify", str(mind), "--deep")
    assert deep["ok"] and "2 not sealed by this machine" in deep["deep"]["snapshots"]

    with Ledger.open(mind, write=True) as ledger:  # a sealed snapshot that is wrong: a bug's
        with ledger.transaction():
            wrong = projections.replay(ledger.events(until=past.SPACING - 1))
            past.store(ledger.conn, ledger.mind_id, [(past.SPACING, ledger.hash_at(past.SPACING) or "", wrong)],
                       ledger.head()[0])
    proc = run_pmm("verify", str(mind), "--deep", "--json")
    assert proc.returncode == 3
    document = json.loads(proc.stdout)
    assert "an --as-of snapshot does not equal a full replay" in document["data"]["problem"]
    assert f"DIFFERENT from a full replay at #{past.SPACING:,}" in document["data"]["deep"]["snapshots"]


def test_snapshot_spacing_doubles_so_at_most_64_are_kept(tmp_path: Path) -> None:
    assert past.spacing(64 * past.SPACING) == past.SPACING
    assert past.spacing(64 * past.SPACING + past.SPACING) == 2 * past.SPACING
    mind = tmp_path / "mind.db"
    _ok(mind, "init", "--name", "Ada")
    with Ledger.open(mind, write=True) as ledger, ledger.transaction():
        states = projections.replay(ledger.events())
        head = 100 * past.SPACING
        snaps = [(k * past.SPACING, "h", states) for k in range(1, 101)]
        past.store(ledger.conn, ledger.mind_id, snaps, head)
        kept = past.ids(ledger.conn)
    assert kept == [k * 2 * past.SPACING for k in range(1, 51)] and len(kept) <= past.KEPT
    with Ledger.open(mind, write=True) as ledger, ledger.transaction():
        past.clear(ledger.conn)
        assert past.ids(ledger.conn) == []


def test_a_copy_opened_on_another_machine_replays_instead(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    mind = _big(tmp_path, past.SPACING + 20)
    copy = tmp_path / "copy.db"
    shutil.copy(mind, copy)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "elsewhere"))  # another machine's key
    then = json_data(run_pmm("--mind", str(copy), "stats", "--as-of", str(past.SPACING + 1), "--json").stdout)
    assert then["as_of"]["replayed_from"] == 0 and then["name"] == "Ada"


def test_an_import_and_a_repair_store_the_snapshots_their_replay_passes(tmp_path: Path) -> None:
    mind = _big(tmp_path, past.SPACING + 30)
    export = tmp_path / "big.jsonl"
    _ok(mind, "export", "-o", str(export))
    assert export.stat().st_size > 1 << 20  # folded by the import's reading process, beside the writer
    copy = tmp_path / "copy.db"
    _ok(copy, "import", str(export))
    with Ledger.open(copy) as ledger:
        assert past.ids(ledger.conn) == [past.SPACING]
    assert _ok(copy, "stats", "--as-of", str(past.SPACING + 3))["as_of"]["replayed_from"] == past.SPACING
    conn = sqlite3.connect(mind, isolation_level=None)
    try:
        conn.execute("DELETE FROM projection_cache WHERE name LIKE 'snap:%'")  # a mind from before snapshots
    finally:
        conn.close()
    assert _ok(mind, "stats", "--as-of", str(past.SPACING + 3))["as_of"]["replayed_from"] == 0
    repaired = invoke("--mind", str(mind), "health", "--repair")
    assert repaired.exit_code == 0, repaired.stderr
    with Ledger.open(mind) as ledger:
        assert past.ids(ledger.conn) == [past.SPACING]


def test_a_fold_holds_at_most_as_many_snapshots_as_a_mind_keeps() -> None:
    """An import of any size holds a bounded list of snapshot states in memory (memory flat):
    those the spacing at a later head would drop are dropped as the fold goes, and what is
    kept is what `past.store` keeps at the end."""
    from pmm.ledger import past

    snaps: list = []
    last = past.SPACING * 300
    for n in range(1, 301):
        past.add(snaps, (past.SPACING * n, "h", {}))
        assert len(snaps) <= past.KEPT + 1
    step = past.spacing(last)
    kept = [s[0] for s in snaps if not s[0] % step]  # what past.store keeps of them at that head
    assert kept == [i for i in range(past.SPACING, last + 1, past.SPACING) if not i % step]
