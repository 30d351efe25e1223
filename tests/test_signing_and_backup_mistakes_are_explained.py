"""The mistakes people make with keygen, sign, verify, backup and restore (a folder or a mind
where a key goes, a signature where a mind goes, an export or a mind where a backup goes, no mind
yet): one `Error:` line that names the real problem, a hint, the documented exit code, nothing
changed, and no passphrase asked for first."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from conftest import run_in, run_pmm

PASS = {"PMM_BACKUP_PASSPHRASE": "a long and winding passphrase"}


def failure(result: subprocess.CompletedProcess[bytes], code: int) -> tuple[str, str]:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert result.stdout == b"" and "Traceback" not in err
    error = [line for line in err.splitlines() if line.startswith("Error: ")]
    hint = [line for line in err.splitlines() if line.startswith("Hint: ")]
    assert len(error) == 1 and len(hint) <= 1, err
    return error[0], hint[0] if hint else ""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def signature(mind: Path, tmp_path: Path) -> Path:
    key = tmp_path / "k.pem"
    run_in("keygen", "-o", str(key), check=True)
    sig = tmp_path / "mind.sig"
    run_in("sign", str(mind), "--key", str(key), "-o", str(sig), check=True)
    return sig


def test_keygen_into_a_folder_says_it_is_a_folder(tmp_path: Path) -> None:
    error, hint = failure(run_in("keygen", "-o", str(tmp_path)), 2)
    assert "is a folder" in error and "already exists" not in error
    assert "-o" in hint


@pytest.mark.parametrize("force", [(), ("--force",)], ids=["plain", "force"])
def test_keygen_over_a_mind_never_offers_force(mind: Path, force: tuple[str, ...]) -> None:
    before = digest(mind)
    error, hint = failure(run_in("keygen", "-o", str(mind), *force), 2)
    assert "SQLite database" in error and "--force" not in hint
    assert digest(mind) == before


def test_verify_given_a_signature_as_the_file_points_to_sig(signature: Path) -> None:
    error, hint = failure(run_pmm("verify", str(signature)), 4)
    assert "is a signature" in error and f"--sig {signature}" in hint


def test_sign_given_a_signature_says_so(signature: Path, tmp_path: Path) -> None:
    error, _ = failure(run_in("sign", str(signature), "--key", str(tmp_path / "k.pem")), 4)
    assert "is a signature" in error


def test_sign_of_a_missing_mind_asks_for_no_passphrase(tmp_path: Path) -> None:
    key, words = tmp_path / "k.pem", tmp_path / "words"
    words.write_text("open sesame\n")
    run_in("keygen", "-o", str(key), "--passphrase-file", str(words), check=True)
    error, _ = failure(run_in("sign", str(tmp_path / "none.db"), "--key", str(key)), 4)
    assert "no mind file" in error and "passphrase" not in error


def test_backup_of_no_mind_is_exit_4_before_the_passphrase(tmp_path: Path) -> None:
    out = tmp_path / "b.age"
    error, hint = failure(run_pmm("--mind", str(tmp_path / "none.db"), "backup", "-o", str(out),
                                  env={"PMM_BACKUP_PASSPHRASE": ""}), 4)
    assert "no mind file" in error and "pmm init" in hint
    assert not out.exists()


def test_restore_of_a_folder_names_the_folder_first(mind: Path, tmp_path: Path) -> None:
    error, _ = failure(run_in("--mind", str(mind), "restore", str(tmp_path), env=PASS), 2)
    assert "is a directory, not a backup" in error


def test_restore_of_an_export_points_to_import(mind: Path, tmp_path: Path) -> None:
    export = tmp_path / "mind.jsonl"
    export.write_bytes(run_in("--mind", str(mind), "export", check=True).stdout)
    target = tmp_path / "new.db"
    error, hint = failure(run_in("--mind", str(target), "restore", str(export), env=PASS), 6)
    assert "not an encrypted backup" in error and "pmm import" in hint
    assert not target.exists()


def test_restore_of_a_mind_file_says_it_needs_none(mind: Path, tmp_path: Path) -> None:
    target = tmp_path / "new.db"
    error, hint = failure(run_in("--mind", str(target), "restore", str(mind), env=PASS), 6)
    assert "SQLite" in error and "--mind" in hint
    assert not target.exists()


@pytest.mark.parametrize("kind", ["missing", "folder", "binary"])
def test_a_bad_passphrase_file_is_one_plain_line(mind: Path, tmp_path: Path, kind: str) -> None:
    words = {"missing": tmp_path / "none.txt", "folder": tmp_path, "binary": tmp_path / "bin.txt"}[kind]
    if kind == "binary":
        words.write_bytes(b"\xff\xfe secret\n")
    result = run_in("--mind", str(mind), "backup", "-o", str(tmp_path / "b.age"), "--passphrase-file", str(words))
    error, hint = failure(result, 2)
    assert "passphrase file" in error and "Errno" not in error and "'" not in error
    assert "first line" in hint
    assert not (tmp_path / "b.age").exists()
