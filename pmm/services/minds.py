"""Creating and opening minds: ``pmm init``, create-on-first-use for writers, ``pmm remember``."""

from __future__ import annotations

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
    return Mind.create(path, genesis(name))


def open_read(path: Path) -> Mind:
    return Mind.open(path, write=False)


def open_write(path: Path, notify: Notify) -> Mind:
    """Open for appending; a missing file becomes a new mind, and ``notify`` says so."""
    if not path.exists():
        mind = Mind.create(path, genesis(None))
        notify(f"Created a new mind at {path}")
        return mind
    return Mind.open(path, write=True)


def remember(path: Path, text: str, notify: Notify) -> Event:
    """Append a note the mind can recall later."""
    with open_write(path, notify) as mind:
        (event,) = mind.append([Draft(ev.OBSERVATION_RECORDED.name, text, {"source": "user"})])
    return event
