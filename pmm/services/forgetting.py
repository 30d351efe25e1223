"""``pmm forget``: an event's content removed from the mind for good, the chain still verifiable.

Only a ledger-format-2 mind can forget: its hashes commit to a digest of each event's content
(pmm.ledger.chain), which stays as the forgotten event's tombstone. What is removed and how is
pmm.ledger.store.Ledger.forget's; this module decides what may be forgotten and records who
asked and why in a ``content_forgotten`` event, appended in the same transaction.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

from pmm import errors
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.ledger.store import Ledger
from pmm.services import opening

UPGRADE_HINT = "`pmm upgrade` rewrites it as ledger format 2 (docs/ledger-format.md), then forget"


class ForgetJson(TypedDict):
    """``pmm forget --json``: the event forgotten and the event that records it."""

    forgotten: int
    kind: str
    content_digest: str
    recorded_by: int
    reason: str
    wal_truncated: bool


def refusal(target: Event, forgotten: dict[int, str]) -> str | None:
    """Why ``target`` cannot be forgotten, or None."""
    if target.id == 1:
        return "event #1 is the mind's genesis (mind_created); it cannot be forgotten"
    if target.kind == ev.CONTENT_FORGOTTEN.name:
        return f"event #{target.id} records a forgetting itself; it cannot be forgotten"
    if target.id in forgotten:
        return f"event #{target.id}'s content is forgotten already"
    return None


def _refuse(mind: Ledger, event_id: int) -> None:
    """Raise the usage error that forgetting ``event_id`` in ``mind`` meets, if any (the
    transaction that forgets asks ``refusal`` once more, under the write lock)."""
    if not mind.tombstones:
        raise errors.UsageError(
            f"{mind.path} is ledger format {mind.ledger_format}: its hashes cover each event's"
            " content itself, so no content can be removed without breaking the chain",
            hint=UPGRADE_HINT)
    target = mind.event(event_id)
    if target is None:
        head = mind.head()[0]
        raise errors.UsageError(f"there is no event #{event_id}",
                                hint=f"this mind's events are #1-#{head}; see pmm log")
    why = refusal(target, mind.forgotten())
    if why is not None:
        raise errors.UsageError(why, hint="see pmm log")


def _login() -> str:
    try:
        return getpass.getuser()[:64] or "unknown"
    except (OSError, KeyError, ImportError):  # no login name in this environment
        return "unknown"


def forget(path: Path, event_id: int, reason: str) -> ForgetJson:
    """Forget event ``event_id``'s content; returns what was done."""
    reason = " ".join(reason.split())
    with opening.open_read(path) as reading:  # a refusal leaves the file untouched, byte for byte
        _refuse(reading, event_id)
    with opening.open_write(path, lambda _m: None) as mind:
        _refuse(mind, event_id)  # again: another writer may have changed it in between

        def draft(target: Event, digest: str) -> Draft:
            why = refusal(target, mind.forgotten())
            if why is not None:
                raise errors.UsageError(why, hint="see pmm log")
            return Draft(ev.CONTENT_FORGOTTEN.name, reason,
                         {"event": target.id, "content_digest": digest, "by": _login(),
                          "source": "user"})

        target, event = mind.forget(event_id, draft)
        truncated = mind.truncate_wal()
    return {"forgotten": target.id, "kind": target.kind, "content_digest": event.meta["content_digest"],
            "recorded_by": event.id, "reason": reason, "wal_truncated": truncated}


class UpgradeJson(TypedDict):
    """``pmm upgrade --json``: whether the chain was rewritten, and where it stands."""

    upgraded: bool
    ledger_format: int
    mind_id: str
    events: int
    head: str
    format1_events: int | None
    format1_head: str | None
    recorded_by: int | None


def upgrade(path: Path, notify: Callable[[str], None]) -> UpgradeJson:
    """Rewrite a format-1 mind as ledger format 2 (docs/ledger-format.md, "Upgrading a format-1
    mind"); a format-2 mind is left as it is. The witness takes the new chain as this mind's
    history (a deliberate rewrite, like an accepted rollback), so it is not reported as forked."""
    from pmm.domain import checkpoint
    from pmm.ledger.store import Ledger
    from pmm.services import witness

    opening.open_read(path).close()  # a missing file is refused, never created

    def upgrading(old: int, new: int) -> None:
        notify(f"Upgrading {path} from schema {old} to {new}")

    with Ledger.open(path, write=True, on_migrate=upgrading) as mind:
        def draft(events: int, head: str) -> Draft:
            return Draft(ev.LEDGER_UPGRADED.name,
                         f"Ledger upgraded from format 1 ({events} events) to format 2",
                         {"from_format": 1, "format1_events": events, "format1_head": head})

        event = mind.upgrade_format(draft)
        size, head = mind.head()
        if event is not None:
            with contextlib.suppress(OSError):  # an unwritable state dir costs the protection only
                witness.observe(checkpoint.of(mind.mind_id, size, head), mind.hash_at, path, "accept")
        meta = event.meta if event is not None else {}
        return {"upgraded": event is not None, "ledger_format": mind.ledger_format,
                "mind_id": mind.mind_id, "events": size, "head": head,
                "format1_events": meta.get("format1_events"), "format1_head": meta.get("format1_head"),
                "recorded_by": event.id if event is not None else None}
