"""Checking events against their kinds' declarations (pmm.domain.events): a draft before it is
written, a stored row before it is relied on, and an older meta version read as the current one
through its upcasters (pmm.domain.upcasters)."""

from __future__ import annotations

import re
from typing import Any

from pmm import errors
from pmm.domain import events as ev
from pmm.domain import upcasters
from pmm.domain.events import Draft, Event
from pmm.domain.shapes import (
    DATES,
    TS_FAST,
    TS_TEXT,
    compile_fast,
    depth_ok,
    has_surrogate,
    is_ts_bytes,
    parse_meta,
)


def upcast(event: Event) -> Event:
    """``event`` as its kind's current version, for the projections to read (the stored event,
    and its hash, stay as written). Meta that no upcaster makes valid (only a file written
    outside pmm holds it) is passed on unchanged: the projections read it as any odd event."""
    current = ev.VERSIONED.get(event.kind)
    if current is None:
        return event
    meta = event.meta
    if meta.get("v", 1) == current:
        return event
    upgraded = upcasters.upcast_meta(event.kind, meta, current)
    if upgraded is None or ev.META_CHECKS[event.kind](upgraded) is not None:
        return event
    from pmm.domain.canonical import canonical_json

    return event._replace(meta_json=canonical_json(upgraded))


def _meta_problem(kind: str, meta: dict[str, Any]) -> str | None:
    """Why ``meta`` does not fit ``kind``'s declaration: an older version once upcast."""
    check = ev.META_CHECKS[kind]
    current, version = ev.VERSIONED.get(kind), meta.get("v", 1)
    if current is None or type(version) is not int or not 1 <= version < current:
        return check(meta)  # the current version, or a "v" the version check words
    upgraded = upcasters.upcast_meta(kind, meta, current)
    if upgraded is None:
        return f"{kind}: meta of version {version} cannot be read as version {current}"
    why = check(upgraded)
    return None if why is None else f"{why} (version {version}, read as version {current})"


def check_draft(draft: Draft) -> None:
    """Refuse a draft that does not match its kind's declaration (``ValueError``: pmm's own
    code is wrong) or is over the size limit (``InputRejected``: the user's text is too big)."""
    if draft.kind not in ev.META_CHECKS:
        raise ValueError(f"unknown event kind {draft.kind!r}")
    if not isinstance(draft.meta, dict):
        raise ValueError(f"{draft.kind}: meta must be a dict")
    why = _meta_problem(draft.kind, draft.meta)
    if why is not None:
        raise ValueError(why)
    texts = [draft.content, *(v for v in draft.meta.values() if type(v) is str),
             *(x for v in draft.meta.values() if type(v) is list for x in v if type(x) is str)]
    if any(has_surrogate(t) for t in texts if not t.isascii()):
        raise errors.InputRejected(
            f"this {draft.kind} holds a lone surrogate (\\ud800-\\udfff), which is not text",
            hint="fix the encoding of the input")
    if len(draft.content) * 4 + len(repr(draft.meta)) * 6 > ev.MAX_EVENT_BYTES:  # can be near it
        from pmm.domain.canonical import canonical_json

        size = len(draft.content.encode("utf-8", "surrogatepass")) + len(
            canonical_json(draft.meta).encode("utf-8", "surrogatepass"))
        if size > ev.MAX_EVENT_BYTES:
            raise errors.InputRejected(
                f"this {draft.kind} would be {_mib(size)}; an event holds at most"
                f" {_mib(ev.MAX_EVENT_BYTES)} (content and meta together)",
                hint="split the text into smaller parts")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size % (1024 * 1024) else f"{size // (1024 * 1024)} MiB"


def check_row(ts: bytes, kind: bytes, content: bytes, meta: bytes) -> str | None:
    """Why a stored event (fields as UTF-8 bytes) is not one this pmm can rely on, or ``None``.

    ``ts`` must be a ledger timestamp; content and meta together at most ``ev.MAX_EVENT_BYTES``
    and valid UTF-8; a known kind's meta must match its declaration. A kind this pmm does not
    know (a newer pmm's) passes when its name is well formed and its meta a JSON object:
    projections and commands ignore it, so a newer mind still verifies here.
    """
    # verify runs this on every event: first the shortcut that every event pmm writes takes
    fast = ev.FAST_PATTERNS[kind] if kind in ev.FAST_PATTERNS else _fast_once_worth_it(kind)
    if (fast is not None and TS_FAST.fullmatch(ts) and DATES.get(ts[:10])
            and len(content) + len(meta) <= ev.MAX_EVENT_BYTES and (content.isascii() or _utf8(content))
            and (_PASSED.get(kind) == meta or _fits(kind, fast, meta))):
        return None
    return _row_problem(ts, kind, content, meta)


