"""``pmm commitments``: what the mind has committed to, and the user's hand in it (open, close
with evidence, reopen, drop). Every change is an event; a close names evidence or is refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from pmm import errors
from pmm.domain import dynamics
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.domain.growth import since, valid_evidence
from pmm.domain.states import Commitment, CommitmentsState, States
from pmm.ledger import folded
from pmm.ledger.store import TS_FORMAT, Ledger, now_ts
from pmm.services import opening

if TYPE_CHECKING:
    from pmm.services.timetravel import PointJson

RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([mhdw])")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_due(text: str, now: datetime | None = None) -> str:
    """``3h``, ``2d``, ``90m``, ``1w``, or a UTC date/time (``2026-12-01``, ``2026-12-01T09:30``)
    as a ledger timestamp."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if match := RELATIVE.fullmatch(text):
        moment = now + timedelta(**{UNITS[match.group(2)]: float(match.group(1))})
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise errors.UsageError(f"bad due time {text!r}",
                                    hint="use 3h, 2d, 1w, or a UTC date/time such as 2026-12-01T09:30") from None
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime(TS_FORMAT)


class Counts(TypedDict):
    """Each commitment once, by its status now; ``success`` is kept over kept plus lapsed."""

    opened: int
    closed: int
    expired: int
    dropped: int
    open: int
    reopened: int
    success: float | None  # None before any was kept or lapsed


class Row(TypedDict):
    id: int
    text: str
    status: str  # open, closed, expired or dropped
    source: str | None
    opened_at: str
    due: str | None
    closed_by: int | None
    overdue: str | None  # why it is overdue, when it is


class Listing(Counts):
    """``pmm commitments list --json``: the rows, then the counts (and with ``--as-of``, the
    point they stood at)."""

    commitments: list[Row]
    as_of: NotRequired[PointJson]


def listing(path: Path, as_of: str | None = None, notify: opening.Notify | None = None) -> Listing:
    """Every commitment with its status, now or (``as_of``: an id or a date) as it was then,
    overdue by that point's time; ``notify`` hears where the replay of the past began."""
    then = None
    with opening.open_read(path) as mind:
        if as_of is None:
            states, _ = folded.state(mind)
            now = now_ts()
        else:
            from pmm.services import timetravel

            then = timetravel.at(mind, as_of)
            states, now = then.states, then.point.ts
            if notify is not None:
                notify(then.said())
        state = states["commitments"]
        done = dict(state["done"])  # read while the mind is open
    overdue = dict(dynamics.overdue(states, now))

    def row(key: str, entry: Commitment, status: str) -> Row:
        return {"id": int(key), "text": entry["text"], "status": status, "source": entry.get("source"),
                "opened_at": entry["opened_at"], "due": entry.get("due"),
                "closed_by": entry.get("closed_id"), "overdue": overdue.get(int(key))}

    rows = [row(k, v, "open") for k, v in state["open"].items()]
    rows += [row(k, v, v["status"]) for k, v in done.items()]
    rows.sort(key=lambda r: r["id"])
    found: Listing = {"commitments": rows, **counts(state)}  # type: ignore[typeddict-item]
    if then is not None:
        found["as_of"] = then.as_json()
    return found


def counts(state: CommitmentsState) -> Counts:
    """Each commitment counted once, by its status now (``closed`` kept, ``expired`` lapsed,
    ``dropped``, ``open``: they add up to ``opened``), and success: kept over kept plus lapsed
    (None before any is either). A reopened commitment is open, not kept; ``reopened`` counts
    reopenings."""
    current = state["current"]
    kept, lapsed = current["closed"], current["expired"]
    return {"opened": state["opened"], "closed": kept, "expired": lapsed,
            "dropped": current["dropped"], "open": len(state["open"]), "reopened": state["reopened"],
            "success": round(kept / (kept + lapsed), 4) if kept + lapsed else None}


