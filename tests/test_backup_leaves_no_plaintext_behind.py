"""A backup's plaintext snapshot of the mind never has a name on disk while it holds data, so a
`pmm backup` killed with SIGKILL leaves nothing of it; a restore's decrypted copy (which needs a
name: SQLite opens it to verify it) is owner-only, and one that a killed restore left is removed
by the next backup, restore or write of that mind.

Real `pmm` subprocesses killed with SIGKILL at points they are held at deterministically: a
backup writing into a FIFO nobody reads (after its snapshot is taken), a restore reading its
backup from a FIFO the test stops feeding (halfway through the decryption; its passphrase,
read from a FIFO, holds it until the backup's path has become that FIFO)."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PMM, invoke, run_pmm

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/PID/fd")

ENV = {"PMM_BACKUP_PASSPHRASE": "a long and winding passphrase", "PMM_BACKUP_WORK_FACTOR": "10"}


def _until(done: Callable[[], object], what: str, proc: subprocess.Popen[bytes]) -> object:
    """Poll ``done`` until it holds (the subprocess reaching a point it then stays at)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = done()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"pmm exited {proc.returncode} before {what}: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        time.sleep(0.02)
    raise AssertionError(f"pmm never reached {what}")


def _mind(tmp_path: Path, name: str = "mind.db") -> Path:
    """A mind a few age chunks (64 KiB) large."""
    path = tmp_path / name
    assert invoke("--mind", str(path), "init", "--name", "Ada").exit_code == 0
    for n in range(3):
        words = " ".join(f"word{n}x{i}" for i in range(12_000))
        assert invoke("--mind", str(path), "remember", words).exit_code == 0
    return path


def _image_size(mind: Path) -> int:
    """The bytes of the mind's SQLite image (its pages, whether in the file or in its WAL)."""
    conn = sqlite3.connect(f"file:{mind}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA page_count").fetchone()[0]) * int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def _temps(folder: Path, mind: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".{mind.name}.tmp-"))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _links(proc: subprocess.Popen[bytes]) -> list[str]:
    """What the process's descriptors point at (one closed meanwhile is skipped)."""
    found = []
    try:
        fds = os.listdir(f"/proc/{proc.pid}/fd")
    except OSError:
        return []
    for fd in fds:
        try:
            found.append(os.readlink(f"/proc/{proc.pid}/fd/{fd}"))
        except OSError:
            continue
    return found


def _env() -> dict[str, str]:
    return {**os.environ, **ENV}


