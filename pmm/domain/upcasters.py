"""Upcasters: how an older version of an event kind's ``meta`` is read as the next version.

In the style of eventsourcing's ``upcast_v1_v2``: one pure function per (kind, from_version),
``meta -> meta``, chained v1 -> v2 -> v3 by ``upcast_meta``. They never rewrite a stored event
(the hash chain covers its bytes); ``pmm.domain.checks.upcast`` applies them as events enter the
projections, and ``check_draft`` / ``check_row`` hold what they make to the kind's current
declaration. A function here may be handed any JSON object (a mind file from someone else), so
it changes only what it recognises and leaves the rest for that check to refuse. One that
changes what a projection makes of old events must come with that projection's next version:
the stored projection cache is keyed by those versions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Meta = dict[str, Any]
Upcaster = Callable[[Meta], Meta]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}

# What a function fed a shape no pmm wrote may raise: the event is then not upgradable.
_UNREADABLE = (TypeError, KeyError, ValueError, AttributeError, IndexError, OverflowError,
               RecursionError)


def upcaster(kind: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the function that reads ``kind``'s version ``from_version`` as the next."""

    def register(function: Upcaster) -> Upcaster:
        if (kind, from_version) in UPCASTERS or from_version < 1:
            raise ValueError(f"bad or duplicate upcaster {kind} v{from_version}")
        UPCASTERS[kind, from_version] = function
        return function

    return register


def upcast_meta(kind: str, meta: Meta, current: int) -> Meta | None:
    """``meta`` brought from its version (``meta["v"]``, absent: 1) to ``current``, with ``"v"``
    set to it; ``meta`` itself when already current; ``None`` when its version is not one
    from which the chain leads to ``current`` or an upcaster cannot read it."""
    version = meta.get("v", 1)
    if type(version) is not int or not 1 <= version <= current:
        return None
    try:
        while version < current:
            step = UPCASTERS.get((kind, version))
            if step is None:
                return None
            meta = {**step(dict(meta)), "v": version + 1}
            version += 1
    except _UNREADABLE:
        return None
    return meta


def missing(versions: dict[str, int]) -> list[str]:
    """Each (kind, version) step that a kind at ``versions[kind]`` lacks: none may be missing."""
    return [f"{kind} v{v}" for kind, current in versions.items() for v in range(1, current)
            if (kind, v) not in UPCASTERS]


@upcaster("trait_adjusted", 1)
def trait_adjusted_v1_v2(meta: Meta) -> Meta:
    """Version 1 took any finite ``delta``; version 2 keeps it to a trait's whole range, [-1, 1].
    The projection bounds each step far inside that (``MAX_TRAIT_STEP``), so clamping first moves
    every trait exactly as version 1 did, and an integer past any float stays readable."""
    delta = meta.get("delta")
    if isinstance(delta, (int, float)) and not isinstance(delta, bool):
        meta["delta"] = 1 if delta > 1 else -1 if delta < -1 else delta
    return meta
