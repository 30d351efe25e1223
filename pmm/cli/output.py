"""Rendering for the CLI: data on stdout, messages and progress on stderr, colour only on a TTY."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

QUIET = False


def color_ok(stream: Any) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def message(text: str) -> None:
    """A progress or status line on stderr (suppressed by --quiet)."""
    if not QUIET:
        print(text, file=sys.stderr)


def error(text: str, hint: str | None = None) -> None:
    if color_ok(sys.stderr):
        text = f"\x1b[31mError:\x1b[0m {text}"
    else:
        text = f"Error: {text}"
    print(text, file=sys.stderr)
    if hint:
        print(f"Hint: {hint}", file=sys.stderr)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def report(data: Any, as_json: bool, text: str) -> None:
    """What a writing command did: ``data`` as JSON on stdout with --json, else ``text`` on stderr."""
    if as_json:
        emit_json(data)
    else:
        message(text)


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


@contextlib.contextmanager
def progress(label: str, total: int | None = None
             ) -> Iterator[tuple[Callable[[int], None] | None, Callable[[int], None]]]:
    """Yield (advance, set_total) callbacks; a rich bar on stderr only when it is a terminal."""
    if QUIET or not sys.stderr.isatty():
        yield None, lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True, no_color=not color_ok(sys.stderr)), transient=True)
    task = bar.add_task(label, total=total)
    with bar:
        yield (lambda n: bar.advance(task, n)), (lambda t: bar.update(task, total=t))


@contextlib.contextmanager
def status(label: str) -> Iterator[None]:
    """A spinner on stderr while slow work runs, only on a terminal and without --quiet."""
    if QUIET or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    with Console(stderr=True, no_color=not color_ok(sys.stderr)).status(label):
        yield


def one_line(text: str, width: int = 100) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
