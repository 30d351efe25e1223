"""Signed checkpoints: `pmm keygen`, `pmm sign`, `pmm verify --sig --pub`, and the same signatures
checked by the real `minisign` and `ssh-keygen`, with known-answer files under tests/data/signing.

What a signature proves: the checkpoint (mind id, event count, head hash) is in the chain at its
position. Truncation, a different head, another mind, a wrong key, an edited trusted comment, a
cut or bit-flipped signature: exit 3, one clear line.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import PMM, json_data, restore_guards, run_in, run_pmm, unguarded

DATA = Path(__file__).parent / "data" / "signing"
SIGNED_AT = "2026-11-21T12:00:00Z"


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed (.ci/run installs it: apt-get install {name})"
    return found


def _checkpoint_from_minisig(sig: Path) -> bytes:
    """What docs/signing.md tells a user to run: rebuild the signed text from the trusted comment."""
    return subprocess.run(["awk", '/^trusted comment: pmm-checkpoint /{printf "%s\\n%s\\n%s\\n", $4, $5, $6}',
                           str(sig)], capture_output=True, check=True).stdout


def _checkpoint_from_sshsig(sig: Path) -> bytes:
    return subprocess.run(["awk", '/^pmm-checkpoint /{printf "%s\\n%s\\n%s\\n", $2, $3, $4}', str(sig)],
                          capture_output=True, check=True).stdout


def _minisign_ok(pub: Path, sig: Path, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    message = tmp / "checkpoint.txt"
    message.write_bytes(_checkpoint_from_minisig(sig))
    return subprocess.run([_tool("minisign"), "-V", "-p", str(pub), "-m", str(message), "-x", str(sig)],
                          capture_output=True)


def _ssh_ok(ssh_pub: Path, sig: Path, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    allowed = tmp / "allowed_signers"
    allowed.write_text("mind-owner " + ssh_pub.read_text())
    return subprocess.run([_tool("ssh-keygen"), "-Y", "verify", "-f", str(allowed), "-I", "mind-owner",
                           "-n", "pmm-checkpoint", "-s", str(sig)],
                          input=_checkpoint_from_sshsig(sig), capture_output=True)


def _remember(mind: Path, *notes: str) -> None:
    for note in notes:
        run_in("--mind", str(mind), "remember", note, check=True)


def _failure(result: subprocess.CompletedProcess[bytes], code: int = 3) -> str:
    """Exit ``code``, nothing on stdout, one ``Error:`` line (a hint may follow), no traceback."""
    err = result.stderr.decode()
    assert result.returncode == code, f"exit {result.returncode}: {err}"
    assert result.stdout == b""
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.fixture
def keypair(tmp_path: Path) -> Path:
    key = tmp_path / "k.pem"
    run_in("keygen", "-o", str(key), check=True)
    return key


@pytest.fixture
def signed(mind: Path, keypair: Path, tmp_path: Path) -> Path:
    _remember(mind, "the user likes tea", "and long walks")
    sig = tmp_path / "mind.sig"
    run_in("sign", str(mind), "--key", str(keypair), "-o", str(sig), check=True)
    return sig


# -- keygen --------------------------------------------------------------------------------------

def test_keygen_writes_an_owner_only_private_key_and_three_public_forms(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "k.pem"
    result = run_in("keygen", "-o", str(key), "--json", check=True)
    made = json_data(result.stdout)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "keys" / "k.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    minisign_pub = (tmp_path / "keys" / "k.minisign.pub").read_text().splitlines()
    assert minisign_pub[0] == f"untrusted comment: minisign public key {made['key_id']}"
    assert (tmp_path / "keys" / "k.ssh.pub").read_text().startswith("ssh-ed25519 AAAA")
    assert made["encrypted"] is False

    again = run_in("keygen", "-o", str(key))
    assert "already exists" in _failure(again, 2)
    assert json_data(run_in("keygen", "-o", str(key), "--force", "--json", check=True).stdout)["key_id"] \
        != made["key_id"]


def test_default_key_lives_in_the_config_dir_and_sign_finds_it(mind: Path, private_dirs: Path) -> None:
    run_in("keygen", check=True)
    key = private_dirs / "config" / "pmm" / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    sig = run_in("--mind", str(mind), "sign", check=True).stdout  # to stdout, default key
    assert sig.startswith(b"untrusted comment: ")
    (mind.parent / "s.sig").write_bytes(sig)
    assert run_in("verify", str(mind), "--sig", str(mind.parent / "s.sig"),
                   "--pub", str(key.with_name("signing-key.pub.pem"))).returncode == 0


def test_a_passphrase_protected_key_signs_only_with_its_passphrase(mind: Path, tmp_path: Path) -> None:
    key, words = tmp_path / "k.pem", tmp_path / "pass.txt"
    words.write_text("correct horse\n")
    run_in("keygen", "-o", str(key), "--passphrase-file", str(words), check=True)
    assert key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    sig = tmp_path / "m.sig"
    ok = run_in("sign", str(mind), "--key", str(key), "-o", str(sig), env={"PMM_KEY_PASSPHRASE": "correct horse"})
    assert ok.returncode == 0, ok.stderr
    wrong = run_pmm("sign", str(mind), "--key", str(key), "-o", str(tmp_path / "x.sig"),  # exit 6 as a process
                    env={"PMM_KEY_PASSPHRASE": "wrong"})
    assert "wrong passphrase" in _failure(wrong, 6)
    missing = run_in("sign", str(mind), "--key", str(key))  # no tty, no file, no variable
    assert "no passphrase" in _failure(missing, 2)
    assert not (tmp_path / "x.sig").exists()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes256"])
def test_keys_made_by_openssl_sign_too(mind: Path, tmp_path: Path, encrypted: bool) -> None:
    key = tmp_path / "openssl.pem"
    args = [_tool("openssl"), "genpkey", "-algorithm", "ed25519", "-out", str(key)]
    subprocess.run(args + (["-aes256", "-pass", "pass:hunter22"] if encrypted else []), check=True)
    pub = tmp_path / "openssl.pub.pem"
    subprocess.run([_tool("openssl"), "pkey", "-in", str(key), "-pubout", "-out", str(pub)]
                   + (["-passin", "pass:hunter22"] if encrypted else []), check=True)
    sig = tmp_path / "m.sig"
    run_in("sign", str(mind), "--key", str(key), "-o", str(sig), env={"PMM_KEY_PASSPHRASE": "hunter22"},
            check=True)
    assert run_in("verify", str(mind), "--sig", str(sig), "--pub", str(pub)).returncode == 0


def test_an_rsa_key_or_a_public_key_is_refused_as_a_signing_key(mind: Path, tmp_path: Path, keypair: Path) -> None:
    rsa = tmp_path / "rsa.pem"
    subprocess.run([_tool("openssl"), "genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024",
                    "-out", str(rsa)], check=True, capture_output=True)
    assert "not an Ed25519 key" in _failure(run_in("sign", str(mind), "--key", str(rsa)), 6)
    public = tmp_path / "k.pub.pem"
    assert "not a PEM or OpenSSH private key" in _failure(run_in("sign", str(mind), "--key", str(public)), 6)
    assert "no signing key" in _failure(run_in("sign", str(mind), "--key", str(tmp_path / "none.pem")), 2)


# -- sign and verify: the user's script ------------------------------------------------------------

def test_the_backup_script_from_the_issue_works(mind: Path, keypair: Path, tmp_path: Path) -> None:
    """`pmm sign mind.db --key k.pem -o mind.sig && cp mind.db mind.sig /backup/ &&
    pmm verify /backup/mind.db --sig /backup/mind.sig --pub k.pub.pem`, and minisign agrees."""
    _remember(mind, "a note worth keeping")
    backup = tmp_path / "backup"
    backup.mkdir()
    script = (f"pmm sign {mind} --key {keypair} -o {tmp_path}/mind.sig && cp {mind} {tmp_path}/mind.sig {backup}/ "
              f"&& pmm verify {backup}/mind.db --sig {backup}/mind.sig --pub {tmp_path}/k.pub.pem")
    pmm_dir = str(Path(PMM).parent)  # the console script under test, whatever else is on PATH
    result = subprocess.run(["sh", "-c", script], capture_output=True,
                            env={"PATH": f"{pmm_dir}:/usr/bin:/bin", **_env()})
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "signature by key" in out and "0 events appended since" in out
    checked = _minisign_ok(tmp_path / "k.minisign.pub", backup / "mind.sig", tmp_path)
    assert checked.returncode == 0, checked.stderr.decode()


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k.startswith(("XDG_", "HOME", "NO_COLOR", "PYTHONPATH"))}


def test_events_appended_after_signing_are_counted(mind: Path, signed: Path, tmp_path: Path) -> None:
    _remember(mind, "later one", "later two")
    report = json_data(run_in("verify", str(mind), "--sig", str(signed), "--pub", str(tmp_path / "k.pub.pem"),
                                "--json", check=True).stdout)
    assert report["ok"] and report["signature"]["appended_since"] == 2
    assert report["signature"]["events"] == report["last_id"] - 2


def test_a_signed_export_verifies_from_a_pipe(mind: Path, signed: Path, tmp_path: Path) -> None:
    export = run_in("--mind", str(mind), "export", check=True).stdout
    result = run_in("verify", "-", "--sig", str(signed), "--pub", str(tmp_path / "k.minisign.pub"), input=export)
    assert result.returncode == 0, result.stderr
    export_file = tmp_path / "mind.jsonl"
    export_file.write_bytes(export)
    assert run_in("verify", str(export_file), "--sig", str(signed), "--pub", str(tmp_path / "k.ssh.pub")
                   ).returncode == 0


def test_ssh_format_verifies_with_pmm_and_ssh_keygen(mind: Path, keypair: Path, tmp_path: Path) -> None:
    _remember(mind, "signed the ssh way")
    sig = tmp_path / "mind.sshsig"
    run_in("sign", str(mind), "--key", str(keypair), "--format", "ssh", "-o", str(sig), check=True)
    assert sig.read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    assert run_in("verify", str(mind), "--sig", str(sig), "--pub", str(tmp_path / "k.pub.pem")).returncode == 0
    checked = _ssh_ok(tmp_path / "k.ssh.pub", sig, tmp_path)
    assert checked.returncode == 0, checked.stderr.decode()
    assert b"Good \"pmm-checkpoint\" signature" in checked.stdout + checked.stderr


def test_sign_refuses_a_mind_that_fails_verification(mind: Path, keypair: Path, tmp_path: Path) -> None:
    _remember(mind, "about to be tampered with")
    conn = unguarded(mind)
    conn.execute("UPDATE events SET content = 'forged' WHERE id = 2")
    conn.close()
    out = tmp_path / "never.sig"
    assert "refusing to sign" in _failure(run_in("sign", str(mind), "--key", str(keypair), "-o", str(out)))
    assert not out.exists()


# -- known answers ----------------------------------------------------------------------------------

def test_known_answer_signatures_verify_with_pmm(tmp_path: Path) -> None:
    for sig in ("mind.minisig", "mind.sshsig"):
        for pub in ("key.pub.pem", "key.minisign.pub", "key.ssh.pub"):
            result = run_in("verify", str(DATA / "mind.jsonl"), "--sig", str(DATA / sig), "--pub", str(DATA / pub),
                             "--no-witness", "--json")
            assert result.returncode == 0, (sig, pub, result.stderr)
            assert json_data(result.stdout)["signature"]["events"] == 5


def test_pmm_reproduces_the_known_answer_bytes() -> None:
    """Ed25519 is deterministic: the same key and checkpoint give the same signature files."""
    from pmm.domain import checkpoint
    from pmm.services import signing

    point = checkpoint.parse((DATA / "mind.checkpoint").read_text())
    key = signing.load_private(DATA / "key.pem", lambda: b"")
    assert signing.sign_text(key, point, "minisign", SIGNED_AT) == (DATA / "mind.minisig").read_text()
    assert signing.sign_text(key, point, "ssh", SIGNED_AT) == (DATA / "mind.sshsig").read_text()
    assert _checkpoint_from_minisig(DATA / "mind.minisig") == (DATA / "mind.checkpoint").read_bytes()


def test_known_answer_signatures_verify_with_minisign_and_ssh_keygen(tmp_path: Path) -> None:
    checked = _minisign_ok(DATA / "key.minisign.pub", DATA / "mind.minisig", tmp_path)
    assert checked.returncode == 0 and b"Signature and comment signature verified" in checked.stderr + checked.stdout
    assert _ssh_ok(DATA / "key.ssh.pub", DATA / "mind.sshsig", tmp_path).returncode == 0


# -- negative cases -----------------------------------------------------------------------------

def _variant(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _flip_base64(line: str, at: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    i = alphabet.index(line[at])
    return line[:at] + alphabet[i ^ 1] + line[at + 1:]


def _sig_variants(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = (DATA / "mind.minisig").read_text()
    lines = text.splitlines(keepends=True)
    sig_line = lines[1].rstrip("\n")
    return {
        "edited trusted comment": (_variant(tmp_path, "a", text.replace(" 5 ", " 4 ")), "trusted comment was edited"),
        "edited signed time": (_variant(tmp_path, "b", text.replace("12:00:00Z", "13:00:00Z")),
                               "trusted comment was edited"),
        "truncated": (_variant(tmp_path, "c", text[:len(text) // 2]), "damaged"),
        "cut signature line": (_variant(tmp_path, "d", lines[0] + sig_line[:-8] + "\n" + "".join(lines[2:])),
                               "damaged"),
        "bit-flipped signature": (_variant(tmp_path, "e", lines[0] + _flip_base64(sig_line, 40) + "\n"
                                           + "".join(lines[2:])), "damaged"),
        "bit-flipped key id": (_variant(tmp_path, "f", lines[0] + _flip_base64(sig_line, 5) + "\n"
                                        + "".join(lines[2:])), "another key"),
        "appended garbage": (_variant(tmp_path, "g", text + "garbage\n"), "damaged"),
        "binary": (_variant(tmp_path, "h", b"\x00\xff" * 100), "damaged"),
        "empty": (_variant(tmp_path, "i", b""), "damaged"),
        "ssh checkpoint line edited": (_variant(tmp_path, "j", (DATA / "mind.sshsig").read_text().replace(
            " 5 ", " 4 ")), "does not match the checkpoint"),
        "ssh signature cut": (_variant(tmp_path, "k", (DATA / "mind.sshsig").read_text().replace(
            "-----END SSH SIGNATURE-----", "")), "damaged"),
    }


def test_every_damaged_signature_is_exit_3_with_its_reason(tmp_path: Path) -> None:
    for label, (sig, reason) in _sig_variants(tmp_path).items():
        result = run_in("verify", str(DATA / "mind.jsonl"), "--sig", str(sig), "--pub", str(DATA / "key.pub.pem"),
                         "--no-witness")
        line = _failure(result)
        assert reason in line, f"{label}: {line}"
        assert "signature" in line, label


def test_a_wrong_key_is_exit_3(tmp_path: Path, keypair: Path) -> None:
    for sig in ("mind.minisig", "mind.sshsig"):
        result = run_in("verify", str(DATA / "mind.jsonl"), "--sig", str(DATA / sig),
                         "--pub", str(tmp_path / "k.pub.pem"), "--no-witness")
        assert "another key" in _failure(result), sig


def test_a_truncated_mind_fails_against_its_signature(mind: Path, signed: Path, tmp_path: Path) -> None:
    conn = unguarded(mind)
    conn.execute("DELETE FROM events WHERE id = (SELECT max(id) FROM events)")
    conn.close()
    # a real process: exit 3 (and the one Error line) as a script sees it at the process boundary
    result = run_pmm("verify", str(mind), "--sig", str(signed), "--pub", str(tmp_path / "k.pub.pem"), "--no-witness")
    assert "truncated" in _failure(result)


def test_a_different_head_or_another_mind_fails(mind: Path, signed: Path, tmp_path: Path) -> None:
    fork = tmp_path / "fork.db"
    shutil.copyfile(mind, fork)
    run_in("--mind", str(mind), "export", "-o", str(tmp_path / "before.jsonl"), check=True)
    # A copy that went its own way from one event before the signed head: same length, other head.
    conn = unguarded(fork)
    conn.execute("DELETE FROM events WHERE id = (SELECT max(id) FROM events)")
    restore_guards(conn)
    conn.close()
    _remember(fork, "a different last event")
    result = run_in("verify", str(fork), "--sig", str(signed), "--pub", str(tmp_path / "k.pub.pem"), "--no-witness")
    assert "different head" in _failure(result)

    other = tmp_path / "other.db"
    run_in("--mind", str(other), "init", check=True)
    _remember(other, "x", "y", "z", "w")
    result = run_in("verify", str(other), "--sig", str(signed), "--pub", str(tmp_path / "k.pub.pem"))
    assert "another mind" in _failure(result)


def test_a_bad_public_key_file_is_exit_6(mind: Path, signed: Path, tmp_path: Path) -> None:
    for content in (b"", b"not a key\n", b"\x00\x01", (tmp_path / "k.pem").read_bytes()):
        pub = _variant(tmp_path, "bad.pub", content)
        _failure(run_in("verify", str(mind), "--sig", str(signed), "--pub", str(pub)), 6)
    assert "no default one" in _failure(run_in("verify", str(mind), "--sig", str(signed)), 2)
