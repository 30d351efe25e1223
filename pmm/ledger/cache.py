"""The projection cache: the projections' states at one event, sealed with this machine's key
(pmm.ledger.seal), so a cache forged in a file, or written on another machine, is never
trusted. Only an optimisation: a missing, stale or unsealed cache means a replay.

Two rows, so that what a chat turn reads and rewrites does not grow with the mind's history:
``mind`` holds every state but the commitments no longer open (counts, open items, windows:
small), ``mind:done`` those commitments (history: it grows, and only a close, reopen, drop,
expiry or retraction changes it). In the history's place the ``mind`` row holds the SHA-256
of the ``done`` row's text, under its seal, so the two cannot be mixed; that row is read only
when something asks for a commitment that is not open (``Deferred``), checked against that
digest then, and written again only when it changed. (The digest is not in the ``done`` row's
own ``mac`` column: SQLite reads a row's columns in order, and that one comes after megabytes.)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import cast

from pmm.domain import projections
from pmm.domain.states import Commitment, States
from pmm.ledger import seal
from pmm.ledger.chain import GENESIS_PREV

KEY = "mind"
DONE_KEY = "mind:done"
DIGEST = "sha256:"  # what the mind row holds in place of the history: its row's digest
# 2: the commitments no longer open moved to their own row (a format-1 row is rebuilt).
FORMAT = 2

Done = dict[str, Commitment]


def version() -> str:
    """What a row must have been written by: this cache format and these projections."""
    return f"cache:{FORMAT};{projections.projections_version()}"


def present(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM projection_cache WHERE name = ?", (KEY,)).fetchone() is not None


class Deferred(Mapping[str, Commitment]):
    """The commitments no longer open, read from the ``done`` row on first use: a chat turn
    folds and seals the other states without reading (or writing) the history. ``load``
    returns the row's text when it still has ``digest``, else None, and ``fallback`` gives
    the true value then (a replay: the row was altered behind pmm's back)."""

    def __init__(self, load: Callable[[], str | None], digest: str,
                 fallback: Callable[[], Done], data: Done | None = None) -> None:
        self.digest = digest
        self._load, self._fallback = load, fallback
        self._data = data

    @classmethod
    def written(cls, data: Done, digest: str) -> Deferred:
        """What was just written as the ``done`` row with ``digest``: a later write that finds
        it unchanged leaves the row as it is."""
        return cls(lambda: None, digest, lambda: data, data)

    def rebound(self, load: Callable[[], str | None], fallback: Callable[[], Done]) -> Deferred:
        """The same value, read through another open ledger when it is needed."""
        if self._data is not None:
            return self
        return Deferred(load, self.digest, fallback)

    @property
    def data(self) -> Done:
        if self._data is None:
            self._data = _parsed(self._load(), self.digest)
            if self._data is None:
                self._data = self._fallback()
        return self._data

    def __getitem__(self, key: str) -> Commitment:
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"Deferred({'unread' if self._data is None else len(self._data)})"


def _parsed(text: str | None, digest: str) -> Done | None:
    if text is None or _digest(text) != digest:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return cast(Done, value) if isinstance(value, dict) else None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Row:
    """A sealed ``mind`` row that still holds: the event it reflects and its text."""

    last_id: int
    last_hash: str
    state: str


def sealed(conn: sqlite3.Connection, mind_id: str, hash_at: Callable[[int], str | None]) -> Row | None:
    """The ``mind`` row, when the seal holds, its version is this pmm's and the event it
    reflects still has the hash it was built at (the text is not parsed here)."""
    row = conn.execute("SELECT version, last_id, last_hash, state, mac FROM projection_cache"
                       " WHERE name = ?", (KEY,)).fetchone()
    if row is None or row[0] != version() or not isinstance(row[3], str):
        return None
    current, last_id, last_hash, state, mac = row
    if not seal.matches(seal.key(create=False), mac, mind_id, current, last_id, last_hash, state):
        return None  # forged, or written on another machine: replay instead
    if (GENESIS_PREV if last_id == 0 else hash_at(last_id)) != last_hash:
        return None
    return Row(last_id, last_hash, state)


def load(row: Row, read: Callable[[], str | None], fallback: Callable[[], Done], *,
         strict: bool = False) -> States | None:
    """The states a ``sealed`` row holds. In place of the commitments no longer open it holds
    the digest of the ``done`` row: they are read (``read``: that row's text) when first asked
    for; ``strict``: now, and a ``done`` row that does not match makes the whole cache
    untrusted. ``fallback()`` is their true value by replay, for a ``done`` row altered since."""
    try:
        states = json.loads(row.state)
    except (ValueError, RecursionError):
        return None
    digest = _done_digest(states)
    if digest is None:
        return None
    if strict:
        done = _parsed(read(), digest)
        if done is None:
            return None
        states["commitments"]["done"] = done
    else:
        states["commitments"]["done"] = Deferred(read, digest, fallback)
    return cast(States, states)


def _done_digest(states: object) -> str | None:
    """The ``done`` row's digest, as a ``mind`` row's states hold it."""
    commitments = states.get("commitments") if isinstance(states, dict) else None
    done = commitments.get("done") if isinstance(commitments, dict) else None
    return done.removeprefix(DIGEST) if isinstance(done, str) and done.startswith(DIGEST) else None


def read_done(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT state FROM projection_cache WHERE name = ?", (DONE_KEY,)).fetchone()
    return row[0] if row is not None and isinstance(row[0], str) else None


def store(conn: sqlite3.Connection, mind_id: str, states: States, last_id: int,
          last_hash: str) -> States:
    """Write the sealed rows (inside the caller's transaction); the ``done`` row only when it
    changed. Returns ``states`` with the history as written (a ``Deferred`` already read), so
    that sealing them again finds it unchanged."""
    current, secret = version(), seal.key(create=True)
    done = states["commitments"]["done"]
    if isinstance(done, Deferred) and _stored_digest(conn, current) == done.digest:
        digest = done.digest  # unchanged since it was read: the row stays as it is
    else:
        data = dict(done)
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        digest = _digest(text)
        _put(conn, DONE_KEY, current, last_id, last_hash, text, "")  # sealed through the mind row
        written = cast(Done, Deferred.written(data, digest))
        states = {**states, "commitments": {**states["commitments"], "done": written}}
    hot = {**states["commitments"], "done": DIGEST + digest}
    state = json.dumps({**states, "commitments": hot}, separators=(",", ":"), sort_keys=True)
    mac = seal.mac(secret, mind_id, current, last_id, last_hash, state) if secret else ""
    _put(conn, KEY, current, last_id, last_hash, state, mac)
    return states


def _stored_digest(conn: sqlite3.Connection, current: str) -> str | None:
    """The ``done`` digest in the ``mind`` row now stored (small: the history is not read)."""
    row = conn.execute("SELECT state FROM projection_cache WHERE name = ? AND version = ?",
                       (KEY, current)).fetchone()
    try:
        return _done_digest(json.loads(row[0])) if row is not None and isinstance(row[0], str) else None
    except (ValueError, RecursionError):
        return None


def _put(conn: sqlite3.Connection, name: str, version: str, last_id: int, last_hash: str,
         state: str, mac: str) -> None:
    conn.execute(
        "INSERT INTO projection_cache(name, version, last_id, last_hash, state, mac)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
        " version = excluded.version, last_id = excluded.last_id,"
        " last_hash = excluded.last_hash, state = excluded.state, mac = excluded.mac",
        (name, version, last_id, last_hash, state, mac),
    )
