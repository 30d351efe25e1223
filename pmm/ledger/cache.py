"""The projection cache row: the projections' states at one event, sealed with this machine's
key (pmm.ledger.seal), so a cache forged in a file, or written on another machine, is never
trusted. Only an optimisation: a missing, stale or unsealed cache means a replay."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from pmm.domain import projections
from pmm.domain.states import States
from pmm.ledger import seal
from pmm.ledger.chain import GENESIS_PREV

KEY = "mind"


def present(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM projection_cache WHERE name = ?", (KEY,)).fetchone() is not None


def load(conn: sqlite3.Connection, mind_id: str,
         hash_at: Callable[[int], str | None]) -> tuple[States, int] | None:
    """The cached states and the event id they reflect, when the seal holds, the projections'
    version is this pmm's and that event still has the hash the cache was built at."""
    row = conn.execute("SELECT version, last_id, last_hash, state, mac FROM projection_cache"
                       " WHERE name = ?", (KEY,)).fetchone()
    if row is None or row[0] != projections.projections_version():
        return None
    version, last_id, last_hash, state, mac = row
    if not seal.matches(seal.key(create=False), mac, mind_id, version, last_id, last_hash, state):
        return None  # forged, or written on another machine: replay instead
    if (GENESIS_PREV if last_id == 0 else hash_at(last_id)) != last_hash:
        return None
    try:
        return json.loads(state), last_id
    except ValueError:
        return None


def store(conn: sqlite3.Connection, mind_id: str, states: States, last_id: int,
          last_hash: str) -> None:
    """Write the sealed row (inside the caller's transaction)."""
    version, secret = projections.projections_version(), seal.key(create=True)
    state = json.dumps(states, separators=(",", ":"), sort_keys=True)
    mac = seal.mac(secret, mind_id, version, last_id, last_hash, state) if secret else ""
    conn.execute(
        "INSERT INTO projection_cache(name, version, last_id, last_hash, state, mac)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
        " version = excluded.version, last_id = excluded.last_id,"
        " last_hash = excluded.last_hash, state = excluded.state, mac = excluded.mac",
        (KEY, version, last_id, last_hash, state, mac),
    )
