"""The witness: what pmm has seen of each mind and each file, kept outside the mind file
(user state dir).

A hash chain cannot see its own tail cut off, an older copy put in its place, or a rewrite with
recomputed hashes. The witness can: per mind id it remembers the heads pmm's own writers committed
(and those a restore or ``--accept-rollback`` made the truth): the recent ones and older ones
spaced out by powers of two, so a fork at any depth is caught in bounded memory; per file, which
mind it held and its last head. Verifying or signing a file only judges it (and notes its own
place): a received export that claims to extend a mind must never make the genuine mind look
forked. A mind that no longer extends that history fails ``pmm verify``:

- ``forked``: an event pmm witnessed has a different hash now (rewritten, or a diverged copy);
- ``rolled_back``: this same file went back to an earlier head pmm had seen;
- ``truncated``: this same file lost events off its end;
- ``replaced``: this same file now holds another mind (a rewrite under a new mind id).

A copy that diverged but was joined by ``pmm merge`` (it holds a head the merge recorded) is
``merged``: reported, not failed.

Another copy that is merely behind (a backup) is ``behind``: reported, not failed. A deliberate
rollback or replacement is accepted with ``pmm verify --accept-rollback`` or by ``pmm restore``.

Storage: ``minds/<sha256 of the id>.json`` and ``paths/<sha256 of the file's path>.json``, never
a name built from the text itself (a mind id comes from files pmm did not write). Changed under
one lock and replaced atomically (temp file, fsync, rename). Files named by the raw id (by earlier
versions: ``<mind_id>.json``) are read once and moved to the new layout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from pmm import errors
from pmm.domain import checkpoint as cp
from pmm.domain.ids import is_mind_id
from pmm.services.words import plural

if TYPE_CHECKING:  # the reports are types only
    from pmm.services.reports import HeadJson, VerdictJson

HashAt = Callable[[int], "str | None"]  # the file's hash of event k (None: not known)
Current = Callable[[], cp.Checkpoint]  # the file's head now (a live mind a writer may extend)
Mode = Literal["verify", "write", "create", "accept", "restore"]
MAX_BRANCHES = 64  # merged copies' heads kept per mind
KEEP_RECENT = 64  # the latest heads, all kept; older ones are thinned to one per power of two
FAILED = ("forked", "rolled_back", "truncated", "replaced")


class Head(NamedTuple):
    """A head pmm saw: the number of events, the head's hash, when, and at which file."""

    size: int
    head: str
    at: str = ""
    file: str = ""

    def describe(self) -> str:
        return f"event {self.size:,}, seen {_day(self.at)}"

    def to_json(self) -> HeadJson:
        return {"events": self.size, "head": self.head, "at": self.at, "file": self.file}


@dataclass
class Record:
    """What pmm saw of one mind id: heads in ascending size, the last the highest."""

    mind_id: str
    heads: list[Head] = field(default_factory=list)
    # Heads of other copies merged into this mind (``pmm merge``): a file that holds one of
    # them is a copy that diverged and was joined, not a fork (the latest MAX_BRANCHES).
    branches: list[Head] = field(default_factory=list)

    @property
    def highest(self) -> Head | None:
        return self.heads[-1] if self.heads else None


class Place(NamedTuple):
    """What pmm last saw at one file path: which mind it held, and its head."""

    key: str
    mind_id: str
    head: Head


@dataclass
class Verdict:
    state: str  # new, current, ahead, behind, accepted, restored, diverged, + FAILED
    message: str
    witnessed: Head | None = None
    since: int = 0

    @property
    def ok(self) -> bool:
        return self.state not in FAILED

    def hint(self, source: str) -> str | None:
        if self.ok:
            return None
        what = "replacement" if self.state == "replaced" else "rollback"
        return (f"if this {what} is deliberate, accept it: pmm verify {source} --accept-rollback "
                "(pmm restore also accepts the mind it restores)")

    def to_json(self) -> VerdictJson:
        return {"state": self.state, "ok": self.ok, "message": self.message, "since": self.since,
                "witnessed": self.witnessed.to_json() if self.witnessed else None}


def directory() -> Path:
    from pmm.paths import state_dir

    return state_dir() / "witness"


