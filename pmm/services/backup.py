"""``pmm backup`` and ``pmm restore``: an encrypted snapshot in the age format, and its way back.

A backup is the mind's SQLite image taken with the backup API, verified, then encrypted with a
passphrase (scrypt, age v1) so that ``age -d`` opens it without pmm. A restore decrypts, checks
the whole chain, and only then writes: a new file appears whole, an existing one (``--force``)
is replaced in one SQLite transaction. The witness then accepts the restored head.

Neither holds the mind in memory: the snapshot goes to a private temp file beside the mind (it
is the same plain data as the mind, and as large), whose name is removed before SQLite writes
into it, and is encrypted chunk by chunk into the backup; a restore decrypts chunk by chunk into
the owner-only staged copy it verifies (it needs a name: SQLite opens it to verify it). A temp
file that a killed pmm left (``.NAME.tmp-PID-...``, its process gone) is removed by the next
backup, restore or write of that mind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypedDict

from pmm import errors, settings
from pmm.ledger.connection import SQLITE_MAGIC, hold
from pmm.services import files, integrity, witness
from pmm.services.files import fsync_dir, read_file, temp_beside

if TYPE_CHECKING:
    from pmm.crypto import age

Passphrase = Callable[[], str]


class BackupJson(TypedDict):
    """``pmm backup --json``."""

    mind_id: str
    events: int
    head: str
    file: str
    bytes: int
    removed: list[str]  # older backups rotated out


class RestoreJson(TypedDict):
    """``pmm restore --json``."""

    mind_id: str
    events: int
    head: str
    mind: str
    replaced: bool
    diverged: str | None


@dataclass
class BackupResult:
    mind_id: str
    events: int
    head: str
    file: Path
    bytes: int
    removed: list[Path]
    replaced: bool = False  # an older backup at ``file`` was replaced (``--force``)

    def to_json(self) -> BackupJson:
        return {"mind_id": self.mind_id, "events": self.events, "head": self.head,
                "file": str(self.file), "bytes": self.bytes, "removed": [str(p) for p in self.removed]}


def backup(source: Path, target: Path, passphrase: Passphrase, keep: int | None = None, *,
           force: bool = False) -> BackupResult:
    """Verify ``source``, snapshot it, encrypt it to ``target``; with ``keep``, older backups
    move to ``NAME.1.EXT`` ... and only ``keep`` of them stay. Rotation happens only once the new
    backup is whole and synced beside ``target``, so a failed backup (a full disk) costs nothing.
    Without ``keep``, an older backup at ``target`` is replaced only with ``force`` (atomically:
    the old one stays whole until the new one is)."""
    from pmm.crypto import age

    replacing = check_target(source, target, keep, force)
    files.remove_stale(source, also_in=[Path(tempfile.gettempdir())])  # what a killed pmm left
    files.remove_stale(target)
    work_factor = settings.BACKUP_WORK_FACTOR.get()  # a bad value fails before any work
    # scrypt first: its 256 MiB (at 2^18) then come on top of the least this process holds
    sealer = age.Sealer(passphrase(), work_factor)
    report = integrity.verify_mind(source)
    if not report.ok:
        where = f"event {report.problem_event}: " if report.problem_event else ""
        raise errors.IntegrityError(f"refusing to back up {source}: {where}{report.problem}",
                                    hint="a pmm backup is always restorable; copy the file with cp to keep it as it is")
    with _snapshot(source, target) as (image, mind_id, events, head):  # the image's head, not the live one
        removed: list[Path] = []
        with files.open_output(target, mode=0o600, reading=(source,), what="backup") as handle:
            size = sealer.encrypt_file(image, handle)
            if keep:
                handle.flush()
                os.fsync(handle.fileno())  # the new generation is on disk before an old one moves
                removed = _rotate(target, keep)
    return BackupResult(mind_id, events, head, target, size, removed, replacing)


@contextlib.contextmanager
def _snapshot(source: Path, target: Path) -> Iterator[tuple[IO[bytes], str, int, str]]:
    """The mind's consistent image, open for reading in a private (0600) temp file whose name
    is gone before SQLite writes a page into it: the plain copy never has a name, so nothing of
    it outlives this process, even one killed with SIGKILL (the kernel frees the file with its
    last descriptor). Also its mind id and the head it ends at. The file goes beside the mind
    (in the system's temp folder if that folder is read-only)."""
    from pmm.ledger import snapshot
    from pmm.ledger.store import Ledger

    with Ledger.open(source) as mind:
        copy = _scratch_file(source)
        try:
            handle = open(copy, "rb")  # read once the copy is written; closed below
            try:
                events, head = snapshot.snapshot_to(mind, copy, opened=lambda: copy.unlink(missing_ok=True))
            except errors.WriteRefused as exc:
                handle.close()
                reason = exc.message.removeprefix(f"could not write {copy}: ")
                raise errors.WriteRefused(
                    f"could not write the backup {target}: its snapshot, a temporary copy of the mind"
                    f" beside it, could not be written ({reason})",
                    hint="nothing was written; the snapshot needs as much free space beside the mind as"
                         " the mind takes") from None
            except BaseException:
                handle.close()
                raise
        finally:
            copy.unlink(missing_ok=True)
        mind_id = mind.mind_id
    with handle:
        yield handle, mind_id, events, head


def _scratch_file(beside: Path) -> Path:
    """A new empty owner-only file beside ``beside`` (SQLite would create it with the umask's
    mode), or in the system's temp folder if that folder is read-only."""
    path = temp_beside(beside)
    try:
        with files.new_file(path):
            return path
    except OSError as exc:
        if exc.errno not in files.DENIED:
            raise errors.WriteRefused(f"could not make the snapshot to back up {beside}: {exc.strerror}") from None
    path = temp_beside(Path(tempfile.gettempdir()) / beside.name)
    with files.new_file(path):
        return path


def check_target(source: Path, target: Path, keep: int | None, force: bool) -> bool:
    """Refuse, before any work, a target or a generation name that rotation could not handle,
    and an older backup at ``target`` that neither ``keep`` nor ``force`` says what to do with;
    whether an older backup is replaced."""
    from pmm.ledger.store import Ledger

    if keep is not None and keep < 1:
        raise errors.UsageError("--keep must be at least 1")
    with Ledger.open(source):  # a missing or foreign mind is refused before the passphrase is asked
        pass
    dest = files.check_output(target, reading=(source,), what="backup")
    if dest.stream:
        if keep is not None:
            raise errors.UsageError(f"--keep rotates backup files, but {target} is a device or a pipe",
                                    hint="drop --keep, or give a file name")
        return False
    names = [target]
    if keep is not None:
        names += [generation(target, n) for n in range(1, keep)]
        n = keep
        while os.path.lexists(generation(target, n)):  # the ones rotation would delete
            names.append(generation(target, n))
            n += 1
    for path in names:
        _check_generation(path, rotating=keep is not None)
    if keep is None and target.exists():  # an age backup: anything else was refused above
        if not force:
            raise errors.UsageError(
                f"{target} already holds a backup; refusing to replace it",
                hint=f"pass --force to replace it, or --keep N to keep it as {generation(target, 1).name}"
                     " beside the new one")
        return True
    return False


def _check_generation(path: Path, *, rotating: bool) -> None:
    from pmm.crypto import age

    if rotating and path.is_symlink():
        raise errors.UsageError(f"{path} is a symlink; --keep rotates backups by renaming them",
                                hint="give -o a real file (symlink the folder instead), or drop --keep")
    if not os.path.lexists(path):
        return
    if not path.is_file():
        raise errors.UsageError(f"{path} is in the way: it is not a file, so it cannot be a backup "
                                "pmm replaces or rotates", hint="move it away, or choose another -o")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(age.MAGIC))
    except OSError as exc:
        raise errors.UsageError(f"cannot read {path} to check it is a backup: {exc.strerror}") from None
    if magic != age.MAGIC:
        raise errors.UsageError(f"{path} exists and is not an age backup; refusing to overwrite it",
                                hint="move it away, or choose another -o")


