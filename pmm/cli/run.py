"""``pmm run --autonomous``: the mind looks after itself in the foreground until stopped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from pmm.cli import output
from pmm.cli.options import JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    from pmm.services.autonomy import Summary


def register(app: typer.Typer) -> None:
    app.command(name="run")(run_)


def run_(
    autonomous: Annotated[bool, typer.Option("--autonomous", help="Required: let the mind act on its own (it spends model tokens).")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0, max=7 * 86400, metavar="S", help="Seconds between cycles.")] = 60,
    max_cycles: Annotated[Optional[int], typer.Option("--max-cycles", min=1, max=2**63 - 1, metavar="N", help="Stop after N cycles (default: until stopped).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", min=1, max=2**63 - 1, metavar="N", help="Stop once reflections have used N tokens.")] = None,
    budget: Annotated[Optional[float], typer.Option("--budget", min=0, max=1_000_000_000, metavar="AMOUNT", help="Most this run may spend, in the model's currency: a step that could pass it is refused before its request and the run stops. The model's daily cap (pmm model set NAME --max-cost) holds too: a cycle it refuses waits for the next UTC day.")] = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Loop: expire overdue commitments and reflect when due (catching up, backing off after a failure); Ctrl-C or SIGTERM stops it (exit 130 / 0)."""
    import threading

    from pmm.errors import INTERRUPTED, PmmError, UsageError
    from pmm.services import autonomy

    if not autonomous:
        raise UsageError("autonomy is opt-in: `pmm run` reflects through the model and spends tokens"
                         " on its own only when you pass --autonomous",
                         hint="pmm run --autonomous [--interval S] [--max-cycles N] [--max-tokens N]")
    stop, summary = threading.Event(), autonomy.Summary()
    seen = autonomy.Stopping()
    try:
        with autonomy.stop_on_signals(stop, output.message) as seen:
            autonomy.run(mind_path(mind), interval=interval, max_cycles=max_cycles,
                         max_tokens=max_tokens, stop=stop, notify=output.message, summary=summary,
                         budget=budget)
    except autonomy.StepAbandoned:  # the grace ran out: the step unwound, its transaction rolled back
        summary.stopped_by, summary.abandoned = "signal", True
    except KeyboardInterrupt:  # a second signal: stop at once (a transaction rolls back)
        summary.stopped_by = "interrupted"
        _report(summary, json)
        raise typer.Exit(INTERRUPTED) from None
    except PmmError:
        if json:  # what was done before the error: the data of the error envelope
            output.partial(summary.as_json() if summary.cycles else None)
        else:
            _report(summary, json)  # what was done before the error, then the error itself
        raise
    if seen.interrupted:
        summary.stopped_by = "interrupted"
    _report(summary, json)
    if seen.interrupted:
        raise typer.Exit(INTERRUPTED)  # Ctrl-C is an interruption (SPEC section 5); SIGTERM a clean stop


def _report(summary: Summary, json: bool) -> None:
    if not summary.cycles:
        return  # refused before it began: the error says why
    if json:
        output.emit_json(summary.as_json())
    else:
        output.message(summary.line())