def known(mind_id: str, path: Path | None) -> dict[int, str]:
    """Event hashes the witness holds for this mind (and this file), read without the lock: a
    hint for what a check should collect, or an anchor a partial export must link to."""
    _check(mind_id)
    folder = directory()
    record, _ = _load_mind(folder, mind_id)
    found = {h.size: h.head for h in record.heads}
    place = _load_place(folder, _key(path))
    if place is not None and place.mind_id == mind_id:
        found.setdefault(place.head.size, place.head.head)
    return found


def observe(point: cp.Checkpoint, hash_at: HashAt, path: Path | None, mode: Mode = "verify", *,
            remember: bool = True, current: Current | None = None, export: bool = False) -> Verdict:
    """Judge ``point`` (a file's head) against the witness and remember what may be remembered.

    ``verify``: judged, and remembered for its own file only (never for the mind: what a file
    claims is not what pmm saw written). ``write``: a writer's head, which advances the mind's
    history; a writer's verdict is returned, never raised. ``create``: a writer that made this
    file, so it may hold a new mind where another was; it advances only a mind pmm knew nothing
    of (an import of a known mind's export is a copy). ``accept``: this head becomes the truth
    for its mind and file, whatever came before (a deliberate rollback). ``restore``: see
    ``_restore``.
    ``remember=False`` judges without changing anything (a head whose start is unproven).
    ``export``: the file is an export, which may well be rewritten with another mind's export;
    only a mind file holding another mind than before is ``replaced``.
    ``current``: when the verdict is a rollback, the file's head now; a live file that a writer
    extended since ``point`` was read is judged at that head instead (``point`` was only older).
    """
    _check(point.mind_id)
    folder = directory()
    for sub in (folder, folder / "minds", folder / "paths"):
        sub.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _key(path)
    with _locked(folder / ".lock"):
        record, legacy = _load_mind(folder, point.mind_id)
        place = _load_place(folder, key)
        before = (_dump(record), _dump_place(place))
        if place is None and legacy is not None and key in legacy:
            place = Place(key, point.mind_id, legacy[key])
        durable = mode in ("accept", "restore")
        if mode == "restore":
            verdict, place = _restore(record, place, point, hash_at, key)
        elif mode == "accept":
            place = _accept(record, point, hash_at, key)
            verdict = Verdict("accepted", f"accepted {point.short()} as this mind's witnessed head",
                              record.highest)
        else:
            verdict = _judge(record, place, point, hash_at, "create" if export else mode)
            if verdict.state in ("rolled_back", "truncated") and current is not None:
                verdict, judged = _rejudge(record, place, point, hash_at, current, mode, verdict)
                remember = remember and judged is point  # the newer head is the writer's to tell
            advances = mode == "write" or (mode == "create" and not export and not record.heads)
            if verdict.ok and remember:
                place = _remember(record, place, point, key,
                                  extends=advances and verdict.state in ("new", "current", "ahead"))
        if legacy is not None:
            _migrate(folder, point.mind_id, record, legacy, skip=key)
        elif _dump(record) != before[0]:
            _save(_mind_file(folder, point.mind_id), _dump(record), durable)
        if place is not None and _dump_place(place) != before[1]:
            _save(_place_file(folder, key), _dump_place(place), durable)
    return verdict


def _rejudge(record: Record, place: Place | None, point: cp.Checkpoint, hash_at: HashAt,
             current: Current, mode: Mode, verdict: Verdict) -> tuple[Verdict, cp.Checkpoint]:
    """A check of a live file reads it at one moment and judges it later; a writer that
    appended (and told the witness) in between makes the older snapshot look rolled back. If
    the file now extends what was checked and the witness is happy with that, so is the check."""
    now = current()
    if now.mind_id != point.mind_id or now.size <= point.size or hash_at(point.size) != point.head:
        return verdict, point
    again = _judge(record, place, now, hash_at, mode)
    if not again.ok:
        return verdict, point
    again.message += (f" (a writer appended {plural(now.size - point.size, 'event')} while this check "
                      f"ran; the {point.size:,} checked are the start of them)")
    return again, now


