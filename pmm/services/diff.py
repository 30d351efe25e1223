"""``pmm diff A [B]``: what changed between two points of one mind, or between two minds (a
mind file or a JSONL export, read as hostile input), in plain English and as JSON: the name,
the stage, the traits (with the events that moved them), commitments opened, closed, expired,
dropped and reopened, events added by kind, models switched. See docs/time.md."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypedDict, cast

from pmm import errors
from pmm.domain import dynamics, growth, projections
from pmm.domain import events as ev
from pmm.domain.states import Commitment, States
from pmm.ledger import folded, jsonl
from pmm.ledger.store import Ledger
from pmm.services import dates, opening, timetravel
from pmm.services.timetravel import PointJson

NOW = ("now", "head")  # the mind's newest event, as a side of a diff
MOVED_KEPT = 100  # events listed per trait in the JSON (the rest are counted)
_ID = re.compile(r"[0-9]{1,19}")


class SideJson(TypedDict):
    """One side of a diff: which file, what it is, which mind, and the event it stands at."""

    source: str
    source_kind: str  # "mind" or "export"
    mind_id: str
    point: PointJson


class Change(TypedDict):
    before: str | None
    after: str | None
    changed: bool


class Moved(TypedDict):
    """One event that moved a trait: a trait_adjusted step (with its reflection) or a
    retraction that undid steps."""

    event: int
    kind: str
    reflection: int | None
    delta: float


class TraitChange(TypedDict):
    trait: str
    before: float
    after: float
    delta: float
    moved_by: list[Moved]  # the last MOVED_KEPT, oldest first; empty across two minds
    moved_by_more: int  # how many earlier ones are left out


class CommitmentJson(TypedDict):
    id: int
    text: str
    status: str  # after


GROUPS = ("opened", "closed", "expired", "dropped", "reopened", "missing")


class Commitments(TypedDict):
    opened: list[CommitmentJson]
    closed: list[CommitmentJson]
    expired: list[CommitmentJson]
    dropped: list[CommitmentJson]
    reopened: list[CommitmentJson]
    missing: list[CommitmentJson]  # in the first but not the second (two minds only)


class Switch(TypedDict):
    role: str
    before: str | None  # the model's name; None: the embedded default
    after: str | None


class Models(TypedDict):
    switched: list[Switch]
    switches: int  # model_switched events between the two
    added: list[str]
    removed: list[str]


class Events(TypedDict):
    before: int
    after: int
    added: int
    by_kind: dict[str, int]  # kinds whose count differs: after minus before


class DiffJson(TypedDict):
    """``pmm diff --json``."""

    before: SideJson
    after: SideJson
    same_mind: bool
    name: Change
    stage: Change
    traits: list[TraitChange]  # only the traits that moved
    commitments: Commitments
    events: Events
    models: Models
    reflections: dict[str, int]  # before, after
    summary: list[str]  # the plain-English report, line by line


@dataclass
class Side:
    source: str
    kind: str
    mind_id: str
    point: PointJson
    states: States
    path: Path | None = None  # a side of this mind: its file (for tracing traits)

    def as_json(self) -> SideJson:
        return {"source": self.source, "source_kind": self.kind, "mind_id": self.mind_id,
                "point": self.point}


def diff(path: Path, first: str, second: str | None = None) -> DiffJson:
    """From ``first`` to ``second`` (default: now): each an event id or a date of the mind at
    ``path``, ``now``, or another mind file or export (at its newest event)."""
    a, b = _side(path, first), _side(path, second or "now")
    same_file = a.path is not None and b.path is not None
    if same_file and a.point["id"] > b.point["id"]:
        raise errors.UsageError(f"{first} (#{a.point['id']:,}) comes after {second or 'now'}"
                                f" (#{b.point['id']:,})", hint="give the earlier point first")
    moved: dict[str, list[Moved]] = {}
    if same_file and a.path is not None:
        with opening.open_read(a.path) as mind:
            moved = _trait_moves(mind, a.states, a.point["id"], b.point["id"])
    return _compare(a, b, moved)


def _side(path: Path, text: str) -> Side:
    asked = text.strip()
    if asked.lower() in NOW or _ID.fullmatch(asked) or _is_date(asked):
        with opening.open_read(path) as mind:
            if asked.lower() in NOW:
                asked = str(mind.head()[0])
            then = timetravel.at(mind, asked)
            point = then.as_json()
            point["asked"] = text.strip()
            return Side(str(path), "mind", mind.mind_id, point, then.states, path)
    other = Path(text)
    if not other.is_file():
        raise errors.UsageError(f"{text!r} is neither an event id, a date, now, nor a file",
                                hint=f"points are {timetravel.FORMS}; or a mind file or export")
    from pmm.services.integrity import is_sqlite

    return _mind_file(other) if is_sqlite(other) else _export(other)


def _is_date(text: str) -> bool:
    from datetime import datetime

    try:
        dates.period(text, datetime.now().astimezone())
    except errors.UsageError:
        return False
    return True


def _mind_file(path: Path) -> Side:
    """Another mind file at its newest event (its cache trusted only when this machine sealed it)."""
    with opening.open_read(path) as mind:
        states, _ = folded.state(mind)
        head_id, head = mind.head()
        ts = mind.tail(1)[0].ts if head_id else ""
        point: PointJson = {"asked": str(path), "id": head_id, "hash": head, "ts": ts,
                            "replayed_from": 0, "replayed": head_id}
        return Side(str(path), "mind", mind.mind_id, point, states)


def _export(path: Path) -> Side:
    """A JSONL export, checked line by line as it is folded (hostile input: a bad line is
    refused, exit 6, naming it); never written anywhere. An export of a merged mind is read as
    that mind reads (``_as_merged``), so its side agrees with `pmm stats` of the mind."""
    with open(path, "rb") as handle:
        header, events = _checked_export(handle, path)
        if header.since != 1:
            raise errors.InputRejected(f"{path} starts at event {header.since}: a diff needs a whole"
                                       " export (from event 1)", hint="export with no --since")
        fold = projections.Fold()
        last = (0, "", "")
        for event in events:
            fold.add(event)
            last = (event.id, event.hash, event.ts)
    states = _as_merged(path, fold.merges, last[:2]) if fold.merges else fold.states
    point: PointJson = {"asked": str(path), "id": last[0], "hash": last[1], "ts": last[2],
                        "replayed_from": 0, "replayed": last[0]}
    return Side(str(path), "export", header.mind_id, point, states)


def _checked_export(handle: IO[bytes], path: Path) -> tuple[jsonl.Header, Iterator[ev.Event]]:
    from pmm.services import portability

    try:
        return portability.checked_export(handle, str(path))
    except errors.InputRejected as exc:
        raise errors.InputRejected(f"{path} is not a pmm export or mind file: {exc.message}",
                                   hint=exc.hint) from None


def _as_merged(path: Path, markers: list[ev.Event], head: tuple[int, str]) -> States:
    """The states of a merged mind's export as the mind reads them (``projections.replay_merged``,
    as ``folded.replay_all`` reads a mind file): the export is read again for each range the
    merge folds anew rather than held. Each read is checked again, and must end at the hash the
    first read found there (the event before a marker is named by its ``prev_hash``), so a file
    changed meanwhile is refused rather than mixed with what was read before."""
    ends = {m.id - 1: m.prev_hash for m in markers} | {head[0]: head[1]}

    def between(low: int, high: int) -> Iterator[ev.Event]:
        if high < low:
            return
        with open(path, "rb") as handle:
            _, events = _checked_export(handle, path)
            for event in events:
                if event.id < low:
                    continue
                yield event
                if event.id == high:
                    break
            else:
                event = None
        if event is None or event.id != high or event.hash != ends.get(high):
            raise errors.InputRejected(f"{path} changed while it was read", hint="run pmm diff again")

    return projections.replay_merged(between(1, head[0]), markers, between)


def _trait_moves(mind: Ledger, before: States, low: int, high: int) -> dict[str, list[Moved]]:
    """Each trait's moves between events ``low`` and ``high`` (exclusive, inclusive): the traits
    projection folded from ``before`` over the events it reads, each change noted."""
    fold = projections.Fold(before)
    moved: dict[str, list[Moved]] = {}
    for event in _merged(mind.events(since=low + 1, kind=kind, until=high)
                         for kind in sorted(growth.Traits.kinds or ())):
        was = fold.states["traits"]["values"]
        fold.add(event)
        now = fold.states["traits"]["values"]
        for trait in ev.OCEAN:
            if now[trait] != was[trait]:
                reflection = event.meta.get("reflection")
                moved.setdefault(trait, []).append({
                    "event": event.id, "kind": event.kind,
                    "reflection": reflection if type(reflection) is int else None,
                    "delta": round(now[trait] - was[trait], 6)})
    return moved


def _merged(streams: Iterable[Iterable[ev.Event]]) -> list[ev.Event]:
    return sorted((e for stream in streams for e in stream), key=lambda e: e.id)


def _status(states: States) -> dict[int, tuple[str, Commitment]]:
    c = states["commitments"]
    found = {int(k): ("open", v) for k, v in c["open"].items()}
    found.update({int(k): (v.get("status", "closed"), v) for k, v in c["done"].items()})
    return found


def _compare(a: Side, b: Side, moved: dict[str, list[Moved]]) -> DiffJson:
    sa, sb = a.states, b.states
    name = _change(sa["identity"]["name"], sb["identity"]["name"])
    stage = _change(dynamics.metrics(sa).stage, dynamics.metrics(sb).stage)
    traits: list[TraitChange] = []
    for trait in ev.OCEAN:
        x, y = sa["traits"]["values"][trait], sb["traits"]["values"][trait]
        if x != y or trait in moved:
            steps = moved.get(trait, [])
            traits.append({"trait": trait, "before": round(x, 6), "after": round(y, 6),
                           "delta": round(y - x, 6), "moved_by": steps[-MOVED_KEPT:],
                           "moved_by_more": max(0, len(steps) - MOVED_KEPT)})
    was, now = _status(sa), _status(sb)
    groups: dict[str, list[CommitmentJson]] = {k: [] for k in GROUPS}
    for cid, (status, entry) in sorted(now.items()):
        row: CommitmentJson = {"id": cid, "text": entry["text"], "status": status}
        before = was.get(cid, (None, entry))[0]
        if before is None:
            groups["opened"].append(row)
        if status in ("closed", "expired", "dropped") and status != before:
            groups[status].append(row)
        if status == "open" and before in ("closed", "expired", "dropped"):
            groups["reopened"].append(row)
    groups["missing"] = [{"id": cid, "text": entry["text"], "status": status}
                         for cid, (status, entry) in sorted(was.items()) if cid not in now]
    commitments = cast(Commitments, groups)
    kinds_a, kinds_b = sa["activity"]["by_kind"], sb["activity"]["by_kind"]
    by_kind = {k: kinds_b.get(k, 0) - kinds_a.get(k, 0) for k in sorted(set(kinds_a) | set(kinds_b))
               if kinds_b.get(k, 0) != kinds_a.get(k, 0)}
    events: Events = {"before": sa["activity"]["events"], "after": sb["activity"]["events"],
                      "added": sb["activity"]["events"] - sa["activity"]["events"], "by_kind": by_kind}
    models = _models(sa, sb)
    found: DiffJson = {
        "before": a.as_json(), "after": b.as_json(), "same_mind": a.mind_id == b.mind_id,
        "name": name, "stage": stage, "traits": traits, "commitments": commitments,
        "events": events, "models": models,
        "reflections": {"before": sa["reflections"]["count"], "after": sb["reflections"]["count"]},
        "summary": [],
    }
    found["summary"] = summary(found, traced=a.path is not None and b.path is not None)
    return found


def _change(before: str | None, after: str | None) -> Change:
    return {"before": before, "after": after, "changed": before != after}


def _models(sa: States, sb: States) -> Models:
    def named(states: States, role: str) -> str | None:
        active = states["models"]["active"].get(role)
        return active["name"] if active else None

    switched: list[Switch] = [{"role": role, "before": named(sa, role), "after": named(sb, role)}
                              for role in ev.ROLES if named(sa, role) != named(sb, role)]
    known_a, known_b = set(sa["models"]["models"]), set(sb["models"]["models"])
    return {"switched": switched, "switches": sb["models"]["switches"] - sa["models"]["switches"],
            "added": sorted(known_b - known_a), "removed": sorted(known_a - known_b)}


def _where(side: SideJson) -> str:
    point = side["point"]
    when = f", recorded {dates.local(point['ts'])}" if point["ts"] else ""
    what = "export" if side["source_kind"] == "export" else "mind"
    return f"event #{point['id']:,}{when} ({what} {side['source']})"


def summary(d: DiffJson, *, traced: bool = True) -> list[str]:
    """The diff in plain English, a line for each part (a part with no change says so)."""
    lines = [f"From {_where(d['before'])}", f"  to {_where(d['after'])}"]
    if not d["same_mind"]:
        lines.append(f"Two different minds: {d['before']['mind_id']} and {d['after']['mind_id']}")
    n = d["name"]
    lines.append(f"Name: {n['before'] or '(unnamed)'} -> {n['after'] or '(unnamed)'}" if n["changed"]
                 else f"Name: {n['after'] or '(unnamed)'} (unchanged)")
    s = d["stage"]
    lines.append(f"Stage: {s['before']} -> {s['after']}" if s["changed"] else f"Stage: {s['after']} (unchanged)")
    if not d["traits"]:
        lines.append("Traits: none moved")
    for t in d["traits"]:
        line = f"Traits: {t['trait']} {t['before']:.2f} -> {t['after']:.2f} ({t['delta']:+.2f})"
        steps = t["moved_by"]
        if steps:
            by = ", ".join(_moved(m) for m in steps[-5:])
            more = len(steps) - 5 + t["moved_by_more"]
            line += f", moved by {by}" + (f" and {more:,} earlier" if more > 0 else "")
        elif not traced:
            line += " (what moved it is not traced across two minds)"
        lines.append(line)
    c = cast(dict[str, list[CommitmentJson]], d["commitments"])
    parts = [f"{len(c[k]):,} {k}" for k in GROUPS if c[k]]
    lines.append("Commitments: " + (", ".join(parts) if parts else "no change"))
    for k in GROUPS:
        for row in c[k][:10]:
            lines.append(f"  {k} #{row['id']}: {_short(row['text'])}")
        if len(c[k]) > 10:
            lines.append(f"  ... and {len(c[k]) - 10:,} more {k}")
    e = d["events"]
    kinds = ", ".join(f"{v:+,} {k}" for k, v in sorted(e["by_kind"].items(), key=lambda kv: (-abs(kv[1]), kv[0])))
    lines.append(f"Events: {e['added']:+,} ({e['before']:,} -> {e['after']:,})" + (f": {kinds}" if kinds else ""))
    r = d["reflections"]
    lines.append(f"Reflections: {r['before']:,} -> {r['after']:,}")
    m = d["models"]
    if not (m["switched"] or m["added"] or m["removed"] or m["switches"]):
        lines.append("Models: no change")
    for sw in m["switched"]:
        lines.append(f"Models: {sw['role']} switched from {sw['before'] or 'the embedded default'}"
                     f" to {sw['after'] or 'the embedded default'}")
    if m["switches"] and not m["switched"]:
        lines.append(f"Models: {m['switches']:,} switches, ending where they began")
    if m["added"]:
        lines.append("Models added: " + ", ".join(m["added"]))
    if m["removed"]:
        lines.append("Models removed: " + ", ".join(m["removed"]))
    return lines


def _moved(m: Moved) -> str:
    if m["kind"] == ev.REFLECTION_RETRACTED.name:
        return f"the retraction #{m['event']} ({m['delta']:+.2f})"
    if m["reflection"] is not None:
        return f"reflection #{m['reflection']} ({m['delta']:+.2f})"
    return f"#{m['event']} ({m['delta']:+.2f})"


def _short(text: str) -> str:
    from pmm.services.safe_text import clip

    return clip(" ".join(text.split()), 70)

