"""A mind id is untrusted text wherever pmm reads it (an export header, a mind's pmm_meta, a
restored backup, the witness): one validator refuses anything but an id as pmm makes them, with
nothing written anywhere, and the witness never names a file after it (a digest instead).

Codes: an import or restore input with a bad id is exit 6; a mind file with one is "not a valid
pmm mind", exit 4, for every command (verify included); a pmm export with one fails `verify`, 3.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import invoke, json_data

from pmm import errors
from pmm.domain import checkpoint, ids
from pmm.ledger.chain import GENESIS_PREV, chain_prefix, event_hash
from pmm.ledger.jsonl import end_line, event_lines, header_line
from pmm.services import witness


def _hostile_ids(tmp_path: Path) -> list[str]:
    return [str(tmp_path / "victim"), "../../victim", "a" * 31, "A" * 32, "a" * 32 + "\n", "",
            "0" * 32 + "/x", "g" * 32]


def _crafted_export(mind_id: str, n: int = 3) -> bytes:
    """An export whose every hash is right for ``mind_id``: only the id check can refuse it."""
    prefix = chain_prefix(1, mind_id)
    rows, prev = [], GENESIS_PREV
    for i in range(1, n + 1):
        ts, kind, content, meta = "2026-01-01T00:00:00.000000Z", "observation_recorded", f"n {i}", "{}"
        digest = event_hash(prefix, i, ts, kind, content, meta, prev)
        rows.append((i, ts, kind, content, meta, prev, digest))
        prev = digest
    text = header_line(mind_id, 1, 1) + "".join(event_lines(rows)) + end_line(n, n, prev)
    return text.encode()


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_the_validator_takes_exactly_the_ids_pmm_makes(tmp_path: Path) -> None:
    from pmm.ledger.connection import new_mind_id

    assert all(ids.is_mind_id(new_mind_id()) for _ in range(20))
    for bad in [*_hostile_ids(tmp_path), None, 12, ["a" * 32]]:
        assert not ids.is_mind_id(bad), bad
    with pytest.raises(errors.IntegrityError):
        checkpoint.of("../../x", 1, "0" * 64)


def test_an_export_with_a_hostile_id_is_refused_with_nothing_written(tmp_path: Path) -> None:
    before = _files(tmp_path)
    for bad in _hostile_ids(tmp_path):
        data = _crafted_export(bad)
        mind = tmp_path / "new.db"
        imported = invoke("--mind", str(mind), "import", "-", input=data)
        assert imported.exit_code == 6, (bad, imported.output)
        assert imported.stderr.startswith("Error: line 1:"), imported.stderr
        verified = invoke("verify", "-", input=data)
        assert verified.exit_code == 3 and "not one pmm makes" in verified.stderr, (bad, verified.output)
    assert _files(tmp_path) == before  # no mind, no witness file, no victim.json, no .lock


@pytest.fixture
def made(tmp_path: Path) -> Path:
    path = tmp_path / "mind.db"
    assert invoke("--mind", str(path), "init", "--name", "Id").exit_code == 0
    return path


def _set_id(mind: Path, value: str) -> None:
    conn = sqlite3.connect(mind, isolation_level=None)
    conn.execute("UPDATE pmm_meta SET value = ? WHERE key = 'mind_id'", (value,))
    conn.close()


@pytest.mark.parametrize("command", [["verify", "{mind}"], ["--mind", "{mind}", "stats"],
                                     ["--mind", "{mind}", "remember", "x"],
                                     ["--mind", "{mind}", "export"]])
def test_a_mind_file_with_a_hostile_id_is_not_a_valid_mind(made: Path, tmp_path: Path,
                                                            command: list[str]) -> None:
    _set_id(made, str(tmp_path / "victim"))
    image = made.read_bytes()
    before = _files(tmp_path)
    result = invoke(*(part.format(mind=made) for part in command))
    assert result.exit_code == 4, result.output
    assert "not a valid pmm mind" in result.stderr and "not one pmm makes" in result.stderr
    assert made.read_bytes() == image and _files(tmp_path) == before


def test_a_restored_backup_with_a_hostile_id_is_refused(made: Path, tmp_path: Path) -> None:
    from pmm.crypto.age import encrypt  # a hostile backup is anyone's age file: a cheap work factor will do

    _set_id(made, "../../victim")
    backup = tmp_path / "mind.age"
    backup.write_bytes(encrypt(made.read_bytes(), "pass", 10))
    (tmp_path / "pass.txt").write_text("pass\n")
    before = _files(tmp_path)
    result = invoke("--mind", str(tmp_path / "restored.db"), "restore", str(backup),
                    "--passphrase-file", str(tmp_path / "pass.txt"))
    assert result.exit_code == 6 and "not one pmm makes" in result.stderr, result.output
    assert _files(tmp_path) == before


def test_the_witness_names_files_by_digests_and_checks_ids_itself(tmp_path: Path) -> None:
    mid, head = "b" * 32, "1" * 64
    verdict = witness.observe(checkpoint.Checkpoint(mid, 1, head), {1: head}.get, tmp_path / "m.db", "write")
    assert verdict.state == "new"
    folder = witness.directory()
    digest = hashlib.sha256(mid.encode()).hexdigest()
    assert (folder / "minds" / f"{digest}.json").exists()
    assert not any(mid in p.name for p in folder.rglob("*"))
    for bad in _hostile_ids(tmp_path):
        with pytest.raises(errors.IntegrityError):  # even a Checkpoint built by hand
            witness.observe(checkpoint.Checkpoint(bad, 1, head), {1: head}.get, tmp_path / "m.db")
    assert not (tmp_path / "victim.json").exists() and not (tmp_path / "victim.lock").exists()


def test_a_witness_file_named_by_the_raw_id_is_read_and_moved(made: Path) -> None:
    """Files from before the digest layout keep protecting: a rollback they saw is caught."""
    report = json_data(invoke("verify", str(made), "--json").stdout)
    mid, head = report["mind_id"], report["head"]
    folder = witness.directory()
    for p in sorted(folder.rglob("*"), reverse=True):  # back to the old layout: one file per raw id
        p.unlink() if p.is_file() else p.rmdir()
    folder.mkdir(parents=True, exist_ok=True)
    legacy = {"mind_id": mid, "heads": [[1, head, "2026-01-01T00:00:00Z", str(made.resolve())],
                                        [5, "e" * 64, "2026-01-02T00:00:00Z", str(made.resolve())]],
              "files": {str(made.resolve()): [5, "e" * 64, "2026-01-02T00:00:00Z", str(made.resolve())]}}
    (folder / f"{mid}.json").write_text(json.dumps(legacy))
    (folder / f"{mid}.lock").write_text("")
    result = invoke("verify", str(made), "--json")
    assert result.exit_code == 3 and json_data(result.stdout)["witness"]["state"] == "rolled_back"
    assert not (folder / f"{mid}.json").exists() and not (folder / f"{mid}.lock").exists()
    moved = json.loads((folder / "minds" / f"{hashlib.sha256(mid.encode()).hexdigest()}.json").read_text())
    assert [h[0] for h in moved["heads"]] == [1, 5]
    again = invoke("verify", str(made), "--json")  # the moved record goes on protecting the file
    assert again.exit_code == 3 and json_data(again.stdout)["witness"]["state"] == "rolled_back"
