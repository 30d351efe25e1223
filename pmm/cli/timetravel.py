"""``pmm diff``: what changed between two points of a mind, or between two minds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

from pmm.cli import output
from pmm.cli.declare import Argument
from pmm.cli.options import JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    import typer


def register(app: typer.Typer) -> None:
    app.command()(diff)


def diff(
    first: Annotated[str, Argument(metavar="A", help="From: an event id, a date (the last event recorded at or before it), now, or a mind file or export.")],
    second: Annotated[Optional[str], Argument(metavar="B", help="To (default: now): the same forms as A.", show_default=False)] = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Say what changed from A to B: name, stage, traits, commitments, events, models.

    A and B are points of the mind (ids, or dates: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], today,
    yesterday, in local time, or with Z or +HH:MM), now, or files: another mind file or a pmm
    JSONL export (read as hostile input, at its newest event; checked line by line, never
    written anywhere). Between two points of one mind each trait that moved names the
    reflections (and retractions) that moved it. Nothing is written. See docs/time.md.
    """
    from pmm.services import diff as diffing

    report = diffing.diff(mind_path(mind), first, second)
    if json:
        output.emit_json(report)
        return
    output.out("\n".join(report["summary"]))
