"""The hash chain: how an event's hash is computed and how a stream of events is checked.

Encoding (docs/ledger-format.md): SHA-256 over the concatenation, for each of format version,
mind id, id, ts, kind, content, meta, prev_hash in that order, of the field's UTF-8 bytes
preceded by their length as an 8-byte big-endian unsigned integer. Integers are written in
decimal. The genesis event's prev_hash is 64 zeros.

Ledger format 2 hashes the same eight fields, except that the content's place holds its digest
(``content_digest``: the hex SHA-256 of ``pmm-content-v2``, a zero byte and the content's
UTF-8 bytes), so the content can be removed (``pmm forget``) while the chain still verifies:
a forgotten event keeps only that digest, its tombstone. Format 1 hashes the content itself.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from pmm.domain.checks import check_row

FORMAT_VERSION = 2  # what new minds are created as; every format up to it is read
FORMATS = (1, 2)
GENESIS_PREV = "0" * 64
CONTENT_DOMAIN = b"pmm-content-v2\x00"  # domain separation: a content digest is no other hash

_len = struct.Struct(">Q").pack
_sha256 = hashlib.sha256

# A row as the checker wants it: id, then ts, kind, content, meta, prev_hash, hash as bytes;
# format 2 adds the tombstone: the stored content digest of a forgotten event, else None.
RawRow = tuple[int, bytes, bytes, bytes, bytes, bytes, bytes] | tuple[
    int, bytes, bytes, bytes, bytes, bytes, bytes, bytes | None]


def _field(value: bytes) -> bytes:
    return _len(len(value)) + value


def chain_prefix(format_version: int, mind_id: str) -> bytes:
    """The encoded fields every event of one mind shares."""
    return _field(b"%d" % format_version) + _field(mind_id.encode("utf-8"))


def prefix_format(prefix: bytes) -> int:
    """The ledger format a ``chain_prefix`` was made for (its first field)."""
    return int(prefix[8:8 + int.from_bytes(prefix[:8], "big")])


def content_digest(content: bytes) -> str:
    """The hex digest that stands for an event's content in a format-2 hash (and its tombstone)."""
    return _sha256(CONTENT_DOMAIN + content).hexdigest()


def is_digest(value: object) -> bool:
    """Whether ``value`` is a digest as pmm writes it: 64 lowercase hex digits (bytes or str)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value))


def event_hash(
    prefix: bytes, id: int, ts: str, kind: str, content: str, meta: str, prev_hash: str,
    *, forgotten: str | None = None,
) -> str:
    """The hex SHA-256 of one event, given its mind's ``chain_prefix``. For format 2 the content
    is hashed as its digest; ``forgotten`` is that digest when the content is gone."""
    fmt = prefix_format(prefix)
    if fmt == 1:
        if forgotten is not None:
            raise ValueError("a format-1 event's content cannot be forgotten")
        body = content.encode()
    else:
        body = (forgotten if forgotten is not None else content_digest(content.encode())).encode()
    return _hash_raw(prefix, id, ts.encode(), kind.encode(), body, meta.encode(), prev_hash.encode())


def raw_event_hash(prefix: bytes, id: int, ts: bytes, kind: bytes, content: bytes, meta: bytes,
                   prev: bytes) -> str:
    """``event_hash`` of fields given as stored bytes (a format-2 prefix hashes the content's digest)."""
    body = content if prefix_format(prefix) == 1 else content_digest(content).encode()
    return _hash_raw(prefix, id, ts, kind, body, meta, prev)


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


class Problem(NamedTuple):
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
    check_shape, n, short, wide = check_row, _SHORT, _SHORTEST, _len
    digests = prefix_format(prefix) >= 2
    sha, domain, join = _sha256, CONTENT_DOMAIN, b"".join
    row: RawRow | None = None
    try:
        for row in rows:
            if len(row) == 8:
                id, ts, kind, content, meta, prev_hash, stored, tomb = row
            else:
                id, ts, kind, content, meta, prev_hash, stored = row[:7]
                tomb = row[7] if len(row) > 7 else None
            body = content
            if digests:
                if tomb is None:
                    body = sha(domain + content).hexdigest().encode()
                elif content != b"" or not is_digest(tomb):
                    if id != expect_id:
                        state.problem = id_problem(expect_id, id)
                        break
                    state.problem = Problem(id, (
                        "its content is marked forgotten but is still stored" if content != b""
                        else "its tombstone is not a content digest (64 lowercase hex digits)"))
                    break
                else:
                    body = tomb
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
            i = b"%d" % id  # _hash_raw's join, written out: every event of every verify passes here
            computed = sha(join((
                prefix, n[len(i)], i, n[len(ts)] if len(ts) < short else wide(len(ts)), ts,
                n[len(kind)] if len(kind) < short else wide(len(kind)), kind,
                n[len(body)] if len(body) < short else wide(len(body)), body,
                n[len(meta)] if len(meta) < short else wide(len(meta)), meta,
                n[len(prev_hash)] if len(prev_hash) < short else wide(len(prev_hash)), prev_hash,
            ))).hexdigest()
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
    if isinstance(row, tuple) and len(row) in (len(_FIELDS), len(_FIELDS) + 1):
        if type(row[0]) is not int:
            return "id is missing, NULL or not an integer"
        for name, value in zip(_FIELDS[1:], row[1:len(_FIELDS)], strict=True):
            if type(value) is not bytes:
                return f"{name} is missing, NULL or not stored as text"
    return "a field is missing, NULL or of the wrong type"


def id_problem(expected: int, got: int) -> Problem:
    if got < expected:
        return Problem(got, f"id {got} appears again after event {expected - 1} (duplicate or reordered row)")
    missing = f"event {expected}" if got == expected + 1 else f"events {expected}-{got - 1}"
    return Problem(expected, f"ids jump from {expected - 1} to {got}: {missing} missing")


def tombstone_problem(tombstones: dict[int, str], records: Iterable[tuple[int, bytes | str]],
                      first_id: int = 1) -> Problem | None:
    """What is wrong between a chain's tombstones (forgotten content digests, by event id) and
    its ``content_forgotten`` events (``records``: id and meta), or None. Every tombstone must
    be recorded by a later forget event with the same digest, and every forget event's target
    (from ``first_id`` on: a partial export holds only those) must be a tombstone: content
    removed outside pmm, or a forget whose content is still stored, is reported."""
    import json

    recorded: set[int] = set()
    for record_id, meta in records:
        try:
            parsed = json.loads(meta)
            target, digest = parsed["event"], parsed["content_digest"]
        except (ValueError, KeyError, TypeError):
            return Problem(record_id, "a content_forgotten event without the event and digest it forgot")
        if type(target) is not int or target >= record_id:
            return Problem(record_id, "a content_forgotten event that names no earlier event")
        if target < first_id:
            continue
        if target not in tombstones:
            return Problem(target, f"recorded forgotten by event {record_id}, but its content is"
                                   " still stored")
        if tombstones[target] != digest:
            return Problem(target, f"its tombstone is not the content digest event {record_id}"
                                   " recorded")
        recorded.add(target)
    for target in sorted(t for t in set(tombstones) - recorded if t >= first_id):
        return Problem(target, "its content is gone but no content_forgotten event records that"
                               " (removed outside pmm)")
    return None
