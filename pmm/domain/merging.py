"""How the projections read a merged mind (docs/merge.md): pure, like every projection.

A ``mind_merged`` event at id M with fork F says: the projections at M are the states at F with
every event after F and before M (``mind_merged`` events aside) folded in one canonical order,
by each event's *key*: ``(ts, id, hash)`` of the event as first written, on whichever copy wrote
it (a copy's origin, recorded by the merge that copied it), lowered to the key of any equal
event another copy held (a marker's ``same`` lists). Both copies of a mind that merged each
other hold the same events after the fork under the same keys, so they fold them in the same
order to the same states, whichever side merged first. A copied event is folded with its
origin's time. ``mind_merged`` events themselves count in no projection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.domain.shapes import MAX_ID, is_ts

Key = tuple[str, int, str]  # ts, id, hash as first written
MERGED = ev.MIND_MERGED.name


def own_key(event: Event) -> Key:
    return (event.ts, event.id, event.hash)


def _lists(meta: dict[str, Any], *names: str) -> list[list[Any]]:
    """The named parallel lists of a marker's meta, cut to the shortest (a crafted marker may
    hold lists of different lengths: what they do not pair up is ignored)."""
    found: list[list[Any]] = []
    for name in names:
        value = meta.get(name)
        found.append(value if isinstance(value, list) else [])
    n = min(len(values) for values in found)
    return [values[:n] for values in found]


def _key_ok(ts: Any, id: Any, digest: Any) -> bool:
    """A key a marker may hold: a real time, an event id, a hex SHA-256 (a crafted marker's
    other values are ignored, never copied into a marker of this mind)."""
    return (type(ts) is str and is_ts(ts) and type(id) is int and 1 <= id <= MAX_ID
            and type(digest) is str and len(digest) == 64 and all(c in _HEX for c in digest))


_HEX = frozenset("0123456789abcdef")


def copies(marker: Event) -> dict[int, Key]:
    """The local ids of the events ``marker`` copied, with their origins' keys."""
    meta = marker.meta
    their, ts, ids, hashes = _lists(meta, "their_ids", "origin_ts", "origin_ids", "origin_hashes")
    first = marker.id - len(their)
    return {first + k: (t, i, h) for k, (t, i, h) in enumerate(zip(ts, ids, hashes, strict=True))
            if _key_ok(t, i, h)}


def aliases(marker: Event) -> dict[int, list[Key]]:
    """The local ids ``marker`` found held by the other copy too, with the other copy's keys."""
    same, ts, ids, hashes = _lists(marker.meta, "same", "same_ts", "same_ids", "same_hashes")
    found: dict[int, list[Key]] = {}
    for local, t, i, h in zip(same, ts, ids, hashes, strict=True):
        if type(local) is int and _key_ok(t, i, h):
            found.setdefault(local, []).append((t, i, h))
    return found


def fork_of(marker: Event) -> int | None:
    """The marker's fork point, when it is one a merge could have written (before the marker)."""
    fork = marker.meta.get("fork")
    return fork if type(fork) is int and 0 <= fork < marker.id else None


class Keys:
    """Every key the markers of one mind give its events: origins and aliases."""

    def __init__(self, markers: Iterable[Event] = ()) -> None:
        self.origin: dict[int, Key] = {}
        self.alias: dict[int, list[Key]] = {}
        for marker in markers:
            self.add(marker)

    def add(self, marker: Event) -> None:
        self.origin.update(copies(marker))
        for local, keys in aliases(marker).items():
            self.alias.setdefault(local, []).extend(keys)

    def origin_of(self, event: Event) -> Key:
        """The event as first written: its own key unless a merge copied it here."""
        return self.origin.get(event.id) or own_key(event)

    def key(self, event: Event) -> Key:
        """The event's place in the canonical order: the least of its origin and aliases."""
        keys: list[Key] = [self.origin_of(event), *self.alias.get(event.id, ())]
        return min(keys)


def canonical(events: Iterable[Event], keys: Keys) -> list[Event]:
    """``events`` (markers left out) in canonical order, each with the time of its key."""
    keyed = sorted(((keys.key(e), e) for e in events if e.kind != MERGED), key=lambda pair: pair[0])
    return [e if e.ts == key[0] else e._replace(ts=key[0]) for key, e in keyed]