def generation(target: Path, n: int) -> Path:
    """``mind.age`` -> ``mind.1.age``, ``mind.2.age`` ...; generation 0 is the file itself."""
    if n == 0:
        return target
    return target.with_name(f"{target.stem}.{n}{target.suffix}") if target.suffix else \
        target.with_name(f"{target.name}.{n}")


def _rotate(target: Path, keep: int) -> list[Path]:
    """Shift the older backups up one generation (the new one then takes ``target``), dropping
    the ones past ``keep``. Only renames and unlinks: it needs no disk space. Only names derived
    from ``target`` are ever touched; the caller fsyncs the folder."""
    removed = []
    for i in range(keep - 2, -1, -1):
        if generation(target, i).exists():
            if i + 1 == keep - 1 and generation(target, i + 1).exists():
                removed.append(generation(target, i + 1))  # the oldest kept: its successor replaces it
            os.replace(generation(target, i), generation(target, i + 1))
    n = keep
    while os.path.lexists(generation(target, n)):
        generation(target, n).unlink()
        removed.append(generation(target, n))
        n += 1
    return removed


@dataclass
class RestoreResult:
    mind_id: str
    events: int
    head: str
    path: Path
    replaced: bool
    diverged: str | None = None  # the witness kept a history this backup departs from

    def to_json(self) -> RestoreJson:
        return {"mind_id": self.mind_id, "events": self.events, "head": self.head,
                "mind": str(self.path), "replaced": self.replaced, "diverged": self.diverged}


