"""Every file pmm writes, whole or not at all: exports, signatures, keys, backups, the witness.

One policy for a path the user names (``-o FILE``) and for pmm's own small files:

- a regular file appears whole or not at all: a temp file beside it, fsync, rename, fsync the
  folder. A crash leaves the old file or the new one, never half of either;
- a symlink is written *through*: the file it points to is replaced (atomically), the link stays;
- a character device (``/dev/null``, ``/dev/stdout``, a terminal) or a FIFO is written straight
  into and never replaced; a block device, a socket or a directory is refused;
- never over a file the command reads, a SQLite database (any pmm mind), a database's WAL or
  journal, or a private key (only ``keygen --force`` replaces keys): refused, nothing changed;
- a missing folder, a directory given as the file, or a folder pmm may not write in is a usage
  error (exit 2); a full disk or quota (ENOSPC, EDQUOT, EFBIG) is exit 1 with a clear message,
  and a regular file is then left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

from pmm import errors
from pmm.ledger.connection import SQLITE_MAGIC, hold, in_use

WAL_MAGICS = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
DB_COMPANIONS = ("-wal", "-shm", "-journal")
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


class Target(NamedTuple):
    """Where an output goes: ``real`` is ``path`` with symlinks followed; a ``stream`` (a character
    device or a FIFO) is written into in place."""

    path: Path
    real: Path
    stream: bool


def check_output(path: Path, *, reading: Iterable[Path] = (), what: str = "output") -> Target:
    """Refuse ``path`` as an output before any work is done (see the module docstring);
    ``reading`` are the files the command reads, which it must never overwrite."""
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise errors.UsageError(f"{path.parent} is not a folder, so {path} cannot be written",
                                hint="give a path inside an existing folder") from None
    except OSError as exc:
        raise errors.UsageError(f"cannot reach {path}: {exc.strerror}") from None
    if st is None:
        real = Path(os.path.realpath(path))  # a dangling symlink: write where it points
        if not real.parent.is_dir():
            raise errors.UsageError(f"no folder {path.parent} for the {what} {path}",
                                    hint=f"create it first (mkdir -p {path.parent}) or choose another path")
        _refuse_companion(path, real)  # a WAL that SQLite would find beside its database
        return Target(path, real, False)
    if stat.S_ISDIR(st.st_mode):
        raise errors.UsageError(f"{path} is a folder, not a file",
                                hint=f"give a file name, e.g. -o {path / 'NAME'}")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return Target(path, path, True)
    if not stat.S_ISREG(st.st_mode):
        raise errors.UsageError(f"{path} is a {_kind(st.st_mode)}; pmm writes only to files, "
                                "character devices (such as /dev/null) and pipes")
    for source in reading:
        with contextlib.suppress(OSError):
            other = os.stat(source)
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                raise errors.UsageError(f"{path} is the file this command reads itself; refusing to overwrite it",
                                        hint="write the output to another file")
    real = Path(os.path.realpath(path))
    _refuse_precious(path, real, what)
    return Target(path, real, False)


def _refuse_precious(path: Path, real: Path, what: str) -> None:
    """A SQLite file (a mind is one), the WAL or journal of one, or a private key is never
    overwritten: losing either cannot be undone. Keys are replaced only by ``keygen --force``."""
    head = _head(path, real)
    _refuse_companion(path, real)
    if head.startswith(SQLITE_MAGIC) or head[:4] in WAL_MAGICS:
        raise errors.UsageError(f"{path} is a SQLite database (a pmm mind?); pmm never overwrites one",
                                hint="write the output to another file; nothing was changed")
    if what != "key" and head.startswith(b"-----BEGIN") and b"PRIVATE KEY" in head:
        raise errors.UsageError(f"{path} is a private key; pmm never overwrites one",
                                hint="write the output to another file; nothing was changed")


def _refuse_companion(path: Path, real: Path) -> None:
    companion = next((s for s in DB_COMPANIONS if real.name.endswith(s)), None)
    if companion is not None:
        base = real.with_name(real.name.removesuffix(companion))
        if base.is_file() and _head(base, base).startswith(SQLITE_MAGIC):
            raise errors.UsageError(f"{path} belongs to the SQLite database {base}; refusing to write it",
                                    hint="write the output to another file")


def _head(path: Path, real: Path) -> bytes:
    try:
        with open(real, "rb") as handle:
            return handle.read(64)  # enough for SQLite's magic and a PEM private key's first line
    except OSError as exc:
        raise errors.UsageError(f"cannot read {path} to check that it is safe to replace: {exc.strerror}",
                                hint="write the output to another file") from None


def _kind(mode: int) -> str:
    if stat.S_ISBLK(mode):
        return "block device"
    return "socket" if stat.S_ISSOCK(mode) else "special file"


@contextlib.contextmanager
def open_output(path: Path, *, mode: int = 0o600, reading: Iterable[Path] = (),
                what: str = "output") -> Iterator[IO[bytes]]:
    """A binary handle whose bytes become ``path`` when the block ends without an error
    (nothing changes otherwise); a device or FIFO is written into directly."""
    target = check_output(path, reading=reading, what=what)
    if target.stream:
        with _translated(target, what):
            # no O_CREAT: if the node vanished since the check, do not make a file in its place
            with os.fdopen(os.open(target.path, os.O_WRONLY | os.O_NOCTTY), "wb") as handle:
                yield handle
                handle.flush()
        return
    tmp = temp_beside(target.real)
    try:
        fd = _create(tmp, mode, target, what)
        hold(fd)  # while it is written: a cleaner elsewhere leaves it be (remove_stale)
        with _translated(target, what):
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            if os.path.lexists(target.real):
                _refuse_precious(target.path, target.real, what)  # it may have changed while we wrote
            os.replace(tmp, target.real)
            fsync_dir(target.real.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, reading: Iterable[Path] = (),
                 what: str = "output") -> None:
    """Write ``data`` as ``path`` under the policy of this module (whole or not at all)."""
    with open_output(path, mode=mode, reading=reading, what=what) as handle:
        handle.write(data)


def _create(tmp: Path, mode: int, target: Target, what: str) -> int:
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        if exc.errno in DENIED:
            raise errors.UsageError(f"cannot write the {what} {target.path}: {exc.strerror} in "
                                    f"{target.real.parent}", hint="choose a folder you can write in") from None
        _raise_full(exc, target, what)
        raise
    os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
    return fd


@contextlib.contextmanager
def _translated(target: Target, what: str) -> Iterator[None]:
    """A full disk or an I/O error while writing becomes one clear error."""
    try:
        yield
    except OSError as exc:
        _raise_full(exc, target, what)
        if exc.errno == errno.EIO:
            raise errors.WriteRefused(f"could not write the {what} {target.path}: input/output error",
                                  hint=_unchanged(target)) from None
        raise


def _raise_full(exc: OSError, target: Target, what: str) -> None:
    if exc.errno in FULL:
        reason = "the file is larger than this process may write (ulimit -f)" \
            if exc.errno == errno.EFBIG else "no space left on the device (or the disk quota is used up)"
        raise errors.WriteRefused(f"could not write the {what} {target.path}: {reason}",
                              hint=f"{_unchanged(target)}; free some space and run the command again") from None


def _unchanged(target: Target) -> str:
    return "part of it may have been written" if target.stream else f"{target.path} was left as it was"


@contextlib.contextmanager
def new_file(path: Path, mode: int = 0o600) -> Iterator[IO[bytes]]:
    """Create ``path`` (never an existing file) with exactly ``mode`` and write it through the
    handle yielded; fsynced when the block ends without an error. For pmm's private temp files:
    the caller translates errors and removes the file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
        yield handle
        handle.flush()
        os.fsync(fd)


