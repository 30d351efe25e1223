"""``pmm merge OTHER``: join another copy of this mind that diverged from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pmm.cli import output
from pmm.cli.options import JsonOpt, MindOpt, mind_path


def register(app: typer.Typer) -> None:
    app.command()(merge)


def merge(
    other: Annotated[Path, typer.Argument(help="The other copy: a mind file or a pmm JSONL export of the same mind.", metavar="OTHER")],
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Say what would be merged; write nothing.")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Join another copy of this mind that diverged from it (verified whole first).

    The other copy's events after the last one both share are appended as new events, with
    where each came from; those already here (merged before, or the same note or import on
    both) are skipped. Merging each copy into the other gives both the same projections
    (docs/merge.md); merging again adds nothing.
    """
    from pmm.services import merge as merging

    result = merging.merge(mind_path(mind), other, dry_run=dry_run, notify=output.message)
    if json:
        output.emit_json(result.to_json())
        return
    output.message(result.summary())
