"""`pmm forget` and `pmm upgrade`: what may be forgotten, what verify checks of a tombstone, how
forgetting travels through export and import, and how a format-1 mind becomes format 2 with its
old signatures (docs/ledger-format.md)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import cli_json, invoke, json_data, mind_events, restore_guards, run_in, run_pmm, unguarded

from pmm.domain.events import Draft
from pmm.ledger import folded
from pmm.ledger.chain import content_digest
from pmm.ledger.store import Ledger

DATA = Path(__file__).resolve().parent / "data"
SECRET = "correct horse battery staple"


def _ok(*args: str, **kw) -> str:
    done = run_in(*args, **kw)
    assert done.returncode == 0, (args, done.stderr.decode())
    return done.stdout.decode()


def _rows(mind: Path) -> list[dict]:
    """Every stored column of every event (mind_events leaves out ts and the hashes)."""
    with sqlite3.connect(f"file:{mind}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY id")]


def _code(mind: Path, *args: str) -> tuple[int, str]:
    done = run_pmm("--mind", str(mind), *args)
    return done.returncode, done.stderr.decode()


@pytest.fixture
def noted(mind: Path) -> Path:
    """A format-2 mind: genesis, a note, the secret (event 3), another note."""
    for text in ("first note", f"the password is {SECRET}", "last note"):
        _ok("--mind", str(mind), "remember", text)
    return mind


# -- what may be forgotten ---------------------------------------------------------------------


def test_forget_refuses_what_it_cannot_forget_with_a_usage_error(noted: Path, tmp_path: Path) -> None:
    before = noted.read_bytes()
    for args, says in ((["1"], "genesis"), (["99"], "no event #99"), (["0"], "greater than or equal to 1")):
        code, err = _code(noted, "forget", *args, "--yes")
        assert code == 2 and says in err and "Traceback" not in err, (args, err)
    code, err = _code(noted, "forget", "3")  # no terminal, no --yes: nothing is done
    assert code == 2 and "--yes" in err
    assert noted.read_bytes() == before
    _ok("--mind", str(noted), "forget", "3", "--yes")
    code, err = _code(noted, "forget", "3", "--yes")
    assert code == 2 and "forgotten already" in err
    code, err = _code(noted, "forget", "5", "--yes")  # the content_forgotten event itself
    assert code == 2 and "records a forgetting" in err
    code, err = _code(tmp_path / "missing.db", "forget", "2", "--yes")
    assert code == 4 and not (tmp_path / "missing.db").exists()


def test_a_format_1_mind_is_refused_with_the_upgrade_hint(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(DATA / "mind-schema-4.db", old)
    code, err = _code(old, "forget", "2", "--yes")
    assert code == 2 and "ledger format 1" in err and "pmm upgrade" in err


def test_the_forgotten_event_keeps_everything_but_its_content(noted: Path) -> None:
    before = mind_events(noted)
    done = cli_json(noted, "forget", "3", "--reason", "  pasted   by mistake ", "--yes")
    assert done["content_digest"] == content_digest(f"the password is {SECRET}".encode())
    after = mind_events(noted)
    assert after[2]["content"] == "" and {**after[2], "content": before[2]["content"]} == before[2]
    assert after[:2] == before[:2] and after[3] == before[3]
    record = after[4]
    assert record["kind"] == "content_forgotten" and record["content"] == "pasted by mistake"
    assert record["meta"]["event"] == 3 and record["meta"]["content_digest"] == done["content_digest"]
    assert record["meta"]["source"] == "user" and record["meta"]["by"]
    with sqlite3.connect(noted) as conn:
        assert conn.execute("SELECT id, content_digest FROM forgotten").fetchall() == [(3, done["content_digest"])]
        assert conn.execute("SELECT count(*) FROM projection_cache").fetchone()[0] == 0
        docs = conn.execute("SELECT count(*) FROM events_fts_docsize").fetchone()[0]
    assert docs == 5  # the index still covers every event (health's check), the forgotten one empty
    health = run_pmm("--mind", str(noted), "health")
    assert health.returncode == 0, health.stderr


def test_forget_does_no_replay_and_leaves_the_cache_to_the_next_write(noted: Path) -> None:
    folded.forget()
    replays = folded.replays
    assert invoke("--mind", str(noted), "forget", "2", "--yes").exit_code == 0
    assert folded.replays == replays  # the bar (1 s at a million events) allows no replay
    assert json_data(invoke("--mind", str(noted), "stats", "--json").stdout)["events"] == 5
    _ok("--mind", str(noted), "remember", "rebuilds the cache")
    with sqlite3.connect(noted) as conn:
        assert conn.execute("SELECT count(*) FROM projection_cache").fetchone()[0] > 0
    _ok("verify", str(noted), "--deep")


# -- what verify checks of a tombstone ---------------------------------------------------------


def _tamper(mind: Path, *statements: tuple[str, tuple]) -> None:
    conn = unguarded(mind)
    for sql, args in statements:
        conn.execute(sql, args)
    restore_guards(conn)
    conn.close()


TAMPERS = {  # what an attacker does after a forget; the event verify names; what it says
    "content put back": ([("UPDATE events SET content = ? WHERE id = 3", (f"the password is {SECRET}",))],
                         3, "still stored"),
    "tombstone removed, content put back": (
        [("DELETE FROM forgotten", ()),
         ("UPDATE events SET content = ? WHERE id = 3", (f"the password is {SECRET}",))],
        3, "recorded forgotten by event 5"),
    "tombstone of other content": ([("UPDATE forgotten SET content_digest = ?", ("ab" * 32,))],
                                   3, "does not match"),
    "a second event blanked without a record": (
        [("UPDATE events SET content = '' WHERE id = 2", ()),
         ("INSERT INTO forgotten VALUES (2, ?)", (content_digest(b"first note"),))],
        2, "no content_forgotten event"),
    "a tombstone that is not a digest": ([("UPDATE forgotten SET content_digest = 'x'", ())],
                                         3, "not a content digest"),
}


@pytest.mark.parametrize("name", TAMPERS)
def test_verify_checks_every_tombstone_against_its_record(noted: Path, name: str) -> None:
    _ok("--mind", str(noted), "forget", "3", "--yes")
    statements, event, says = TAMPERS[name]
    _tamper(noted, *statements)
    done = run_pmm("verify", str(noted), "--json", "--no-witness")
    assert done.returncode == 3, done.stdout
    report = json.loads(done.stdout)["data"]
    assert report["problem_event"] == event and says in report["problem"], report["problem"]


# -- export and import -------------------------------------------------------------------------


def test_an_export_carries_the_tombstone_and_rebuilds_a_mind_that_verifies(noted: Path, tmp_path: Path) -> None:
    _ok("--mind", str(noted), "forget", "3", "--yes")
    export = tmp_path / "after.jsonl"
    _ok("--mind", str(noted), "export", "-o", str(export))
    assert SECRET not in export.read_text()
    fresh = tmp_path / "fresh.db"
    _ok("--mind", str(fresh), "import", str(export))
    assert mind_events(fresh) == mind_events(noted)
    assert SECRET.encode() not in fresh.read_bytes()
    _ok("verify", str(fresh), "--deep")
    with sqlite3.connect(fresh) as conn:
        assert conn.execute("SELECT id FROM forgotten").fetchall() == [(3,)]
    # a tombstone line changed into content is refused by import, naming the event
    lines = export.read_text().splitlines()
    event = json.loads(lines[3])
    del event["content_digest"]
    lines[3] = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    export.write_text("\n".join(lines) + "\n")
    done = run_pmm("--mind", str(tmp_path / "other.db"), "import", str(export))
    assert done.returncode == 6 and b"event 3" in done.stderr
    assert not (tmp_path / "other.db").exists()


def test_importing_a_forget_into_a_copy_that_has_the_content_removes_it_there(noted: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copy(noted, copy)  # another machine's copy, taken before the forget
    _ok("--mind", str(noted), "forget", "3", "--yes")
    export = tmp_path / "after.jsonl"
    _ok("--mind", str(noted), "export", "-o", str(export))
    assert SECRET.encode() in copy.read_bytes()
    done = cli_json(copy, "import", str(export))
    assert done["appended"] == 1 and done["already_present"] == 4
    assert SECRET.encode() not in copy.read_bytes()
    assert mind_events(copy) == mind_events(noted)
    _ok("verify", str(copy), "--deep")
    assert "horse" not in _ok("--mind", str(copy), "search", "horse")


def test_an_export_taken_before_the_forget_matches_the_mind_after_it(noted: Path, tmp_path: Path) -> None:
    before = tmp_path / "before.jsonl"
    _ok("--mind", str(noted), "export", "-o", str(before))
    _ok("--mind", str(noted), "forget", "3", "--yes")
    done = cli_json(noted, "import", str(before))
    assert done == {**done, "appended": 0, "already_present": 4}
    assert SECRET.encode() not in noted.read_bytes()
    _ok("verify", str(noted))


def test_an_import_whose_forget_names_other_content_is_refused(noted: Path, tmp_path: Path) -> None:
    """A crafted export can append a content_forgotten whose digest is not the content of the
    event it names in the target: importing it would break the target's chain, so nothing is."""
    copy = tmp_path / "copy.db"
    shutil.copy(noted, copy)
    with Ledger.open(noted, write=True) as ledger:  # a record of the wrong digest, hashed right
        ledger.forget(3, lambda target, digest: Draft("content_forgotten", "", {"event": 3, "content_digest": "cd" * 32}))
    assert run_pmm("verify", str(noted), "--no-witness").returncode == 3  # its own file fails...
    export = tmp_path / "crafted.jsonl"
    _ok("--mind", str(noted), "export", "-o", str(export))
    # ...but its export's tail (event 5 onto the copy's 4 events) holds no tombstone to judge
    before = mind_events(copy)
    done = run_pmm("--mind", str(copy), "import", str(export))
    assert done.returncode == 6 and b"not its content's" in done.stderr, done.stderr
    assert mind_events(copy) == before and SECRET.encode() in copy.read_bytes()


