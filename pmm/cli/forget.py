"""``pmm forget ID``: remove one event's content for good, the chain and signatures still holding;
``pmm upgrade``: rewrite a ledger-format-1 mind as format 2, which forgetting needs."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pmm.cli import output
from pmm.cli.options import MAX_ID, JsonOpt, MindOpt, mind_path


def register(app: typer.Typer) -> None:
    app.command()(forget)
    app.command()(upgrade)


def forget(
    event: Annotated[int, typer.Argument(min=1, max=MAX_ID, metavar="ID", help="The id of the event whose content to forget (see pmm log).")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the content_forgotten event).")] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Forget without asking (for scripts).")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Forget an event's content: gone from the mind, its search index, caches and WAL.

    The event keeps its id, kind, time and meta, and its content's digest (its tombstone), so
    `pmm verify` and signatures made before still pass; a content_forgotten event records who
    asked, why and when. Later backups and exports never hold the content. Needs ledger format 2
    (`pmm upgrade` converts an older mind). Asks on a terminal; without one, pass --yes."""
    from pmm.errors import INTERRUPTED, UsageError
    from pmm.services import forgetting

    path = mind_path(mind)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"forgetting event #{event} cannot be undone and needs the owner's"
                             " confirmation", hint=f"pmm forget {event} --yes")
        if not typer.confirm(f"Forget the content of event #{event} for good?", default=False, err=True):
            output.message("Nothing forgotten.")
            raise typer.Exit(INTERRUPTED)
    done = forgetting.forget(path, event, reason)
    text = (f"Forgot the content of event #{done['forgotten']} ({done['kind']}); recorded as"
            f" event #{done['recorded_by']}. Its digest sha256:{done['content_digest'][:16]}... stays"
            " in the chain.")
    if not done["wal_truncated"]:
        text += ("\nAnother process has the mind open: the WAL (which may still hold old pages) is"
                 " emptied when the last writer closes it.")
    output.report(done, json, text)


def upgrade(
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Rewrite a ledger-format-1 mind as format 2 (needed by pmm forget); a no-op on format 2.

    Every event keeps its id, time, kind, content and meta and is hashed again; a
    ledger_upgraded event records the old chain's head. A signature made before stays
    verifiable while no event it covers is forgotten; sign the new head (pmm sign) after.
    Backups and exports made before stay format 1."""
    from pmm.services import forgetting

    done = forgetting.upgrade(mind_path(mind), output.message)
    if not done["upgraded"]:
        text = f"Already ledger format {done['ledger_format']}: nothing to do."
    else:
        text = (f"Upgraded to ledger format 2: {done['events']:,} events, head {done['head'][:16]}...;"
                f" the format-1 head {str(done['format1_head'])[:16]}... is recorded in event"
                f" #{done['recorded_by']}.\nSign the new head (pmm sign) to replace older signatures.")
    output.report(done, json, text)
