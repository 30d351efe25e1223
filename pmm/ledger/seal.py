"""The projection cache's seal: an HMAC under a key that lives on this machine, never in a mind.

Anyone who can write a mind file can recompute any digest stored in it, so a digest cannot say
whether the cached state is what pmm computed. A MAC under a per-machine key (the user's state
dir, mode 0600) can: a cache this machine's pmm wrote is trusted; a forged one, or one from
another machine (a shared or restored file), is ignored and rebuilt by replay at the next write.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import os
from pathlib import Path

KEY_FILE = "projection-cache.key"
KEY_BYTES = 32


def _key_path() -> Path:
    from pmm.paths import state_dir

    return state_dir() / KEY_FILE


@functools.cache
def _cached_key(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if len(data) == KEY_BYTES else None


def key(*, create: bool) -> bytes | None:
    """This machine's cache key; made (atomically, never overwritten) when ``create`` is set.

    ``None`` when there is none and it may not or cannot be made: then no cache is trusted,
    which costs speed, never correctness."""
    path = _key_path()
    found = _cached_key(path)
    if found is not None or not create:
        return found
    _cached_key.cache_clear()
    with contextlib.suppress(OSError):
        _make(path)
    return _cached_key(path)


def _make(path: Path) -> None:
    import secrets  # once per machine: not on every command's start-up

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
        os.close(fd)
        # A link never replaces: when two processes race, both end up using the winner's key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def mac(secret: bytes, mind_id: str, version: str, last_id: int, last_hash: str, state: str) -> str:
    """The seal over everything a cache row claims (JSON for the header keeps it unambiguous;
    ``state`` is compact JSON, which holds no raw newline)."""
    header = json.dumps([mind_id, version, last_id, last_hash], separators=(",", ":"))
    return hmac.new(secret, f"{header}\n{state}".encode(), hashlib.sha256).hexdigest()


def matches(secret: bytes | None, stored: str, mind_id: str, version: str, last_id: int,
            last_hash: str, state: str) -> bool:
    if secret is None or not stored:
        return False
    return hmac.compare_digest(stored, mac(secret, mind_id, version, last_id, last_hash, state))
