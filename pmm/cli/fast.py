"""The commands people and scripts run most, started without Typer (SPEC section 7: every real
command under 100 ms on a small mind; importing Typer alone costs ~45 ms of that).

``prepare`` reads a command line the way Typer's parser would, from the same declarations
(``pmm.cli.declare``): the command's own function, its annotations and defaults. It takes only
what it can read without doubt: pmm's global ``--mind`` and ``-q`` before the command, then the
command's options as ``--name VALUE``, ``--name=VALUE``, ``-n VALUE`` or a flag, and its
arguments, each given at most once, every value of a type it converts exactly as Typer does (text,
a path, a flag, a decimal number within the option's bounds, one of a choice's values). Anything else (``--help``, a
mistake, ``--``, ``-abc``, an option given twice, a number Typer would refuse or read its own way,
a command or parameter it does not know) is Typer's: ``prepare`` returns None and the command runs
through Typer as before, which also gives every error its usual words. So a command line either
runs here with exactly the values Typer would have passed the command, or runs through Typer:
tests/test_fast_start.py holds the two to that, parameter by parameter and line by line.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import os
import re
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Union, get_args, get_origin

from pmm.cli.declare import Declared, hints
from pmm.cli.options import valid_text

# The commands run here (a command's words: a group's command has two), with the module
# (pmm.cli.MODULE) and the function that declare each.
FAST: dict[tuple[str, ...], tuple[str, str]] = {
    (name,): (module, name) for name, module in (
        ("stats", "browse"), ("log", "browse"), ("search", "browse"), ("verify", "verify"),
        ("chat", "chat"), ("sessions", "sessions"), ("trace", "trace"), ("recall", "recall"),
        ("health", "health"), ("export", "portability"), ("diff", "timetravel"), ("pins", "standing"))
} | {("commitments", "list"): ("commitments", "list_"), ("reflections", "list"): ("reflections", "list_"),
     ("reflections", "show"): ("reflections", "show"), ("persona", "show"): ("standing", "show")}
_GROUPS = frozenset(words[0] for words in FAST if len(words) > 1)
# What a declaration may say for its parameter to be read here: only names, text for --help,
# bounds, and the one callback whose check this module makes itself (valid UTF-8).
_SETTINGS = frozenset({"help", "metavar", "show_default", "min", "max", "callback", "autocompletion"})
_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)  # an int Typer reads as plainly (any sign, space,
_DECIMAL = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,15})?", re.ASCII)  # underscore or exponent: Typer's)


class Context:
    """What a command's ``ctx: typer.Context`` is given here: no extra arguments (a command line
    with any goes to Typer)."""

    args: list[str] = []


_TYPER = types.SimpleNamespace(Context=Context)  # the one name of Typer's an annotation may use


class Param(NamedTuple):
    """One parameter of a command, as Typer makes it from the declaration."""

    name: str
    option: bool  # else a positional argument
    on: tuple[str, ...]  # the option's names (a flag's: those that set it true)
    off: tuple[str, ...]  # a flag's names that set it false (``--raw`` of ``--markdown/--raw``)
    flag: bool
    convert: Callable[[str], Any]  # raises ValueError for a value Typer may read otherwise
    required: bool
    default: Any
    many: bool = False  # a list: the option may be given again, each value adds one


def _plain(value: str) -> str:
    if not valid_text(value):  # Typer refuses it (usage error), in its own words
        raise ValueError(value)
    return value


def _path(value: str) -> Path:
    if not value or "\x00" in value:
        raise ValueError(value)
    path = Path(value)  # what Typer checks: the Path ("f/" is "f")
    if os.path.exists(path) and not os.access(path, os.R_OK):
        raise ValueError(value)  # Typer's words: "is not readable"
    return path


def _number(kind: type, low: Any, high: Any) -> Callable[[str], Any]:
    pattern = _DIGITS if kind is int else _DECIMAL

    def number(value: str) -> Any:
        if not pattern.fullmatch(value):
            raise ValueError(value)
        found = kind(value)
        if (low is not None and found < low) or (high is not None and found > high):
            raise ValueError(value)
        return found

    return number


def _choice(kind: type[enum.Enum]) -> Callable[[str], Any]:
    by_value = {str(member.value): member for member in kind}

    def choice(value: str) -> Any:
        return by_value[value]  # KeyError: Typer's to refuse (or to match another case)

    return choice


def _unwrap(annotation: Any) -> Any:
    """``X`` of ``Optional[X]``."""
    if get_origin(annotation) is Union:
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def params(func: Callable[..., Any]) -> list[Param] | None:
    """``func``'s parameters as Typer makes them from its declarations, or None when one is of a
    kind this module does not read (then the command always runs through Typer)."""
    try:
        found = hints(func, {"typer": _TYPER})
    except Exception:  # a name the module does not define: not for this module
        return None
    made = []
    for name, parameter in inspect.signature(func).parameters.items():
        hint = found.get(name)
        if hint is Context:
            made.append(Param(name, False, (), (), False, str, False, Context()))
            continue
        if get_origin(hint) is not Annotated:
            return None
        base, *extras = get_args(hint)
        declared = [extra for extra in extras if isinstance(extra, Declared)]
        if len(declared) != 1 or len(extras) != 1 or not set(declared[0].settings) <= _SETTINGS:
            return None
        one = declared[0]
        if one.settings.get("callback") not in (None, _plain_callback()):
            return None
        kind = _unwrap(base)
        many = get_origin(kind) is list
        if many:
            if get_args(kind) != (str,) or one.kind != "option" or parameter.default is not None:
                return None
            kind = str
        convert: Callable[[str], Any]
        if kind is bool:
            convert = bool
        elif kind is str:
            convert = _plain
        elif kind is Path:
            convert = _path
        elif kind in (int, float):
            convert = _number(kind, one.settings.get("min"), one.settings.get("max"))
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            convert = _choice(kind)
        else:
            return None
        required = parameter.default is inspect.Parameter.empty
        if one.kind == "argument":
            if kind is bool:
                return None
            made.append(Param(name, False, (), (), False, convert, required, parameter.default))
            continue
        if required or ("min" in one.settings or "max" in one.settings) and kind not in (int, float):
            return None
        flag = kind is bool
        decls = one.decls or ((f"--{_dashed(name)}/--no-{_dashed(name)}",) if flag else (f"--{_dashed(name)}",))
        on: list[str] = []
        off: list[str] = []
        for decl in decls:
            first, slash, second = decl.partition("/")
            if slash and not flag:
                return None
            on.append(first.strip())
            if slash:
                off.append(second.strip())
        made.append(Param(name, True, tuple(on), tuple(off), flag, convert, False, parameter.default, many))
    return made


def _plain_callback() -> Any:
    from pmm.cli.options import utf8

    return utf8


class Prepared(NamedTuple):
    """A command line read here: the command's path (for messages and the --json envelope), its
    function and the values Typer would have passed it, and pmm's global ``--mind`` and ``-q``."""

    path: str
    func: Callable[..., Any]
    values: dict[str, Any]
    mind: Path | None
    quiet: bool

    def run(self) -> Any:
        """What Typer would do: set pmm's globals (its root callback), then call the command."""
        from pmm.cli import options, output

        options.Globals.mind, output.QUIET = self.mind, self.quiet
        return self.func(**self.values)