def check_restore_target(target: Path, force: bool) -> None:
    """A restore writes a new file, or with ``force`` replaces a pmm mind: never a folder,
    another application's database, or any other file (refused, untouched)."""
    if target.is_dir():
        raise errors.UsageError(f"{target} is a directory, not a mind file")
    if not target.exists():
        return
    if not force:
        raise errors.UsageError(f"{target} already exists",
                                hint="restore to another --mind PATH, or pass --force to replace it")
    from pmm.ledger.store import Ledger

    try:
        with Ledger.open(target):
            pass
    except (errors.NotAMind, errors.NewerFormat) as exc:
        raise type(exc)(f"refusing to replace {target}: --force replaces only a pmm mind, and "
                        f"{exc.message[0].lower()}{exc.message[1:]}",
                        hint="restore to another --mind PATH; nothing was changed") from None


def restore(source: Path, target: Path, passphrase: Passphrase, *, force: bool = False) -> RestoreResult:
    """Decrypt ``source``, verify the mind in it, then write it to ``target``; nothing is written
    unless every check passed (a wrong passphrase or a damaged file is exit 6)."""
    from pmm.crypto import age
    from pmm.domain import checkpoint
    from pmm.ledger.store import Ledger

    check_restore_target(target, force)
    files.remove_stale(target)  # a decrypted mind a killed restore left
    with files.open_input(source, "backup") as handle:
        sealed = age.Sealed(handle, str(source))  # refuse a hostile header before asking anything
        sealed.unlock(passphrase())
        made = [d for d in [target.parent, *target.parent.parents] if not d.exists()]  # deepest first
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the staged copy goes there
        try:
            replaced = _verify_and_place(source, target, sealed, force)
        except BaseException:
            # a refused restore leaves the disk as it found it: no folder either, if this call made
            # it (only empty ones go: another process may have put something there meanwhile)
            with contextlib.suppress(OSError):
                for directory in made:
                    directory.rmdir()
            raise
    with Ledger.open(target) as mind:
        size, head = mind.head()
        verdict = witness.observe(checkpoint.of(mind.mind_id, size, head), mind.hash_at, target,
                                  "restore")
        diverged = verdict.message if verdict.state == "diverged" else None
        return RestoreResult(mind.mind_id, size, head, target, replaced, diverged)


