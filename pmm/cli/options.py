"""Option types and input checks shared by several commands, declared once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional, TypeVar

from pmm.cli.declare import Option

MindOpt = Annotated[Optional[Path], Option(
    "--mind", help="Mind file (default: $PMM_MIND, else the user data dir's mind.db).",
    show_default=False)]
JsonOpt = Annotated[bool, Option("--json", help="Machine-readable output on stdout.")]

AsOfOpt = Annotated[Optional[str], Option(
    "--as-of", metavar="ID|DATE", show_default=False,
    help="The mind as it was at this event, or at the last event recorded at or before this date"
         " (YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], today, yesterday; local time, or Z or +HH:MM);"
         " nothing is written. See docs/time.md.")]

# SQLite's largest INTEGER: no event id, and no count of events, can be larger. Every numeric
# option declares its bounds, so `-n 1e30` or `-n -1` is a usage error (exit 2), never a crash.
MAX_ID = 2**63 - 1


class Globals:
    """The ``--mind`` given before the command: on pmm itself (set by the app's callback) or on
    a command group (``pmm model --mind X list``, set by ``group_mind``); the innermost one
    given wins, and a command's own ``--mind`` wins over both (``mind_path``)."""

    mind: Path | None = None


def group_mind(value: Optional[Path]) -> None:
    """The callback of ``--mind`` on a command group: it runs after the callbacks of the groups
    around it, so ``pmm --mind A model --mind B list`` uses B."""
    if value is not None:
        Globals.mind = value


# What app.command_tree gives every command group, so `pmm commitments --mind X list` reads as
# naturally as `pmm --mind X commitments list` (one option for all groups, not one per command).
GroupMindOpt = Annotated[Optional[Path], Option(
    "--mind", callback=group_mind, expose_value=False, show_default=False,
    help="Mind file for the command that follows (overrides pmm --mind; default: $PMM_MIND, else the user data dir's mind.db).")]


def mind_path(option: Path | None) -> Path:
    """The command's ``--mind``, else the global one, else ``$PMM_MIND`` or the default."""
    from pmm.paths import resolve_mind

    return resolve_mind(option if option is not None else Globals.mind)


T = TypeVar("T", str, Optional[str], list[str])


def utf8(value: T) -> T:
    """A typer ``callback`` for text that goes into the mind: an argument holding bytes that are
    not UTF-8 arrives surrogate-escaped and is a usage error (exit 2), not a crash at the write.
    (Paths are left alone: a file name need not be UTF-8.)"""
    for text in [value] if isinstance(value, str) else value or []:
        if not valid_text(text):
            import typer  # a callback only Typer calls: it is loaded

            raise typer.BadParameter("not valid UTF-8 text (the terminal or script passed other bytes)")
    return value


def valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # only lone surrogates fail: undecodable argv or stdin
        return False
    return True


def stdin_text(what: str) -> str:
    """All of stdin as text: bytes that are not UTF-8 are input rejected (exit 6, with the line
    and byte offset), like a bad import; nothing is written."""
    from pmm.errors import InputRejected

    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputRejected(f"{what} on stdin is not valid UTF-8 (byte {exc.start:,})", line=line,
                            hint="convert it first, e.g. iconv -f latin1 -t utf-8") from None
