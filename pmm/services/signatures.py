"""Reading signed checkpoints: the signature half of ``pmm verify`` (making them: pmm.services.signing).

A signature proves a checkpoint (mind id, event count, head hash; ``pmm.domain.checkpoint``), in
one of two formats checkable without pmm (docs/signing.md): minisign (prehashed ``ED``, the
checkpoint in the trusted comment) or SSHSIG in namespace ``pmm-checkpoint``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from pmm import errors
from pmm.domain import checkpoint as cp
from pmm.services.files import read_file
from pmm.services.words import plural

if TYPE_CHECKING:
    from pmm.crypto.keys import PublicKey

NAMESPACE = "pmm-checkpoint"
MAX_SIGNATURE_BYTES = 64 * 1024


class SignedJson(TypedDict):
    mind_id: str
    events: int
    head: str
    key_id: str
    format: str
    signed_at: str | None


class Position(SignedJson):
    """``verify --json``'s ``signature``: the signed checkpoint, and whether this chain holds it."""

    ok: bool
    appended_since: int | None  # events after the signed one; None unless ``ok``


@dataclass(frozen=True)
class Signed:
    checkpoint: cp.Checkpoint
    key_id: str
    format: str
    signed_at: str | None = None

    def to_json(self) -> SignedJson:
        return {"mind_id": self.checkpoint.mind_id, "events": self.checkpoint.size,
                "head": self.checkpoint.head, "key_id": self.key_id, "format": self.format,
                "signed_at": self.signed_at}


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public_pem: Path
    minisign: Path
    ssh: Path

    def publics(self) -> list[Path]:
        return [self.public_pem, self.minisign, self.ssh]


def default_key() -> Path:
    """Where ``pmm keygen`` and ``pmm sign`` keep the private key unless told otherwise."""
    from pmm.paths import config_dir

    return config_dir() / "signing-key.pem"


def key_files(private: Path) -> KeyFiles:
    """Where ``pmm keygen`` puts the public halves: beside the private key, named after it."""
    stem = private.with_name(private.name.removesuffix(".pem"))
    return KeyFiles(private, Path(f"{stem}.pub.pem"), Path(f"{stem}.minisign.pub"), Path(f"{stem}.ssh.pub"))


def default_public() -> Path:
    """The public key ``pmm verify --sig`` checks against without ``--pub``: the one ``pmm keygen``
    wrote beside the default private key (its PEM, else its minisign or OpenSSH form)."""
    files = key_files(default_key())
    found = next((p for p in files.publics() if os.path.lexists(p)), None)
    if found is None:
        raise errors.UsageError(
            f"--sig needs the signer's public key, and there is no default one at {files.public_pem}",
            hint="pass --pub KEY (the signer's .pub.pem, .minisign.pub or .ssh.pub); "
                 "for your own signatures, `pmm keygen` makes the default key pair")
    return found


def load_public(path: Path) -> PublicKey:
    from pmm.crypto import keys

    return keys.load_public(read_limited(path, "public key", 1 << 20), str(path))


def read_signature(path: Path, public: PublicKey) -> Signed:
    """The checkpoint that ``path`` proves ``public`` signed; ``IntegrityError`` otherwise."""
    raw = read_limited(path, "signature", MAX_SIGNATURE_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.IntegrityError("the signature file is damaged: it is not text") from None
    if text.startswith("untrusted comment:"):
        return _read_minisign(text, public)
    if "-----BEGIN SSH SIGNATURE-----" in text:
        return _read_ssh(text, public)
    raise errors.IntegrityError("the signature file is damaged: it is neither a minisign nor an SSH signature")


def _read_minisign(text: str, public: PublicKey) -> Signed:
    from pmm.crypto import minisign

    sig = minisign.parse(text)
    minisign.verify_comment(public, sig)
    words = sig.trusted_comment.split(" ")
    if words[0] != cp.COMMENT_TAG or len(words) < 4:
        raise errors.IntegrityError("the signature is genuine but does not carry a pmm checkpoint")
    point = cp.from_fields(words[1:4])
    minisign.verify_message(public, sig, point.text().encode())
    signed_at = next((w.removeprefix("signed:") for w in words[4:] if w.startswith("signed:")), None)
    return Signed(point, public.key_id_text, "minisign", signed_at)


def _read_ssh(text: str, public: PublicKey) -> Signed:
    from pmm.crypto import sshsig

    tagged = [line for line in text.splitlines() if line.startswith(cp.COMMENT_TAG + " ")]
    if len(tagged) != 1:
        raise errors.IntegrityError("the SSH signature file has no pmm-checkpoint line after the signature")
    point = cp.from_fields(tagged[0].split(" ")[1:])
    sshsig.verify(public, text, point.text().encode(), NAMESPACE)
    return Signed(point, public.key_id_text, "ssh")


def check_position(signed: Signed, mind_id: str, size: int, hash_at: Callable[[int], str | None]
                   ) -> tuple[Position, str | None]:
    """Is the signed checkpoint in this chain, at its position, with its hash? The JSON summary
    and the problem (None when it holds)."""
    point = signed.checkpoint
    summary: Position = {**signed.to_json(), "ok": False, "appended_since": None}
    if point.mind_id != mind_id:
        return summary, f"the signature is for another mind ({point.mind_id}, this is {mind_id})"
    if point.size > size:
        return summary, (f"truncated: the signed checkpoint covers {plural(point.size, 'event')}, this copy "
                         f"has only {size:,}")
    found = hash_at(point.size)
    if found is None:
        return summary, f"the signed event {point.size:,} is not in this partial export"
    if found != point.head:
        return summary, (f"a different head: event {point.size:,} is not the one that was signed "
                         f"(signed {point.head[:16]}…, found {found[:16]}…): rewritten or forked")
    summary["ok"], summary["appended_since"] = True, size - point.size
    return summary, None


def read_limited(path: Path, what: str, limit: int) -> bytes:
    data = read_file(path, what, limit)
    if len(data) > limit:
        if what == "signature":
            raise errors.IntegrityError("the signature file is damaged: far too long for a signature")
        raise errors.InputRejected(f"{path} is too large to be a {what} file")
    return data
