"""Reading a mind for people: ``pmm stats``, ``pmm log`` and ``pmm search``."""

from __future__ import annotations

from typing import Any

from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.ledger.store import Mind


def stats(mind: Mind) -> dict[str, Any]:
    """Counts so far, from the projections (cache plus newer events, no writes)."""
    states, cache = mind.state()
    activity, identity = states["activity"], states["identity"]
    by_kind: dict[str, int] = activity["by_kind"]
    head_id, head = mind.head()
    return {
        "mind": str(mind.path),
        "mind_id": mind.mind_id,
        "name": identity["name"],
        "created_at": identity["created_at"],
        "events": activity["events"],
        "head_id": head_id,
        "head": head,
        "sessions": by_kind.get(ev.SESSION_STARTED.name, 0),
        "messages": by_kind.get(ev.MESSAGE_RECEIVED.name, 0),
        "responses": by_kind.get(ev.RESPONSE_SENT.name, 0),
        "observations": by_kind.get(ev.OBSERVATION_RECORDED.name, 0),
        "by_kind": dict(sorted(by_kind.items())),
        "first_ts": activity["first_ts"],
        "last_ts": activity["last_ts"],
        "file_bytes": mind.path.stat().st_size,
        "projection_cache": cache.state,
    }


def log(mind: Mind, n: int, kind: str | None) -> list[Event]:
    return mind.tail(n, kind)


def search(mind: Mind, text: str, limit: int) -> list[tuple[Event, str]]:
    return mind.search(text, limit)


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id, "ts": event.ts, "kind": event.kind, "content": event.content,
        "meta": event.meta, "prev_hash": event.prev_hash, "hash": event.hash,
    }
