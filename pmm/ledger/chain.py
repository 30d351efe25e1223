"""The hash chain: how an event's hash is computed and how a stream of events is checked.

Encoding (docs/ledger-format.md): SHA-256 over the concatenation, for each of format version,
mind id, id, ts, kind, content, meta, prev_hash in that order, of the field's UTF-8 bytes
preceded by their length as an 8-byte big-endian unsigned integer. Integers are written in
decimal. The genesis event's prev_hash is 64 zeros.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pmm.domain.checks import check_row

FORMAT_VERSION = 1
GENESIS_PREV = "0" * 64

_len = struct.Struct(">Q").pack
_sha256 = hashlib.sha256

# A row as the checker wants it: id, then ts, kind, content, meta, prev_hash, hash as bytes.
RawRow = tuple[int, bytes, bytes, bytes, bytes, bytes, bytes]


def _field(value: bytes) -> bytes:
    return _len(len(value)) + value


def chain_prefix(format_version: int, mind_id: str) -> bytes:
    """The encoded fields every event of one mind shares."""
    return _field(b"%d" % format_version) + _field(mind_id.encode("utf-8"))


def event_hash(
    prefix: bytes, id: int, ts: str, kind: str, content: str, meta: str, prev_hash: str
) -> str:
    """The hex SHA-256 of one event, given its mind's ``chain_prefix``."""
    return _hash_raw(
        prefix, id, ts.encode(), kind.encode(), content.encode(), meta.encode(), prev_hash.encode()
    )


def _hash_raw(
    prefix: bytes, id: int, ts: bytes, kind: bytes, content: bytes, meta: bytes, prev: bytes
) -> str:
    # the length prefixes of short fields are looked up, not packed: every import and verify
    # hashes every event, and a tuple index costs a third of a call
    i, n = b"%d" % id, _SHORT
    return _sha256(
        b"".join(
            (
                prefix,
                n[len(i)], i,
                n[len(ts)] if len(ts) < _SHORTEST else _len(len(ts)), ts,
                n[len(kind)] if len(kind) < _SHORTEST else _len(len(kind)), kind,
                n[len(content)] if len(content) < _SHORTEST else _len(len(content)), content,
                n[len(meta)] if len(meta) < _SHORTEST else _len(len(meta)), meta,
                n[len(prev)] if len(prev) < _SHORTEST else _len(len(prev)), prev,
            )
        )
    ).hexdigest()


_SHORTEST = 4096
_SHORT = tuple(_len(length) for length in range(_SHORTEST))


@dataclass(frozen=True)
class Problem:
    """The first thing wrong in a chain: which event and what."""

    event_id: int
    reason: str

    def __str__(self) -> str:
        return f"event {self.event_id}: {self.reason}"


@dataclass
class ChainState:
    """How far a check got: events seen, last id and hash, and the first problem if any."""

    count: int = 0
    last_id: int = 0
    last_hash: str = GENESIS_PREV
    problem: Problem | None = None


def check_chain(
    prefix: bytes,
    rows: Iterable[RawRow],
    state: ChainState,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 65536,
) -> ChainState:
    """Recompute every hash and check every link and id, and that each event has the shape
    its kind declares (``checks.check_row``); stop at the first problem.

    ``state`` says where the stream starts (``last_id`` and ``last_hash`` of the event before
    the first row) and is updated in place, so a check can be resumed across batches.
    """
    expect_id = state.last_id + 1
    prev = state.last_hash.encode()
    count = 0
    hash_raw, check_shape = _hash_raw, check_row
    row: RawRow | None = None
    try:
        for row in rows:
            id, ts, kind, content, meta, prev_hash, stored = row
            if id != expect_id:
                state.problem = id_problem(expect_id, id)
                break
            if prev_hash != prev:
                if type(prev_hash) is not bytes:
                    raise TypeError  # NULL, or not stored as text: named below
                state.problem = Problem(
                    id,
                    f"prev_hash does not match the hash of event {id - 1}"
                    " (an event was removed, inserted, reordered or altered)",
                )
                break
            computed = hash_raw(prefix, id, ts, kind, content, meta, prev_hash)
            if computed.encode() != stored:
                if type(stored) is not bytes:
                    raise TypeError
                state.problem = Problem(
                    id, "stored hash does not match its contents (the event was altered)"
                )
                break
            shape = check_shape(ts, kind, content, meta)
            if shape is not None:
                state.problem = Problem(id, shape)
                break
            prev = stored
            expect_id += 1
            count += 1
            row = None  # a failure in fetching the next row is that (next) event's
            if on_progress is not None and count % progress_every == 0:
                on_progress(progress_every)
    except UnicodeError:  # a row source met text that has no UTF-8 ("\ud800" in an export)
        bad_id = row[0] if row is not None and isinstance(row[0], int) else expect_id
        state.problem = Problem(bad_id, "a field holds a lone surrogate (\\ud800-\\udfff), which is not text")
    except (TypeError, ValueError, AttributeError):
        bad_id = row[0] if row is not None and type(row[0]) is int else expect_id
        state.problem = Problem(bad_id, _type_problem(row))
    if on_progress is not None:
        on_progress(count % progress_every)
    state.count += count
    state.last_id = expect_id - 1
    state.last_hash = prev.decode()
    return state


_FIELDS = ("id", "ts", "kind", "content", "meta", "prev_hash", "hash")


def _type_problem(row: object) -> str:
    """Name the field of ``row`` that is not what pmm writes (a mind file's reader turns a value
    of another SQLite storage class, such as a BLOB, into NULL)."""
    if isinstance(row, tuple) and len(row) == len(_FIELDS):
        if type(row[0]) is not int:
            return "id is missing, NULL or not an integer"
        for name, value in zip(_FIELDS[1:], row[1:], strict=True):
            if type(value) is not bytes:
                return f"{name} is missing, NULL or not stored as text"
    return "a field is missing, NULL or of the wrong type"


def id_problem(expected: int, got: int) -> Problem:
    if got < expected:
        return Problem(got, f"id {got} appears again after event {expected - 1} (duplicate or reordered row)")
    missing = f"event {expected}" if got == expected + 1 else f"events {expected}-{got - 1}"
    return Problem(expected, f"ids jump from {expected - 1} to {got}: {missing} missing")
