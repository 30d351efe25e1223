"""Notes, standing memory and the name: ``pmm remember``, ``pmm pins``, ``pmm unpin``,
``pmm persona``, ``pmm rename``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pmm.cli import output
from pmm.cli.declare import Argument, Option, add_group
from pmm.cli.options import MAX_ID, JsonOpt, MindOpt, mind_path, stdin_text
from pmm.errors import PmmError

if TYPE_CHECKING:
    import typer


def register(app: typer.Typer) -> None:
    for command in (remember, pins, unpin, rename):
        app.command()(command)
    add_group(app, "persona", "The mind's persona: text always at the head of its prompt (set, show, edit, clear).",
              {"set": set_, "show": show, "edit": edit, "clear": clear})


def remember(
    text: Annotated[str, Argument(help="The note to remember, or - to read it from stdin (UTF-8; other bytes are refused, exit 6).")],
    pin: Annotated[bool, Option("--pin", help="Always put it in the prompt (at most 20 pinned notes of 1,000 characters; see pmm pins, pmm unpin).")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Record a note the mind can recall later (with --pin: one it always has in mind)."""
    from pmm.errors import UsageError
    from pmm.services import browse, opening, standing

    if text == "-":
        text = stdin_text("the note")
    text = text.strip()
    if not text:
        raise UsageError("nothing to remember: the note is empty",
                         hint="give the note's text, or - to read it from stdin")
    if pin:
        event = standing.pin(mind_path(mind), text, output.message)
        output.report(browse.event_json(event), json, f"Pinned as note #{event.id}")
        return
    event = opening.remember(mind_path(mind), text, output.message)
    output.report(browse.event_json(event), json, f"Remembered as event {event.id}")


def pins(mind: MindOpt = None, json: JsonOpt = False) -> None:
    """The pinned notes, always in the prompt (oldest pin first), with their ids."""
    from pmm.services import standing

    found = standing.pins(mind_path(mind))
    if json:
        output.emit_json(found)
        return
    if not found:
        output.message("No pinned notes (`pmm remember --pin TEXT` pins one).")
    for entry in found:
        output.out(f"#{entry['id']}  {output.when(entry['ts'])}  {output.one_line(entry['text'])}")


