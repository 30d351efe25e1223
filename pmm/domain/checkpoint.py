"""A checkpoint: what pmm signs and what the witness remembers (mind id, event count, head hash).

Its text is in the style of a C2SP tlog-checkpoint note body: an origin line, the size (events
1..size), and the head hash in standard base64, each ending in a newline::

    pmm/5f0c2d9e8b7a4c1d9e0f1a2b3c4d5e6f
    1234
    q0YxWbdrEJ3a6Uq8v1ZC8O5ZXo2m6EN7V6S9Dd7l0xw=

The live file's bytes change on every WAL checkpoint; this text only changes when events do.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pmm import errors
from pmm.domain.ids import is_mind_id

ORIGIN_PREFIX = "pmm/"
COMMENT_TAG = "pmm-checkpoint"
_HASH = re.compile(r"[0-9a-f]{64}")


class Checkpoint(NamedTuple):
    """What a signature or the witness vouches for: a mind, its number of events, its head."""

    mind_id: str
    size: int  # the number of events, which is also the head's id (ids have no gaps)
    head: str  # the hex SHA-256 hash of event ``size``

    @property
    def origin(self) -> str:
        return ORIGIN_PREFIX + self.mind_id

    def text(self) -> str:
        """The exact bytes that are signed (UTF-8 of this text)."""
        import base64  # signing and signatures only: a plain verify or write never needs it

        root = base64.b64encode(bytes.fromhex(self.head)).decode()
        return f"{self.origin}\n{self.size}\n{root}\n"

    def fields(self) -> str:
        """The three lines on one line, space-separated: how a signature's comment carries it."""
        return " ".join(self.text().split("\n")[:3])

    def short(self) -> str:
        return f"event {self.size:,} (hash {self.head[:16]}…)"


def parse(text: str) -> Checkpoint:
    """The checkpoint in ``text`` (three lines); anything else raises ``IntegrityError``."""
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "":
        raise errors.IntegrityError("the checkpoint is not three lines")
    return from_fields(lines[:3])


def from_fields(fields: list[str]) -> Checkpoint:
    """A checkpoint from its origin, size and base64 root hash, each checked strictly."""
    if len(fields) != 3:
        raise errors.IntegrityError("the checkpoint needs an origin, a size and a hash")
    origin, size, root = fields
    mind_id = origin.removeprefix(ORIGIN_PREFIX)
    if not origin.startswith(ORIGIN_PREFIX) or not is_mind_id(mind_id):
        raise errors.IntegrityError(f"the checkpoint's origin {origin[:60]!r} is not a pmm mind")
    if not size.isdigit() or size != str(int(size)) or int(size) < 1:
        raise errors.IntegrityError(f"the checkpoint's size {size[:30]!r} is not a positive number")
    import base64
    import binascii

    try:
        raw = base64.b64decode(root, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or base64.b64encode(raw).decode() != root:
        raise errors.IntegrityError("the checkpoint's hash is not 32 bytes of base64")
    return Checkpoint(mind_id, int(size), raw.hex())


def of(mind_id: str, size: int, head: str) -> Checkpoint:
    if not is_mind_id(mind_id):
        raise errors.IntegrityError(f"the mind id {errors.quoted(mind_id)} is not one pmm makes")
    if not _HASH.fullmatch(head):
        raise errors.IntegrityError(f"event {size}'s hash is not hex SHA-256")
    return Checkpoint(mind_id, size, head)
