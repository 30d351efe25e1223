"""``pmm reflect``: the mind looking back on what happened."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from pmm.cli import output
from pmm.cli.options import JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    from pmm.services.reflection import OutcomeJson
    from pmm.services.reports import Meta


def register(app: typer.Typer) -> None:
    app.command()(reflect)


def reflect(
    if_due: Annotated[bool, typer.Option("--if-due", help="Only when one is due by the stage's cadence and no back-off after a failure holds it (for cron); otherwise exit 0 (a back-off is said on stderr).")] = False,
    max_windows: Annotated[int, typer.Option("--max-windows", min=1, max=10_000, metavar="N", help="Reflect on at most N windows of history (one model call each) this run; the rest is left for the next run, and the output says so.")] = 10,  # reflection.MAX_WINDOWS
    consolidate: Annotated[bool, typer.Option("--consolidate", help="Also condense the reflections no summary covers yet into a new summary now (otherwise done once 8 have accumulated).")] = False,
    model: Annotated[Optional[str], typer.Option("--model", help="Reflect with this model (a name from `pmm model list`) this once.")] = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Reflect on unreflected history, oldest first, one window at a time until caught up.

    Each window (one model call, one transaction) is every event not reflected on yet, from the
    oldest, as many as fit the model's context window; the reflection records exactly the ids
    it was shown. Progress goes to stderr; with -q a success prints nothing. A failure stops the
    run (exit 5) with the windows before it kept, and makes --if-due back off. See
    docs/mind-model.md.
    """
    from pmm.errors import PmmError
    from pmm.services import reflection

    done: list[reflection.Outcome] = []

    def recorded(outcome: reflection.Outcome) -> None:
        done.append(outcome)
        if not json and not output.QUIET:  # -q: a success prints nothing (cron mails on output)
            output.out("\n".join(render(outcome.as_json())))

    try:
        run = reflection.reflect(mind_path(mind), if_due=if_due, model_name=model, notify=output.message,
                                 trigger="due" if if_due else "manual", max_windows=max_windows,
                                 summarize=consolidate, recorded=recorded)
    except PmmError as exc:
        if json and done:  # the windows before the failure are recorded: say which
            output.partial(reflection.Run(f"stopped: {exc.message}", done).as_json())
        raise
    if json:
        output.emit_json(run.as_json())
        return
    if run.summary is not None and not output.QUIET:
        output.out("\n".join(render_summary(run.summary.as_json())))
    if run.left and run.recorded:  # a run that reflected on nothing says why below
        output.message(f"Not caught up: {run.reason}; run `pmm reflect` again, or raise --max-windows")
    elif not run.recorded and run.summary is None and (run.backed_off or not if_due):
        output.message(f"No reflection: {run.reason}")


def render_summary(summary: Meta) -> list[str]:
    from pmm.services.consolidation import cite

    return [f"Summary #{summary['id']} (of reflections {cite(summary['covers'])}, {summary['model_name']}):",
            summary["text"]]


def render(report: OutcomeJson) -> list[str]:
    from pmm.services.reflection import MAX_TRAIT_STEP

    reflection = report["reflection"]
    assert reflection is not None, "only a recorded reflection is rendered"
    lines = [f"Reflection #{reflection['id']} (events #{reflection['first_id']}-#{reflection['last_id']},"
             f" {report['model']}):", reflection["text"] or "(no text)"]
    for change in report["changes"]:
        meta, content = change["meta"], output.one_line(change["content"], 300)  # one line each
        if change["kind"] == "trait_adjusted":
            step = max(-MAX_TRAIT_STEP, min(MAX_TRAIT_STEP, meta["delta"]))
            asked = f" (asked {meta['delta']:+.3f}; one step is at most {MAX_TRAIT_STEP})" if step != meta["delta"] else ""
            lines.append(f"  trait {meta['trait']} {step:+.3f}{asked}: {content}")
        elif change["kind"] == "commitment_opened":
            lines.append(f"  committed (#{change['id']}): {content}")
        elif change["kind"] == "commitment_closed":
            lines.append(f"  kept #{meta['commitment']} (evidence {', '.join(f'#{e}' for e in meta['evidence'])}): {content}")
        elif change["kind"] == "commitment_expired":
            lines.append(f"  expired #{meta['commitment']}: {content}")
        elif change["kind"] == "mind_named":
            lines.append(f"  took the name {content}")
    for item in report["rejected"]:
        lines.append(f"  ignored: {output.one_line(item, 300)}")
    return lines
