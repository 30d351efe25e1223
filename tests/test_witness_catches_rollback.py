"""The witness: pmm remembers, outside the mind file, the heads it has seen, so `pmm verify` catches
what the chain alone cannot: a truncated file, a rollback to an older copy, a fork, a full rewrite
with recomputed hashes. A copy that is merely behind (a backup) is reported, not failed; a
deliberate rollback is accepted with --accept-rollback (or by `pmm restore`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from conftest import PMM, json_data, restore_guards, run_in, run_pmm, unguarded

from pmm.services import witness


def _remember(mind: Path, *notes: str) -> None:
    for note in notes:
        run_in("--mind", str(mind), "remember", note, check=True)


def _verify(path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[bytes], dict]:
    result = run_in("verify", str(path), *extra, "--json")
    return result, json_data(result.stdout)


def _failed(path: Path, state: str, run=run_in) -> str:
    """verify fails with exit 3, names the state in JSON and in one error line with a hint."""
    result, report = _verify(path)
    assert result.returncode == 3, result.stderr
    assert report["ok"] is False and report["witness"]["state"] == state, report
    plain = run("verify", str(path))
    assert plain.returncode == 3
    lines = plain.stderr.decode().splitlines()
    assert [line for line in lines if line.startswith("Error: ")] == [lines[0]], lines
    assert "--accept-rollback" in lines[1], lines
    return lines[0]


def test_writes_and_verifies_keep_the_witness_current(mind: Path, private_dirs: Path) -> None:
    _remember(mind, "one", "two")
    result, report = _verify(mind)
    assert result.returncode == 0
    assert report["witness"]["state"] == "current"
    assert report["witness"]["witnessed"]["events"] == 3
    import hashlib

    folder = private_dirs / "state" / "pmm" / "witness"
    by_id = hashlib.sha256(report["mind_id"].encode()).hexdigest()
    by_path = hashlib.sha256(str(mind.resolve()).encode()).hexdigest()
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    assert files == [".lock", "minds", f"minds/{by_id}.json", "paths", f"paths/{by_path}.json"]  # no temp files
    stored = json.loads((folder / "minds" / f"{by_id}.json").read_text())
    assert stored["heads"][-1][:2] == [3, report["head"]]
    place = json.loads((folder / "paths" / f"{by_path}.json").read_text())
    assert place["path"] == str(mind.resolve()) and place["mind_id"] == report["mind_id"]
    assert place["head"][:2] == [3, report["head"]]


def test_a_truncated_file_fails(mind: Path) -> None:
    from pmm.domain.events import Draft
    from pmm.services import opening

    with opening.open_write(mind, lambda _m: None) as writer:  # one write of three events
        writer.append([Draft("observation_recorded", f"note {i}", {"source": "user"}) for i in range(3)])
    conn = unguarded(mind)
    conn.execute("DELETE FROM events WHERE id > 2")
    restore_guards(conn)  # covering the tracks: pmm refuses a file whose schema it did not make
    conn.close()
    line = _failed(mind, "truncated", run=run_pmm)  # one real process: exit 3 as a script sees it
    assert "ends at event 2" in line and "reach event 4" in line


def test_a_file_cut_back_to_a_head_pmm_saw_is_a_rollback(mind: Path) -> None:
    _remember(mind, "one", "two", "three")
    conn = unguarded(mind)
    conn.execute("DELETE FROM events WHERE id > 2")
    restore_guards(conn)  # covering the tracks: pmm refuses a file whose schema it did not make
    conn.close()
    assert "rolled back" in _failed(mind, "rolled_back")


def test_a_rollback_to_an_older_copy_fails_and_can_be_accepted(mind: Path, tmp_path: Path) -> None:
    _remember(mind, "one")
    old = tmp_path / "old.db"
    shutil.copyfile(mind, old)
    _remember(mind, "two", "three")
    shutil.copyfile(old, mind)
    assert "rolled back" in _failed(mind, "rolled_back")

    # The older copy in its own place is only behind: reported, not failed.
    result, report = _verify(old)
    assert result.returncode == 0
    assert report["witness"]["state"] == "behind" and report["witness"]["witnessed"]["events"] == 4

    result, report = _verify(mind, "--accept-rollback")
    assert result.returncode == 0 and report["witness"]["state"] == "accepted"
    assert _verify(mind)[1]["witness"]["state"] == "current"
    _remember(mind, "life goes on")
    assert _verify(mind)[1]["witness"]["state"] == "current"


def test_a_fork_fails_wherever_the_copy_lives(mind: Path, tmp_path: Path) -> None:
    _remember(mind, "common ground")
    fork = tmp_path / "fork.db"
    shutil.copyfile(mind, fork)
    _remember(mind, "this side")
    _remember(fork, "that side", "and more")  # longer than the witnessed head, but not on its chain
    line = _failed(fork, "forked")
    assert "event 3" in line and "agree up to event 2" in line
    assert _verify(mind)[0].returncode == 0


def test_a_full_rewrite_with_recomputed_hashes_fails(mind: Path, tmp_path: Path) -> None:
    """Same mind id, same length, every hash valid: only the witness can tell."""
    from pmm.domain.events import Draft
    from pmm.ledger.store import Ledger

    _remember(mind, "the truth", "more truth")
    mind_id = json_data(run_in("verify", str(mind), "--json", check=True).stdout)["mind_id"]
    forged = tmp_path / "forged.db"
    from pmm.services import opening

    with Ledger.create(forged, opening.genesis("Test"), mind_id=mind_id) as m:
        m.append([Draft("observation_recorded", "a lie", {"source": "user"}),
                  Draft("observation_recorded", "another lie", {"source": "user"})])
    shutil.copyfile(forged, mind)
    assert run_in("verify", str(mind), "--no-witness").returncode == 0  # the chain alone is fine
    assert "forked" in _failed(mind, "forked")


def test_exports_are_checked_against_the_witness_too(mind: Path, tmp_path: Path) -> None:
    _remember(mind, "one")
    behind = run_in("--mind", str(mind), "export", check=True).stdout
    _remember(mind, "two")
    result = run_in("verify", "-", "--json", input=behind)
    assert result.returncode == 0 and json_data(result.stdout)["witness"]["state"] == "behind"
    fork = tmp_path / "fork.db"
    run_in("--mind", str(fork), "import", "-", input=behind, check=True)
    _remember(fork, "elsewhere")
    diverged = run_in("--mind", str(fork), "export", check=True).stdout
    result = run_in("verify", "-", "--json", input=diverged)
    assert result.returncode == 3 and json_data(result.stdout)["witness"]["state"] == "forked"


def test_no_witness_skips_it_and_a_damaged_witness_file_is_not_fatal(mind: Path, private_dirs: Path) -> None:
    _remember(mind, "one", "two")
    conn = unguarded(mind)
    conn.execute("DELETE FROM events WHERE id > 2")
    restore_guards(conn)
    conn.close()
    result, report = _verify(mind, "--no-witness")
    assert result.returncode == 0 and report["witness"] is None
    for record in (private_dirs / "state" / "pmm" / "witness").rglob("*.json"):
        record.write_text("{ not json")
    result, report = _verify(mind)
    assert result.returncode == 0 and report["witness"]["state"] == "new"
    assert run_in("verify", str(mind), "--no-witness", "--accept-rollback").returncode == 2


def test_concurrent_writers_leave_a_consistent_witness(mind: Path) -> None:
    procs = [subprocess.Popen([PMM, "--mind", str(mind), "remember", f"note {i}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(8)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    result, report = _verify(mind)
    assert result.returncode == 0, result.stderr
    assert report["witness"]["state"] == "current" and report["last_id"] == 9


def test_judging_is_pure_over_the_record(tmp_path: Path, monkeypatch) -> None:
    """The witness module on its own: heads on a chain, a copy behind, a fork below the top."""
    from pmm.domain.checkpoint import Checkpoint

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    chain = {i: f"{i:064x}" for i in range(1, 11)}
    mid = "a" * 32
    at = chain.get
    assert witness.observe(Checkpoint(mid, 5, chain[5]), at, tmp_path / "a.db", "write").state == "new"
    assert witness.observe(Checkpoint(mid, 8, chain[8]), at, tmp_path / "a.db", "write").state == "ahead"
    assert witness.observe(Checkpoint(mid, 6, chain[6]), at, tmp_path / "b.db").state == "behind"
    other = {**chain, 5: "f" * 64, 6: "e" * 64}
    verdict = witness.observe(Checkpoint(mid, 6, other[6]), other.get, tmp_path / "c.db")
    assert verdict.state == "forked" and "event 5" in verdict.message
    assert witness.observe(Checkpoint(mid, 7, chain[7]), at, tmp_path / "a.db").state == "truncated"
    assert witness.observe(Checkpoint(mid, 5, chain[5]), at, tmp_path / "a.db").state == "rolled_back"
