"""A backup opens on any machine that has the passphrase: pmm's age (scrypt) encryption agrees with
rage both ways, its limits are fixed rather than timed, and damage anywhere is refused (exit 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pyrage
import pytest

from pmm import errors
from pmm.crypto import age
from tests.conftest import invoke, json_data, mind_events

CHEAP = 10  # scrypt work factor for these tests (the format is the same at any factor)
SIZES = [0, 1, 65_535, 65_536, 65_537, 3 * 65_536]  # around STREAM's 64 KiB chunk edges


@pytest.mark.parametrize("size", SIZES)
def test_pmm_and_rage_read_each_others_files(size: int) -> None:
    data = os.urandom(size)
    ours = age.encrypt(data, "correct horse", CHEAP)
    assert pyrage.passphrase.decrypt(ours, "correct horse") == data
    assert age.decrypt(ours, "correct horse", "ours") == data
    if size == 65_537:  # rage picks its own (timed, costly) work factor: one size past a chunk edge
        assert age.decrypt(pyrage.passphrase.encrypt(data, "correct horse"), "correct horse", "rage's") == data


def test_the_work_factor_is_fixed_and_settable(mind, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Not timed: the default is age's 18 on any machine; PMM_BACKUP_WORK_FACTOR sets it, bounded."""
    monkeypatch.setenv("PMM_BACKUP_PASSPHRASE", "correct horse")
    monkeypatch.setenv("PMM_BACKUP_WORK_FACTOR", str(CHEAP + 1))
    out = tmp_path / "b.age"
    assert invoke("--mind", str(mind), "backup", "-o", str(out)).exit_code == 0
    assert age.work_factor(out.read_bytes(), "b") == CHEAP + 1
    monkeypatch.setenv("PMM_BACKUP_WORK_FACTOR", "9")
    refused = invoke("--mind", str(mind), "backup", "-o", str(tmp_path / "c.age"))
    assert refused.exit_code == 2 and "PMM_BACKUP_WORK_FACTOR" in refused.output
    assert not (tmp_path / "c.age").exists()
    from pmm import settings

    assert settings.BACKUP_WORK_FACTOR.default == age.WORK_FACTOR == 18 and age.MAX_WORK_FACTOR == 22


def _damaged(sealed: bytes) -> dict[str, bytes]:
    header_end = sealed.index(b"\n---") + 1
    footer_end = sealed.index(b"\n", header_end) + 1
    flip = lambda data, at: data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]  # noqa: E731
    lines = sealed[:header_end].split(b"\n")
    return {
        "a flipped payload byte": flip(sealed, len(sealed) - 5),
        "a flipped salt": flip(sealed, len(age.MAGIC) + 12),
        "a flipped header MAC": flip(sealed, footer_end - 3),
        "the last chunk dropped": sealed[:footer_end + 16 + 65_536 + 16],
        "the last bytes cut": sealed[:-1],
        "no payload": sealed[:footer_end + 16],
        "a second stanza": sealed[:header_end] + b"-> X25519 abc\nabc\n" + sealed[header_end:],
        "padded base64": sealed.replace(lines[2], lines[2] + b"=", 1),
        "a zero work factor": sealed.replace(b" 10\n", b" 0\n", 1),
    }


@pytest.mark.parametrize("case", list(_damaged(age.encrypt(b"m" * 70_000, "pw", CHEAP))))
def test_damage_anywhere_is_refused(case: str) -> None:
    sealed = _damaged(age.encrypt(b"m" * 70_000, "pw", CHEAP))[case]
    with pytest.raises(errors.InputRejected):
        age.decrypt(sealed, "pw", "the backup")


