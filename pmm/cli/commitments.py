"""``pmm commitments``: what the mind has promised, and the owner's say over it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

from pmm.cli import output
from pmm.cli.declare import Argument, Option, add_group
from pmm.cli.options import MAX_ID, AsOfOpt, JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    import typer

    from pmm.services.commitments import Counts, Listing


def register(app: typer.Typer) -> None:
    add_group(app, "commitments", "What the mind has committed to: list, open, close with evidence, reopen, drop.",
              {"list": list_, "open": open_, "close": close, "reopen": reopen, "drop": drop})


def list_(
    all_: Annotated[bool, Option("--all", "-a", help="Also closed, expired and dropped ones.")] = False,
    as_of: AsOfOpt = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Open commitments (with --all, every one), with due times and where each came from.

    With --as-of, as they stood at that event: overdue by that event's time."""
    from pmm.services import commitments

    report = commitments.listing(mind_path(mind), as_of, output.message)
    if json:
        output.emit_json(report)
        return
    output.out("\n".join(render_list(report, all_)))


def render_list(report: Listing, all_: bool = False) -> list[str]:
    rows = [r for r in report["commitments"] if all_ or r["status"] == "open"]
    lines = [counts_line(report)]
    for row in rows:
        due = f"  due {output.when(row['due'])}" if row["due"] else ""
        late = "  OVERDUE" if row["overdue"] else ""
        lines.append(f"  #{row['id']:<6} {row['status']:<8} {output.one_line(row['text'], 70)}{due}{late}")
    return lines


def counts_line(c: Counts) -> str:
    """Commitments by status now, one line (``commitments list`` and ``stats``)."""
    success = f" ({c['success']:.0%} success)" if c["success"] is not None else ""
    dropped = f", {c['dropped']:,} dropped" if c.get("dropped") else ""
    return (f"Commitments: {c['opened']:,} opened, {c['closed']:,} closed{success},"
            f" {c['expired']:,} expired{dropped}, {c['open']:,} open")


def open_(
    text: Annotated[str, Argument(help="What the mind commits to.")],
    due: Annotated[Optional[str], Option("--due", help="When it is due: 3h, 2d, 1w, or a UTC date/time.")] = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Open a commitment by hand."""
    from pmm.services import browse, commitments

    event = commitments.open_(mind_path(mind), text, due, output.message)
    output.report(browse.event_json(event), json, f"Opened commitment #{event.id}")


def close(
    commitment: Annotated[int, Argument(min=1, max=MAX_ID, help="The commitment's id.")],
    evidence: Annotated[list[int], Option("--evidence", "-e", min=1, max=MAX_ID, help="An event showing it was kept (repeatable).")],
    statement: Annotated[str, Option("--statement", "-s", help="How it was kept.")],
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Close a commitment as kept: only with evidence (events after it was opened)."""
    from pmm.services import browse, commitments

    event = commitments.close(mind_path(mind), commitment, evidence, statement)
    output.report(browse.event_json(event), json, f"Closed commitment #{commitment} (event #{event.id})")


def reopen(
    commitment: Annotated[int, Argument(min=1, max=MAX_ID, help="The commitment's id.")],
    reason: Annotated[str, Option("--reason", "-r", help="Why it is open again.")] = "",
    due: Annotated[Optional[str], Option("--due", help="A new due time: 3h, 2d, 1w, or a UTC date/time.")] = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Open a closed, expired or dropped commitment again."""
    from pmm.services import browse, commitments

    event = commitments.reopen(mind_path(mind), commitment, reason, due)
    output.report(browse.event_json(event), json, f"Reopened commitment #{commitment}")


def drop(
    commitment: Annotated[int, Argument(min=1, max=MAX_ID, help="The commitment's id.")],
    reason: Annotated[str, Option("--reason", "-r", help="Why it is dropped.")],
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Drop a commitment, whatever its status.

    It then counts as neither open, kept nor lapsed, in no success figure; reopen brings it back."""
    from pmm.services import browse, commitments

    event = commitments.drop(mind_path(mind), commitment, reason)
    output.report(browse.event_json(event), json, f"Dropped commitment #{commitment} (event #{event.id})")