def _read_at_most(handle: IO[bytes], size: int) -> bytes:
    """``handle.read(size)`` without its buffer of ``size`` bytes allocated up front (16 GiB for
    a backup: refused outright on a machine with less memory), in 1 MiB reads."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = handle.read(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def open_input(path: Path, what: str) -> Iterator[IO[bytes]]:
    """A file the user named, open for reading: a missing file or a directory is a usage error
    (exit 2), one that cannot be opened is refused input (exit 6)."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise errors.UsageError(f"no {what} file at {path}") from None
    except IsADirectoryError:
        raise errors.UsageError(f"{path} is a directory, not a {what} file") from None
    except OSError as exc:
        raise errors.InputRejected(f"cannot read {what} file {path}: {exc.strerror}") from None
    with handle:
        yield handle


def read_file(path: Path, what: str, limit: int) -> bytes:
    """Up to ``limit`` + 1 bytes of a file the user named (``open_input``); a read that fails is
    refused input (exit 6)."""
    with open_input(path, what) as handle:
        try:
            return _read_at_most(handle, limit + 1)
        except OSError as exc:
            raise errors.InputRejected(f"cannot read {what} file {path}: {exc.strerror}") from None


def temp_beside(path: Path) -> Path:
    """A private temp name for ``path``, in its folder: ``.NAME.tmp-PID-RANDOM``. The process id
    lets a later pmm tell one whose process is gone (``remove_stale``)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")


_STALE = re.compile(r"((\d{1,10})-[0-9a-f]{8})(?:-fts)?(?:-wal|-shm|-journal)?")  # -fts: a bulk import's index


def remove_stale(path: Path, *, also_in: Iterable[Path] = ()) -> list[Path]:
    """Remove ``temp_beside(path)`` files (and their SQLite side files) in ``path``'s folder and
    the folders ``also_in`` whose process is gone: what a pmm killed with SIGKILL, or by a power
    cut, left (a restore's decrypted mind, a backup's snapshot). Only names made from ``path``'s
    own, and only of processes no longer running here, are touched; failures are ignored."""
    prefix = f".{path.name}.tmp-"
    removed = []
    for folder in dict.fromkeys([path.parent, *also_in]):
        try:
            names = [e.name for e in os.scandir(folder) if e.name.startswith(prefix)]
        except OSError:
            continue
        for name in names:
            found = _STALE.fullmatch(name[len(prefix):])
            if found is None or _running(int(found[2])):
                continue
            # a process this one cannot see (another PID namespace, another host sharing the
            # folder) may still own it: its owner holds a flock on the temp file itself
            if in_use(folder / f"{prefix}{found[1]}"):  # the temp file itself, not a side file
                continue
            with contextlib.suppress(OSError):
                (folder / name).unlink()
                removed.append(folder / name)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process (or a pid we cannot ask about): leave its files
    return True


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
