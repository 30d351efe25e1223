"""Commands that move a mind: export and import."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

from pmm.cli import output
from pmm.cli.declare import Argument, Option
from pmm.cli.options import JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    import typer


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    md = "md"


class ImportFormat(str, Enum):
    jsonl = "jsonl"
    chatgpt = "chatgpt"
    claude = "claude"


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command("import")(import_)


def export(
    fmt: Annotated[ExportFormat, Option("--format", "-f", help="jsonl (verifiable) or md.")] = ExportFormat.jsonl,
    out_file: Annotated[Optional[Path], Option("-o", "--output", help="Write to FILE instead of stdout: whole or not at all, through a symlink, straight into a device such as /dev/null; never over a mind or any SQLite file.", show_default=False)] = None,
    since: Annotated[int, Option("--since", min=1, max=2**63 - 1, help="Start at this event id.")] = 1,
    mind: MindOpt = None,
    json: Annotated[bool, Option("--json", help="With -o: a JSON summary on stdout (the export itself is the data otherwise).")] = False,
) -> None:
    """Stream the mind's events as JSONL (default, on stdout) or Markdown.

    JSONL is the ledger exactly as stored (ts is when each event was recorded). Markdown is a
    transcript that dates each event when it was said: an import at its original time.
    """
    from pmm.errors import UsageError
    from pmm.services import opening, portability

    if json and out_file is None:
        raise UsageError("--json needs -o FILE: without it the export itself is written to stdout")
    source = mind_path(mind)
    with opening.open_read(source) as opened:
        if out_file is None:
            portability.export(opened, sys.stdout, fmt=fmt.value, since=since)
            return
        total = max(0, opened.head()[0] - since + 1)
        with output.progress("Exporting", total) as (advance, _), \
                portability.atomic_text_file(out_file.expanduser(), reading=(source,)) as handle:
            count = portability.export(opened, handle, fmt=fmt.value, since=since, on_progress=advance)
        mind_id, head = opened.mind_id, opened.head()
    if json:
        summary: portability.ExportJson = {"file": str(out_file), "format": fmt.value, "events": count,
                                           "since": since, "mind_id": mind_id, "head_id": head[0],
                                           "head": head[1]}
        output.emit_json(summary)
    output.message(f"Exported {output.plural(count, 'event')} to {out_file}")


def import_(
    source: Annotated[str, Argument(help="Export file to read, or - for stdin.", metavar="FILE|-")],
    fmt: Annotated[Optional[ImportFormat], Option("--format", "-f", help="Read FILE as jsonl (a pmm export), chatgpt or claude (a data export's conversations.json or its .zip). Default: told from the file itself.", show_default=False)] = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Import a pmm export (verified first), or a ChatGPT / Claude data export (.zip or conversations.json).

    Of a ChatGPT or Claude conversation only the thread the user kept is imported; images and
    files become placeholders such as [image: NAME], voice messages their transcripts, and the
    summary says what was left out.
    """
    from pmm.services import import_source, portability

    path = mind_path(mind)
    with portability.open_source(source, sys.stdin.buffer) as (stream, name):
        with output.progress("Importing", None) as (advance, _):
            result = import_source.import_any(path, stream, name, fmt.value if fmt else None,
                                              notify=output.message, on_progress=advance)
    if json:
        output.emit_json(result.to_json())
        return
    if result.appended:
        output.message(f"Imported {output.plural(result.appended, 'new event')} (head is now #{result.head_id})")
    elif result.already_present:
        output.message(f"Nothing to import: {'the one event is' if result.already_present == 1 else f'all {result.already_present:,} events are'} already in {path}")
    else:
        output.message("Nothing to import: the input holds no events")
    if result.skipped is not None and result.appended:  # a re-import adding nothing left out nothing new
        from pmm.services.chat_import import skipped_line

        if line := skipped_line(result.skipped):
            output.message(line)
