"""``pmm reflections list|show|retract``: the mind's reflections, and the owner's overrule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pmm.cli import output
from pmm.cli.declare import Argument, Option, add_group
from pmm.cli.options import MAX_ID, JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    import typer

    from pmm.services.reflections import Listing, Row, Shown



IdArg = Annotated[int, Argument(min=1, max=MAX_ID, help="The reflection's id (its event id).")]


def register(app: typer.Typer) -> None:
    add_group(app, "reflections", "The mind's reflections: list, show one, retract one (the owner overrules the mind).",
              {"list": list_, "show": show, "retract": retract})


def list_(
    all_: Annotated[bool, Option("--all", "-a", help="Also retracted ones (marked).")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the reflections, oldest first.

    Each with its id, date, the events it covered, the model and its first words; retracted
    ones only with --all, marked RETRACTED."""
    from pmm.services import reflections

    report = reflections.listing(mind_path(mind), all_)
    if json:
        output.emit_json(report)
        return
    output.out("\n".join(render_list(report)))


def _range(row: Row) -> str:
    return f"#{row['first_id']}-#{row['last_id']}" if row["first_id"] is not None else "?"


def render_list(report: Listing) -> list[str]:
    retracted = f", {report['retracted']} retracted" if report["retracted"] else ""
    lines = [f"Reflections: {report['count']}{retracted}"]
    for row in report["reflections"]:
        mark = "  RETRACTED" if row["retracted"] else ""
        lines.append(f"  #{row['id']:<6} {output.when(row['said_at'])}  events {_range(row)}"
                     f"  {row['model'] or '?'}  {output.one_line(row['first_words'], 60)}{mark}")
    return lines


def show(reflection: IdArg, mind: MindOpt = None, json: JsonOpt = False) -> None:
    """Show one reflection in full.

    Its text, the events it covered, model and tokens, the events it led to, what of the
    model's answer was rejected, and whether it was retracted and why."""
    from pmm.services import reflections

    report = reflections.show(mind_path(mind), reflection)
    if json:
        output.emit_json(report)
        return
    output.out("\n".join(render_show(report)))


def render_show(r: Shown) -> list[str]:
    tokens = (f", {r['tokens_in']} tokens in, {r['tokens_out']} out"
              if r["tokens_in"] is not None or r["tokens_out"] is not None else "")
    lines = [f"Reflection #{r['id']} ({output.when(r['said_at'])}, events {_range(r)},"
             f" {r['model'] or 'model unknown'}{tokens})"]
    if r["retracted"]:
        lines.append(f"RETRACTED by event #{r['retracted_by']}: {output.one_line(r['retraction_reason'] or '', 200)}")
    lines.append(r["text"] or "(no text)")
    for event in r["led_to"]:
        lines.append(f"  led to #{event['id']} {event['kind']}: {output.one_line(event['content'], 200)}")
    for item in r["rejected"]:
        lines.append(f"  rejected: {output.one_line(str(item), 200)}")
    return lines


def retract(
    reflection: IdArg,
    reason: Annotated[str, Option("--reason", "-r", help="Why the reflection is overruled.")],
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Overrule a reflection (one of the last 100).

    It stays in the chain, but counts as if never recorded: its trait steps are undone, the
    commitments it opened are dropped, those it closed are open again, and it is no longer the
    latest reflection or recalled."""
    from pmm.services import reflections

    report = reflections.retract(mind_path(mind), reflection, reason)
    if json:
        output.emit_json(report)
        return
    undid = [f"{t} {a:.2f} -> {b:.2f}" for t, (a, b) in report["traits"].items()]
    undid += [f"dropped #{c}" for c in report["dropped"]]
    undid += [f"#{c} open again" for c in report["reopened"]]
    output.message(f"Retracted reflection #{reflection} (event #{report['event']['id']})"
                   + (f": {', '.join(undid)}" if undid else ""))
