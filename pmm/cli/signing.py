"""Signed checkpoints: ``pmm keygen`` and ``pmm sign`` (``pmm verify --sig`` checks them)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from pmm.cli import output
from pmm.cli.options import JsonOpt, MindOpt, mind_path
from pmm.cli.secrets import PassphraseFileOpt, passphrase

KEY_ENV = "PMM_KEY_PASSPHRASE"


class SigFormat(str, Enum):
    minisign = "minisign"
    ssh = "ssh"


def register(app: typer.Typer) -> None:
    app.command()(keygen)
    app.command()(sign)


def keygen(
    out_file: Annotated[Optional[Path], typer.Option("-o", "--output", help="Private key file (default: signing-key.pem in the user config dir).", metavar="KEY", show_default=False)] = None,
    protect: Annotated[bool, typer.Option("--protect", help="Encrypt the private key with a passphrase (asked for, or --passphrase-file, or $PMM_KEY_PASSPHRASE).")] = False,
    passphrase_file: PassphraseFileOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing key files.")] = False,
    json: JsonOpt = False,
) -> None:
    """Make an Ed25519 signing key: KEY (PEM, 0600) and its public key beside it (PEM, minisign, OpenSSH)."""
    from pmm.services import signatures, signing

    path = (out_file or signatures.default_key()).expanduser()
    secret = None
    if protect or passphrase_file is not None:
        secret = passphrase(passphrase_file, KEY_ENV, str(path), confirm=True)().encode()
    files, key_id = signing.keygen(path, secret, force=force)
    if json:
        output.emit_json({"key_id": key_id, "private": str(files.private), "encrypted": secret is not None,
                          "public_pem": str(files.public_pem), "minisign": str(files.minisign),
                          "ssh": str(files.ssh)})
        return
    output.message(f"Wrote private key {files.private} (owner-only{', passphrase-protected' if secret else ''})")
    output.message(f"Public key {key_id}: {files.public_pem} (PEM), {files.minisign} (minisign), "
                   f"{files.ssh} (OpenSSH)")
    output.message("Keep the private key off backups of the mind; share the public key freely.")


def sign(
    file: Annotated[Optional[Path], typer.Argument(help="Mind file or JSONL export to sign. Default: the current mind.", show_default=False)] = None,
    key: Annotated[Optional[Path], typer.Option("--key", "-k", help="Private key (default: the one `pmm keygen` made).", metavar="KEY", show_default=False)] = None,
    out_file: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write the signature to SIG instead of stdout (as `export -o`: whole, through a symlink, into a device; never over the file signed or any SQLite file).", metavar="SIG", show_default=False)] = None,
    fmt: Annotated[SigFormat, typer.Option("--format", "-f", help="minisign (checked by `minisign -V`) or ssh (`ssh-keygen -Y verify`).")] = SigFormat.minisign,
    passphrase_file: PassphraseFileOpt = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Verify the mind, then sign its checkpoint (mind id, event count, head hash), not its bytes."""
    from pmm.services import files, signatures, signing

    source = file.expanduser() if file is not None else mind_path(mind)
    key_path = (key or signatures.default_key()).expanduser()
    out = out_file.expanduser() if out_file is not None else None
    reading = tuple(p for p in (source, key_path, passphrase_file) if p is not None)
    if out is not None:  # refuse a bad -o (the mind, the key, a folder ...) before any prompt
        files.check_output(out, reading=reading, what="signature")
    secret = passphrase(passphrase_file, KEY_ENV, str(key_path))
    text, signed = signing.sign(source, key_path, lambda: secret().encode(), fmt.value)
    if out is not None:
        signing.write_signature(text, out, reading)
    if json:
        output.emit_json({**signed.to_json(), "signature_file": str(out_file) if out_file else None,
                          **({} if out_file else {"signature": text})})
    elif out_file is None:
        sys.stdout.write(text)
    point = signed.checkpoint
    output.message(f"Signed {source}: {point.short()} of mind {point.mind_id}, key {signed.key_id}"
                   + (f" -> {out_file}" if out_file else ""))
