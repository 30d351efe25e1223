"""`pmm sign` and `pmm verify --sig` without a key named use the pair `pmm keygen` made (the user
config dir's signing-key.pem and signing-key.pub.pem), and say what to do when there is none."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import run_in, run_pmm


def failure(result: subprocess.CompletedProcess[bytes], code: int) -> tuple[str, str]:
    """Exit ``code``, nothing on stdout, one ``Error:`` line and its ``Hint:``, no traceback."""
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert result.stdout == b"" and "Traceback" not in err
    lines = err.splitlines()
    error = [line for line in lines if line.startswith("Error: ")]
    hint = [line for line in lines if line.startswith("Hint: ")]
    assert len(error) == 1 and len(hint) == 1, err
    return error[0], hint[0]


@pytest.fixture
def default_key(private_dirs: Path) -> Path:
    return private_dirs / "config" / "pmm" / "signing-key.pem"


def test_sign_without_any_key_says_run_keygen(mind: Path, default_key: Path, tmp_path: Path) -> None:
    out = tmp_path / "mind.sig"
    error, hint = failure(run_pmm("--mind", str(mind), "sign", "-o", str(out)), 2)  # the process's code
    assert str(default_key) in error
    assert "`pmm keygen`" in hint and "--key" in hint
    assert not out.exists()


def test_a_named_key_that_is_missing_says_where_keygen_would_put_it(mind: Path, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "mine.pem"
    error, hint = failure(run_in("sign", str(mind), "--key", str(key)), 2)
    assert str(key) in error and f"`pmm keygen -o {key}`" in hint
    run_in("keygen", "-o", str(key), check=True)  # and doing what the hint says works
    assert run_in("sign", str(mind), "--key", str(key)).returncode == 0


def test_a_directory_as_the_key_is_a_usage_error(mind: Path, tmp_path: Path) -> None:
    result = run_in("sign", str(mind), "--key", str(tmp_path))
    assert result.returncode == 2 and "is a directory" in result.stderr.decode()


def test_verify_sig_uses_the_default_public_key(mind: Path, default_key: Path, tmp_path: Path) -> None:
    run_in("keygen", check=True)
    run_in("--mind", str(mind), "remember", "the sea is calm", check=True)
    sig = tmp_path / "mind.sig"
    run_in("--mind", str(mind), "sign", "-o", str(sig), check=True)
    result = run_in("verify", str(mind), "--sig", str(sig))
    assert result.returncode == 0, result.stderr.decode()
    assert "OK: signature by key" in result.stdout.decode()
    assert str(default_key.with_name("signing-key.pub.pem")) in result.stderr.decode()
    run_in("--mind", str(mind), "remember", "more", check=True)  # appended since: it still holds
    assert "1 event appended since" in run_in("verify", str(mind), "--sig", str(sig), check=True).stdout.decode()


def test_the_minisign_form_alone_is_enough(mind: Path, default_key: Path, tmp_path: Path) -> None:
    run_in("keygen", check=True)
    sig = tmp_path / "mind.sig"
    run_in("--mind", str(mind), "sign", "-o", str(sig), check=True)
    default_key.with_name("signing-key.pub.pem").unlink()
    result = run_in("verify", str(mind), "--sig", str(sig))
    assert result.returncode == 0, result.stderr.decode()
    assert "signing-key.minisign.pub" in result.stderr.decode()


def test_a_signature_by_another_key_fails_against_the_default(mind: Path, tmp_path: Path) -> None:
    run_in("keygen", check=True)
    other = tmp_path / "other.pem"
    run_in("keygen", "-o", str(other), check=True)
    sig = tmp_path / "mind.sig"
    run_in("sign", str(mind), "--key", str(other), "-o", str(sig), check=True)
    result = run_pmm("verify", str(mind), "--sig", str(sig))
    assert result.returncode == 3
    assert "another key" in result.stderr.decode()
    assert run_in("verify", str(mind), "--sig", str(sig), "--pub", str(tmp_path / "other.pub.pem")).returncode == 0


def test_no_default_public_key_is_a_clear_usage_error(mind: Path, default_key: Path, tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    run_in("keygen", "-o", str(key), check=True)
    sig = tmp_path / "mind.sig"
    run_in("sign", str(mind), "--key", str(key), "-o", str(sig), check=True)
    error, hint = failure(run_pmm("verify", str(mind), "--sig", str(sig)), 2)
    assert str(default_key.with_name("signing-key.pub.pem")) in error
    assert "--pub KEY" in hint and "pmm keygen" in hint
    error, _ = failure(run_in("verify", str(mind), "--pub", str(tmp_path / "k.pub.pem")), 2)
    assert "no --sig" in error
