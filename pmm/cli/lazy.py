"""The click command tree, each command built by Typer when it is first looked up.

Typer builds every command of an app before it runs one: for pmm's ~45 commands, ~30 ms of
evaluating annotations and making parameters, on every run. ``group`` builds a group's own
options at once and each of its commands (or subgroups) the first time something asks for it by
name: running ``pmm stats`` builds ``stats`` alone, and anything that walks ``group.commands``
sees every command, as Typer would have built it. Each one is built by Typer's own
``get_command_from_info`` / ``get_group_from_info``, in the order Typer lists them. A group's
``--help`` lists its commands from their help alone (``Group.format_commands``), building none.
The root's commands are not even registered until then: each comes with a loader that imports
the module that registers it (``pmm.cli.app.COMMANDS``), so a run imports one command module.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import typer
import typer.main
from typer._click.core import Command
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandInfo, TyperInfo

from pmm.cli import declare

Build = Callable[[], Command]  # a command (or group), built by Typer or as its summary
Finish = Callable[[Any, str, str], None]  # (command, its name, its group's path) -> None


class Commands(MutableMapping[str, Command]):
    """A group's commands by name, in ``--help`` order; each built on first lookup, then
    ``finish``-ed (app.command_tree's additions), once."""

    def __init__(self, builders: dict[str, Build], summaries: dict[str, Build], path: str,
                 finish: Finish) -> None:
        self._builders = builders
        self._summaries = summaries
        self._built: dict[str, Command] = {}
        self._path = path
        self._finish = finish
        self._summarising = False

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            if self._summarising and name in self._summaries:
                summary = self._summaries[name]()
                self._finish(summary, name, self._path)
                return summary
            command = self._builders[name]()  # KeyError: no such command
            self._finish(command, name, self._path)
            self._built[name] = command
        return self._built[name]

    @contextlib.contextmanager
    def summarised(self) -> Iterator[None]:
        """Meanwhile a command not built yet is looked up as its summary: a command without
        parameters or callback, with the name, help and flags it will have (for ``--help``)."""
        self._summarising = True
        try:
            yield
        finally:
            self._summarising = False

    def __setitem__(self, name: str, command: Command) -> None:
        self._builders[name] = lambda: command
        self._built.pop(name, None)
        self._summaries.pop(name, None)

    def __delitem__(self, name: str) -> None:
        del self._builders[name]
        self._built.pop(name, None)
        self._summaries.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders


class Group(TyperGroup):
    """A Typer group whose ``--help`` lists its commands without building them."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        commands = self.commands
        with commands.summarised() if isinstance(commands, Commands) else contextlib.nullcontext():
            super().format_commands(ctx, formatter)


def group(app: typer.Typer, finish: Finish, loaders: Mapping[str, Callable[[], None]] | None = None) -> Any:
    """``typer.main.get_command(app)`` for an app with subcommands, built lazily. ``loaders``
    names every command and group of the app, in Typer's order, each with what registers it
    on ``app`` (imports its module): called the first time that command is needed."""
    if app._add_completion:  # Typer adds its completion options here: build it its own way
        for load in (loaders or {}).values():
            load()
        declare.ready_app(app)
        return typer.main.get_command(app)
    return _group(app, TyperInfo(app), "pmm", finish, loaders)


def _group(app: typer.Typer, info: Any, path: str, finish: Finish,
           loaders: Mapping[str, Callable[[], None]] | None = None) -> Any:
    options: dict[str, Any] = {"pretty_exceptions_short": app.pretty_exceptions_short,
                               "rich_markup_mode": app.rich_markup_mode}
    instance = info.typer_instance
    declare.ready_info(info)  # the group's own callback (its commands: when each is built)
    if instance.registered_callback is not None:
        declare.ready_info(instance.registered_callback)
    bare = copy.copy(instance)  # the group's own callback, options and help, no commands yet
    bare.registered_commands, bare.registered_groups = [], []
    shell = copy.copy(info)
    shell.typer_instance, shell.cls = bare, Group
    built = typer.main.get_group_from_info(shell, suggest_commands=app.suggest_commands, **options)

    def entry(name: str) -> tuple[str, Any]:
        """``name``'s ("command", CommandInfo) or ("group", solved TyperInfo), once registered."""
        if loaders is not None:
            loaders[name]()
        for command_info in instance.registered_commands:
            if (command_info.name or typer.main.get_command_name(command_info.callback.__name__)) == name:
                return "command", command_info
        for group_info in instance.registered_groups:
            solved = typer.main.solve_typer_info_defaults(group_info)
            if solved.name == name:
                return "group", (group_info, solved)
        raise KeyError(name)

    def build(name: str) -> Command:
        kind, found = entry(name)
        if kind == "command":
            declare.ready_info(found)
            return typer.main.get_command_from_info(found, **options)
        return _group(app, found[0], f"{path} {name}", finish)  # type: ignore[no-any-return]

    def summary(name: str) -> Command:
        kind, found = entry(name)
        if kind == "command":
            return _command_summary(found, name)
        solved = found[1]
        return TyperGroup(name=name, help=solved.help, short_help=solved.short_help,
                          hidden=solved.hidden, deprecated=solved.deprecated)

    if loaders is not None:
        names = list(loaders)
    else:
        names = [c.name or typer.main.get_command_name(c.callback.__name__) for c in instance.registered_commands]
        for group_info in instance.registered_groups:
            solved = typer.main.solve_typer_info_defaults(group_info)
            assert solved.name, "every pmm command group has a name"
            names.append(solved.name)
    builders: dict[str, Build] = {name: functools.partial(build, name) for name in names}
    summaries: dict[str, Build] = {name: functools.partial(summary, name) for name in names}
    built.commands = Commands(builders, summaries, path, finish)
    return built


def _command_summary(info: CommandInfo, name: str) -> TyperCommand:
    """What ``get_command_from_info`` makes of ``info``, but its parameters and callback."""
    use_help = inspect.getdoc(info.callback) if info.help is None else inspect.cleandoc(info.help)
    return TyperCommand(name=name, help=use_help, short_help=info.short_help, hidden=info.hidden,
                        deprecated=info.deprecated)
