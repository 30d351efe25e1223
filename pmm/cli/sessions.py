"""``pmm sessions``: the conversations the mind holds, its own and imported ones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

from pmm.cli import output
from pmm.cli.declare import Option
from pmm.cli.options import MAX_ID, JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    import typer

    from pmm.services.sessions import Session


def register(app: typer.Typer) -> None:
    app.command()(sessions)


def sessions(
    limit: Annotated[Optional[int], Option("-n", "--limit", min=1, max=MAX_ID, help="Only the N most recent sessions.")] = None,
    newest_first: Annotated[bool, Option("--newest-first", help="List the most recent session first (default: last, next to the prompt).")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the sessions: id, title, when they were first and last said, how many messages.

    Imported conversations are listed with their original times. `pmm chat -c` continues the
    most recent one (the last listed), `pmm chat --session ID` any of them (the start of an id
    is enough when no other id shares it).
    """
    from pmm.services import sessions as service

    found = service.listing(mind_path(mind), limit)
    if newest_first:
        found.reverse()
    if json:
        output.emit_json([s.as_json() for s in found])
        return
    if not found:
        output.message("No sessions yet: `pmm chat` starts one.")
        return
    for line in render(found):
        output.out(line)


def render(found: list[Session]) -> list[str]:
    """One line a session: short id, dates, messages, title."""
    lines = []
    for s in found:
        first, last = output.when(s.first), output.when(s.last)  # local time, as log shows it
        span = first if first == last else f"{first} – {last[11:] if last[:10] == first[:10] else last}"
        count = output.plural(s.messages, "message")
        source = f" [{s.source}]" if s.source else ""
        lines.append(f"{s.id[:12]}  {span}  {count}{source}  {s.title or '(untitled)'}")
    return lines
