"""``pmm backup`` and ``pmm restore``: an encrypted snapshot in the age format, and its way back.

A backup is the mind's SQLite image taken with the backup API, verified, then encrypted with a
passphrase (scrypt, age v1) so that ``age -d`` opens it without pmm. A restore decrypts, checks
the whole chain, and only then writes: a new file appears whole, an existing one (``--force``)
is replaced in one SQLite transaction. The witness then accepts the restored head.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from pmm import errors, settings
from pmm.ledger.connection import SQLITE_MAGIC
from pmm.services import files, integrity, witness
from pmm.services.files import fsync_dir, read_file, temp_beside, write_new

Passphrase = Callable[[], str]
MAX_BACKUP_BYTES = 16 << 30


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
    from pmm.ledger import snapshot
    from pmm.ledger.store import Ledger

    replacing = check_target(source, target, keep, force)
    work_factor = settings.BACKUP_WORK_FACTOR.get()  # a bad value fails before any work
    report = integrity.verify_mind(source)
    if not report.ok:
        where = f"event {report.problem_event}: " if report.problem_event else ""
        raise errors.IntegrityError(f"refusing to back up {source}: {where}{report.problem}",
                                    hint="a pmm backup is always restorable; copy the file with cp to keep it as it is")
    with Ledger.open(source) as mind:
        image, (events, head) = snapshot.snapshot(mind)  # the head in the image, not the live one
        mind_id = mind.mind_id
    sealed = age.encrypt(image, passphrase(), work_factor)
    del image
    removed: list[Path] = []
    with files.open_output(target, mode=0o600, reading=(source,), what="backup") as handle:
        handle.write(sealed)
        if keep:
            handle.flush()
            os.fsync(handle.fileno())  # the new generation is on disk before an old one moves
            removed = _rotate(target, keep)
    return BackupResult(mind_id, events, head, target, len(sealed), removed, replacing)


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
    sealed = _read_backup(source)
    age.work_factor(sealed, str(source))  # refuse a hostile header before asking anything
    image = age.decrypt(sealed, passphrase(), str(source))
    del sealed
    if not image.startswith(SQLITE_MAGIC):
        raise errors.InputRejected(f"{source} decrypts, but not to a SQLite file: it is not a pmm backup")
    made = [d for d in [target.parent, *target.parent.parents] if not d.exists()]  # deepest first
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the staged copy goes there
    try:
        replaced = _verify_and_place(source, target, image, force)
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


def _verify_and_place(source: Path, target: Path, image: bytes, force: bool) -> bool:
    """Verify the decrypted ``image`` as a staged copy beside ``target``, then publish it there
    (or copy it over the mind there with ``force``); whether a mind was replaced."""
    from pmm.ledger import snapshot

    with _plain_copy(target, image) as staged:
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
    if not head.lstrip().startswith(age.ARMOR_BEGIN):
        age.work_factor(head, str(source))


def _read_backup(source: Path) -> bytes:
    data = read_file(source, "backup", MAX_BACKUP_BYTES)
    if len(data) > MAX_BACKUP_BYTES:
        raise errors.InputRejected(f"{source} is larger than any backup pmm would make")
    return data


@contextlib.contextmanager
def _plain_copy(target: Path, image: bytes) -> Iterator[Path]:
    """The decrypted mind in an owner-only temp file beside ``target``, removed afterwards."""
    staged = temp_beside(target)
    try:
        write_new(staged, image)
        yield staged
    finally:
        for leftover in (staged, Path(f"{staged}-wal"), Path(f"{staged}-shm"), Path(f"{staged}-journal")):
            leftover.unlink(missing_ok=True)


def _publish(staged: Path, target: Path) -> None:
    """Make ``staged`` appear as ``target`` without ever overwriting (a hard link)."""
    try:
        os.link(staged, target)
    except FileExistsError:
        raise errors.UsageError(f"{target} appeared while restoring; nothing was replaced") from None
    fsync_dir(target.parent)
