"""`pmm backup` and `pmm restore`: a consistent snapshot, encrypted in the age format so the real
`age -d` opens it; restore verifies the whole chain before it writes anything, refuses to
overwrite without --force, and turns a wrong passphrase or any damage into exit 6 with nothing
written."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import PMM, invoke, json_data, mind_events, run_pmm, unguarded
from terminal import Terminal

PASS = {"PMM_BACKUP_PASSPHRASE": "a long and winding passphrase"}


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed (.ci/run installs it: apt-get install age)"
    return found


def _remember(mind: Path, *notes: str) -> None:
    for note in notes:
        assert invoke("--mind", str(mind), "remember", note).exit_code == 0


def _backup(mind: Path, out: Path, *extra: str, env: dict[str, str] = PASS) -> dict:
    result = invoke("--mind", str(mind), "backup", "-o", str(out), *extra, "--json", env=env)
    assert result.exit_code == 0, result.stderr
    return json_data(result.stdout)


def _failure(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = result.stderr.decode()
    assert result.returncode == code, f"exit {result.returncode}: {err}"
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _type_passphrase(argv: list[str], env: dict[str, str], passphrase: str, times: int = 1) -> str:
    """Run ``argv`` on a terminal, type ``passphrase`` at each of ``times`` prompts; its screen."""
    term = Terminal(argv, env)
    try:
        at = 0
        for _ in range(times):
            at = term.expect("(?i)passphrase", after=at)
            # Keys typed before the program switches echo off are flushed (getpass's TCSAFLUSH)
            term.until(lambda: not term.echoing(), what="the prompt to switch echo off")
            term.send(passphrase + "\n")
        assert term.wait(60) == 0, term.text()
        return term.text()
    finally:
        term.kill()


def _hashes(path: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, hash FROM events ORDER BY id").fetchall()
    finally:
        conn.close()


def _nothing_beside(directory: Path, *expected: str) -> None:
    assert sorted(p.name for p in directory.iterdir()) == sorted(expected)


CHUNK = 64 * 1024  # age's STREAM chunk: a backup is encrypted and decrypted one at a time


@pytest.fixture
def backed_up(mind: Path, tmp_path: Path) -> Path:
    """A backup of several chunks: the mind holds long notes (a fresh one fits in one chunk)."""
    _remember(mind, "tea, not coffee", "walks at dawn", *(f"a long day {i}: " + "words " * 12_000 for i in range(3)))
    assert mind.stat().st_size > 4 * CHUNK
    out = tmp_path / "backups" / "mind.age"
    out.parent.mkdir()
    _backup(mind, out)
    return out


def test_backup_then_restore_gives_back_the_same_chain(mind: Path, backed_up: Path, tmp_path: Path) -> None:
    assert backed_up.read_bytes().startswith(b"age-encryption.org/v1\n-> scrypt ")
    assert stat.S_IMODE(backed_up.stat().st_mode) == 0o600
    assert b"tea, not coffee" not in backed_up.read_bytes()
    target = tmp_path / "restored" / "mind.db"
    result = run_pmm("--mind", str(target), "restore", str(backed_up), "--json", env=PASS)
    assert result.returncode == 0, result.stderr
    report = json_data(result.stdout)
    assert report["events"] == 6 and report["replaced"] is False
    assert _hashes(target) == _hashes(mind)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert run_pmm("verify", str(target)).returncode == 0
    _nothing_beside(target.parent, "mind.db")


def test_age_decrypts_a_pmm_backup(mind: Path, backed_up: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.db"
    _type_passphrase([_tool("age"), "-d", "-o", str(plain), str(backed_up)], dict(os.environ),
                     PASS["PMM_BACKUP_PASSPHRASE"])
    assert _hashes(plain) == _hashes(mind)
    assert run_pmm("verify", str(plain), "--no-witness").returncode == 0


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_pmm_restores_what_age_encrypted(mind: Path, tmp_path: Path, armor: bool) -> None:
    """The other direction: a mind file of several chunks encrypted by `age -p` (and `age -a -p`,
    ASCII armor) restores with pmm."""
    _remember(mind, "encrypted by age itself", "words " * 30_000)
    sealed = tmp_path / "by-age.age"
    _type_passphrase([_tool("age"), "-p", *(["-a"] if armor else []), "-o", str(sealed), str(mind)],
                     dict(os.environ), "age-made passphrase", times=2)
    assert sealed.read_bytes().startswith(b"-----BEGIN AGE" if armor else b"age-encryption.org/v1\n")
    target = tmp_path / "restored.db"
    result = run_pmm("--mind", str(target), "restore", str(sealed), env={"PMM_BACKUP_PASSPHRASE": "age-made passphrase"})
    assert result.returncode == 0, result.stderr
    assert _hashes(target) == _hashes(mind)


@pytest.mark.parametrize("size", [0, 2 * CHUNK, 2 * CHUNK + 1], ids=["empty", "two-full-chunks", "one-byte-more"])
def test_age_and_pmm_agree_at_the_chunk_edges(tmp_path: Path, size: int) -> None:
    """Where STREAM's last-chunk rule bites (an empty file, a last chunk exactly full), with the
    real age both ways: pmm's writer and age's reader, age's writer and pmm's reader."""
    from pmm.crypto import age

    data = os.urandom(size)
    ours, plain = tmp_path / "ours.age", tmp_path / "plain"
    ours.write_bytes(age.encrypt(data, "edge words", 10))
    _type_passphrase([_tool("age"), "-d", "-o", str(plain), str(ours)], dict(os.environ), "edge words")
    assert (plain.read_bytes() if plain.exists() else b"") == data  # age makes -o at its first byte
    source, theirs = tmp_path / "source", tmp_path / "theirs.age"
    source.write_bytes(data)
    _type_passphrase([_tool("age"), "-p", "-o", str(theirs), str(source)], dict(os.environ), "edge words", times=2)
    assert age.decrypt(theirs.read_bytes(), "edge words", "theirs") == data


def test_a_backup_leaves_nothing_beside_the_mind(mind: Path, tmp_path: Path) -> None:
    """The snapshot is taken into a private temp file beside the mind, gone before the backup is
    written: neither a backup nor a refused one leaves it (or anything else) there."""
    folder = tmp_path / "minds"
    folder.mkdir()
    moved = folder / "mind.db"
    mind.rename(moved)
    _remember(moved, "words " * 30_000)
    before = sorted(p.name for p in folder.iterdir())
    _backup(moved, tmp_path / "b.age")
    assert sorted(p.name for p in folder.iterdir()) == before
    refused = run_pmm("--mind", str(moved), "backup", "-o", str(tmp_path / "b.age"), env=PASS)
    _failure(refused, 2)  # an older backup there, without --force
    assert sorted(p.name for p in folder.iterdir()) == before


def test_restore_refuses_to_overwrite_without_force_then_replaces(mind: Path, backed_up: Path) -> None:
    before = _hashes(mind)
    _remember(mind, "written after the backup")
    after = mind.read_bytes()
    assert "already exists" in _failure(run_pmm("--mind", str(mind), "restore", str(backed_up), env=PASS), 2)
    assert mind.read_bytes() == after
    result = run_pmm("--mind", str(mind), "restore", str(backed_up), "--force", "--json", env=PASS)
    assert result.returncode == 0, result.stderr
    assert json_data(result.stdout)["replaced"] is True
    assert _hashes(mind) == before
    # The restore is a deliberate rollback: the witness accepts it, so verify passes.
    report = json_data(run_pmm("verify", str(mind), "--json", check=True).stdout)
    assert report["witness"]["state"] == "current"


def test_a_wrong_passphrase_writes_nothing(backed_up: Path, tmp_path: Path) -> None:
    target = tmp_path / "new" / "mind.db"
    target.parent.mkdir()
    result = run_pmm("--mind", str(target), "restore", str(backed_up), env={"PMM_BACKUP_PASSPHRASE": "nope"})
    assert "wrong passphrase" in _failure(result, 6)
    _nothing_beside(target.parent)


def _damaged(backed_up: Path, tmp_path: Path) -> dict[str, Path]:
    data = backed_up.read_bytes()
    header_end = data.index(b"\n---") + 1
    payload = data.index(b"\n", header_end) + 1 + 16  # past the footer line and the nonce
    assert len(data) > payload + 3 * (CHUNK + 16)
    variants = {
        "truncated": data[: len(data) // 2],
        "cut at a chunk edge": data[: payload + 2 * (CHUNK + 16)],
        "a chunk dropped": data[: payload + CHUNK + 16] + data[payload + 2 * (CHUNK + 16):],
        "two chunks swapped": data[:payload] + data[payload + CHUNK + 16: payload + 2 * (CHUNK + 16)]
        + data[payload: payload + CHUNK + 16] + data[payload + 2 * (CHUNK + 16):],
        "payload bit flip": data[:-100] + bytes([data[-100] ^ 0x01]) + data[-99:],
        "header bit flip": data[:header_end - 5] + bytes([data[header_end - 5] ^ 0x01]) + data[header_end - 4:],
        "appended garbage": data + b"garbage after the end",
        "empty": b"",
        "not age": b"SQLite format 3\x00" + b"\x00" * 200,
    }
    paths = {}
    for name, content in variants.items():
        path = tmp_path / f"{name.replace(' ', '-')}.age"
        path.write_bytes(content)
        paths[name] = path
    return paths


def test_every_damaged_backup_is_exit_6_and_writes_nothing(backed_up: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    for name, path in _damaged(backed_up, tmp_path).items():
        result = run_pmm("--mind", str(target / "mind.db"), "restore", str(path), env=PASS)
        _failure(result, 6)
        _nothing_beside(target)
        assert name  # each variant ran


def test_a_restore_that_does_not_fit_writes_nothing(backed_up: Path, tmp_path: Path) -> None:
    """The decrypted mind is staged a chunk at a time: when the disk (here a file size limit) stops
    it halfway, the restore is exit 1 with one clear line, and leaves neither the staged part nor
    the folder it made."""
    import resource
    import signal

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (3 * CHUNK, 3 * CHUNK))

    target = tmp_path / "new" / "mind.db"
    result = subprocess.run([PMM, "--mind", str(target), "restore", str(backed_up)], capture_output=True,
                            timeout=120, env={**os.environ, **PASS}, preexec_fn=small_disk)
    assert "could not restore" in _failure(result, 1)
    assert not target.parent.exists()


def test_an_oversized_scrypt_work_factor_is_refused_at_once(backed_up: Path, tmp_path: Path) -> None:
    data = backed_up.read_bytes()
    first, rest = data.split(b"\n", 2)[1], data.split(b"\n", 2)[2]
    hostile = tmp_path / "hostile.age"
    hostile.write_bytes(b"age-encryption.org/v1\n" + first.rsplit(b" ", 1)[0] + b" 40\n" + rest)
    started = time.monotonic()
    result = run_pmm("--mind", str(tmp_path / "m.db"), "restore", str(hostile), env=PASS)
    assert "2^40" in _failure(result, 6)
    assert time.monotonic() - started < 60  # refused from the header, not after 2^40 of work (days)
    assert not (tmp_path / "m.db").exists()


def test_a_refused_restore_leaves_no_folder_behind(tmp_path: Path) -> None:
    """The folders --mind names are made only for a restore that succeeds: a backup that decrypts
    to a damaged SQLite file leaves neither them nor a staged copy, and folders that were there
    already stay."""
    from pmm.crypto import age

    sealed = tmp_path / "damaged.age"  # anyone's age file (pmm's writer agrees with rage's: test_backups_open_anywhere)
    sealed.write_bytes(age.encrypt(b"SQLite format 3\x00" + b"\xff" * 4080, PASS["PMM_BACKUP_PASSPHRASE"], 10))
    (tmp_path / "rdir").mkdir()
    result = run_pmm("--mind", str(tmp_path / "rdir" / "a" / "b" / "m.db"), "restore", str(sealed), env=PASS)
    assert "does not hold a usable pmm mind" in _failure(result, 6)
    _nothing_beside(tmp_path / "rdir")


def test_a_backup_to_an_age_recipient_is_explained(mind: Path, tmp_path: Path) -> None:
    identity = tmp_path / "id.txt"
    subprocess.run([_tool("age-keygen"), "-o", str(identity)], check=True, capture_output=True)
    recipient = [line.split(": ")[1] for line in identity.read_text().splitlines() if "public key" in line][0]
    sealed = tmp_path / "to-key.age"
    subprocess.run([_tool("age"), "-r", recipient, "-o", str(sealed), str(mind)], check=True)
    result = run_pmm("--mind", str(tmp_path / "m.db"), "restore", str(sealed), env=PASS)
    assert "recipient" in _failure(result, 6)


def test_a_backup_holding_a_tampered_mind_is_refused(mind: Path, tmp_path: Path) -> None:
    _remember(mind, "original words")
    tampered = tmp_path / "tampered.db"
    shutil.copyfile(mind, tampered)
    conn = unguarded(tampered)
    conn.execute("UPDATE events SET content = 'forged words' WHERE id = 2")
    conn.close()
    from pmm.crypto import age

    sealed = tmp_path / "tampered.age"
    sealed.write_bytes(age.encrypt(tampered.read_bytes(), PASS["PMM_BACKUP_PASSPHRASE"], 10))
    result = run_pmm("--mind", str(tmp_path / "out" / "m.db"), "restore", str(sealed), env=PASS)
    line = _failure(result, 6)
    assert "fails verification" in line and "event 2" in line
    assert not (tmp_path / "out").exists()  # not even the folder --mind named
    # and pmm never makes such a backup in the first place
    refused = run_pmm("--mind", str(tampered), "backup", "-o", str(tmp_path / "never.age"), env=PASS)
    assert "refusing to back up" in _failure(refused, 3)
    assert not (tmp_path / "never.age").exists()


def test_keep_rotates_only_this_backups_generations(mind: Path, tmp_path: Path) -> None:
    out = tmp_path / "mind.age"
    untouched = {"notes.txt": b"not a backup", "other.age": b"age-encryption.org/v1\nanother backup\n",
                 "other.1.age": b"age-encryption.org/v1\nits older generation\n"}
    for name, data in untouched.items():
        (tmp_path / name).write_bytes(data)
    out.write_bytes(b"age-encryption.org/v1\nan older backup\n")  # a stand-in: scrypt is slow
    digests = [hashlib.sha256(out.read_bytes()).hexdigest()]
    for i in range(2):
        _remember(mind, f"day {i}")
        _backup(mind, out, "--keep", "3")
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("mind.") and p.suffix == ".age")
    assert names == ["mind.1.age", "mind.2.age", "mind.age"]
    assert [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("mind.age", "mind.1.age", "mind.2.age")] \
        == digests[::-1]
    report = _backup(mind, out, "--keep", "1")
    assert sorted(Path(p).name for p in report["removed"]) == ["mind.1.age", "mind.2.age"]
    assert {name: (tmp_path / name).read_bytes() for name in untouched} == untouched


def test_backup_refuses_to_overwrite_what_is_not_a_backup(mind: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("do not lose me")
    result = run_pmm("--mind", str(mind), "backup", "-o", str(precious), env=PASS)
    assert "not an age backup" in _failure(result, 2)
    assert precious.read_text() == "do not lose me"
    assert "itself" in _failure(run_pmm("--mind", str(mind), "backup", "-o", str(mind), env=PASS), 2)


def test_passphrase_sources(mind: Path, tmp_path: Path) -> None:
    words = tmp_path / "pass.txt"
    words.write_text("from a file\n")
    out = tmp_path / "b.age"
    assert run_pmm("--mind", str(mind), "backup", "-o", str(out), "--passphrase-file", str(words)).returncode == 0
    ok = run_pmm("--mind", str(tmp_path / "r.db"), "restore", str(out), env={"PMM_BACKUP_PASSPHRASE": "from a file"})
    assert ok.returncode == 0, ok.stderr
    no_source = run_pmm("--mind", str(mind), "backup", "-o", str(tmp_path / "c.age"))
    assert "no passphrase" in _failure(no_source, 2)


def test_restore_asks_on_a_terminal(backed_up: Path, tmp_path: Path) -> None:
    target = tmp_path / "typed.db"
    env = {k: v for k, v in os.environ.items() if k != "PMM_BACKUP_PASSPHRASE"}
    shown = _type_passphrase([PMM, "--mind", str(target), "restore", str(backed_up)], env,
                             PASS["PMM_BACKUP_PASSPHRASE"])
    assert "Passphrase for" in shown and "Restored" in shown and target.exists()


# A long-lived writer (as a chat is): opens the mind once, appends one event per transaction and
# acknowledges each id once its COMMIT returned, until the stop file appears.
WRITER = r'''
import sys
from pathlib import Path

from pmm.domain.events import Draft
from pmm.services import opening

# Appends only when told: each line on stdin is a number of events to append, each acknowledged
# (its id printed) once committed. So the test knows which appends it asked for after a moment.
with opening.open_write(Path(sys.argv[1]), lambda _message: None) as mind:
    i = 0
    for line in sys.stdin:
        for _ in range(int(line)):
            (event,) = mind.append([Draft("observation_recorded", f"busy {i} " + "x" * 2000, {"source": "w"})])
            print(event.id, flush=True)
            i += 1
'''


def test_a_backup_taken_while_another_process_writes_is_consistent(mind: Path, tmp_path: Path) -> None:
    """The backup's output is a FIFO the test drains only after the writer has appended more: the
    backup opens its output after its snapshot, and cannot finish before the pipe is drained (the
    image is larger than a pipe holds). The writer appends only when told, and the test tells it
    only once the backup's first bytes are there: those appends certainly overlap the running
    backup and come after its snapshot, whatever the machine's timing."""
    import select
    import sys

    helper, fifo = tmp_path / "writer.py", tmp_path / "out.age"
    helper.write_text(WRITER)
    os.mkfifo(fifo)
    writer = subprocess.Popen([sys.executable, str(helper), str(mind)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    acks: list[int] = []
    reader = threading.Thread(target=lambda: acks.extend(int(line) for line in writer.stdout), daemon=True)  # type: ignore[union-attr]
    reader.start()

    def append(n: int) -> list[int]:
        start = len(acks)
        writer.stdin.write(f"{n}\n".encode())  # type: ignore[union-attr]
        writer.stdin.flush()  # type: ignore[union-attr]
        _until(lambda: len(acks) >= start + n, f"{n} acknowledged appends", writer)
        return acks[start:start + n]

    sealed = bytearray()
    try:
        acked_before = append(40)  # an image larger than a pipe holds
        backup = subprocess.Popen([PMM, "--mind", str(mind), "backup", "-o", str(fifo), "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **PASS})
        out = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            # readable once the backup writes its output: its snapshot is taken, it is not done
            _until(lambda: select.select([out], [], [], 0.05)[0] != [], "the backup's first bytes", backup)
            during = append(3)
            assert backup.poll() is None, "the backup finished before the pipe was drained"
            while True:
                select.select([out], [], [], 5)
                try:
                    chunk = os.read(out, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                sealed += chunk
        finally:
            os.close(out)
        stdout, stderr = backup.communicate(timeout=120)
        assert backup.returncode == 0, stderr.decode()
    finally:
        writer.stdin.close()  # type: ignore[union-attr]
        writer.wait(timeout=60)
        reader.join(60)
    assert writer.returncode == 0, writer.stderr.read().decode()  # type: ignore[union-attr]
    report = json_data(stdout)
    assert len(sealed) == report["bytes"], (len(sealed), report["bytes"])
    (tmp_path / "live.age").write_bytes(sealed)
    target = tmp_path / "live.db"
    run_pmm("--mind", str(target), "restore", str(tmp_path / "live.age"), env=PASS, check=True)
    restored = _hashes(target)
    assert len(restored) == report["events"] and restored[-1][1] == report["head"]
    assert restored == _hashes(mind)[: len(restored)]  # a consistent prefix of the live chain
    assert len(mind_events(target)) == report["events"]
    # everything acknowledged before the backup began is in it (some of it only in the WAL then);
    # what was appended while it ran came after its snapshot, and is in the mind
    assert max(acked_before) <= report["events"] < min(during)
    stored = {i for i, _ in _hashes(mind)}
    assert set(acks) <= stored


def _until(condition, what: str, proc: subprocess.Popen) -> None:  # noqa: ANN001 (a callable)
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None, f"{what}: the process exited {proc.returncode}: {proc.stderr.read()!r}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
