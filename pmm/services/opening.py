"""Creating and opening minds: ``pmm init``, create-on-first-use for writers, ``pmm remember``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from pmm import __version__, errors
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.ledger.store import Ledger

Notify = Callable[[str], None]

MAX_NAME = 64  # characters: a name is shown in one line of stats and at the head of every prompt


def valid_name(name: str) -> str:
    """``name`` without surrounding spaces, if a mind can be called that: not empty, at most
    ``MAX_NAME`` characters, one line, and nothing a terminal would act on (controls, bidi
    overrides): otherwise a usage error (exit 2)."""
    from pmm.services.safe_text import clean

    hint = f"a name is one line of printable text, 1 to {MAX_NAME} characters"
    name = name.strip()
    if not name:
        raise errors.UsageError("a name cannot be empty", hint=hint)
    if len(name) > MAX_NAME:
        raise errors.UsageError(f"a name is at most {MAX_NAME} characters; this one has {len(name)}",
                                hint=hint)
    if clean(name, multiline=False) != name:
        raise errors.UsageError(f"the name {errors.quoted(name)} holds a line break or a control"
                                " character", hint=hint)
    return name


def genesis(name: str | None) -> Draft:
    meta: dict[str, str] = {"pmm_version": __version__}
    if name:
        meta["name"] = name
    text = f"Mind created by pmm {__version__}" + (f" and named {name}" if name else "")
    return Draft(ev.MIND_CREATED.name, text, meta)


def init(path: Path, name: str | None) -> Ledger:
    """A new mind with its genesis event; refuses to overwrite anything."""
    if name is not None:
        name = valid_name(name)
    return witnessed(Ledger.create(path, genesis(name)), created=True)


def open_read(path: Path) -> Ledger:
    return Ledger.open(path, write=False)


def open_write(path: Path, notify: Notify) -> Ledger:
    """Open for appending; a missing file becomes a new mind, and ``notify`` says so. Temp
    files of this mind that a killed pmm left (a restore's decrypted copy, a half-built import)
    are removed first."""
    from pmm.services import files

    files.remove_stale(path)
    if not path.exists():
        mind = Ledger.create(path, genesis(None))
        notify(f"Created a new mind at {path}")
        return witnessed(mind, created=True, notify=notify)

    def upgrading(old: int, new: int) -> None:
        rebuilding = (": rebuilding its search index (seconds per million events)" if old < 3 else
                      ": filling its sessions table (seconds per million events)" if old < 7 else "")
        notify(f"Upgrading {path} from schema {old} to {new}{rebuilding}")

    return witnessed(Ledger.open(path, write=True, on_migrate=upgrading), notify=notify)


def witnessed(mind: Ledger, *, created: bool = False, notify: Notify | None = None) -> Ledger:
    """A writer whose head the witness learns at open, after every commit and at close (unless
    it heard that head from this writer already, and was content with it): a writer killed
    mid-run still leaves what it committed witnessed. ``created``: pmm just made this file, so it
    may hold a new mind where another one was. ``notify`` hears, once for this writer, that the
    mind no longer extends what pmm witnessed."""
    warned = False
    heard: list[tuple[int, str]] = []  # the head the witness last heard from this writer

    def tell(m: Ledger, *, created: bool = False) -> None:
        from pmm.services.witness import FAILED

        nonlocal warned
        head = m.head()
        if head in heard:
            return  # nothing committed since it heard this head (a close after the last commit)
        state = witness_head(m, created=created)
        if state is not None and state not in FAILED:  # None: nothing told, or the dir refused it
            heard[:] = [head]
        if state in FAILED and notify is not None and not warned:
            warned = True
            notify(f"Warning: this mind no longer extends what pmm witnessed ({state.replace('_', ' ')}); "
                   f"run `pmm verify {m.path}`")

    tell(mind, created=created)
    mind.on_commit = mind.on_close = tell
    return mind


def witness_head(mind: Ledger, *, created: bool = False) -> str | None:
    """Tell the witness this file's head; returns the witness's verdict (None: not judged). A
    writer never fails for it (the user decides, with ``pmm verify``), and an unwritable state
    dir only costs the protection."""
    from pmm.domain import checkpoint
    from pmm.services import witness

    size, head = mind.head()
    if not size:
        return None
    with contextlib.suppress(OSError):
        return witness.observe(checkpoint.of(mind.mind_id, size, head), mind.hash_at, mind.path,
                               "create" if created else "write").state
    return None


def remember(path: Path, text: str, notify: Notify) -> Event:
    """Append a note the mind can recall later."""
    with open_write(path, notify) as mind:
        (event,) = mind.append([Draft(ev.OBSERVATION_RECORDED.name, text, {"source": "user"})])
    return event