def _judge(record: Record, place: Place | None, point: cp.Checkpoint, hash_at: HashAt,
           mode: Mode) -> Verdict:
    if place is not None and place.mind_id != point.mind_id and mode != "create":
        return Verdict("replaced", f"this file held another mind ({place.mind_id}, "
                       f"{place.head.describe()}); it now holds mind {point.mind_id}: a different "
                       "mind was put in its place (or the file was rewritten under a new id)",
                       place.head)
    own = place.head if place is not None and place.mind_id == point.mind_id else None
    top = record.highest
    if top is None and own is None:
        return Verdict("new", "pmm had not witnessed this mind before")
    # This file's own history first: a merged copy put in its place (cp) is a rollback of this
    # file, whatever the merge made of that copy elsewhere.
    if own is not None and own.size <= point.size and hash_at(own.size) not in (None, own.head):
        return Verdict("forked", f"forked: event {own.size} of this file changed since pmm saw it on "
                                 f"{_day(own.at)}: rewritten or replaced by a diverged copy", top)
    if own is not None and own.size > point.size:
        earlier = next((h for h in [*record.heads, own]
                        if h.size == point.size and h.head == point.head), None)
        if earlier is not None:
            return Verdict("rolled_back", f"rolled back (or cut back): this file is at {point.short()}, a head "
                           f"pmm saw on {_day(earlier.at)}, but pmm saw it at event {own.size:,} on "
                           f"{_day(own.at)}", top or own)
        return Verdict("truncated", f"truncated: this file ends at event {point.size:,}, but pmm saw "
                       f"it reach event {own.size:,} on {_day(own.at)}", top or own)
    fork = _fork(record.heads, point.size, hash_at)
    if fork is not None:
        joined = _branch(record, point.size, hash_at)
        if joined is None:
            return Verdict("forked", fork, top)
        return Verdict("merged", f"a copy that diverged from the witnessed history and was merged"
                       f" into it (pmm merge, {_day(joined.at)}, at its event {joined.size:,});"
                       " merging it again joins what it holds since", top)
    if top is None:
        return Verdict("new", "pmm had not witnessed this mind before")
    if point.size >= top.size:
        if point.size == top.size:
            return Verdict("current", f"at the witnessed head, {top.describe()}", top)
        return Verdict("ahead", f"extends the witnessed head ({top.describe()}) by "
                       f"{plural(point.size - top.size, 'event')}", top, point.size - top.size)
    return Verdict("behind", f"a copy {plural(top.size - point.size, 'event')} behind the witnessed head "
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


def _branch(record: Record, size: int, hash_at: HashAt) -> Head | None:
    """The newest merged copy's head this file holds, if it holds one."""
    return next((b for b in reversed(record.branches) if b.size <= size and hash_at(b.size) == b.head),
                None)


def note_merged(mind_id: str, *heads: tuple[int, str]) -> None:
    """Remember that the copies with these heads (event id, hash) were joined by a merge (the
    copy merged in, and the merged result): a file that holds one of them is then judged
    ``merged``, not ``forked``, even when the other copy is the one pmm saw written first."""
    _check(mind_id)
    heads = tuple((size, head) for size, head in heads if size >= 1)
    if not heads:
        return
    folder = directory()
    for sub in (folder, folder / "minds", folder / "paths"):
        sub.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(folder / ".lock"):
        record, legacy = _load_mind(folder, mind_id)
        if legacy is not None:
            _migrate(folder, mind_id, record, legacy, skip="")
        kept = [b for b in record.branches if (b.size, b.head) not in heads]
        record.branches = [*kept, *(Head(size, head, _now()) for size, head in heads)][-MAX_BRANCHES:]
        _save(_mind_file(folder, mind_id), _dump(record), True)


def _remember(record: Record, place: Place | None, point: cp.Checkpoint, key: str, *,
              extends: bool) -> Place | None:
    """Record ``point``; returns the file's place as it should now be stored."""
    head = Head(point.size, point.head, _now(), key)
    if extends and (record.highest is None or record.highest.size < point.size):
        record.heads = _thin([*record.heads, head])
    if not key:
        return place
    if (place is not None and place.mind_id == point.mind_id
            and (place.head.size, place.head.head) == (point.size, point.head)):
        return place
    return Place(key, point.mind_id, head)


def _thin(heads: list[Head]) -> list[Head]:
    """The recent heads, and of the older ones the oldest at each power-of-two distance below
    the highest: bounded memory (KEEP_RECENT + log2 of the size), and a copy that diverged at
    any depth still meets a witnessed head between where it forked and where it ends."""
    if len(heads) <= KEEP_RECENT:
        return heads
    top = heads[-1].size
    spaced: dict[int, Head] = {}
    for h in heads[:-KEEP_RECENT]:  # ascending: the first of a band is its oldest
        spaced.setdefault((top - h.size).bit_length(), h)
    return [*sorted(spaced.values(), key=lambda h: h.size), *heads[-KEEP_RECENT:]]


def _restore(record: Record, place: Place | None, point: cp.Checkpoint, hash_at: HashAt,
             key: str) -> tuple[Verdict, Place | None]:
    """A restored file is always remembered at its own path. It rewrites the mind's history only
    where that cannot be someone else's doing: a mind pmm never saw, or an earlier head of this
    very file's mind restored over it (a rollback). A backup that extends the history is a copy
    (its writers will advance it); one that contradicts it keeps the history and is ``diverged``."""
    head = Head(point.size, point.head, _now(), key)
    here = Place(key, point.mind_id, head) if key else place
    top = record.highest
    fork = _fork(record.heads, point.size, hash_at)
    if fork is not None:
        return Verdict("diverged", f"this backup diverges from what pmm witnessed of mind "
                       f"{point.mind_id} ({fork}); that history was kept", top), here
    own = place is not None and place.mind_id == point.mind_id
    if top is None or (own and point.size < top.size):
        return (Verdict("accepted", f"accepted {point.short()} as this mind's witnessed head"),
                _accept(record, point, hash_at, key))
    return Verdict("restored", f"restored at {point.short()}; the mind's witnessed history "
                   f"({top.describe()}) agrees with it", top), here


def _accept(record: Record, point: cp.Checkpoint, hash_at: HashAt, key: str) -> Place | None:
    """Keep only the history this head agrees with, then make it the highest."""
    record.heads = [h for h in record.heads if h.size < point.size and hash_at(h.size) == h.head]
    return _remember(record, None, point, key, extends=True)


# -- what a full check proved of a file ---------------------------------------------------------

class Verified(NamedTuple):
    """The head up to which every event of one file was checked (hashes, links, ids, shapes),
    and which file that was (device and inode: a copy put at its path is another file)."""

    mind_id: str
    size: int
    head: str
    at: str
    file: tuple[int, int]

    def when(self) -> str:
        return _day(self.at)


def identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def verified(mind_id: str, path: Path) -> Verified | None:
    """What a check of every event proved of the file at ``path`` (``note_verified``), if it
    still describes it: the same mind and the same file. Kept here, outside the mind file, so a
    file cannot claim to have been checked; the caller checks the head is still in it."""
    _check(mind_id)
    key = _key(path)
    try:
        data = json.loads(_verified_file(directory(), key).read_text())
        found = Verified(data["mind_id"], data["events"], data["head"], data["at"],
                         (data["file"][0], data["file"][1]))
        if data["path"] != key:
            return None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    sound = (found.mind_id == mind_id and type(found.size) is int and found.size > 0
             and type(found.head) is str and type(found.at) is str and found.file == identity(path))
    return found if sound else None


def note_verified(mind_id: str, path: Path, size: int, head: str) -> Verified:
    """Record that every event of the file at ``path`` up to ``size`` (whose hash is ``head``)
    was checked now: a later check may start there (``verified``)."""
    _check(mind_id)
    key = _key(path)
    found = Verified(mind_id, size, head, _now(), identity(path))
    folder = directory()
    (folder / "verified").mkdir(parents=True, exist_ok=True, mode=0o700)
    text = json.dumps({"path": key, "mind_id": mind_id, "events": size, "head": head,
                       "at": found.at, "file": list(found.file)}, separators=(",", ":"))
    from pmm.services.files import write_atomic

    write_atomic(_verified_file(folder, key), (text + "\n").encode())
    return found


def _verified_file(folder: Path, key: str) -> Path:
    return folder / "verified" / f"{_digest(key)}.json"


# -- storage -----------------------------------------------------------------------------------

def _check(mind_id: str) -> None:
    if not is_mind_id(mind_id):  # callers validate; this is the last line before a file name
        raise errors.IntegrityError(f"the mind id {errors.quoted(mind_id)} is not one pmm makes")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _mind_file(folder: Path, mind_id: str) -> Path:
    return folder / "minds" / f"{_digest(mind_id)}.json"


def _place_file(folder: Path, key: str) -> Path:
    return folder / "paths" / f"{_digest(key)}.json"


def _key(path: Path | None) -> str:
    return str(path.resolve()) if path is not None else ""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(at: str) -> str:
    return at.replace("T", " ").replace("Z", " UTC") if at else "an earlier run"


def _load_mind(folder: Path, mind_id: str) -> tuple[Record, dict[str, Head] | None]:
    """The mind's record, and the per-file heads of a legacy file (None: none was read)."""
    try:
        data = json.loads(_mind_file(folder, mind_id).read_text())
        if data["mind_id"] != mind_id:
            raise ValueError
        return Record(mind_id, sorted((Head(*h) for h in data["heads"]), key=lambda h: h.size),
                      [Head(*b) for b in data.get("branches", [])]), None
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError):
        # A damaged witness protects nothing; start again rather than block every command.
        return Record(mind_id), None
    try:  # mind_id is validated: 32 hex digits make a safe name in the old layout
        data = json.loads((folder / f"{mind_id}.json").read_text())
        heads = sorted((Head(*h) for h in data["heads"]), key=lambda h: h.size)
        files = {k: Head(*h) for k, h in data["files"].items() if isinstance(k, str)}
    except FileNotFoundError:
        return Record(mind_id), None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Record(mind_id), {}  # a damaged legacy file: moved aside all the same
    return Record(mind_id, heads), files