# -- upgrading a format-1 mind -----------------------------------------------------------------


def test_upgrade_rewrites_a_format_1_mind_keeping_every_event_and_old_signatures(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(DATA / "mind-schema-4.db", old)
    before = _rows(old)
    _ok("keygen", "-o", str(tmp_path / "key.pem"))
    _ok("sign", str(old), "--key", str(tmp_path / "key.pem"), "-o", str(tmp_path / "f1.sig"))
    done = cli_json(old, "upgrade")
    assert done["upgraded"] and done["ledger_format"] == 2 and done["format1_events"] == len(before)
    assert done["format1_head"] == before[-1]["hash"] and done["recorded_by"] == len(before) + 1
    after = _rows(old)
    same = ("id", "ts", "kind", "content", "meta")
    assert [{k: e[k] for k in same} for e in after[:-1]] == [{k: e[k] for k in same} for e in before]
    assert all(a["hash"] != b["hash"] for a, b in zip(after, before, strict=False))
    assert after[-1]["kind"] == "ledger_upgraded"
    report = json_data(run_pmm("verify", str(old), "--json").stdout)  # the witness accepted it
    assert report["ledger_format"] == 2 and report["witness"]["state"] != "forked"
    assert cli_json(old, "upgrade")["upgraded"] is False  # idempotent

    # the signature made before the upgrade holds, recomputed from the stored events
    signed = run_pmm("verify", str(old), "--sig", str(tmp_path / "f1.sig"), "--pub", str(tmp_path / "key.pub.pem"),
                     "--json")
    assert signed.returncode == 0, signed.stdout
    assert any("format-1 chain" in note for note in json.loads(signed.stdout)["data"]["notes"])
    # a signature of the new head, made now, survives a forget; the format-1 one cannot
    _ok("sign", str(old), "--key", str(tmp_path / "key.pem"), "-o", str(tmp_path / "f2.sig"))
    _ok("--mind", str(old), "forget", "3", "--yes")
    ok2 = run_pmm("verify", str(old), "--sig", str(tmp_path / "f2.sig"), "--pub", str(tmp_path / "key.pub.pem"))
    assert ok2.returncode == 0, ok2.stderr
    gone = run_pmm("verify", str(old), "--sig", str(tmp_path / "f1.sig"), "--pub", str(tmp_path / "key.pub.pem"))
    assert gone.returncode == 3 and b"sign again" in gone.stderr


def test_upgrade_refuses_a_broken_format_1_chain_and_writes_nothing(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(DATA / "mind-schema-4.db", old)
    _tamper(old, ("UPDATE events SET content = 'altered' WHERE id = 2", ()))
    before = mind_events(old)
    code, err = _code(old, "upgrade")
    assert code == 3 and "event 2" in err and "not upgraded" in err
    assert mind_events(old) == before
    with sqlite3.connect(old) as conn:
        assert conn.execute("SELECT value FROM pmm_meta WHERE key = 'ledger_format'").fetchone() == ("1",)


def test_a_format_1_export_imports_as_format_1_and_stays_verifiable(tmp_path: Path) -> None:
    """An export of a mind an older pmm made keeps its hashes: the new file is format 1 too
    (into a new file, and into an empty mind), until `pmm upgrade`."""
    old = tmp_path / "old.db"
    shutil.copy(DATA / "mind-schema-4.db", old)
    export = tmp_path / "old.jsonl"
    _ok("--mind", str(old), "export", "-o", str(export))
    assert json.loads(export.read_text().splitlines()[0])["version"] == 1
    empty = tmp_path / "empty.db"
    Ledger.create(empty, None).close()
    for target in (tmp_path / "fresh.db", empty):
        _ok("--mind", str(target), "import", str(export))
        report = json_data(run_pmm("verify", str(target), "--json").stdout)
        assert report["ok"] and report["ledger_format"] == 1, report
        assert _rows(target) == _rows(old)
    assert cli_json(empty, "upgrade")["upgraded"]
    _ok("verify", str(empty))


def test_a_reader_mid_transaction_delays_only_the_wal_truncation(noted: Path) -> None:
    """Another process reading the mind (in WAL, mid-transaction) cannot be waited out for the
    whole lock timeout: the forget commits, says the WAL is left to the last writer, and that
    writer's close empties it."""
    other = Ledger.open(noted, write=True)  # puts the file in WAL, as a running `pmm chat` does
    try:
        other.conn.execute("BEGIN")
        other.conn.execute("SELECT count(*) FROM events").fetchone()  # holds a WAL snapshot
        done = cli_json(noted, "forget", "3", "--yes")
        assert done["forgotten"] == 3 and done["wal_truncated"] is False
        other.conn.execute("COMMIT")
    finally:
        other.close()
    assert not Path(f"{noted}-wal").exists()
    assert SECRET.encode() not in noted.read_bytes()
    _ok("verify", str(noted))