def test_a_backup_killed_with_sigkill_leaves_no_copy_of_the_mind(tmp_path: Path) -> None:
    mind = _mind(tmp_path)
    fifo = tmp_path / "backup.fifo"
    os.mkfifo(fifo)
    image = _image_size(mind)
    proc = subprocess.Popen([PMM, "--mind", str(mind), "backup", "-o", str(fifo)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def snapshot_open() -> str | None:
            """The snapshot, held open by pmm and whole: pmm then waits for a reader of the FIFO."""
            for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                with_fd = f"/proc/{proc.pid}/fd/{fd}"
                try:
                    target = os.readlink(with_fd)
                    if f"/.{mind.name}.tmp-" in target and os.stat(with_fd).st_size == image:
                        return with_fd
                except OSError:
                    continue
            return None

        held = str(_until(snapshot_open, "its snapshot", proc))
        info = os.stat(held)
        # the whole plain mind, owner-only, and no name anywhere: nothing of it can outlive pmm
        assert info.st_nlink == 0
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert os.readlink(held).endswith(" (deleted)")
        with open(held, "rb") as plain:
            assert plain.read(16) == b"SQLite format 3\x00"
        assert _temps(tmp_path, mind) == [] and _temps(Path(tempfile.gettempdir()), mind) == []
    finally:
        _kill(proc)
    assert _temps(tmp_path, mind) == [] and _temps(Path(tempfile.gettempdir()), mind) == []
    assert run_pmm("verify", str(mind)).returncode == 0


def _restore_killed_halfway(tmp_path: Path, backup: Path, target: Path) -> Path:
    """Run `pmm restore --force`, held on its passphrase (read from a FIFO) until its backup's
    path is a FIFO too, which the test then feeds only the first half of the backup; kill the
    restore with SIGKILL while it waits for the rest; the decrypted copy it left."""
    data = backup.read_bytes()
    given = tmp_path / "given.age"  # a real backup while pmm checks the file, then a FIFO
    given.write_bytes(data)
    fifo, secret = tmp_path / "restore.fifo", tmp_path / "passphrase.fifo"
    for path in (fifo, secret):
        path.unlink(missing_ok=True)
        os.mkfifo(path)
    stop = threading.Event()
    proc = subprocess.Popen([PMM, "--mind", str(target), "restore", str(given), "--force",
                             "--passphrase-file", str(secret)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def feed() -> None:
        try:
            with open(secret, "w", encoding="utf-8") as out:  # pmm has checked the file: it reads this
                os.replace(fifo, given)
                out.write(ENV["PMM_BACKUP_PASSPHRASE"] + "\n")
            out = os.open(given, os.O_WRONLY)  # the restore opens the backup
            try:
                _write_all(out, data[:len(data) // 2])  # the first half of the chunks, then nothing
                stop.wait(60)
            finally:
                os.close(out)
        except BrokenPipeError:
            pass  # pmm was killed, or failed (the test says why)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        staged = _until(lambda: [p for p in _temps(tmp_path, target) if p.stat().st_size >= 64 * 1024],
                        "the decrypted copy", proc)
    finally:
        _kill(proc)
        stop.set()
        feeder.join(30)
    [left] = staged  # type: ignore[misc]
    assert stat.S_IMODE(left.stat().st_mode) == 0o600
    assert left.read_bytes()[:16] == b"SQLite format 3\x00"  # plain: what the next pmm removes
    return left


@pytest.mark.parametrize("then", ["backup", "restore", "remember"])
def test_the_copy_a_killed_restore_left_is_removed_by_the_next_backup_restore_or_write(
        tmp_path: Path, then: str) -> None:
    source = _mind(tmp_path, "source.db")
    backup = tmp_path / "source.age"
    assert run_pmm("--mind", str(source), "backup", "-o", str(backup), env=ENV).returncode == 0
    target = _mind(tmp_path, "target.db")
    left = _restore_killed_halfway(tmp_path, backup, target)
    assert target.exists() and run_pmm("verify", str(target)).returncode == 0  # untouched
    command = {"backup": ["backup", "-o", str(tmp_path / "target.age")],
               "restore": ["restore", str(backup), "--force"],
               "remember": ["remember", "after the restore was killed"]}[then]
    result = run_pmm("--mind", str(target), *command, env=ENV)
    assert result.returncode == 0, result.stderr.decode()
    assert not left.exists() and _temps(tmp_path, target) == []


def test_a_live_process_s_temp_file_and_other_names_are_left_alone(tmp_path: Path) -> None:
    mind = _mind(tmp_path)
    mine = tmp_path / f".{mind.name}.tmp-{os.getpid()}-0123abcd"  # this (running) process's
    other = tmp_path / f".{mind.name}.tmp-{os.getpid()}-nothex00"  # not a name pmm makes
    unrelated = tmp_path / ".other.db.tmp-1-0123abcd"  # another file's, even of a dead process
    for path in (mine, other, unrelated):
        path.write_bytes(b"x")
    assert invoke("--mind", str(mind), "remember", "a write").exit_code == 0
    assert mine.exists() and other.exists() and unrelated.exists()


def test_the_snapshot_loses_its_name_before_sqlite_writes_a_page_into_it(tmp_path: Path) -> None:
    """Where a backup is not held: the name goes while the copy is still empty, and SQLite then
    writes the whole image into the nameless file (read here through a handle opened before)."""
    from pmm.ledger import snapshot
    from pmm.ledger.store import Ledger

    mind = _mind(tmp_path)
    copy = tmp_path / "scratch"
    copy.touch(mode=0o600)
    seen: list[int] = []

    def unlink() -> None:
        seen.append(copy.stat().st_size)
        copy.unlink()

    with open(copy, "rb") as reader, Ledger.open(mind) as opened:
        head = snapshot.snapshot_to(opened, copy, opened=unlink)
        image = reader.read()
        live = opened.head()
    assert seen == [0] and not copy.exists()
    restored = tmp_path / "image.db"
    restored.write_bytes(image)
    with Ledger.open(restored) as again:
        assert again.head() == head == live
    assert run_pmm("verify", str(restored), "--no-witness").returncode == 0


def test_a_temp_file_whose_owner_this_process_cannot_see_is_left_while_it_is_held(tmp_path: Path) -> None:
    """The owner's process may be out of sight (another PID namespace, another host sharing the
    folder): its pid looks gone, but it holds a flock on its temp file, and the cleaner leaves
    a held file alone; once nobody holds it, the next write removes it."""
    import fcntl

    mind = tmp_path / "mind.db"
    assert invoke("--mind", str(mind), "init").exit_code == 0
    finished = subprocess.Popen(["true"])  # a pid that has ended
    finished.wait()
    held = tmp_path / f".mind.db.tmp-{finished.pid}-0123abcd"
    side = tmp_path / f".mind.db.tmp-{finished.pid}-0123abcd-journal"
    held.write_bytes(b"in use elsewhere")
    side.write_bytes(b"its journal")
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what its owner holds (pmm.ledger.connection.hold)
        done = run_pmm("--mind", str(mind), "remember", "a write while it is held")
        assert done.returncode == 0, done.stderr.decode()
        assert held.exists() and side.exists()
    finally:
        os.close(fd)
    done = run_pmm("--mind", str(mind), "remember", "a write once it is not")
    assert done.returncode == 0, done.stderr.decode()
    assert not held.exists() and not side.exists()