def _load_place(folder: Path, key: str) -> Place | None:
    if not key:
        return None
    try:
        data = json.loads(_place_file(folder, key).read_text())
        place = Place(data["path"], data["mind_id"], Head(*data["head"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return place if place.key == key and is_mind_id(place.mind_id) else None


def _migrate(folder: Path, mind_id: str, record: Record, legacy: dict[str, Head], skip: str) -> None:
    """Move a legacy ``<mind_id>.json`` to the digest-named layout (its files become places)."""
    _save(_mind_file(folder, mind_id), _dump(record), True)
    for key, head in legacy.items():
        if key and key != skip and _load_place(folder, key) is None:
            _save(_place_file(folder, key), _dump_place(Place(key, mind_id, head)), True)
    for old in (folder / f"{mind_id}.json", folder / f"{mind_id}.lock"):
        with contextlib.suppress(OSError):
            old.unlink()


def _dump(record: Record) -> str:
    data: dict[str, object] = {"mind_id": record.mind_id,
                               "heads": [[h.size, h.head, h.at, h.file] for h in record.heads]}
    if record.branches:
        data["branches"] = [[b.size, b.head, b.at, b.file] for b in record.branches]
    return json.dumps(data, separators=(",", ":"))  # compact: the C encoder; this runs on every commit


def _dump_place(place: Place | None) -> str:
    if place is None:
        return ""
    h = place.head
    return json.dumps({"path": place.key, "mind_id": place.mind_id,
                       "head": [h.size, h.head, h.at, h.file]}, separators=(",", ":"))


def _save(file: Path, text: str, durable: bool) -> None:
    """Store a record. A new file, or an accepted head, is written whole and fsynced (temp file,
    rename). Every other update runs after each COMMIT and is overwritten in place, padded with
    spaces to the old length (still valid JSON), in one ``pwrite`` under the lock: on ext4 a
    rename over a file starts a flush that cost a commit ~2-9 ms. Safe because the mind's COMMIT
    is durable first: a power cut or a torn write only makes the witness lag the mind (or reset
    it, if the record no longer parses), never claim more than the mind holds."""
    import os

    from pmm.services.files import write_atomic

    data = (text + "\n").encode()
    if not durable:
        try:
            fd = os.open(file, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            try:
                old = os.fstat(fd).st_size
                os.pwrite(fd, data + b" " * (old - len(data)), 0)
            finally:
                os.close(fd)
            return
    write_atomic(file, data)


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    import fcntl

    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
