"""A failed reflection is remembered, so a due-only run (cron, ``pmm run --autonomous``) backs off.

A failure is this machine's history with its model, not the mind's: it is kept outside the
chain, in one small JSON file per mind file in the user state dir (keyed like the reflect lock),
written whole or not at all (an atomic replace). The wait after ``n`` failures in a row is the
stage's cadence times 2^(n-1), at most ``CAP_SECONDS``; a success clears it, and so does
switching the reflection model (the failures were that model's). An answer refused as about
nothing it was shown also keeps the window it was given (``first_id``, ``shown`` events), so
the next try of the same window shows half of it. A file this module did not write (corrupt, foreign, hostile), or a failure
dated in the future (beyond ``SKEW_SECONDS``: a clock set back), is ignored, never a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from pmm.domain.dynamics import span
from pmm.ledger.store import TS_FORMAT, now_ts

CAP_SECONDS = 86_400  # however often it failed, a due-only run tries again at least daily
STEPS = ("reflection", "consolidation")  # each backs off on its own
MAX_BYTES = 8192
REASON_CHARS = 200
SKEW_SECONDS = 300  # a failure dated later than now by more than this is not believed


class FailureJson(TypedDict):
    """A ``Failure`` as the back-off file keeps it (None fields left out)."""

    failures: int
    at: str
    reason: str
    model: str
    first_id: NotRequired[int]
    shown: NotRequired[int]


@dataclass(frozen=True)
class Failure:
    """The last failure of one step: how many in a row, when, why, with which model, and for a
    refused answer the window it was given (its first event and how many events)."""

    failures: int
    at: str
    reason: str
    model: str
    first_id: int | None = None
    shown: int | None = None

    def wait(self, cadence: float) -> float:
        """Seconds between this failure and the next try of a due-only run."""
        return float(min(CAP_SECONDS, cadence * 2 ** min(self.failures - 1, 30)))

    def left(self, cadence: float, now: datetime | None = None) -> float:
        """Seconds still to wait (0: try again). A time in the future counts as now."""
        then = datetime.strptime(self.at, TS_FORMAT).replace(tzinfo=UTC)
        ago = max(0.0, ((now or datetime.now(UTC)) - then).total_seconds())
        return max(0.0, self.wait(cadence) - ago)

    def explain(self, step: str, cadence: float, now: datetime | None = None) -> str:
        then = datetime.strptime(self.at, TS_FORMAT).replace(tzinfo=UTC)
        ago = max(0.0, ((now or datetime.now(UTC)) - then).total_seconds())
        times = "" if self.failures == 1 else f", {self.failures} times in a row"
        stuck = f"; stuck at #{self.first_id}" if self.first_id is not None and self.failures > 1 else ""
        return (f"the last {step} failed {span(ago)} ago ({self.reason}{times}{stuck});"
                f" next try in {span(self.left(cadence, now))}")

    def as_json(self) -> FailureJson:
        found: dict[str, object] = {k: v for k, v in self.__dict__.items() if v is not None}
        return cast(FailureJson, found)  # Failure's fields, but those that are None


def mind_key(path: Path) -> str:
    """What names a mind file's lock and back-off file: its resolved path, hashed."""
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def _file(path: Path) -> Path:
    from pmm.paths import state_dir

    return state_dir() / "backoff" / f"reflect-{mind_key(path)}.json"


def read(path: Path) -> dict[str, Failure]:
    """The failures recorded for ``path``'s mind, by step; {} when there are none or the file
    is not one this module wrote."""
    try:
        fd = os.open(_file(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}  # a FIFO or a device would block or never end
        raw = os.read(fd, MAX_BYTES + 1)
    except OSError:
        return {}
    finally:
        os.close(fd)
    try:
        data = json.loads(raw) if len(raw) <= MAX_BYTES else None
    except (ValueError, RecursionError):
        return {}
    found: dict[str, Failure] = {}
    for step in STEPS:
        entry = data.get(step) if isinstance(data, dict) else None
        failure = _failure(entry)
        if failure is not None:
            found[step] = failure
    return found


def _failure(entry: Any) -> Failure | None:
    if not isinstance(entry, dict):
        return None
    failures, at, reason, model = (entry.get(k) for k in ("failures", "at", "reason", "model"))
    if (type(failures) is not int or not 1 <= failures <= 10_000 or not isinstance(at, str)
            or not isinstance(reason, str) or not isinstance(model, str)):
        return None
    try:
        then = datetime.strptime(at, TS_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    if (then - datetime.now(UTC)).total_seconds() > SKEW_SECONDS:
        return None  # written "later" than now: a forged date or a clock set back, never a wait
    first_id, shown = entry.get("first_id"), entry.get("shown")
    if not (type(first_id) is int and type(shown) is int and first_id >= 1 and shown >= 1):
        first_id = shown = None
    return Failure(failures, at, " ".join(reason.split())[:REASON_CHARS], model[:200], first_id, shown)


def last(path: Path, step: str) -> Failure | None:
    return read(path).get(step)


def record(path: Path, step: str, model: str, reason: str, *, first_id: int | None = None,
           shown: int | None = None) -> Failure:
    """One more failure of ``step`` (counted in a row only with the same model); ``first_id``
    and ``shown``: the window whose answer was refused."""
    found = read(path)
    before = found.get(step)
    count = before.failures + 1 if before is not None and before.model == model else 1
    found[step] = Failure(min(count, 10_000), now_ts(), " ".join(reason.split())[:REASON_CHARS], model,
                          first_id, shown)
    _write(path, found)
    return found[step]


def clear(path: Path, step: str) -> None:
    """A success: ``step`` no longer backs off (and a file that was not readable is replaced)."""
    if not os.path.lexists(_file(path)):
        return
    found = read(path)
    found.pop(step, None)
    _write(path, found)


def _write(path: Path, found: dict[str, Failure]) -> None:
    """The whole file or nothing: a temporary file beside it, then an atomic replace (which
    replaces a symlink planted there, never its target). A state dir that cannot be written
    loses the record, not the reflection."""
    import tempfile

    target = _file(path)
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not found:
            target.unlink(missing_ok=True)
            return
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=".reflect-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({step: f.as_json() for step, f in found.items()}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(name, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(name)