class _Dribble:
    """A stream that hands out a few bytes per read, as a pipe may."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at, self._step = data, 0, 0

    def read(self, size: int) -> bytes:
        self._step = self._step % 4093 + 1
        piece = self._data[self._at:self._at + min(size, self._step)]
        self._at += len(piece)
        return piece


def _armored(sealed: bytes) -> bytes:
    import base64

    return (b"\n-----BEGIN AGE ENCRYPTED FILE-----\n" + base64.encodebytes(sealed)
            + b"-----END AGE ENCRYPTED FILE-----\n\n")


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", SIZES)
def test_a_stream_is_encrypted_and_decrypted_a_chunk_at_a_time(size: int, armor: bool) -> None:
    """Short reads anywhere (a pipe) change nothing: chunks are cut by the format, not the reads;
    each chunk reaches the writer whole and checked, in order."""
    import io

    data = os.urandom(size)
    sink = io.BytesIO()
    age.Sealer("pw", CHEAP).encrypt_file(_Dribble(data), sink)
    assert pyrage.passphrase.decrypt(sink.getvalue(), "pw") == data
    sealed = age.Sealed(_Dribble(_armored(sink.getvalue()) if armor else sink.getvalue()), "the backup")
    sealed.unlock("pw")
    chunks: list[bytes] = []
    assert sealed.decrypt_into(chunks.append) == size
    assert b"".join(chunks) == data
    assert all(len(chunk) == age.CHUNK for chunk in chunks[:-1]) and len(chunks) == max(1, -(-size // age.CHUNK))


def test_a_sealer_makes_one_file() -> None:
    import io

    sealer = age.Sealer("pw", CHEAP)
    sealer.encrypt_file(io.BytesIO(b"one"), io.BytesIO())
    with pytest.raises(ValueError):
        sealer.encrypt_file(io.BytesIO(b"two"), io.BytesIO())  # the same file key twice: never


def _damaged_armor(armored: bytes) -> dict[str, bytes]:
    end = armored.index(b"-----END")
    return {
        "no end line": armored[:end],
        "a cut end line": armored[:end + 12],
        "a misspelt end line": armored.replace(b"-----END AGE", b"-----END AGF"),
        "text after the end line": armored + b"more\n",
        "a character outside base64": armored[:60] + b"!" + armored[61:],
        "base64 after its padding": armored[:end] + b"QQ==\nQUJD\n" + armored[end:],
        "a line cut short": armored[:end - 2] + b"\n" + armored[end:],
    }


@pytest.mark.parametrize("case", list(_damaged_armor(_armored(age.encrypt(b"m" * 70_000, "pw", CHEAP)))))
def test_damaged_armor_is_refused(case: str) -> None:
    armored = _damaged_armor(_armored(age.encrypt(b"m" * 70_000, "pw", CHEAP)))[case]
    with pytest.raises(errors.InputRejected):
        age.decrypt(armored, "pw", "the backup")


def test_a_wrong_passphrase_is_refused_before_any_payload_is_read() -> None:
    with pytest.raises(errors.InputRejected, match="wrong passphrase"):
        age.decrypt(age.encrypt(b"secret", "pw", CHEAP), "not it", "the backup")


def test_an_armored_backup_restores(mind, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """`age -a` output (ASCII armor) is an age passphrase file too: restore reads it."""
    monkeypatch.setenv("PMM_BACKUP_PASSPHRASE", "correct horse")
    binary = tmp_path / "b.age"
    assert invoke("--mind", str(mind), "backup", "-o", str(binary)).exit_code == 0
    armored = tmp_path / "b.age.asc"
    armored.write_bytes(_armored(binary.read_bytes()))
    done = invoke("--mind", str(tmp_path / "r.db"), "restore", str(armored))
    assert done.exit_code == 0, done.output
    assert invoke("--mind", str(tmp_path / "r.db"), "verify").exit_code == 0


def test_a_backup_made_before_backups_streamed_restores(tmp_path: Path) -> None:
    """tests/data/backup-before-streaming.age: two chunks written whole by the pmm of before
    (work factor 10, passphrase "an old passphrase"); the streaming reader restores it."""
    old = Path(__file__).parent / "data" / "backup-before-streaming.age"
    target = tmp_path / "old.db"
    done = invoke("--mind", str(target), "restore", str(old), "--json",
                  env={"PMM_BACKUP_PASSPHRASE": "an old passphrase"})
    assert done.exit_code == 0, done.output
    assert json_data(done.stdout)["head"] == "93cd681305920e8762f88c9e2846045e8518701136fa996a74bf3dbd2fb47b97"
    assert [e["content"][:27] for e in mind_events(target)][1:] == ["made before backups streame", "tea, not coffee"]


def test_a_work_factor_the_machine_has_no_memory_for_is_refused_not_a_crash(tmp_path) -> None:
    """2^22 (the limit) needs 4 GiB: with less to give, restore says so, exit 6, nothing written."""
    import resource
    import subprocess
    import sys

    hostile = tmp_path / "wf22.age"
    hostile.write_bytes(age.encrypt(b"SQLite format 3\x00", "pw", CHEAP).replace(b" 10\n", b" 22\n", 1))

    def two_gib() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    done = subprocess.run([str(Path(sys.executable).with_name("pmm")), "--mind", str(tmp_path / "r.db"),
                           "restore", str(hostile)], capture_output=True, text=True, preexec_fn=two_gib,
                          env={**os.environ, "PMM_BACKUP_PASSPHRASE": "pw"}, timeout=120)
    assert done.returncode == 6, done.stderr
    assert "4,096 MiB of memory" in done.stderr and "unexpected" not in done.stderr
    assert not (tmp_path / "r.db").exists()
