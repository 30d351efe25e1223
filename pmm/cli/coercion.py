"""Typer's parameter coercion for pmm's simple parameter types, without pydantic.

Typer 0.29 coerces each command-line value through a pydantic ``TypeAdapter`` that it builds per
parameter when the parameter is first processed: importing pydantic, building the adapters and
pydantic's plugin loader (``importlib.metadata``) cost ~65 ms of every command's ~150. pmm's
parameters are all of a few simple types (str, bool, int and float with bounds, Path, an Enum,
lists of str or int), so after ``install`` each of them gets a coercion built here that accepts the
same values and says the same thing about bad ones (tests/test_architecture.py compares the two,
value by value). A parameter of any other type keeps Typer's coercion.

This leans on Typer internals (``typer.core.build_runtime_param``, which
``_TyperParameter.get_runtime_param`` calls to fill its ``_runtime_param`` with a
``typer._coercion.RuntimeParam``): pyproject.toml pins the Typer versions it was checked on, a
test fails when the internals move, and should they move anyway ``install`` does nothing, so
Typer's own (slower) coercion runs.
"""

from __future__ import annotations

import enum
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import typer.core
from typer import BadParameter

try:  # Typer internals (see the module docstring)
    from typer._click.utils import _escape_control_characters
    from typer._coercion import RuntimeParam
    from typer._param_types import coerce_cli_choice, coerce_cli_path
except ImportError:  # pragma: no cover - a Typer that moved them: keep its own coercion
    RuntimeParam = None  # type: ignore[assignment,misc]

# What pydantic (lax mode) accepts as a number in a string: ASCII digits, single underscores
# between digits (an int may end in ".0...": "12.000" is 12); for a float, Python's literal forms
# (exponent, inf, infinity, nan in any case), where pydantic drops any underscore that neither
# starts nor ends the text nor follows another, and then takes no surrounding whitespace.
_INT = re.compile(r"[+-]?[0-9](?:_?[0-9])*(?:\.0+)?", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)",
                    re.ASCII | re.IGNORECASE)
# What pydantic (Rust's str::trim) takes for whitespace around a value: Unicode's White_Space,
# which unlike Python's str.strip leaves the separators \x1c-\x1f alone.
_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
         "\u2028\u2029\u202f\u205f\u3000"
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})

NOT_INT = "Input should be a valid integer, unable to parse string as an integer"
NOT_FLOAT = "Input should be a valid number, unable to parse string as a number"
NOT_BOOL = "Input should be a valid boolean, unable to interpret input"


Leaf = Callable[[Any, Any, Any], Any]  # (value, click parameter, click context) -> value


class _Invalid(Exception):
    """A value this coercion refuses, with pydantic's words for why."""


def _text(value: Any, param: Any, ctx: Any) -> str:
    if isinstance(value, bytes):  # Typer's _parse_cli_str: argv bytes in the argv encoding
        for encoding in (getattr(sys.stdin, "encoding", None) or sys.getfilesystemencoding(),
                         sys.getfilesystemencoding()):
            try:
                return value.decode(encoding)
            except UnicodeError:
                pass
        return value.decode("utf-8", "replace")
    return str(value)


