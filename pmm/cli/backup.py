"""``pmm backup`` and ``pmm restore``: encrypted snapshots in the age format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pmm.cli import output
from pmm.cli.options import JsonOpt, MindOpt, mind_path
from pmm.cli.secrets import PassphraseFileOpt, passphrase

BACKUP_ENV = "PMM_BACKUP_PASSPHRASE"


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)


def backup(
    out_file: Annotated[Path, typer.Option("-o", "--output", help="The encrypted backup file to write, e.g. mind.age (or a device/pipe such as /dev/stdout); an older age backup there needs --keep or --force, any other file is never replaced.", metavar="FILE")],
    keep: Annotated[Optional[int], typer.Option("--keep", min=1, max=1000, help="Keep N backups: once the new one is written whole, older ones move to FILE's NAME.1.EXT, NAME.2.EXT ... (real files, not symlinks).", metavar="N", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an older backup at FILE (whole or not at all; only an age file, never another file).")] = False,
    passphrase_file: PassphraseFileOpt = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Verify the mind, snapshot it (SQLite backup API) and encrypt it with a passphrase (age format: `age -d` opens it)."""
    from pmm.services import backup as service

    source, target = mind_path(mind), out_file.expanduser()
    service.check_target(source, target, keep, force)  # a bad -o is refused before any prompt
    secret = passphrase(passphrase_file, BACKUP_ENV, "the backup", confirm=True)()
    with output.status("Verifying, snapshotting and encrypting (scrypt takes a few seconds)"):
        result = service.backup(source, target, lambda: secret, keep, force=force)
    if json:
        output.emit_json(result.to_json())
        return
    output.message(f"Backed up mind {result.mind_id}: {output.plural(result.events, 'event')} (head {result.head[:16]}…) "
                   f"to {result.file} ({result.bytes:,} bytes, age-encrypted"
                   f"{', replacing the older backup' if result.replaced else ''})")
    for path in result.removed:
        output.message(f"Removed the old backup {path} (--keep {keep})")


def restore(
    file: Annotated[Path, typer.Argument(help="A backup made by `pmm backup` (or any age passphrase file holding a mind).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing pmm mind (never another file or database).")] = False,
    passphrase_file: PassphraseFileOpt = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Decrypt a backup, verify the whole chain, then write the mind (refuses to overwrite without --force)."""
    from pmm.services import backup as service

    target = mind_path(mind)
    service.check_backup_file(file.expanduser())  # a hostile or foreign file is refused before any prompt
    service.check_restore_target(target, force)
    secret = passphrase(passphrase_file, BACKUP_ENV, str(file))()
    with output.status("Decrypting and verifying the backup"):
        result = service.restore(file.expanduser(), target, lambda: secret, force=force)
    if json:
        output.emit_json(result.to_json())
        return
    verb = "Replaced" if result.replaced else "Restored"
    output.message(f"{verb} {result.path} with mind {result.mind_id}: {output.plural(result.events, 'event')} verified "
                   f"(head {result.head[:16]}…)" + ("" if result.diverged else
                                                    "; the witness now expects this head"))
    if result.diverged:
        output.message(f"Warning: {result.diverged}; if this backup is this mind's true history, "
                       f"accept it: pmm verify {result.path} --accept-rollback")
