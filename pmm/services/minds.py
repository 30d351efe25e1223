"""Creating and opening minds: ``pmm init``, create-on-first-use for writers, ``pmm remember``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from pmm import __version__
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.ledger.store import Mind

Notify = Callable[[str], None]


def genesis(name: str | None) -> Draft:
    meta: dict[str, str] = {"pmm_version": __version__}
    if name:
        meta["name"] = name
    text = f"Mind created by pmm {__version__}" + (f" and named {name}" if name else "")
    return Draft(ev.MIND_CREATED.name, text, meta)


def init(path: Path, name: str | None) -> Mind:
    """A new mind with its genesis event; refuses to overwrite anything."""
    return witnessed(Mind.create(path, genesis(name)), created=True)


def open_read(path: Path) -> Mind:
    return Mind.open(path, write=False)


def open_write(path: Path, notify: Notify) -> Mind:
    """Open for appending; a missing file becomes a new mind, and ``notify`` says so."""
    if not path.exists():
        mind = Mind.create(path, genesis(None))
        notify(f"Created a new mind at {path}")
        return witnessed(mind, created=True)
    return witnessed(Mind.open(path, write=True))


def witnessed(mind: Mind, *, created: bool = False) -> Mind:
    """A writer whose head the witness learns at open, after every commit and at close: a
    writer killed mid-run still leaves what it committed witnessed. ``created``: pmm just made
    this file, so it may hold a new mind where another one was."""
    witness_head(mind, created=created)
    mind.on_commit = mind.on_close = witness_head
    return mind


def witness_head(mind: Mind, *, created: bool = False) -> None:
    """Tell the witness this file's head. A writer never fails for it: a mind that no longer
    extends the witness is left for ``pmm verify`` to report, and an unwritable state dir only
    costs the protection."""
    from pmm.domain import checkpoint
    from pmm.services import witness

    size, head = mind.head()
    if size:
        with contextlib.suppress(OSError):
            witness.observe(checkpoint.of(mind.mind_id, size, head), mind.hash_at, mind.path,
                            "create" if created else "write")


def remember(path: Path, text: str, notify: Notify) -> Event:
    """Append a note the mind can recall later."""
    with open_write(path, notify) as mind:
        (event,) = mind.append([Draft(ev.OBSERVATION_RECORDED.name, text, {"source": "user"})])
    return event
