"""``pmm verify``: check a mind file or a JSONL export, and say exactly what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from pmm.cli import output
from pmm.cli.app import mind_path
from pmm.cli.options import JsonOpt, MindOpt

if TYPE_CHECKING:
    from pmm.services.integrity import VerifyReport


def register(app: typer.Typer) -> None:
    app.command()(verify)


def verify(
    file: Annotated[Optional[str], typer.Argument(help="Mind file or JSONL export; - reads an export from stdin. Default: the current mind.", metavar="[FILE|-]", show_default=False)] = None,
    deep: Annotated[bool, typer.Option("--deep", help="Also run SQLite's check, canonical meta, and the projection cache against a full replay.")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Recompute every hash and check every link and id (exit 3 on any problem)."""
    from pmm.errors import IntegrityError
    from pmm.services import integrity

    if file == "-":
        report = integrity.verify_export(sys.stdin.buffer, "stdin", deep=deep)
    else:
        path = Path(file).expanduser() if file else mind_path(mind)
        if path.exists() and path.is_file() and not integrity.is_sqlite(path):
            with open(path, "rb") as handle, output.progress("Verifying", None) as (advance, _):
                report = integrity.verify_export(handle, str(path), deep=deep, on_progress=advance,
                                                 is_file=True)
        else:
            with output.progress("Verifying", None) as (advance, set_total):
                report = integrity.verify_mind(path, deep=deep, total=set_total, on_progress=advance)
    if json:
        output.emit_json(report.to_json())
    else:
        _render(report)
    if not report.ok:
        raise typer.Exit(IntegrityError.exit_code)


def _render(report: VerifyReport) -> None:
    what = "mind" if report.source_kind == "mind" else "export"
    if report.ok:
        span = f"events {report.first_id}-{report.last_id}" if report.events else "no events"
        output.out(f"OK: {what} {report.source}: {report.events:,} events verified ({span}),"
                   f" head {report.head[:16]}…")
    else:
        where = f"event {report.problem_event}: " if report.problem_event else ""
        output.error(f"{what} {report.source} FAILED verification: {where}{report.problem}",
                     f"{report.events:,} events before it verified")
    for note in report.notes:
        output.message(f"Note: {note}")
    if report.deep:
        for key, value in report.deep.items():
            output.message(f"  {key}: {value}")