def _verify_and_place(source: Path, target: Path, sealed: age.Sealed, force: bool) -> bool:
    """Decrypt ``sealed`` into a staged copy beside ``target`` and verify it, then publish it
    there (or copy it over the mind there with ``force``); whether a mind was replaced."""
    from pmm.ledger import snapshot

    with _plain_copy(source, target, sealed) as staged:
        try:
            report = integrity.verify_mind(staged)
        except errors.MindFileError as exc:
            raise errors.InputRejected(f"{source} does not hold a usable pmm mind: {exc.message}") from None
        if not report.ok:
            where = f"event {report.problem_event}: " if report.problem_event else ""
            raise errors.InputRejected(f"the mind in {source} fails verification: {where}{report.problem}",
                                       hint="nothing was written; try an older backup")
        check_restore_target(target, force)
        replaced = target.exists()
        if replaced:
            snapshot.copy_over(staged, target)
        else:
            _publish(staged, target)
    return replaced


def check_backup_file(source: Path) -> None:
    """Refuse a file that is missing, not a passphrase age file, or asks for too much work."""
    from pmm.crypto import age

    head = read_file(source, "backup", 4096)
    if head.startswith(SQLITE_MAGIC):
        raise errors.InputRejected(f"{source} is a SQLite file (a mind?), not an encrypted backup",
                                   hint="a mind file needs no restore: use it with --mind PATH, or copy it")
    if head.lstrip().startswith(b"{"):
        raise errors.InputRejected(f"{source} looks like JSON (a pmm export?), not an encrypted backup",
                                   hint="an export goes into a mind with `pmm import FILE`")
    age.work_factor(head, str(source))  # its header, armored or not


@contextlib.contextmanager
def _plain_copy(source: Path, target: Path, sealed: age.Sealed) -> Iterator[Path]:
    """The decrypted mind in an owner-only temp file beside ``target``, removed afterwards; it is
    refused (exit 6) unless it decrypts whole and starts as a SQLite file does."""
    staged = temp_beside(target)
    lock: int | None = None  # held while the copy exists: a cleaner elsewhere leaves it be
    try:
        try:
            with files.new_file(staged) as handle:
                lock = os.open(staged, os.O_RDONLY)
                hold(lock)
                sealed.decrypt_into(_sqlite_first(handle.write, source))
        except OSError as exc:
            if exc.errno in files.FULL:
                raise errors.WriteRefused(f"could not restore {target}: no room beside it for the mind"
                                          " (a full disk, a quota or a file size limit)",
                                          hint="nothing was written; free as much space as the backup takes") from None
            raise
        yield staged
    finally:
        for leftover in (staged, Path(f"{staged}-wal"), Path(f"{staged}-shm"), Path(f"{staged}-journal")):
            leftover.unlink(missing_ok=True)
        if lock is not None:
            os.close(lock)


def _sqlite_first(write: Callable[[bytes], object], source: Path) -> Callable[[bytes], object]:
    """``write``, refusing a plaintext that is not a SQLite file at its first chunk."""
    first = True

    def checked(chunk: bytes) -> object:
        nonlocal first
        if first and not chunk.startswith(SQLITE_MAGIC):
            raise errors.InputRejected(f"{source} decrypts, but not to a SQLite file: it is not a pmm backup")
        first = False
        return write(chunk)
    return checked


def _publish(staged: Path, target: Path) -> None:
    """Make ``staged`` appear as ``target`` without ever overwriting (a hard link)."""
    try:
        os.link(staged, target)
    except FileExistsError:
        raise errors.UsageError(f"{target} appeared while restoring; nothing was replaced") from None
    fsync_dir(target.parent)
