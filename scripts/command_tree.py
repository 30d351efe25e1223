"""The one walk of pmm's Typer command tree that the generated files share (scripts/gen_docs.py):
every command and subcommand with its options, arguments and one-line help."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WIDTH = 100  # help is laid out for this terminal width on every machine

@dataclass
class Option:
    names: list[str]  # e.g. ["-f", "--format"]; a flag's --no-x form included
    help: str
    metavar: str  # what the value is called; "" for a flag
    choices: list[str] = field(default_factory=list)
    is_file: bool = False
    multiple: bool = False
    ends: bool = False  # --help, --version: nothing follows


@dataclass
class Argument:
    name: str
    required: bool
    is_file: bool


@dataclass
class Command:
    path: tuple[str, ...]  # () is pmm itself
    summary: str  # the first paragraph of its help
    options: list[Option]
    arguments: list[Argument]
    subcommands: list[str]
    click: Any  # the click command and its context, for the man page and the README
    ctx: Any

    @property
    def key(self) -> str:
        return " ".join(self.path)


def _paragraph(command: Any) -> str:
    """The first paragraph of a command's help (its one-line summary, however it is wrapped)."""
    text = (getattr(command, "help", None) or "").split("\f")[0].strip()
    return " ".join(text.split("\n\n")[0].split())


def _is_file(param: Any) -> bool:
    from pathlib import PurePath

    annotation = param.type_descriptor.annotation
    is_path = isinstance(annotation, type) and issubclass(annotation, PurePath)
    return is_path or "FILE" in (param.metavar or "")


def _choices(param: Any) -> list[str]:
    import enum

    annotation = param.type_descriptor.annotation
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    complete = getattr(param, "_custom_shell_complete", None)  # Typer's autocompletion=, e.g. --kind
    if complete is not None:  # the values it offers for nothing typed yet, written out statically
        return [str(getattr(item, "value", item)) for item in complete(None, param, "")]
    return []


def _option(p: Any) -> Option:
    # Short names first: click builds the help option's names from a set, so their order varies.
    names = sorted([*p.opts, *p.secondary_opts], key=lambda n: n.startswith("--"))
    long = next((n for n in names if n.startswith("--")), names[0])
    metavar = "" if p.is_flag else (p.metavar or long.lstrip("-")).strip("[]").lower()
    return Option(names, " ".join((p.help or "").split()), metavar, _choices(p),
                  not p.is_flag and _is_file(p), bool(p.multiple), bool(p.is_eager and p.is_flag))


def commands() -> list[Command]:
    """Every command and subcommand of the Typer app, depth first in `--help` order."""
    import typer

    from pmm.cli.app import command_tree

    root = command_tree()  # the tree `pmm` runs: Typer's, with --quiet on every command too
    found: list[Command] = []

    def walk(command: Any, ctx: typer.Context, path: tuple[str, ...]) -> None:
        params = command.get_params(ctx)  # with -h/--help
        subs = getattr(command, "commands", {})
        names = [n for n in command.list_commands(ctx) if not subs[n].hidden] if subs else []
        found.append(Command(
            path, _paragraph(command),
            [_option(p) for p in params if p.param_type_name == "option" and not p.hidden],
            [Argument(p.name, p.required, _is_file(p)) for p in params if p.param_type_name == "argument"],
            names, command, ctx))
        for name in names:
            walk(subs[name], typer.Context(subs[name], info_name=name, parent=ctx), (*path, name))

    walk(root, typer.Context(root, info_name="pmm", terminal_width=WIDTH, **root.context_settings), ())
    return found
