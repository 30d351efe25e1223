"""`pmm health` checks the chain from where its last check of the same file ended, and says so.

A passing check is remembered in pmm's state dir (never in the mind file, which anyone who
sends a mind can write): mind id, the head it proved, when, and which file (device and inode).
The next check recomputes that head event's hash and checks every newer event; anything that
makes the record not describe the file (another mind, another file at the path, the head gone
or changed) means a full check. What the shortcut trusts is said in the chain line and in
``--json``'s ``chain``; ``--full`` and ``pmm verify`` check every event.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from conftest import cli_json, invoke, restore_guards, unguarded


def _health(mind: Path, *args: str) -> tuple[int, dict, dict]:
    result = invoke("--mind", str(mind), "health", "--json", *args)
    data = json.loads(result.stdout)["data"]
    chain = next(c for c in data["checks"] if c["name"] == "chain")
    return result.exit_code, data["chain"], chain


def _remember(mind: Path, *notes: str) -> None:
    for note in notes:
        assert invoke("--mind", str(mind), "remember", note).exit_code == 0


def _record(private_dirs: Path, mind: Path) -> Path:
    key = hashlib.sha256(str(mind.resolve()).encode()).hexdigest()
    return private_dirs / "state" / "pmm" / "witness" / "verified" / f"{key}.json"


def _alter(mind: Path, event_id: int, content: str) -> None:
    conn = unguarded(mind)
    conn.execute("UPDATE events SET content = ? WHERE id = ?", (content, event_id))
    restore_guards(conn)
    conn.close()


def test_the_second_check_trusts_the_first_and_checks_only_newer_events(mind: Path, private_dirs: Path) -> None:
    _remember(mind, "one", "two")
    code, chain, line = _health(mind)
    assert code == 0 and chain == {"full": True, "checked": 3, "trusted": 0, "trusted_since": None}
    assert line["detail"].startswith("3 events verified")
    stored = json.loads(_record(private_dirs, mind).read_text())
    assert stored["events"] == 3 and stored["path"] == str(mind.resolve())

    code, chain, line = _health(mind)
    assert code == 0 and chain["full"] is False and chain["checked"] == 1 and chain["trusted"] == 2
    assert "verified by an earlier check" in line["detail"] and "none newer" in line["detail"]
    assert "`pmm health --full`" in line["detail"]  # it says how to check everything

    _remember(mind, "three", "four")
    code, chain, line = _health(mind)
    assert code == 0 and (chain["full"], chain["checked"], chain["trusted"]) == (False, 3, 2)
    assert "1-3 verified by an earlier check" in line["detail"] and "2 newer checked now" in line["detail"]
    assert json.loads(_record(private_dirs, mind).read_text())["events"] == 5

    code, chain, _ = _health(mind, "--full")
    assert code == 0 and chain == {"full": True, "checked": 5, "trusted": 0, "trusted_since": None}
    assert "--full" in invoke("health", "--help").stdout


def test_a_change_at_or_after_the_verified_head_is_found(mind: Path) -> None:
    _remember(mind, "one", "two")
    assert _health(mind)[0] == 0
    _remember(mind, "three")
    _alter(mind, 4, "not what was said")  # newer than the verified head
    code, chain, line = _health(mind)
    assert code == 3 and chain["full"] is False and line["status"] == "fail"
    assert line["detail"].startswith("event 4: stored hash does not match")

    _alter(mind, 4, "three")
    assert _health(mind)[0] == 0  # back as it was: the record now ends at event 4
    _alter(mind, 4, "changed again")  # the verified head itself: its hash is recomputed
    code, _, line = _health(mind)
    assert code == 3 and line["detail"].startswith("event 4:")


def test_a_change_below_the_verified_head_needs_the_full_check_which_finds_it(mind: Path) -> None:
    """The shortcut's one blind spot, stated in its output: an event it verified before that was
    altered in place since, keeping its hash. --full and `pmm verify` read every event."""
    _remember(mind, "one", "two", "three")
    assert _health(mind)[0] == 0
    _alter(mind, 2, "rewritten")
    code, chain, line = _health(mind)
    assert code == 0 and chain["trusted"] == 3 and "verified by an earlier check" in line["detail"]
    code, chain, line = _health(mind, "--full")
    assert code == 3 and chain["full"] is True and line["detail"].startswith("event 2:")
    assert invoke("verify", str(mind)).exit_code == 3


def test_a_record_that_does_not_describe_the_file_means_a_full_check(mind: Path, tmp_path: Path,
                                                                   private_dirs: Path) -> None:
    _remember(mind, "one", "two")
    assert _health(mind)[0] == 0
    record = _record(private_dirs, mind)
    genuine = json.loads(record.read_text())

    # a forged or stale head: not the hash the file holds at that id
    record.write_text(json.dumps({**genuine, "head": "0" * 64}))
    assert _health(mind)[1]["full"] is True
    # another mind's record, or one claiming more events than the file has
    record.write_text(json.dumps({**genuine, "mind_id": "f" * 32}))
    assert _health(mind)[1]["full"] is True
    record.write_text(json.dumps({**genuine, "events": 99}))
    assert _health(mind)[1]["full"] is True
    record.write_text("{ not json")
    code, chain, _ = _health(mind)
    assert code == 0 and chain["full"] is True  # a damaged record costs speed, never the check

    # another file at the same path (a copy moved over it): another inode, so a full check
    assert _health(mind)[1]["full"] is False
    copy = tmp_path / "copy.db"
    shutil.copyfile(mind, copy)
    os.replace(copy, mind)
    assert _health(mind)[1]["full"] is True
    # and a copy elsewhere was never checked at its own path
    other = tmp_path / "other.db"
    shutil.copyfile(mind, other)
    assert _health(other)[1]["full"] is True


def test_nothing_in_the_mind_file_can_claim_a_check(mind: Path) -> None:
    """The record lives only in the state dir: the mind file is left byte for byte, so nothing a
    sender writes into one can say its events were verified."""
    _remember(mind, "one")
    before = mind.read_bytes()
    assert _health(mind)[0] == 0 and _health(mind)[1]["full"] is False
    assert mind.read_bytes() == before
    assert cli_json(mind, "verify")["ok"] is True