def open_(path: Path, text: str, due: str | None, notify: opening.Notify) -> Event:
    text = " ".join(text.split())
    if len(text) < 3:
        raise errors.UsageError("say what the commitment is (at least 3 characters)")
    meta: dict[str, Any] = {"source": "user"}
    if due:
        meta["due"] = parse_due(due)
    with opening.open_write(path, notify) as mind:

        def drafts(_first: int) -> list[Draft]:
            for entry in folded.state(mind)[0]["commitments"]["open"].values():
                if dynamics.same_commitment(entry["text"], text):
                    raise errors.UsageError(f"already committed to {entry['text']!r} (#{entry['opened_id']})")
            return [Draft(ev.COMMITMENT_OPENED.name, text, meta)]

        (event,) = mind.append(drafts)
    return event


def close(path: Path, commitment: int, evidence: list[int], statement: str) -> Event:
    statement = statement.strip()
    if not statement:
        raise errors.UsageError("say how it was kept (--statement TEXT)")
    if not evidence:
        raise errors.UsageError("a commitment closes only with evidence", hint="--evidence EVENT_ID (repeatable)")
    with _existing(path) as mind:

        def drafts(first_id: int) -> list[Draft]:
            entry = _open_entry(folded.state(mind)[0], commitment)
            if not valid_evidence(sorted(set(evidence)), since(entry), first_id):
                raise errors.UsageError(
                    f"evidence must name events after #{since(entry)} (when it was opened or reopened)"
                    f" and no later than #{first_id - 1}", hint="find them with pmm log or pmm search")
            return [Draft(ev.COMMITMENT_CLOSED.name, statement,
                          {"commitment": commitment, "evidence": sorted(set(evidence)), "source": "user"})]

        (event,) = mind.append(drafts)
    return event


def reopen(path: Path, commitment: int, reason: str, due: str | None) -> Event:
    meta: dict[str, Any] = {"commitment": commitment, "source": "user"}
    if due:
        meta["due"] = parse_due(due)
    with _existing(path) as mind:

        def drafts(_first: int) -> list[Draft]:
            state = folded.state(mind)[0]["commitments"]
            if str(commitment) not in state["done"]:
                where = "open" if str(commitment) in state["open"] else "unknown"
                raise errors.UsageError(f"commitment #{commitment} is {where}; only closed, expired or"
                                        " dropped ones reopen", hint="see pmm commitments list --all")
            return [Draft(ev.COMMITMENT_REOPENED.name, reason.strip() or "reopened by the user", meta)]

        (event,) = mind.append(drafts)
    return event


def drop(path: Path, commitment: int, reason: str) -> Event:
    """The owner drops a commitment, whatever its status: it then counts as neither open, kept
    nor lapsed (a reopen brings it back)."""
    reason = " ".join(reason.split())
    if not reason:
        raise errors.UsageError("say why the commitment is dropped (--reason TEXT)")
    with _existing(path) as mind:

        def drafts(_first: int) -> list[Draft]:
            state = folded.state(mind)[0]["commitments"]
            entry = state["open"].get(str(commitment)) or state["done"].get(str(commitment))
            if entry is None:
                raise errors.UsageError(f"#{commitment} is not a commitment", hint="see pmm commitments list --all")
            if entry.get("status") == "dropped":
                raise errors.UsageError(f"commitment #{commitment} is dropped already (event #{entry['closed_id']})",
                                        hint="pmm commitments reopen ID brings it back")
            return [Draft(ev.COMMITMENT_DROPPED.name, reason, {"commitment": commitment, "source": "user"})]

        (event,) = mind.append(drafts)
    return event


def _existing(path: Path) -> Ledger:
    """A writer on a mind that exists: changing a commitment never creates a mind (exit 4)."""
    opening.open_read(path).close()
    return opening.open_write(path, lambda _m: None)


def _open_entry(states: States, commitment: int) -> Commitment:
    state = states["commitments"]
    entry = state["open"].get(str(commitment))
    if entry is None:
        done = state["done"].get(str(commitment))
        status = "not a commitment" if done is None else done.get("status", "not a commitment")
        raise errors.UsageError(f"#{commitment} is not open ({status})", hint="see pmm commitments list")
    return entry
