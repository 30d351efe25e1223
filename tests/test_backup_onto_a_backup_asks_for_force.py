"""`pmm backup -o FILE` onto an older backup: refused without --keep or --force (exit 2, before
any prompt, the old backup untouched); --force replaces it whole or not at all; --keep rotates
it as before. A file that is not an age backup is never replaced, --force or not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import invoke, json_data, run_in, run_pmm, unguarded

PASS = {"PMM_BACKUP_PASSPHRASE": "a long and winding passphrase"}


def backup(mind: Path, out: Path, *extra: str) -> dict:
    result = invoke("--mind", str(mind), "backup", "-o", str(out), *extra, "--json", env=PASS)
    assert result.exit_code == 0, result.stderr
    return json_data(result.stdout)


def restored_events(sealed: Path, tmp_path: Path) -> int:
    target = tmp_path / f"restored-{os.urandom(4).hex()}.db"
    result = invoke("--mind", str(target), "restore", str(sealed), "--json", env=PASS)
    assert result.exit_code == 0, result.stderr
    return json_data(result.stdout)["events"]


@pytest.fixture
def sealed(mind: Path, tmp_path: Path) -> Path:
    out = tmp_path / "mind.age"
    backup(mind, out)
    return out


def test_an_older_backup_is_refused_without_keep_or_force(mind: Path, sealed: Path) -> None:
    before = sealed.read_bytes()
    result = run_pmm("--mind", str(mind), "backup", "-o", str(sealed), env=PASS)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Traceback" not in err and result.stdout == b""
    error, hint = err.splitlines()[:2]
    assert error.startswith("Error: ") and str(sealed) in error and "already holds a backup" in error
    assert hint.startswith("Hint: ") and "--force" in hint and "--keep" in hint and "mind.1.age" in hint
    assert sealed.read_bytes() == before
    assert sorted(p.name for p in sealed.parent.iterdir() if "age" in p.name) == ["mind.age"]


def test_it_is_refused_before_the_passphrase_is_asked_for(mind: Path, sealed: Path) -> None:
    result = run_in("--mind", str(mind), "backup", "-o", str(sealed), env={"PMM_BACKUP_PASSPHRASE": None})
    assert result.returncode == 2
    assert "already holds a backup" in result.stderr.decode()
    assert "passphrase" not in result.stderr.decode().split("Hint:")[0]


def test_force_replaces_it_with_the_new_snapshot(mind: Path, sealed: Path, tmp_path: Path) -> None:
    assert restored_events(sealed, tmp_path) == 1
    run_in("--mind", str(mind), "remember", "the kettle is on", check=True)
    witness = tmp_path / "old-copy.age"
    os.link(sealed, witness)  # a second name for the old file: a write in place would change it too
    old = witness.read_bytes()
    result = invoke("--mind", str(mind), "backup", "-o", str(sealed), "--force", env=PASS)
    assert result.exit_code == 0, result.stderr
    assert "replacing the older backup" in result.stderr
    assert restored_events(sealed, tmp_path) == 2
    assert witness.read_bytes() == old  # the new backup came in by rename: whole or not at all
    assert os.stat(sealed).st_ino != os.stat(witness).st_ino
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_failed_forced_backup_leaves_the_older_one_whole(mind: Path, sealed: Path, tmp_path: Path) -> None:
    before = sealed.read_bytes()
    run_in("--mind", str(mind), "remember", "a note to tamper with", check=True)
    conn = unguarded(mind)
    conn.execute("UPDATE events SET content = 'forged' WHERE id = 2")
    conn.close()
    result = run_pmm("--mind", str(mind), "backup", "-o", str(sealed), "--force", env=PASS)
    assert result.returncode == 3, result.stderr.decode()
    assert sealed.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_force_never_replaces_a_file_that_is_not_a_backup(mind: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for extra in ((), ("--force",)):
        result = run_in("--mind", str(mind), "backup", "-o", str(notes), *extra, env=PASS)
        assert result.returncode == 2 and "not an age backup" in result.stderr.decode()
    assert notes.read_text() == "my notes\n"


def test_keep_rotates_as_before_without_force(mind: Path, sealed: Path, tmp_path: Path) -> None:
    first = sealed.read_bytes()
    run_in("--mind", str(mind), "remember", "one more", check=True)
    made = backup(mind, sealed, "--keep", "2")
    assert made["removed"] == []
    assert (tmp_path / "mind.1.age").read_bytes() == first
    assert restored_events(sealed, tmp_path) == 2
    backup(mind, sealed, "--keep", "1")  # keep one: the new one alone, as --keep always did
    assert not (tmp_path / "mind.1.age").exists()


def test_through_a_symlink_it_asks_too_and_force_keeps_the_link(mind: Path, sealed: Path, tmp_path: Path) -> None:
    link = tmp_path / "latest.age"
    link.symlink_to(sealed)
    result = run_in("--mind", str(mind), "backup", "-o", str(link), env=PASS)
    assert result.returncode == 2 and "already holds a backup" in result.stderr.decode()
    run_in("--mind", str(mind), "remember", "through the link", check=True)
    backup(mind, link, "--force")
    assert link.is_symlink() and restored_events(sealed, tmp_path) == 2


def test_a_device_is_no_older_backup(mind: Path) -> None:
    assert invoke("--mind", str(mind), "backup", "-o", os.devnull, env=PASS).exit_code == 0
