"""The witness: what pmm has seen of each mind, kept outside the mind file (user state dir).

A hash chain cannot see its own tail cut off, an older copy put in its place, or a rewrite with
recomputed hashes. The witness can: per mind id it remembers the highest checkpoint pmm has seen
extend the chain (written, verified, signed or restored), a few earlier heads, and the last head
of each file. A mind that no longer extends that history fails ``pmm verify``:

- ``forked``: an event pmm witnessed has a different hash now (rewritten, or a diverged copy);
- ``rolled_back``: this same file went back to an earlier head pmm had seen;
- ``truncated``: this same file lost events off its end.

Another copy that is merely behind (a backup) is ``behind``: reported, not failed. A deliberate
rollback is accepted with ``pmm verify --accept-rollback`` or by ``pmm restore``.

One JSON file per mind id, changed under a lock and replaced atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pmm.domain import checkpoint as cp

HashAt = Callable[[int], "str | None"]  # the file's hash of event k (None: not known)
Mode = Literal["verify", "write", "accept"]
KEEP_HEADS = 256
KEEP_FILES = 64
FAILED = ("forked", "rolled_back", "truncated")


@dataclass
class Head:
    size: int
    head: str
    at: str = ""
    file: str = ""

    def describe(self) -> str:
        return f"event {self.size:,}, seen {_day(self.at)}"

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "head": self.head, "at": self.at, "file": self.file}


@dataclass
class Record:
    mind_id: str
    heads: list[Head] = field(default_factory=list)  # ascending size; the last is the highest
    files: dict[str, Head] = field(default_factory=dict)

    @property
    def highest(self) -> Head | None:
        return self.heads[-1] if self.heads else None


@dataclass
class Verdict:
    state: str  # new, current, ahead, behind, accepted, forked, rolled_back, truncated
    message: str
    witnessed: Head | None = None
    since: int = 0

    @property
    def ok(self) -> bool:
        return self.state not in FAILED

    def hint(self, source: str) -> str | None:
        if self.ok:
            return None
        return (f"if this is deliberate, accept it: pmm verify {source} --accept-rollback "
                "(pmm restore also accepts the mind it restores)")

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "ok": self.ok, "message": self.message, "since": self.since,
                "witnessed": self.witnessed.to_json() if self.witnessed else None}


def directory() -> Path:
    from pmm.paths import state_dir

    return state_dir() / "witness"


def positions(mind_id: str, path: Path | None) -> set[int]:
    """The event ids whose hashes a check needs (read without the lock: a hint, not a promise)."""
    record = _load(directory() / f"{mind_id}.json", mind_id)
    wanted = {h.size for h in record.heads}
    own = record.files.get(_key(path))
    if own is not None:
        wanted.add(own.size)
    return wanted


def observe(point: cp.Checkpoint, hash_at: HashAt, path: Path | None, mode: Mode = "verify") -> Verdict:
    """Judge ``point`` (a file's head) against the witness and remember what may be remembered.

    ``verify``: a head that extends the highest one becomes the highest; a copy behind it is only
    remembered for its own file. ``write``: the same, but never fails a writer. ``accept``: this
    head becomes the truth for its mind, whatever came before (a deliberate rollback).
    """
    folder = directory()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(folder / f"{point.mind_id}.lock"):
        file = folder / f"{point.mind_id}.json"
        record = _load(file, point.mind_id)
        before = _dump(record)
        if mode == "accept":
            _accept(record, point, hash_at, _key(path))
            verdict = Verdict("accepted", f"accepted {point.short()} as this mind's witnessed head",
                              record.highest)
        else:
            verdict = _judge(record, point, hash_at, _key(path))
            if verdict.ok:
                _remember(record, point, _key(path), extends=verdict.state in ("new", "current", "ahead"))
        if _dump(record) != before:
            _save(file, record)
    return verdict


def _judge(record: Record, point: cp.Checkpoint, hash_at: HashAt, key: str) -> Verdict:
    top = record.highest
    if top is None:
        return Verdict("new", "pmm had not witnessed this mind before")
    fork = _fork(record.heads, point.size, hash_at)
    if fork is not None:
        return Verdict("forked", fork, top)
    own = record.files.get(key) if key else None
    if own is not None and own.size <= point.size and hash_at(own.size) not in (None, own.head):
        return Verdict("forked", f"event {own.size} of this file changed since pmm saw it on "
                                 f"{_day(own.at)}: rewritten or replaced by a diverged copy", top)
    if own is not None and own.size > point.size:
        earlier = next((h for h in [*record.heads, *record.files.values()]
                        if h.size == point.size and h.head == point.head), None)
        if earlier is not None:
            return Verdict("rolled_back", f"rolled back (or cut back): this file is at {point.short()}, a head "
                           f"pmm saw on {_day(earlier.at)}, but pmm saw it at event {own.size:,} on "
                           f"{_day(own.at)}", top)
        return Verdict("truncated", f"truncated: this file ends at event {point.size:,}, but pmm saw "
                       f"it reach event {own.size:,} on {_day(own.at)}", top)
    if point.size >= top.size:
        if point.size == top.size:
            return Verdict("current", f"at the witnessed head, {top.describe()}", top)
        return Verdict("ahead", f"extends the witnessed head ({top.describe()}) by "
                       f"{point.size - top.size:,} events", top, point.size - top.size)
    return Verdict("behind", f"a copy {top.size - point.size:,} events behind the witnessed head "
                   f"({top.describe()}); nothing in it contradicts what pmm saw", top)


def _fork(heads: list[Head], size: int, hash_at: HashAt) -> str | None:
    """Where the file departs from the witnessed heads at or below its size, if it does."""
    differs: Head | None = None
    for h in reversed([h for h in heads if h.size <= size]):
        got = hash_at(h.size)
        if got is None:
            continue
        if got == h.head:
            if differs is None:
                return None
            return (f"forked: event {differs.size:,} differs from the one pmm witnessed on "
                    f"{_day(differs.at)}; the two agree up to event {h.size:,}")
        differs = h
    if differs is None:
        return None
    return (f"forked: event {differs.size:,} differs from the one pmm witnessed on {_day(differs.at)}"
            " (rewritten, or a copy that diverged)")


def _remember(record: Record, point: cp.Checkpoint, key: str, *, extends: bool) -> None:
    now = _now()
    head = Head(point.size, point.head, now, key)
    if extends and (record.highest is None or record.highest.size < point.size):
        record.heads = [*record.heads, head][-KEEP_HEADS:]
    if key:
        own = record.files.get(key)
        if own is None or (own.size, own.head) != (point.size, point.head):
            record.files.pop(key, None)
            record.files[key] = head
            while len(record.files) > KEEP_FILES:
                record.files.pop(next(iter(record.files)))


def _accept(record: Record, point: cp.Checkpoint, hash_at: HashAt, key: str) -> None:
    """Keep only the history this head agrees with, then make it the highest."""
    record.heads = [h for h in record.heads if h.size < point.size and hash_at(h.size) == h.head]
    record.files = {k: h for k, h in record.files.items()
                    if k != key and h.size <= point.size and hash_at(h.size) == h.head}
    _remember(record, point, key, extends=True)


# -- storage -----------------------------------------------------------------------------------

def _key(path: Path | None) -> str:
    return str(path.resolve()) if path is not None else ""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(at: str) -> str:
    return at.replace("T", " ").replace("Z", " UTC") if at else "an earlier run"


def _load(file: Path, mind_id: str) -> Record:
    try:
        data = json.loads(file.read_text())
        heads = [Head(*h) for h in data["heads"]]
        files = {k: Head(*h) for k, h in data["files"].items()}
    except FileNotFoundError:
        return Record(mind_id)
    except (ValueError, KeyError, TypeError):
        # A damaged witness protects nothing; start again rather than block every command.
        return Record(mind_id)
    return Record(mind_id, sorted(heads, key=lambda h: h.size), files)


def _dump(record: Record) -> str:
    return json.dumps({"mind_id": record.mind_id,
                       "heads": [[h.size, h.head, h.at, h.file] for h in record.heads],
                       "files": {k: [h.size, h.head, h.at, h.file] for k, h in record.files.items()}},
                      indent=1)


def _save(file: Path, record: Record) -> None:
    from pmm.services.files import write_atomic

    write_atomic(file, (_dump(record) + "\n").encode())


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    import fcntl

    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
