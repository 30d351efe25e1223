"""Signed checkpoints: ``pmm keygen`` and ``pmm sign`` (reading a signature: pmm.services.signatures).

pmm signs a checkpoint (mind id, event count, head hash; ``pmm.domain.checkpoint``), never the
file's bytes. Two formats, both checkable without pmm (docs/signing.md):

- ``minisign`` (default): prehashed ``ED``; the trusted comment carries the checkpoint.
- ``ssh``: SSHSIG in namespace ``pmm-checkpoint``; the checkpoint follows the armored block.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pmm import errors
from pmm.domain import checkpoint as cp
from pmm.services import signatures
from pmm.services.files import check_output, write_atomic
from pmm.services.integrity import is_signature
from pmm.services.signatures import KeyFiles, Signed, default_key, key_files

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


FORMATS = ("minisign", "ssh")
Passphrase = Callable[[], bytes]


def keygen(private: Path, passphrase: bytes | None, *, force: bool = False) -> tuple[KeyFiles, str]:
    """A new Ed25519 key pair: the private key as PEM (0600), the public key as PEM, minisign and
    OpenSSH files beside it. Refuses to overwrite any of them unless ``force``."""
    from pmm.crypto import keys

    files = key_files(private)
    for path in (files.private, *files.publics()):
        if path.exists():
            check_output(path, what="key")  # a folder or a database is never a key to replace
    existing = [p for p in (files.private, *files.publics()) if p.exists()]
    if existing and not force:
        raise errors.UsageError(f"{existing[0]} already exists",
                                hint="pmm never overwrites a key; choose another -o, or pass --force")
    key = keys.generate()
    public = keys.public_of(key)
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (files.private, *files.publics()):
        check_output(path, what="key")  # all four are fit to write before the first is written
    write_atomic(files.private, keys.private_pem(key, passphrase), 0o600, what="key")
    write_atomic(files.public_pem, keys.public_pem(public), 0o644, what="key")
    write_atomic(files.minisign, keys.minisign_public(public).encode(), 0o644, what="key")
    write_atomic(files.ssh, keys.openssh_public(public, f"pmm-{public.key_id_text}").encode(), 0o644, what="key")
    return files, public.key_id_text


def load_private(path: Path, passphrase: Passphrase) -> Ed25519PrivateKey:
    """The private key at ``path``; a missing one says how to make it (``pmm keygen``)."""
    from pmm.crypto import keys

    if not os.path.lexists(path):
        hint = "make one with `pmm keygen`, or pass --key KEY" if path == default_key() else \
            f"check the path, or make a key there with `pmm keygen -o {path}`"
        raise errors.UsageError(f"no signing key at {path}", hint=hint)
    return keys.load_private(signatures.read_limited(path, "key", 1 << 20), str(path), passphrase)


def sign(source: Path, key_path: Path, passphrase: Passphrase, fmt: str = "minisign") -> tuple[str, Signed]:
    """Verify ``source`` (chain and witness), then sign its head. The signature's text and what
    it signs. A mind that fails verification is never signed (exit 3)."""
    from datetime import UTC, datetime

    from pmm.crypto import keys
    from pmm.services import integrity

    if fmt not in FORMATS:
        raise errors.UsageError(f"unknown signature format {fmt!r}", hint="use minisign or ssh")
    if not os.path.lexists(source):  # before a protected key asks for its passphrase
        raise errors.MindNotFound(f"no mind file or export at {source}",
                                  hint="give the file to sign, or pass --mind PATH; `pmm init` makes a new mind")
    if source.is_file() and is_signature(source):
        raise errors.NotAMind(f"{source} is a signature already, not a mind file or an export",
                              hint="sign the mind itself: pmm sign [MIND] -o SIG")
    key = load_private(key_path, passphrase)
    report = integrity.verify_file(source, integrity.Checks(path=source))
    if not report.ok:
        where = f"event {report.problem_event}: " if report.problem_event else ""
        raise errors.IntegrityError(f"refusing to sign {source}: {where}{report.problem}", hint=report.hint)
    if not report.anchored:
        raise errors.IntegrityError(
            f"refusing to sign {source}: a partial export from event {report.first_id} whose link to "
            f"event {report.first_id - 1} pmm cannot check (it could start from any forged history)",
            hint="sign the mind file, or a whole export (pmm export without --since)")
    if report.last_id == 0:
        raise errors.UsageError(f"nothing to sign: {source} has no events")
    point = report.checkpoint()
    signed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = sign_text(key, point, fmt, signed_at)
    return text, Signed(point, keys.public_of(key).key_id_text, fmt, signed_at if fmt == "minisign" else None)


def sign_text(key: Ed25519PrivateKey, point: cp.Checkpoint, fmt: str, signed_at: str) -> str:
    """The signature file's text for ``point``."""
    from pmm.crypto import keys

    message = point.text().encode()
    if fmt == "ssh":
        from pmm.crypto import sshsig

        return sshsig.sign(key, message, signatures.NAMESPACE) + f"{cp.COMMENT_TAG} {point.fields()}\n"
    from pmm.crypto import minisign

    kid = keys.public_of(key).key_id_text
    return minisign.sign(key, message, f"{cp.COMMENT_TAG} {point.fields()} signed:{signed_at}",
                         f"pmm checkpoint of mind {point.mind_id} at event {point.size}, key {kid}")


def write_signature(text: str, out: Path, reading: tuple[Path, ...] = ()) -> None:
    """The signature file under pmm.services.files' policy: never over a file in ``reading`` (the
    file signed, the key, the passphrase file)."""
    write_atomic(out, text.encode(), 0o644, reading=reading, what="signature")
