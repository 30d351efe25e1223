"""Times for people: a ledger timestamp in the local time zone, and the dates a person types
(``--since``, ``--until``, ``--on``) as ledger timestamps. See docs/time.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pmm import errors


def shown(said: str, recorded: str) -> str:
    """An event's time for a person, from its ``said_at`` and ``ts``, in the local time zone:
    ``2025-03-01 10:00``, and for an import also the day it was recorded:
    ``2025-03-01 10:00 (imported 2026-12-01)``."""
    when = local(said)
    return when if said == recorded else f"{when} (imported {local(recorded)[:10]})"


def local(ts: str) -> str:
    """A ledger timestamp (UTC) as a person reads it: ``2025-03-01 14:05`` in the local time zone
    (the ``TZ`` environment variable, else the system's). Not a timestamp: shown as it is, cut."""
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts[:16].replace("T", " ")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


# -- dates a person types: --since, --until, --on -------------------------------------------------

TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # the ledger's (pmm.ledger.store.TS_FORMAT)
DATE_FORMS = "YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], today or yesterday"
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2})(:\d{2})?)?(Z|[+-]\d{2}:\d{2})?")


def period(text: str, now: datetime) -> tuple[str, str]:
    """The stretch of time ``text`` names, as ledger timestamps ``[start, end)`` in UTC: a day
    (``2025-03-01``, ``today``, ``yesterday``), a minute (``2025-03-01T10:00``) or a second
    (``2025-03-01T10:00:30``). Without an offset (``Z``, ``+02:00``) the time is local, as
    ``now`` (an aware datetime) has it. Raises ``UsageError`` for anything else."""
    word = text.strip().lower()
    if word in ("today", "yesterday"):
        day = now.astimezone().date() - timedelta(days=word == "yesterday")
        after = day + timedelta(days=1)
        return (_ts(datetime(day.year, day.month, day.day).astimezone()),
                _ts(datetime(after.year, after.month, after.day).astimezone()))
    match = _DATE.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError(text)
        date, minute, second, offset = match.groups()
        moment = datetime.fromisoformat(f"{date}T{minute or '00:00'}{second or ''}")
        step = timedelta(days=1) if minute is None else timedelta(minutes=1) if second is None else timedelta(seconds=1)
        if offset:
            zone = datetime.fromisoformat(f"2000-01-01T00:00{'+00:00' if offset == 'Z' else offset}").tzinfo
            start, end = moment.replace(tzinfo=zone), (moment + step).replace(tzinfo=zone)
        else:  # local wall-clock time: the end of a local day is the next day's local midnight
            start, end = moment.astimezone(), (moment + step).astimezone()
    except (ValueError, OverflowError):  # no such day, or beyond what a datetime holds
        raise errors.UsageError(f"{text!r} is not a date", hint=f"dates are {DATE_FORMS} (local time)") from None
    return _ts(start), _ts(end)


def seconds_since(ts: str, now: datetime | None = None) -> float:
    """How long ago a ledger timestamp was (``now``: the present)."""
    then = datetime.strptime(ts, TS_FORMAT).replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - then).total_seconds()


def _ts(moment: datetime) -> str:
    """``moment`` as the ledger's UTC text, the year always four digits (strftime writes 999 for
    the year 999, which would compare wrongly with the stored text)."""
    utc = moment.astimezone(UTC)
    return utc.replace(year=2000).strftime(TS_FORMAT).replace("2000", f"{utc.year:04d}", 1)


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


def spelled(day: str) -> str:
    """"2023-05-08" as "8 May 2023": as plain to a model, and fewer tokens than ISO's ten
    digits and dashes in a vocabulary that splits digits (the embedded model's: 7 against 10)."""
    year, month, date = day[:4], int(day[5:7]), int(day[8:10])
    return f"{date} {MONTHS[month - 1]} {year}" if 1 <= month <= 12 else day