class _NotHere(Exception):
    """The command line is Typer's to read."""


def prepare(args: list[str]) -> Prepared | None:
    """The command ``args`` name, ready to run as Typer would run it, or None (run it through
    Typer). Imports the command's module; runs nothing."""
    try:
        return _prepare(args)
    except _NotHere:
        return None


def _prepare(args: list[str]) -> Prepared:
    if "_PMM_COMPLETE" in os.environ:  # click's shell-completion protocol: Typer answers it
        raise _NotHere
    words = iter(args)
    mind, quiet, name = _globals(words)
    path: tuple[str, ...] = (name,)
    if name in _GROUPS:  # pmm GROUP [--mind X] [-q] COMMAND: the group's --mind wins over pmm's
        inner, quiet_too, sub = _globals(words)
        mind, quiet, path = inner or mind, quiet or quiet_too, (name, sub)
    if path not in FAST:
        raise _NotHere
    module, attribute = FAST[path]
    func = getattr(importlib.import_module(f"pmm.cli.{module}"), attribute)
    declared = params(func)
    if declared is None:
        raise _NotHere
    values = _read(declared, words)
    quiet = values.pop("-q", False) or quiet
    return Prepared(" ".join(("pmm", *path)), func, values, mind, quiet)


def _globals(words: Iterator[str]) -> tuple[Path | None, bool, str]:
    """pmm's (or a group's) ``--mind`` and ``-q`` before the next command word, and that word."""
    mind: Path | None = None
    quiet = given = False
    for word in words:
        if word in ("-q", "--quiet") and not quiet:
            quiet = True
        elif word.startswith("--mind") and not given:
            mind, given = _path_of(_value(word, "--mind", words)), True
        elif word.startswith("-"):
            raise _NotHere
        else:
            return mind, quiet, word
    raise _NotHere


def _path_of(value: str) -> Path:
    try:
        return _path(value)
    except ValueError:
        raise _NotHere from None


def _value(word: str, name: str, words: Iterator[str]) -> str:
    """The value of the option ``word`` (``--name=VALUE``, or ``--name`` and the next word)."""
    if word == name:
        nxt = next(words, None)
        if nxt is None or (nxt.startswith("-") and nxt != "-"):
            raise _NotHere  # missing, or what may be meant as an option: Typer says which
        return nxt
    if word.startswith(name + "=") and name.startswith("--"):
        return word[len(name) + 1:]
    raise _NotHere


def _read(declared: list[Param], words: Iterator[str]) -> dict[str, Any]:
    """The command's values from the words after its name, as Typer would pass them."""
    by_name: dict[str, tuple[Param, bool]] = {}
    for param in declared:
        by_name.update({opt: (param, True) for opt in param.on})
        by_name.update({opt: (param, False) for opt in param.off})
    if "-q" in by_name or "--quiet" in by_name:
        raise _NotHere  # a command's own -q: not pmm's --quiet
    positional = [p for p in declared if not p.option and not isinstance(p.default, Context)]
    values: dict[str, Any] = {}
    for word in words:
        if word in ("-q", "--quiet"):  # pmm's --quiet, accepted after any command
            if "-q" in values:
                raise _NotHere
            values["-q"] = True
            continue
        if word.startswith("-") and word != "-":
            key = word.partition("=")[0] if word.startswith("--") else word
            if key not in by_name:
                raise _NotHere  # --help, a mistake, -abc, --: Typer's
            param, on = by_name[key]
            if param.name in values and not param.many:
                raise _NotHere
            if param.flag:
                if key != word:
                    raise _NotHere
                values[param.name] = on
            elif param.many:
                values.setdefault(param.name, []).append(_converted(param, _value(word, key, words)))
            else:
                values[param.name] = _converted(param, _value(word, key, words))
            continue
        if not positional:
            raise _NotHere  # an extra argument
        param = positional.pop(0)
        values[param.name] = _converted(param, word)
    for param in declared:
        if param.name not in values:
            if param.required:
                raise _NotHere
            values[param.name] = param.default
    return values


def _converted(param: Param, value: str) -> Any:
    try:
        return param.convert(value)
    except (KeyError, ValueError):
        raise _NotHere from None