def unpin(
    note: Annotated[int, Argument(min=1, max=MAX_ID, help="The pinned note's id (see pmm pins).")],
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Stop including a pinned note in every prompt (it stays in the ledger, and in search)."""
    from pmm.services import browse, standing

    event = standing.unpin(mind_path(mind), note)
    output.report(browse.event_json(event), json, f"Unpinned note #{note} (event #{event.id})")


def rename(
    name: Annotated[str, Argument(help="The new name: one line, at most 64 characters.")],
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Give the mind a new name (a mind_named event; the old name stays in the ledger, and each new name counts in identity stability, docs/mind-model.md)."""
    from pmm.services import standing

    event = standing.rename(mind_path(mind), name, output.message)
    _written(event, json, f"Renamed to {name.strip()}", f"Already named {name.strip()}; nothing written")


def set_(
    text: Annotated[str, Argument(help="The persona, or - to read it from stdin (UTF-8, at most 2,000 characters).")],
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Set the persona (replacing any earlier one; at most 2,000 characters, more is refused with exit 6)."""
    from pmm.services import standing

    if text == "-":
        text = stdin_text("the persona")
    event = standing.set_persona(mind_path(mind), text, output.message)
    _written(event, json, "Persona set", "The persona is that already; nothing written")


def show(mind: MindOpt = None, json: JsonOpt = False) -> None:
    """Print the persona's text (nothing, and a note on stderr, when there is none)."""
    from pmm.services import standing

    found = standing.persona(mind_path(mind))
    if json:
        output.emit_json({"persona": found, "max_chars": standing.PERSONA_MAX_CHARS})
    elif found is None:
        output.message("No persona set (`pmm persona set TEXT` sets one).")
    else:
        output.out(found["text"])


def edit(mind: MindOpt = None, json: JsonOpt = False) -> None:
    """Edit the persona in $VISUAL or $EDITOR; a failed edit, or one that changes nothing, writes nothing."""
    from pmm.errors import UsageError
    from pmm.services import standing

    path = mind_path(mind)
    current = standing.persona(path) if path.exists() else None
    before = current["text"] if current else ""
    with _scratch(before) as scratch:
        _run_editor(scratch)
        after = _read_back(scratch)
        if after.strip() == before:
            output.message("The persona is unchanged; nothing written")
            if json:
                output.emit_json(None)
            return
        if not after.strip():
            raise UsageError("the edited persona is empty; nothing written",
                             hint="`pmm persona clear` clears it")
        try:
            event = standing.set_persona(path, after, output.message,
                                         based_on=current["id"] if current else None)
        except PmmError as exc:
            raise _kept(scratch, exc) from None
    _written(event, json, "Persona set", "The persona is that already; nothing written")


def clear(mind: MindOpt = None, json: JsonOpt = False) -> None:
    """Remove the persona (a persona_cleared event; earlier ones stay in the ledger)."""
    from pmm.services import standing

    event = standing.clear_persona(mind_path(mind))
    _written(event, json, "Persona cleared", "No persona to clear; nothing written")


def _written(event: Any, json: bool, done: str, unchanged: str) -> None:
    from pmm.services import browse

    if event is None:
        output.message(unchanged)
        if json:
            output.emit_json(None)
        return
    output.report(browse.event_json(event), json, f"{done} (event #{event.id})")


class _Scratch:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.kept = False


@contextlib.contextmanager
def _scratch(text: str) -> Any:
    """A private temporary file holding ``text``, removed afterwards unless the edit in it
    could not be saved (then the error says where it is, so no typing is lost)."""
    import tempfile

    handle, name = tempfile.mkstemp(prefix="pmm-persona-", suffix=".txt")  # mode 0600
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text + "\n" if text else "")
    scratch = _Scratch(Path(name))
    try:
        yield scratch
    finally:
        if not scratch.kept:
            with contextlib.suppress(OSError):
                scratch.path.unlink()


def _kept(scratch: _Scratch, exc: PmmError) -> PmmError:
    """``exc``, saying where the edited text is kept (the scratch file then stays)."""
    scratch.kept = True
    where = f"your text is kept in {scratch.path}"
    exc.hint = f"{exc.hint}; {where}" if exc.hint else where
    return exc


def _run_editor(scratch: _Scratch) -> None:
    """Run the user's editor on the scratch file; one that cannot start or fails is a usage error."""
    import shlex
    import subprocess

    from pmm.errors import UsageError, quoted

    # read as other tools read them (declared in pmm.settings for the man page, like TERM)
    for variable, value in (("VISUAL", os.environ.get("VISUAL")), ("EDITOR", os.environ.get("EDITOR"))):
        if not value or not value.strip():
            continue
        try:
            argv = shlex.split(value)
        except ValueError:
            raise UsageError(f"${variable} is not a command line: {quoted(value)}",
                             hint="quote it as a shell would, e.g. EDITOR='code --wait'") from None
        if argv:
            break
    else:
        raise UsageError("no editor: neither $VISUAL nor $EDITOR is set",
                         hint="set one (export EDITOR=nano), or `pmm persona set -` reads stdin")
    try:
        code = subprocess.call([*argv, str(scratch.path)])
    except OSError as exc:
        raise UsageError(f"cannot run the editor {quoted(argv[0])}: {exc.strerror}; nothing written",
                         hint=f"check ${variable}") from None
    if code != 0:
        raise UsageError(f"the editor {quoted(argv[0])} exited with status {code}; nothing written",
                         hint=f"check ${variable}, or use `pmm persona set -`")


def _read_back(scratch: _Scratch) -> str:
    from pmm.errors import InputRejected

    try:
        return scratch.path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise _kept(scratch, InputRejected("the edited persona is not valid UTF-8; nothing written")) from None
    except OSError as exc:
        raise InputRejected(f"cannot read the edited persona: {exc.strerror}; nothing written") from None
