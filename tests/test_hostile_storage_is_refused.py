"""A hash-valid event whose bytes are right but whose storage is not what pmm writes: a column
of another SQLite storage class (a BLOB holding the very bytes of valid text), or TEXT that is
not UTF-8. verify, backup and restore refuse it naming the event (exit 3), and a read command
that meets undecodable text reports tampering (exit 3), not an unexpected error."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import restore_guards, unguarded

from pmm.crypto.age import encrypt
from pmm.domain.checks import check_row
from pmm.ledger.chain import FORMAT_VERSION, GENESIS_PREV, chain_prefix, raw_event_hash
from pmm.ledger.store import Ledger

TS = "2026-03-04T05:06:07.000008Z"
FIELDS = ("ts", "kind", "content", "meta", "prev_hash", "hash")
PASS = {"PMM_BACKUP_PASSPHRASE": "a passphrase"}
BAD_META = b'{"source":"\xff\xfe"}'


def _crafted(path: Path, *, blob: str | None = None, meta: bytes = b'{"source":"user"}',
             bad: tuple[str, bytes] | None = None) -> Path:
    """A mind of three events whose event 2 is an observation with ``meta``, its ``blob``
    column stored as a BLOB and its ``bad[0]`` column holding the bytes ``bad[1]``; every other
    value stored as TEXT whatever its bytes, every hash recomputed, the guards put back: what an
    attacker covering their tracks leaves."""
    from pmm.domain.events import Event

    mind_id = uuid.uuid4().hex
    prefix = chain_prefix(FORMAT_VERSION, mind_id)
    specs = [(TS.encode(), b"mind_created", b"Mind created", b'{"pmm_version":"0.1.0"}'),
             (TS.encode(), b"observation_recorded", b"hostile", meta),
             (TS.encode(), b"observation_recorded", b"after", b'{"source":"user"}')]
    rows, prev = [], GENESIS_PREV.encode()
    for i, fields in enumerate(specs, 1):
        row = [i, *fields, prev, b""]
        if i == 2 and bad is not None:
            row[FIELDS.index(bad[0]) + 1] = bad[1]
        row[6] = row[6] or raw_event_hash(prefix, i, *row[1:6]).encode()
        rows.append(row)
        prev = row[6]
    Ledger.build(path, mind_id, [Event(1, TS, *(v.decode() for v in rows[0][2:]))])
    conn = unguarded(path)
    for row in rows[1:]:
        values = ", ".join("?" if row[0] == 2 and name == blob else "CAST(? AS TEXT)" for name in FIELDS)
        conn.execute(f"INSERT INTO events VALUES (?, {values})", row)
    restore_guards(conn)
    conn.close()
    return path


@pytest.mark.parametrize("field", FIELDS)
def test_verify_refuses_a_column_stored_as_a_blob(field: str, tmp_path: Path, cli) -> None:
    path = _crafted(tmp_path / "blob.db", blob=field)
    done = cli("verify", str(path), "--no-witness")
    assert done.exit_code == 3, done.output
    assert "event 2" in done.stderr and f"{field} is missing, NULL or not stored as text" in done.stderr


@pytest.mark.parametrize("field", ["ts", "kind", "content", "meta", "prev_hash", "hash"])
def test_read_commands_on_an_unverified_blob_mind_never_crash(field: str, tmp_path: Path, cli) -> None:
    """Never verified, opened directly: every read command reads text all the same."""
    path = _crafted(tmp_path / "blob.db", blob=field)
    for args in (["log"], ["export"], ["stats"], ["export", "--format", "md"], ["search", "note"]):
        result = cli("--mind", str(path), *args)
        assert result.exit_code in (0, 3), (args, result.output)
        assert "unexpected" not in result.stderr, (args, result.stderr)


def test_backup_and_restore_refuse_a_mind_with_a_blob(tmp_path: Path, cli) -> None:
    path = _crafted(tmp_path / "blob.db", blob="kind")
    done = cli("--mind", str(path), "backup", "-o", str(tmp_path / "b.age"), env=PASS)
    assert done.exit_code == 3, done.output
    assert "event 2" in done.stderr and not (tmp_path / "b.age").exists()
    sealed = tmp_path / "blob.age"
    sealed.write_bytes(encrypt(path.read_bytes(), PASS["PMM_BACKUP_PASSPHRASE"], 10))
    target = tmp_path / "out" / "m.db"
    done = cli("--mind", str(target), "restore", str(sealed), env=PASS)
    assert done.exit_code == 6, done.output  # a backup that fails verification is bad input
    assert "event 2" in done.stderr and "kind" in done.stderr
    assert not target.exists()


def test_the_shortcut_refuses_meta_that_is_not_utf8() -> None:
    assert check_row(TS.encode(), b"observation_recorded", b"x", b'{"source":"user"}') is None
    assert check_row(TS.encode(), b"observation_recorded", b"x", BAD_META) is not None
    assert check_row(TS.encode(), b"observation_recorded", b"x", '{"source":"été"}'.encode()) is None


def test_a_meta_the_shortcut_remembers_vouches_only_for_itself() -> None:
    from pmm.domain import checks

    kind, good = b"observation_recorded", b'{"source":"user"}'
    for _ in range(checks.FAST_AFTER + 1):  # the kind's shortcut is made, then fits ``good``
        assert check_row(TS.encode(), kind, b"x", good) is None
    assert kind in checks._PASSED.get(good, ())  # remembered
    assert check_row(TS.encode(), kind, b"x", good) is None
    assert check_row(TS.encode(), kind, b"x", BAD_META) is not None
    assert check_row(TS.encode(), kind, b"x", b'{"source":1}') is not None
    assert check_row(b"2026-13-04T05:06:07.000008Z", kind, b"x", good) is not None  # ts still checked
    assert check_row(TS.encode(), kind, b"\xff", good) is not None  # content too
    assert check_row(TS.encode(), kind, b"x", good) is None


@pytest.mark.parametrize("field", FIELDS)
def test_verify_refuses_a_text_column_that_is_not_utf8(field: str, tmp_path: Path, cli) -> None:
    """(pmm writes ts, kind, prev_hash and hash in ASCII; content and meta in UTF-8)"""
    good = {"ts": TS.encode(), "kind": b"observation_recorded", "content": b"hostile",
            "meta": b'{"source":"user"}', "prev_hash": b"0" * 64, "hash": b"0" * 64}[field]
    path = _crafted(tmp_path / "bad.db", bad=(field, good[:-1] + b"\xff"))
    done = cli("verify", str(path), "--no-witness")
    assert done.exit_code == 3, done.output
    assert "event 2" in done.stderr


def test_verify_and_backup_refuse_meta_that_is_not_utf8(tmp_path: Path, cli) -> None:
    """(restore checks a backup as backup checks the mind: the BLOB test above shows it)"""
    path = _crafted(tmp_path / "bad.db", meta=BAD_META)
    done = cli("verify", str(path), "--no-witness")
    assert done.exit_code == 3, done.output
    assert "event 2: meta is not valid UTF-8" in done.stderr
    done = cli("--mind", str(path), "backup", "-o", str(tmp_path / "b.age"), env=PASS)
    assert done.exit_code == 3, done.output
    assert "event 2" in done.stderr
    assert not (tmp_path / "b.age").exists()


@pytest.mark.parametrize("command", [["stats"], ["log"], ["export", "-o", "out.jsonl"], ["trace", "2"]])
def test_a_read_command_meeting_text_that_is_not_utf8_reports_tampering(
        command: list[str], tmp_path: Path, cli) -> None:
    path = _crafted(tmp_path / "bad.db", meta=BAD_META)
    args = [str(tmp_path / a) if a.endswith(".jsonl") else a for a in command]
    done = cli("--mind", str(path), *args)
    assert done.exit_code == 3, done.output
    assert "not UTF-8 in column 'meta'" in done.stderr
    assert "unexpected" not in done.stderr and "SQLite error" not in done.stderr
