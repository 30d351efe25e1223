"""``pmm verify``: check a mind file or a JSONL export, and say exactly what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

from pmm.cli import output
from pmm.cli.declare import Argument, Option
from pmm.cli.options import JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    import typer

    from pmm.services.integrity import VerifyReport


def register(app: typer.Typer) -> None:
    app.command()(verify)


def verify(
    file: Annotated[Optional[str], Argument(help="Mind file or JSONL export; - reads an export from stdin. Default: the current mind.", metavar="[FILE|-]", show_default=False)] = None,
    deep: Annotated[bool, Option("--deep", help="Also run SQLite's check, canonical meta, and the projection cache and --as-of snapshots against a full replay.")] = False,
    sig: Annotated[Optional[Path], Option("--sig", help="A signature from `pmm sign`: its checkpoint must be in the chain.", metavar="SIG", show_default=False)] = None,
    pub: Annotated[Optional[Path], Option("--pub", help="The signer's public key (PEM, minisign or ssh-ed25519). Default: the one `pmm keygen` made (signing-key.pub.pem in the user config dir).", metavar="KEY", show_default=False)] = None,
    accept_rollback: Annotated[bool, Option("--accept-rollback", help="Make this file's head the witnessed one (after a deliberate rollback).")] = False,
    no_witness: Annotated[bool, Option("--no-witness", help="Skip the witness check (and do not update it).")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Recompute every hash and check every link and id; with --sig, the signed checkpoint too; and that
    the mind still extends what pmm witnessed (exit 3 on any problem)."""
    from pmm.errors import IntegrityError, UsageError
    from pmm.services import integrity

    if accept_rollback and no_witness:
        raise UsageError("--accept-rollback and --no-witness contradict each other")
    if pub is not None and sig is None:
        raise UsageError("--pub is the key to check a signature with, but no --sig was given",
                         hint="pmm verify FILE --sig SIG [--pub KEY]")
    if sig is not None and pub is None:
        from pmm.services import signatures  # only with --sig: a plain verify reads no key

        pub = signatures.default_public()
        output.message(f"Checking the signature with the default public key {pub}")
    mode = None if no_witness else "accept" if accept_rollback else "verify"
    path = None if file == "-" else Path(file).expanduser() if file else mind_path(mind)
    if path is not None and path.is_file() and integrity.is_signature(path):
        from pmm.errors import NotAMind

        raise NotAMind(f"{path} is a signature, not a mind file or an export",
                       hint=f"check a mind against it: pmm verify MIND --sig {path}")
    checks = integrity.signature_checks(sig and sig.expanduser(), pub and pub.expanduser(),
                                        witness=mode, path=path)
    if path is None:
        report = integrity.verify_export(sys.stdin.buffer, "stdin", deep=deep, checks=checks)
    else:
        with output.progress("Verifying", None) as (advance, set_total):
            report = integrity.verify_file(path, checks, deep=deep, total=set_total, on_progress=advance)
    if json:
        output.emit_json(report.to_json())
    else:
        _render(report)
    if not report.ok:
        from pmm.cli.leaving import Exit

        raise Exit(IntegrityError.exit_code)


def _render(report: VerifyReport) -> None:
    what = "mind" if report.source_kind == "mind" else "export"
    if report.ok:
        span = f"events {report.first_id}-{report.last_id}" if report.events else "no events"
        output.out(f"OK: {what} {report.source}: {output.plural(report.events, 'event')} verified ({span}),"
                   f" head {report.head[:16]}…")
        if report.signature:
            s = report.signature
            when = f" signed {output.when(s['signed_at'])}" if s["signed_at"] else ""
            output.out(f"OK: signature by key {s['key_id']}: checkpoint at event {s['events']:,}{when} is in "
                       f"the chain; {output.plural(s['appended_since'] or 0, 'event')} appended since")
        if report.witness:
            output.out(f"OK: witness: {report.witness['message']}")
    else:
        where = f"event {report.problem_event}: " if report.problem_event else ""
        hint = report.hint or (f"{output.plural(report.events, 'event')} before it verified" if report.problem_event else None)
        output.error(f"{what} {report.source} FAILED verification: {where}{report.problem}", hint)
    for note in report.notes:
        output.message(f"Note: {note}")
    if report.deep:
        for key, value in report.deep.items():
            output.message(f"  {key}: {value}")
