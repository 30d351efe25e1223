"""``pmm health``: one line per check of the mind's file, chain, cache, cadence and models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pmm.cli import output
from pmm.cli.declare import Option
from pmm.cli.options import JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    import typer

MARKS = {"ok": ("✓", "32"), "warn": ("!", "33"), "fail": ("✗", "31")}


def register(app: typer.Typer) -> None:
    app.command()(health)


def health(
    online: Annotated[bool, Option("--online", help="Also ask the chat and reflection models' providers whether they answer (opens connections).")] = False,
    strict: Annotated[bool, Option("--strict", help="Treat warnings as failures (exit 7 when nothing failed).")] = False,
    repair: Annotated[bool, Option("--repair", help="First rebuild the search index, projection cache, sessions table and recall vectors from the events (writes the mind).")] = False,
    full: Annotated[bool, Option("--full", help="Check every event's hash and read every search index entry (by default the events an earlier check of this file verified are trusted).")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Check the mind: file, chain, projection cache, search index, recall vectors, reflection cadence, commitments; models with --online.

    Exit 0 when nothing failed (warnings too, unless --strict); 3 when the chain or its replay
    fails (integrity); 5 when only a model fails (--online); with --strict, 7 when there are
    warnings and no failure. 1 is only ever an unexpected error, as for every command.

    The chain is checked from where the last check of this file ended (kept in pmm's state
    dir, never in the mind): the chain line says which events were trusted and when they were
    verified; --full (or `pmm verify`) checks every event.
    """
    from pmm.services import health as service

    if repair:
        service.repair(mind_path(mind))
        output.message("Rebuilt the search index, the projection cache and the recall vectors from the events")
    with output.progress("Checking the chain", None) as (advance, set_total):
        report = service.check(mind_path(mind), online=online, full=full, total=set_total,
                               on_progress=advance)
    if json:
        output.emit_json(report.as_json(strict))
    else:
        for item in report.checks:
            output.out(f"{item.name}: {item.detail}", mark=MARKS[item.status])
    code = report.exit_code(strict)
    if code:
        from pmm.cli.leaving import Exit

        raise Exit(code)
