"""Every file pmm writes for `-o` appears whole or not at all, and never over something precious:
the mind being read, any SQLite database, a device node, a symlink (written through, not replaced).
A missing folder or a folder given as the file is exit 2; a full disk is exit 1 with a clear
message and the old file left as it was."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import PMM, invoke

NOTE = "a note long enough to make the export larger than the file size limit " * 1500  # ~100 KB


def _one_error(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "unexpected" not in result.stderr and "Traceback" not in result.stderr, \
        result.stderr
    return errors[0]


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    """A fresh mind, made in-process (the shared fixture's subprocess costs a second per test)."""
    path = tmp_path / "mind.db"
    assert invoke("--mind", str(path), "init", "--name", "Test").exit_code == 0
    return path


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "key.pem"
    assert invoke("keygen", "-o", str(path)).exit_code == 0
    return path


def test_sign_and_export_never_overwrite_the_mind_they_read(mind: Path, key: Path) -> None:
    before = mind.read_bytes()
    assert "is the file this command reads itself" in _one_error(
        invoke("sign", str(mind), "--key", str(key), "-o", str(mind)), 2)
    assert "is the file this command reads itself" in _one_error(
        invoke("--mind", str(mind), "export", "-o", str(mind)), 2)
    assert mind.read_bytes() == before


def test_sign_never_overwrites_its_key_or_any_private_key(mind: Path, key: Path, tmp_path: Path) -> None:
    """`sign -o KEY` once replaced the signing key with the signature: the key was gone for good."""
    before = key.read_bytes()
    assert "is the file this command reads itself" in _one_error(
        invoke("sign", str(mind), "--key", str(key), "-o", str(key)), 2)
    other = tmp_path / "other.pem"  # another private key, not the one this command reads
    other.write_bytes(before)
    assert "is a private key" in _one_error(invoke("sign", str(mind), "--key", str(key), "-o", str(other)), 2)
    assert "is a private key" in _one_error(invoke("--mind", str(mind), "export", "-o", str(other)), 2)
    assert key.read_bytes() == before and other.read_bytes() == before
    assert invoke("sign", str(mind), "--key", str(key)).exit_code == 0  # the key still signs


def test_no_output_overwrites_any_sqlite_database(mind: Path, key: Path, tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "other-app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    assert "SQLite database" in _one_error(invoke("--mind", str(mind), "export", "-o", str(other)), 2)
    assert "SQLite database" in _one_error(
        invoke("sign", str(mind), "--key", str(key), "-o", str(other)), 2)
    assert "SQLite database" in _one_error(invoke("keygen", "--force", "-o", str(other)), 2)
    assert other.read_bytes() == before
    assert not (tmp_path / "other-app.db.pub.pem").exists()  # keygen checked all four files first
    assert "belongs to the SQLite database" in _one_error(
        invoke("--mind", str(mind), "export", "-o", f"{mind}-wal"), 2)
    assert not Path(f"{mind}-wal").exists()


def test_a_symlink_is_written_through_and_never_to_the_mind(mind: Path, tmp_path: Path) -> None:
    real = tmp_path / "exports" / "real.jsonl"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(real)
    assert invoke("--mind", str(mind), "export", "-o", str(link)).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text().startswith('{"pmm":"export"')
    assert list(real.parent.iterdir()) == [real]  # no temp file left behind

    to_mind = tmp_path / "mind-link.db"
    to_mind.symlink_to(mind)
    before = mind.read_bytes()
    assert "is the file this command reads itself" in _one_error(
        invoke("--mind", str(mind), "export", "-o", str(to_mind)), 2)
    assert mind.read_bytes() == before and to_mind.is_symlink()


def test_a_missing_folder_or_a_folder_as_the_file_is_a_usage_error(mind: Path, tmp_path: Path) -> None:
    assert "no folder" in _one_error(invoke("--mind", str(mind), "export", "-o", str(tmp_path / "nodir" / "x.jsonl")), 2)
    assert not (tmp_path / "nodir").exists()
    assert "is a folder" in _one_error(invoke("--mind", str(mind), "export", "-o", str(tmp_path)), 2)
    assert "is a folder" in _one_error(
        invoke("sign", str(mind), "--key", str(tmp_path / "k.pem"), "-o", str(tmp_path)), 2)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_an_unwritable_folder_is_a_usage_error(mind: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "Permission denied" in _one_error(
        invoke("--mind", str(mind), "export", "-o", str(locked / "x.jsonl")), 2)


def test_character_devices_are_written_into_never_replaced(mind: Path, key: Path) -> None:
    assert invoke("--mind", str(mind), "export", "-o", "/dev/null").exit_code == 0
    assert invoke("sign", str(mind), "--key", str(key), "-o", "/dev/null").exit_code == 0
    assert "no space left" in _one_error(invoke("--mind", str(mind), "export", "-o", "/dev/full"), 1)
    for node in ("/dev/null", "/dev/full"):
        assert stat.S_ISCHR(os.stat(node).st_mode), f"{node} was replaced"


def test_a_fifo_is_written_into(mind: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    os.link(fifo, tmp_path / "same-pipe")  # reaches the FIFO even if pmm wrongly replaced `pipe`
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = invoke("--mind", str(mind), "export", "-o", str(fifo))
    with contextlib.suppress(OSError):  # release a reader still waiting for a writer: never hang
        os.close(os.open(tmp_path / "same-pipe", os.O_WRONLY | os.O_NONBLOCK))
    reader.join()
    assert result.exit_code == 0, result.stderr
    assert received[0].startswith(b'{"pmm":"export"') and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_dev_stdout_is_the_standard_output(mind: Path) -> None:
    proc = subprocess.run([PMM, "--mind", str(mind), "export", "-o", "/dev/stdout"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.startswith(b'{"pmm":"export"')
    assert os.path.islink("/dev/stdout") or stat.S_ISCHR(os.stat("/dev/stdout").st_mode)


def _limited(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write then fails with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_leaves_the_old_file_as_it_was(mind: Path, tmp_path: Path) -> None:
    assert invoke("--mind", str(mind), "remember", NOTE).exit_code == 0
    out = tmp_path / "out" / "mind.jsonl"
    out.parent.mkdir()
    out.write_text("the previous export\n")
    proc = subprocess.run([PMM, "--mind", str(mind), "export", "-o", str(out)], capture_output=True,
                          timeout=60, preexec_fn=_limited(64 << 10))
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert [line for line in err.splitlines() if line.startswith("Error: ")] == [
        f"Error: could not write the export {out}: the file is larger than this process may write (ulimit -f)"]
    assert "unexpected" not in err
    assert out.read_text() == "the previous export\n"
    assert list(out.parent.iterdir()) == [out]
