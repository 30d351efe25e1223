"""The ``pmm`` Typer app and its global options: what runs every command ``pmm.cli.fast`` does not (``pmm.cli.boundary``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pmm import __version__, errors
from pmm.cli import options, output
from pmm.cli.leaving import ReaderGone

EXIT_CODES = "Exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in errors.EXIT_STATUS) + "."

_app = typer.Typer(
    rich_markup_mode=None,  # plain help: fast (rich_utils costs ~90 ms to import) and pipe-friendly
    name="pmm",
    help="pmm, the Persistent Mind Model: an AI's identity in one portable, verifiable SQLite file.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


TEXT = (str, list[str])  # annotations of the parameters that carry text into the mind


def _version(value: bool) -> None:
    if value:
        print(f"pmm {__version__}")
        raise typer.Exit()


@_app.callback()
def root(
    mind: Annotated[Optional[Path], typer.Option(
        "--mind", help="Mind file (default: $PMM_MIND, else the user data dir's mind.db).",
        show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only data and errors.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    options.Globals.mind = mind
    output.QUIET = quiet


# Each command and command group, in the order Typer lists them (commands, then groups, each in
# the order their modules register them), with the module (pmm.cli.NAME) whose ``register``
# adds it: a run imports the module of the command it runs, not all nineteen (~5 ms).
# test_architecture.py's test_the_lazy_tree_is_typers_tree holds this table to the modules.
MODULES = ("init", "standing", "browse", "timetravel", "chat", "sessions", "recall", "models", "trace",
           "reflect", "commitments", "reflections", "run", "health", "portability", "merge", "verify",
           "signing", "backup", "forget")
COMMANDS = {
    "init": "init", "remember": "standing", "pins": "standing", "unpin": "standing",
    "rename": "standing", "stats": "browse", "log": "browse", "search": "browse", "diff": "timetravel",
    "chat": "chat", "sessions": "sessions", "recall": "recall", "trace": "trace", "reflect": "reflect",
    "run": "run", "health": "health", "export": "portability", "import": "portability",
    "merge": "merge", "verify": "verify",
    "keygen": "signing", "sign": "signing", "backup": "backup", "restore": "backup",
    "forget": "forget", "upgrade": "forget",
    # groups
    "persona": "standing", "model": "models", "commitments": "commitments",
    "reflections": "reflections",
}
_registered: set[str] = set()


def _register(module: str) -> None:
    """Add pmm.cli.MODULE's commands to the app (once)."""
    if module not in _registered:
        import importlib

        importlib.import_module(f"pmm.cli.{module}").register(_app)
        _registered.add(module)


def registered() -> typer.Typer:
    """The app with every command registered: as Typer itself would build it, for whatever
    walks the whole tree (completions, the man page, tests)."""
    from pmm.cli import declare

    for module in MODULES:
        _register(module)
    declare.ready_app(_app)
    # in Typer's order whatever order the modules were loaded in (a process that ran a command
    # before loaded its module first)
    order = {name: n for n, name in enumerate(COMMANDS)}
    _app.registered_commands.sort(
        key=lambda c: order[c.name or typer.main.get_command_name(getattr(c.callback, "__name__", ""))])
    _app.registered_groups.sort(key=lambda g: order[typer.main.solve_typer_info_defaults(g).name or ""])
    return _app


def __getattr__(name: str) -> Any:
    if name == "app":  # ``pmm.cli.app.app``: the whole app, every command registered
        return registered()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _quiet(value: bool) -> None:
    if value:
        output.QUIET = True


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", callback=_quiet, expose_value=False,
                                        help="Only data and errors (same as pmm -q).")]


def _borrowed_option(name: str, annotation: object, default: object) -> Any:
    """The click parameter Typer makes for ``name: annotation = default``, made the way Typer
    makes every other one (its callback, type and help), to add to commands already built."""
    import inspect

    def _probe(**_: Any) -> None:
        pass  # never called: only its parameter is borrowed

    from pmm.cli.declare import real

    _probe.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=real(annotation))])
    probe = typer.Typer()
    probe.command()(_probe)
    return typer.main.get_command(probe).params[0]


def _utf8_checked(param: Any) -> None:
    """Refuse text that is not UTF-8 in ``param`` (``options.utf8``) before its own callback."""
    from pmm.cli.options import utf8

    inner = param.callback

    def callback(ctx: Any, p: Any, value: Any) -> Any:
        utf8(value)
        return inner(ctx, p, value) if inner is not None else value

    param.callback = callback


@functools.cache  # built once per process: a process runs one command, a test runner many
def command_tree() -> typer.core.TyperGroup:
    """The click command tree, with ``--quiet/-q`` accepted after any command as well as before
    it (``pmm reflect --if-due -q`` reads naturally in a crontab), ``--mind`` on every command
    group as well as on pmm and on each command (``pmm model --mind X list``), every command's
    first sentence whole in its group's help, every text argument and option refusing bytes
    that are not UTF-8 as a usage error (paths are not text: any bytes), and every parameter
    coerced without pydantic (``coercion``: Typer's adapters cost ~65 ms of each command).
    Each command is built when first looked up (``lazy``: building all ~45 costs ~30 ms)."""
    from pmm.cli import coercion, lazy

    coercion.install()
    quiet = _borrowed_option("quiet", QuietOpt, False)
    group_mind = _borrowed_option("group_mind", options.GroupMindOpt, None)

    def finish(sub: Any, name: str, path: str) -> None:
        if sub.callback is not None:
            sub.callback = _reader_gone_is_not_an_error(sub.callback, f"{path} {name}")
        sub.short_help = sub.short_help or first_sentence(sub.help or "")
        for param in sub.params:
            if getattr(param, "type_descriptor", None) and param.type_descriptor.annotation in TEXT:
                _utf8_checked(param)
        if hasattr(sub, "commands") and not any("--mind" in p.opts for p in sub.params):
            sub.params.insert(0, group_mind)
        if not any("--quiet" in p.opts for p in sub.params):
            sub.params.append(quiet)

    loaders = {name: functools.partial(_register, module) for name, module in COMMANDS.items()}
    return lazy.group(_app, finish, loaders)  # type: ignore[no-any-return]


def first_sentence(text: str) -> str:
    """A command's one-line summary for the list of commands: its help up to the end of the first
    sentence, whole (click would cut it to fit one line and end it with "...")."""
    words = text.split("\f")[0].split("\n\n")[0].split()
    for i, word in enumerate(words):
        if word.endswith(".") and word not in ("e.g.", "i.e.", "(e.g.", "(i.e."):
            return " ".join(words[: i + 1])
    return " ".join(words)


def _reader_gone_is_not_an_error(callback: Callable[..., Any], path: str) -> Callable[..., Any]:
    """``callback``, which also names the running command (``path``) for its --json envelope."""
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        output.COMMAND = path
        try:
            return callback(*args, **kwargs)
        except BrokenPipeError:
            raise ReaderGone() from None

    return run


def command_path(args: list[str]) -> str:
    """``pmm`` and the command words in ``args`` (``"pmm model list"``), for the error envelope of
    a command that failed outside its own context; options and their values are skipped."""
    group: Any = command_tree()
    path, rest = ["pmm"], iter(args)
    for word in rest:
        if word == "--":
            break
        if word.startswith("-"):
            param = next((p for p in group.params if word in p.opts), None)
            if param is not None and not getattr(param, "is_flag", False) and "=" not in word:
                next(rest, None)
            continue
        sub = getattr(group, "commands", {}).get(word)
        if sub is None:
            break
        path.append(word)
        group = sub
    return " ".join(path)
