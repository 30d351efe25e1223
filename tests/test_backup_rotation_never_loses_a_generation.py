"""`pmm backup --keep N` rotates only once the new backup is whole and synced: a failed backup
(a full disk, in cron) leaves every generation as it was. Anything in the way of the rotation
is refused before any work, and `restore --force` replaces only a pmm mind."""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import PMM, invoke, json_data

PASS = {"PMM_BACKUP_PASSPHRASE": "a long and winding passphrase"}
MAGIC = b"age-encryption.org/v1\n"


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    path = tmp_path / "mind.db"
    assert invoke("--mind", str(path), "init", "--name", "Test").exit_code == 0
    return path


def _generations(folder: Path, count: int) -> dict[str, bytes]:
    """Stand-ins for older backups: age files by their header, each one different."""
    names = ["mind.age"] + [f"mind.{n}.age" for n in range(1, count)]
    made = {name: MAGIC + f"generation {i}\n".encode() for i, name in enumerate(names)}
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return made


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _one_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "unexpected" not in stderr and "Traceback" not in stderr, stderr
    return errors[0]


def test_a_full_disk_costs_no_generation(mind: Path, tmp_path: Path) -> None:
    assert invoke("--mind", str(mind), "remember", "x" * 100_000).exit_code == 0
    folder = tmp_path / "backups"
    folder.mkdir()
    before = _generations(folder, 3)

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    proc = subprocess.run([PMM, "--mind", str(mind), "backup", "-o", str(folder / "mind.age"), "--keep", "3"],
                          capture_output=True, timeout=120, env={**os.environ, **PASS}, preexec_fn=small_disk)
    assert proc.returncode == 1, proc.stderr.decode()
    assert "could not write the backup" in _one_error(proc.stderr.decode())
    assert _contents(folder) == before  # every generation where it was, no temp file left
    # the limit stopped the snapshot's copy beside the mind first: that copy is gone too
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_rotation_shifts_generations_after_the_new_backup(mind: Path, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    before = _generations(folder, 4)  # mind.3.age is past --keep 3: it goes
    result = invoke("--mind", str(mind), "backup", "-o", str(folder / "mind.age"), "--keep", "3", "--json",
                    env=PASS)
    assert result.exit_code == 0, result.stderr
    assert sorted(json_data(result.stdout)["removed"]) == sorted(
        str(folder / name) for name in ("mind.2.age", "mind.3.age"))
    after = _contents(folder)
    assert after["mind.1.age"] == before["mind.age"] and after["mind.2.age"] == before["mind.1.age"]
    assert "mind.3.age" not in after and after["mind.age"].startswith(MAGIC)
    assert after["mind.age"] not in before.values()


@pytest.mark.parametrize("in_the_way", ["mind.1.age", "mind.3.age"])
def test_a_folder_at_a_generation_is_refused_before_any_work(mind: Path, tmp_path: Path, in_the_way: str) -> None:
    before = _generations(tmp_path, 2)
    (tmp_path / in_the_way).unlink(missing_ok=True)
    (tmp_path / in_the_way).mkdir()
    result = invoke("--mind", str(mind), "backup", "-o", str(tmp_path / "mind.age"), "--keep", "3", env=PASS)
    assert result.exit_code == 2, result.stderr
    assert f"{in_the_way} is in the way" in _one_error(result.stderr)
    assert (tmp_path / "mind.age").read_bytes() == before["mind.age"]


def test_backup_never_overwrites_the_mind_or_another_file(mind: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for target, expected in ((mind, "is the file this command reads itself"), (notes, "not an age backup")):
        before = target.read_bytes()
        result = invoke("--mind", str(mind), "backup", "-o", str(target), env=PASS)
        assert result.exit_code == 2 and expected in _one_error(result.stderr), result.stderr
        assert target.read_bytes() == before
    result = invoke("--mind", str(mind), "backup", "-o", "/dev/null", "--keep", "2", env=PASS)
    assert result.exit_code == 2 and "device or a pipe" in _one_error(result.stderr)


def test_restore_force_replaces_only_a_pmm_mind(tmp_path: Path) -> None:
    backup = tmp_path / "mind.age"
    backup.write_bytes(MAGIC + b"-> scrypt c2FsdHNhbHRzYWx0c2FsdA 18\n")  # never read: refused first
    other = tmp_path / "other-app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    text = tmp_path / "notes.txt"
    text.write_text("mine\n")
    for target in (other, text):
        before = target.read_bytes()
        result = invoke("--mind", str(target), "restore", str(backup), "--force", env=PASS)
        assert result.exit_code == 4, result.stderr
        assert "--force replaces only a pmm mind" in _one_error(result.stderr)
        assert target.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["mind.age", "notes.txt", "other-app.db"]