# The last meta of each declared kind that fitted its shortcut: a session's events often repeat
# their meta, and a lookup is a fraction of the pattern's match. Only short metas are kept (one
# per kind: memory stays small); a kind's pattern never changes once made, so neither does this.
_PASSED: dict[bytes, bytes] = {}
_PASSED_LONGEST = 512


def _fits(kind: bytes, fast: tuple[re.Pattern[bytes], tuple[bytes, ...]], meta: bytes) -> bool:
    if ((meta.isascii() or _utf8(meta))  # the pattern takes any byte over 0x7f
            and fast[0].fullmatch(meta) and (not fast[1] or all(name in meta for name in fast[1]))):
        if len(meta) <= _PASSED_LONGEST:
            _PASSED[kind] = meta
        return True
    return False


# The shortcut saves ~0.6 us of the full check's ~2 us an event, and its pattern takes 0.3 to 3.5
# ms to compile: a kind's is compiled once this many of its events took the full check (what
# the shortcut accepts, the full check accepts too: the verdict is the same either way).
FAST_AFTER = 1024
_MET: dict[bytes, int] = {}  # declared kinds: events checked in full, until their shortcut is made


def _fast_once_worth_it(kind: bytes) -> tuple[re.Pattern[bytes], tuple[bytes, ...]] | None:
    """``kind``'s shortcut once it has met ``FAST_AFTER`` events of it, else None (the full
    check). Only declared kinds are counted: a hostile file's made-up kinds take no memory."""
    met = _MET.get(kind, 0) + 1
    if met < FAST_AFTER:
        if met > 1 or kind.decode("utf-8", "replace") in ev.KINDS:
            _MET[kind] = met
        return None
    _MET.pop(kind, None)
    return _fast_pattern(kind)


def _fast_pattern(kind: bytes) -> tuple[re.Pattern[bytes], tuple[bytes, ...]] | None:
    """verify's shortcut pattern for a declared ``kind``; None for a kind without one, or not
    declared (never kept: a hostile file's made-up kinds take no memory)."""
    declared = ev.KINDS.get(kind.decode("utf-8", "replace"))
    if declared is None:
        return None
    fast = compile_fast(declared.meta, declared.version)
    if fast is not None and declared.version > 1:
        # only the current version: an older one fits once upcast, which takes the full check
        fast = fast[0], (*fast[1], b'"v":%d' % declared.version)
    ev.FAST_PATTERNS[kind] = fast
    return fast


def _fast_patterns() -> dict[bytes, tuple[re.Pattern[bytes], tuple[bytes, ...]]]:
    """Every declared kind's shortcut pattern (those that have one)."""
    for name in ev.KINDS:
        if name.encode() not in ev.FAST_PATTERNS:
            _fast_pattern(name.encode())
    return {kind: fast for kind, fast in ev.FAST_PATTERNS.items() if fast is not None}


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _row_problem(ts: bytes, kind: bytes, content: bytes, meta: bytes) -> str | None:
    if not is_ts_bytes(ts):
        return f"ts {_show(ts)} is not a ledger timestamp {TS_TEXT}"
    if len(content) + len(meta) > ev.MAX_EVENT_BYTES:
        return (f"content and meta are {_mib(len(content) + len(meta))}, over the limit of"
                f" {_mib(ev.MAX_EVENT_BYTES)} per event")
    if not (content.isascii() or _utf8(content)):
        return "content is not valid UTF-8"
    if not (kind.isascii() and meta.isascii() or _utf8(kind) and _utf8(meta)):
        return f"{'kind' if not _utf8(kind) else 'meta'} is not valid UTF-8"
    kind_text, meta_text = kind.decode("utf-8"), meta.decode("utf-8")
    value, why = parse_meta(meta_text)
    if value is None:
        return why
    if kind_text in ev.META_CHECKS:
        return _meta_problem(kind_text, value)
    if not ev.KIND_BYTES.fullmatch(kind):
        return f"kind {_show(kind)} is not a valid kind name (a-z, 0-9 and _, at most 64)"
    if not depth_ok(value):
        return "meta is nested too deeply"
    return None


def _show(value: bytes) -> str:
    text = value[:40].decode("utf-8", "replace")
    return repr(text + ("..." if len(value) > 40 else ""))
