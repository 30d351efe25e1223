"""Command parameters declared without importing Typer, so a command's module imports in a few ms.

``Option`` and ``Argument`` take what ``typer.Option`` and ``typer.Argument`` take (names, then
settings) and only record it. The two readers of a declaration:

- Typer, for ``--help``, completions, the man page and every command that ``pmm.cli.fast`` does not
  run: ``typer_ready`` gives it a copy of the command whose annotations hold the real
  ``typer.Option`` / ``typer.Argument`` made from the record, so Typer builds exactly the
  parameters it would have built from the real ones.
- ``pmm.cli.fast``, which parses the command line of the commands people and scripts run most
  from these same records, without Typer (importing it costs ~45 ms of every command).

A module may mix these with Typer's own (``typer.Option`` in its annotations): ``typer_ready``
leaves those as they are.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, get_args, get_origin

READY = "__pmm_typer_ready__"  # marks a copy ``typer_ready`` made


class Declared:
    """What a command declared for one parameter: ``kind`` ("option" or "argument"), the option
    names (``decls``) and the settings, as they will be passed to Typer."""

    __slots__ = ("decls", "kind", "settings")

    def __init__(self, kind: str, decls: tuple[str, ...], settings: Mapping[str, object]) -> None:
        self.kind, self.decls = kind, decls
        self.settings: dict[str, Any] = dict(settings)

    def __repr__(self) -> str:
        return f"{self.kind.title()}{(*self.decls, *(f'{k}={v!r}' for k, v in self.settings.items()))}"

    def for_typer(self) -> Any:
        """The ``typer.Option`` / ``typer.Argument`` this declares."""
        import typer

        if self.kind == "option":
            return typer.Option(*self.decls, **self.settings)
        return typer.Argument(*self.decls, **self.settings)


def Option(*decls: str, **settings: Any) -> Any:  # noqa: N802 - it stands in for typer.Option
    """``typer.Option(*decls, **settings)``, declared (used inside ``Annotated``)."""
    return Declared("option", decls, settings)


def Argument(**settings: Any) -> Any:  # noqa: N802 - it stands in for typer.Argument
    """``typer.Argument(**settings)``, declared (used inside ``Annotated``)."""
    return Declared("argument", (), settings)


def hints(func: Callable[..., Any], names: Mapping[str, Any]) -> dict[str, Any]:
    """``func``'s annotations evaluated (they are strings: ``from __future__ import annotations``)
    in its module's globals with ``names`` laid over them (what the module does not import)."""
    return typing.get_type_hints(func, globalns={**func.__globals__, **names}, include_extras=True)


def real(annotation: Any) -> Any:
    """``annotation`` with a ``Declared`` in its ``Annotated`` metadata made Typer's own."""
    if get_origin(annotation) is not Annotated:
        return annotation
    base, *extras = get_args(annotation)
    if not any(isinstance(extra, Declared) for extra in extras):
        return annotation
    made = tuple(extra.for_typer() if isinstance(extra, Declared) else extra for extra in extras)
    return Annotated[(base, *made)]


def typer_ready(func: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``func`` whose annotations are evaluated and hold Typer's parameter objects in
    place of ``Declared`` ones: what Typer reads (``func`` itself is left as it is, for
    ``pmm.cli.fast``). A function that declares nothing is returned as it is."""
    if getattr(func, READY, False) or not isinstance(func, types.FunctionType):
        return func
    import typer

    found = hints(func, {"typer": typer})
    if not found:
        return func
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__, func.__defaults__,
                              func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__dict__.update(func.__dict__)
    copy.__doc__, copy.__module__, copy.__qualname__ = func.__doc__, func.__module__, func.__qualname__
    copy.__annotations__ = {name: real(hint) for name, hint in found.items()}
    setattr(copy, READY, True)
    return copy


def ready_info(info: Any) -> None:
    """A Typer ``CommandInfo`` or ``TyperInfo`` whose callback Typer can read (``typer_ready``)."""
    if getattr(info, "callback", None) is not None:
        info.callback = typer_ready(info.callback)


def ready_app(app: Any) -> None:
    """Every command, callback and group of a ``typer.Typer`` made ready for Typer to read (for
    what builds the whole tree at once: completions, the man page, tests). Running one command
    readies only what it builds (``pmm.cli.lazy``)."""
    for info in app.registered_commands:
        ready_info(info)
    if app.registered_callback is not None:
        ready_info(app.registered_callback)
    for group in app.registered_groups:
        ready_info(group)
        if group.typer_instance is not None:
            ready_app(group.typer_instance)


def add_group(app: Any, name: str, help: str, commands: Mapping[str, Callable[..., Any]]) -> None:
    """Add to ``app`` the command group ``name`` with ``commands`` (name -> function), as each
    group module's ``register`` does: built only then, so the module imports without Typer."""
    import typer

    group = typer.Typer(rich_markup_mode=None, name=name, no_args_is_help=True, help=help)
    for command, func in commands.items():
        group.command(command)(func)
    app.add_typer(group)
