"""Issue 17's Done-when for forgetting, through the real CLI in subprocesses: a pasted secret is
forgotten, and `grep -a` finds it nowhere in the mind, its WAL or a backup made afterwards
(decrypted by the real `age`), nor in search, recall, the log or an export; `pmm verify` and a
signature made before the forget both pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import json_data, run_pmm
from terminal import Terminal

SECRET = "Hunter2Xyzzy"
# The search index keeps words lower-cased and stemmed ("xyzzy" may become "xyzzi"): this prefix
# finds the secret in any of the forms the file could hold it.
NEEDLE = "hunter2xyz"
PASS = {"PMM_BACKUP_PASSPHRASE": "a long and winding passphrase"}


def grep_finds(path: Path) -> bool:
    """Whether `grep -a -i` finds the secret in ``path`` (a file that does not exist holds nothing)."""
    if not path.exists():
        return False
    found = subprocess.run(["grep", "-a", "-i", "-c", NEEDLE, str(path)], capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    return found.returncode == 0


def ok(*args: str, env: dict[str, str] | None = None,
       input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    done = run_pmm(*args, env=env, input=input)
    assert done.returncode == 0, (args, done.stderr.decode())
    return done


def age_decrypt(backup: Path, out: Path) -> None:
    """The standard `age -d`, its passphrase typed at its prompt on a terminal."""
    tool = shutil.which("age")
    assert tool, "age is not installed (.ci/run installs it: apt-get install age)"
    term = Terminal([tool, "-d", "-o", str(out), str(backup)], dict(os.environ))
    try:
        term.expect("(?i)passphrase")
        term.until(lambda: not term.echoing(), what="the prompt to switch echo off")
        term.send(PASS["PMM_BACKUP_PASSPHRASE"] + "\n")
        assert term.wait(60) == 0, term.text()
    finally:
        term.kill()


@pytest.fixture
def pasted(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh mind (made by the CLI) where the secret was pasted as event 3, signed after it."""
    mind = tmp_path / "mind.db"
    ok("--mind", str(mind), "init", "--name", "Ada")
    ok("--mind", str(mind), "remember", "an ordinary note about green tea")
    ok("--mind", str(mind), "remember", f"the vault code is {SECRET}, do not share it")
    ok("--mind", str(mind), "remember", "a later note about the garden")
    assert grep_finds(mind), "the test must be able to fail: the secret is in the file before"
    assert SECRET.encode() in ok("--mind", str(mind), "search", "vault").stdout
    ok("keygen", "-o", str(tmp_path / "key.pem"))
    ok("--mind", str(mind), "sign", "--key", str(tmp_path / "key.pem"), "-o", str(tmp_path / "before.sig"))
    return mind, tmp_path


def test_a_pasted_secret_is_forgotten_everywhere_and_the_chain_and_signature_hold(pasted) -> None:
    mind, tmp = pasted
    assert json.loads(ok("--mind", str(mind), "verify", "--json").stdout)["data"]["ledger_format"] == 2
    done = json_data(ok("--mind", str(mind), "forget", "3", "--reason", "pasted a secret", "--yes",
                        "--json").stdout)
    assert done["forgotten"] == 3 and done["kind"] == "observation_recorded"
    assert done["recorded_by"] == 5 and done["reason"] == "pasted a secret" and done["wal_truncated"]

    for path in (mind, Path(f"{mind}-wal"), Path(f"{mind}-shm"), Path(f"{mind}-journal")):
        assert not grep_finds(path), f"the secret is still in {path.name}"

    # the chain verifies, and so does the signature made before the forget
    ok("--mind", str(mind), "verify")
    signed = ok("verify", str(mind), "--sig", str(tmp / "before.sig"), "--pub", str(tmp / "key.pub.pem"),
                "--json")
    report = json_data(signed.stdout)
    assert report["signature"]["ok"] and report["signature"]["appended_since"] == 1
    ok("verify", str(mind), "--deep")

    # a backup made afterwards, decrypted by the real age, holds nothing of it and verifies
    backup = tmp / "after.age"
    ok("--mind", str(mind), "backup", "-o", str(backup), env=PASS)
    plain = tmp / "after-backup.db"
    age_decrypt(backup, plain)
    assert plain.read_bytes().startswith(b"SQLite format 3\x00")
    assert not grep_finds(plain)
    ok("verify", str(plain), "--no-witness")

    # nor does an export, which still verifies and carries the tombstone
    export = tmp / "after.jsonl"
    ok("--mind", str(mind), "export", "-o", str(export))
    assert not grep_finds(export)
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert lines[0]["version"] == 2 and lines[3]["content"] == "" and "content_digest" in lines[3]
    assert lines[3]["content_digest"] == done["content_digest"]
    ok("verify", str(export))

    # nor search, recall (the prompt a chat would send), the log or trace
    assert ok("--mind", str(mind), "search", "vault").stdout.strip() in (b"", b"No matches.")
    for args in (("recall", "what is the vault code", "--full"), ("log",), ("log", "--json"),
                 ("stats", "--json")):
        shown = ok("--mind", str(mind), *args)
        assert NEEDLE not in (shown.stdout + shown.stderr).decode().lower(), args
    logged = ok("--mind", str(mind), "log").stdout.decode()
    assert "content_forgotten" in logged and "pasted a secret" in logged

    # the mind keeps working: a write rebuilds the projection cache without the secret
    ok("--mind", str(mind), "remember", "after the forget")
    assert not grep_finds(mind)
    ok("verify", str(mind), "--deep")


def test_a_long_paste_leaves_no_page_behind(tmp_path: Path) -> None:
    """A paste longer than a page lives in overflow pages: freed by the forget, they would keep
    its bytes on the free list without secure_delete (and an unmerged search index its words)."""
    mind = tmp_path / "mind.db"
    ok("--mind", str(mind), "init")
    paste = "\n".join(f"line {n}: export TOKEN={SECRET}{n} # pasted from a terminal" for n in range(3000))
    ok("--mind", str(mind), "remember", "-", input=paste.encode())
    for n in range(3):
        ok("--mind", str(mind), "remember", f"note {n} written after the paste")
    assert grep_finds(mind)
    ok("--mind", str(mind), "forget", "2", "--yes")
    assert not grep_finds(mind)
    ok("verify", str(mind), "--deep")


def test_the_forget_zeroes_freed_pages_whatever_sqlites_default(tmp_path: Path) -> None:
    """Some SQLite builds (Debian's) zero freed bytes by default, others (macOS, python.org) do
    not: the forget's own connection turns secure_delete on, so a build where it is off by
    default (here: a connection that turned it off) leaves no copy of the paste either."""
    from pmm.domain.events import Draft
    from pmm.ledger.store import Ledger

    mind = tmp_path / "mind.db"
    ok("--mind", str(mind), "init")
    paste = "\n".join(f"line {n}: export TOKEN={SECRET}{n}" for n in range(3000))
    ok("--mind", str(mind), "remember", "-", input=paste.encode())
    ok("--mind", str(mind), "remember", "after")
    with Ledger.open(mind, write=True) as ledger:
        ledger.conn.execute("PRAGMA secure_delete=OFF")
        ledger.forget(2, lambda target, digest: Draft(
            "content_forgotten", "", {"event": target.id, "content_digest": digest}))
        assert ledger.conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        assert ledger.truncate_wal()
    assert not grep_finds(mind)
    ok("verify", str(mind))
