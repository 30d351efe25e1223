"""What a file claims is judged, never learnt: only pmm's writers of a mind advance what the
witness remembers of it, so a received export or copy that "extends" a mind cannot make the
genuine mind look forked. Also: a writer warns when it extends a mind that no longer agrees with
the witness, a restore of a diverging backup keeps the witnessed history, and an empty export
gets no witness line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import invoke, json_data

from pmm.domain.events import Draft
from pmm.ledger.store import Ledger
from pmm.services import opening

PASS = {"PMM_BACKUP_PASSPHRASE": "a long and winding passphrase"}


def _notes(first: int, last: int, word: str = "note") -> list[Draft]:
    return [Draft("observation_recorded", f"{word} {i}", {"source": "user"}) for i in range(first, last + 1)]


def _victim(tmp_path: Path) -> Path:
    with opening.init(tmp_path / "m.db", "Victim") as writer:
        writer.append(_notes(2, 6))
    return tmp_path / "m.db"


def _attacker_copy(mind: Path, tmp_path: Path) -> Path:
    """The victim's mind as shared, extended by 5 forged events on the attacker's machine."""
    evil = tmp_path / "attacker.db"
    shutil.copy(mind, evil)
    with Ledger.open(evil, write=True) as forger:  # no witness of the victim's sees this
        forger.append(_notes(7, 11, "forged"))
    return evil


def _poison(how: str, evil: Path, tmp_path: Path) -> None:
    export = tmp_path / "evil.jsonl"
    export.write_bytes(_export(evil))
    if how == "verify":
        result = invoke("verify", str(export))
        assert result.exit_code == 0 and "extends the witnessed head" in result.stdout, result.output
    elif how == "verify-stdin":
        assert invoke("verify", "-", input=export.read_bytes()).exit_code == 0
    elif how == "verify-copy":
        assert invoke("verify", str(evil)).exit_code == 0
    elif how == "sign":
        key = tmp_path / "key.pem"
        assert invoke("keygen", "-o", str(key)).exit_code == 0
        signed = invoke("sign", str(export), "--key", str(key), "-o", str(tmp_path / "e.sig"))
        assert signed.exit_code == 0, signed.output
    elif how == "import":
        assert invoke("--mind", str(tmp_path / "imported.db"), "import", str(export)).exit_code == 0
    elif how == "restore":
        sealed = tmp_path / "evil.age"
        assert invoke("--mind", str(evil), "backup", "-o", str(sealed), env=PASS).exit_code == 0
        restored = invoke("--mind", str(tmp_path / "restored.db"), "restore", str(sealed), env=PASS)
        assert restored.exit_code == 0, restored.output


def _export(mind: Path) -> bytes:
    result = invoke("--mind", str(mind), "export")
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@pytest.mark.parametrize("how", ["verify", "verify-stdin", "verify-copy", "sign", "import", "restore"])
def test_a_received_copy_that_extends_a_mind_cannot_make_it_look_forked(tmp_path: Path, how: str) -> None:
    mind = _victim(tmp_path)
    _poison(how, _attacker_copy(mind, tmp_path), tmp_path)
    with opening.open_write(mind, lambda _m: None) as writer:  # the victim goes on living
        writer.append(_notes(7, 12, "real"))
    result = invoke("--mind", str(mind), "verify", "--json")
    assert result.exit_code == 0, result.output
    assert json_data(result.stdout)["witness"]["state"] == "current"


def test_accepting_an_export_as_a_minds_head_is_refused(tmp_path: Path) -> None:
    mind = _victim(tmp_path)
    export = tmp_path / "evil.jsonl"
    export.write_bytes(_export(_attacker_copy(mind, tmp_path)))
    result = invoke("verify", str(export), "--accept-rollback")
    assert result.exit_code == 3 and "cannot accept an export" in result.stderr, result.output
    assert "--accept-rollback" in result.stderr.splitlines()[1]
    assert invoke("--mind", str(mind), "verify").exit_code == 0


def test_a_writer_extending_a_rolled_back_mind_warns_once_and_writes(tmp_path: Path) -> None:
    mind = _victim(tmp_path)
    old = tmp_path / "old.db"
    shutil.copy(mind, old)
    assert invoke("--mind", str(mind), "remember", "after the copy").exit_code == 0
    shutil.copy(old, mind)
    result = invoke("--mind", str(mind), "remember", "on the old copy")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "no longer extends what pmm witnessed" in line]
    assert len(warned) == 1 and "pmm verify" in warned[0], result.stderr
    assert invoke("--mind", str(mind), "log").stdout.count("on the old copy") == 1
    assert invoke("--mind", str(mind), "verify").exit_code == 3  # still reported, not hidden


def test_a_writer_of_a_mind_that_agrees_with_the_witness_says_nothing(tmp_path: Path) -> None:
    mind = _victim(tmp_path)
    result = invoke("--mind", str(mind), "remember", "an ordinary day")
    assert result.exit_code == 0 and "witnessed" not in result.stderr, result.output


def test_restoring_a_diverging_backup_keeps_the_witnessed_history(tmp_path: Path) -> None:
    mind = _victim(tmp_path)
    other = tmp_path / "other.db"
    shutil.copy(mind, other)
    with Ledger.open(other, write=True) as forger:  # diverged after event 6, never seen here
        forger.append(_notes(7, 9, "theirs"))
    with opening.open_write(mind, lambda _m: None) as writer:
        writer.append(_notes(7, 9, "ours"))
    sealed = tmp_path / "other.age"
    assert invoke("--mind", str(other), "backup", "-o", str(sealed), env=PASS).exit_code == 0
    target = tmp_path / "restored.db"
    result = invoke("--mind", str(target), "restore", str(sealed), env=PASS)
    assert result.exit_code == 0, result.output
    assert "diverges from what pmm witnessed" in result.stderr and "--accept-rollback" in result.stderr
    assert invoke("--mind", str(mind), "verify").exit_code == 0  # the genuine mind is untouched
    assert invoke("verify", str(target)).exit_code == 3


def test_restoring_an_own_older_backup_over_the_mind_is_a_rollback_it_accepts(tmp_path: Path) -> None:
    mind = _victim(tmp_path)
    sealed = tmp_path / "m.age"
    assert invoke("--mind", str(mind), "backup", "-o", str(sealed), env=PASS).exit_code == 0
    assert invoke("--mind", str(mind), "remember", "after the backup").exit_code == 0
    result = invoke("--mind", str(mind), "restore", str(sealed), "--force", env=PASS)
    assert result.exit_code == 0 and "diverges" not in result.stderr, result.output
    later = invoke("--mind", str(mind), "remember", "a new branch")
    assert later.exit_code == 0 and "witnessed" not in later.stderr, later.output
    assert invoke("--mind", str(mind), "verify").exit_code == 0


def test_an_empty_partial_export_skips_the_witness(tmp_path: Path) -> None:
    mind = _victim(tmp_path)
    empty = invoke("--mind", str(mind), "export", "--since", "7")
    assert empty.exit_code == 0, empty.output
    result = invoke("verify", "-", "--json", input=empty.stdout_bytes)
    assert result.exit_code == 0, result.output
    report = json_data(result.stdout)
    assert report["witness"] is None and "no events: nothing for the witness to judge" in report["notes"]
    text = invoke("verify", "-", input=empty.stdout_bytes)
    assert text.exit_code == 0 and "witness" not in text.stdout and "extends" not in text.stdout