def _bool(value: Any, param: Any, ctx: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()  # Typer strips (Python's whitespace), then pydantic reads it
        if word in _TRUE:
            return True
        if word in _FALSE or word == "":
            return False
    raise _Invalid(NOT_BOOL)


def _int(value: Any) -> int:
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise _Invalid("Input should be a valid integer, got a number with a fractional part")
    if isinstance(value, str):
        word = value.strip(_SPACE)
        if _INT.fullmatch(word):
            return int(word.partition(".")[0])
    raise _Invalid(NOT_INT)


def _float(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        word = value.strip(_SPACE)
        if "_" in value:
            word = "" if value != word or "__" in value or value[0] == "_" or value[-1] == "_" \
                else value.replace("_", "")
        if _FLOAT.fullmatch(word):
            return float(word)
    raise _Invalid(NOT_FLOAT)


def _number(kind: type, low: float | None, high: float | None, clamp: bool) -> Leaf:
    parse = _int if kind is int else _float

    def number(value: Any, param: Any, ctx: Any) -> Any:
        found = parse(value)
        if clamp:  # Typer's clamp: the nearer bound, in the parameter's type
            if high is not None and found > high:
                return kind(high)
            if low is not None and found < low:
                return kind(low)
            return found
        # pydantic's order: the upper bound first (NaN, which fails both, fails that one)
        if high is not None and not found <= high:
            raise _Invalid(f"Input should be less than or equal to {high}")
        if low is not None and not found >= low:
            raise _Invalid(f"Input should be greater than or equal to {low}")
        return found

    return number


def _choice(choices: list[Any], case_sensitive: bool) -> Leaf:
    def choice(value: Any, param: Any, ctx: Any) -> Any:
        try:
            return coerce_cli_choice(value, choices=choices, case_sensitive=case_sensitive, ctx=ctx)
        except ValueError as exc:
            raise _Invalid(f"Value error, {exc}") from None

    return choice


def _path(info: Any) -> Leaf:
    def path(value: Any, param: Any, ctx: Any) -> Any:
        if not isinstance(value, Path):
            if not isinstance(value, str):
                raise _Invalid("Input is not a valid path")
            if "\x00" in value:
                raise _Invalid("Value error, embedded null byte")
            value = Path(value)
        # then Typer's own checks (exists, readable, ...), which skip pydantic for a Path
        return coerce_cli_path(value, info, path_type=Path, param=param, ctx=ctx)

    return path


def _leaf(annotation: Any, info: Any) -> Leaf | None:
    """The coercion of one value of ``annotation`` (``info``: the parameter's Typer
    ``ParameterInfo``), or None when this module does not know the type."""
    if info.parser is not None:
        return None
    if annotation is str:
        return _text
    if annotation is bool:
        return _bool
    if annotation in (int, float):
        return _number(annotation, info.min, info.max, bool(info.clamp))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _choice(list(annotation), info.case_sensitive)
    if annotation is Path and info.path_type is None:
        return _path(info)
    return None


def runtime_param(descriptor: Any) -> Any:
    """A ``RuntimeParam`` for a Typer ``TypeDescriptor``, or None to keep Typer's own."""
    if RuntimeParam is None or descriptor.file_annotation is not None:
        return None
    annotation, info = descriptor.annotation, descriptor.parameter_info
    is_list = get_origin(annotation) is list
    leaf = _leaf(get_args(annotation)[0] if is_list else annotation, info)
    if leaf is None:
        return None
    return _Simple(parameter_info=info, annotation=annotation, leaf=leaf, is_list=is_list)


if RuntimeParam is not None:
    @dataclass(frozen=True)
    class _Simple(RuntimeParam):
        """One of pmm's simple types: ``leaf`` coerces one value (each item, for a list)."""

        leaf: Leaf
        is_list: bool

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                if self.is_list:
                    items = value if isinstance(value, (list, tuple)) else [value]
                    return [self.leaf(item, param, ctx) for item in items]
                return self.leaf(value, param, ctx)
            except _Invalid as exc:
                raise BadParameter(_escape_control_characters(str(exc)), ctx=ctx, param=param) from None


def install() -> bool:
    """Make Typer build each parameter's coercion here when this module knows the type, and build
    its own otherwise (every parameter of every command, the help options Typer adds when it
    parses included). Idempotent; False when Typer's internals are not where they were, and then
    Typer's own coercion runs."""
    typers = getattr(typer.core, "build_runtime_param", None)
    if RuntimeParam is None or typers is None \
            or not hasattr(getattr(typer.core, "_TyperParameter", None), "get_runtime_param"):
        return False
    if getattr(typers, "pmm_simple", False):
        return True

    def build(descriptor: Any) -> Any:
        return runtime_param(descriptor) or typers(descriptor)

    build.pmm_simple = True  # type: ignore[attr-defined]
    setattr(typer.core, "build_runtime_param", build)  # noqa: B010 (not an attribute typer exports)
    return True
