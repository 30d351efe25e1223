"""Small files written whole or not at all: signatures, backups, the witness."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from pmm import errors


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` through a temp file beside it (fsync, rename, fsync the directory), so a
    crash leaves the old file or the new one, never half of either."""
    tmp = temp_beside(path)
    try:
        write_new(tmp, data, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (never an existing file) with exactly ``mode``, write ``data``, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path: Path, what: str, limit: int) -> bytes:
    """Up to ``limit`` + 1 bytes of a file the user named: a missing file or a directory is a
    usage error (exit 2), an unreadable one is refused input (exit 6)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    except FileNotFoundError:
        raise errors.UsageError(f"no {what} file at {path}") from None
    except IsADirectoryError:
        raise errors.UsageError(f"{path} is a directory, not a {what} file") from None
    except OSError as exc:
        raise errors.InputRejected(f"cannot read {what} file {path}: {exc.strerror}") from None


def temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
