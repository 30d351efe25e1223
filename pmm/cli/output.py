"""Rendering for the CLI: data on stdout, messages and progress on stderr, colour only on a TTY."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pmm.services.safe_text import clean as clean  # the one sanitiser, for every command
from pmm.services.safe_text import clip
from pmm.services.words import plural as plural  # the one plural, for every command

if TYPE_CHECKING:  # the reports are types only
    from pmm.services.reports import ErrorJson

QUIET = False


def color_ok(stream: Any) -> bool:
    return is_tty(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def is_tty(stream: Any) -> bool:
    """A terminal; not when the stream is missing (pmm started with that descriptor closed)."""
    return stream is not None and stream.isatty()


def message(text: str) -> None:
    """A progress or status line on stderr (suppressed by --quiet); like an error's lines, it
    never fails the command when nobody reads stderr any more."""
    if not QUIET:
        say(clean(text))


def error(text: str, hint: str | None = None) -> None:
    # messages quote names, paths and provider replies: cleaned before pmm's own colour goes on
    text = clean(text)
    if color_ok(sys.stderr):
        text = f"\x1b[31mError:\x1b[0m {text}"
    else:
        text = f"Error: {text}"
    if hint:
        text += f"\nHint: {clean(hint)}"
    say(text)


def say(text: str) -> None:
    """``text`` on stderr, as it is: a reader that went away (a closed pipe) or
    no stderr at all must not turn the error into another one, since its exit code still tells."""
    stream = sys.stderr
    if stream is None:
        return
    with _SPINNER_LOCK:  # a running spinner's line is erased first, and redrawn under the text
        try:
            if _SPINNING:
                stream.write(ERASE_LINE)
            print(text, file=stream, flush=True)
        except (OSError, ValueError):  # a closed pipe, or a stream already closed
            silence(stream)


def silence(stream: Any) -> None:
    """Point ``stream``'s descriptor at /dev/null, so what is still buffered for a reader that
    went away is dropped quietly instead of failing again at exit."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")


COMMAND = ""  # the running command's path without "pmm" ("model list"), set at the error boundary
PARTIAL: Any = None  # what a failing command did before its error (``partial``), for the error envelope


def command_path() -> str:
    """The running command's path without the leading ``pmm`` (``"model list"``)."""
    return COMMAND.partition(" ")[2] if COMMAND.startswith("pmm") else COMMAND


def envelope(data: Any = None, error: ErrorJson | None = None) -> dict[str, Any]:
    """The one shape of every ``--json`` document (docs/json.md)."""
    return {"ok": error is None, "command": command_path(), "data": data, "error": error}


def write_json(document: Any) -> None:
    """``document`` as JSON on stdout, exactly as stored. json escapes C0 controls itself; the
    C1 and bidi controls (and lone surrogates) it leaves raw are written as ``\\uXXXX`` too: they
    only occur inside strings, so the document decodes to the same value, and none reaches a
    terminal raw."""
    text = json.dumps(document, ensure_ascii=False, indent=2)
    sys.stdout.write(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")


def emit_json(value: Any) -> None:
    """A command's ``--json`` report: ``value`` as the ``data`` of the envelope, on stdout."""
    write_json(envelope(value))


def partial(value: Any) -> None:
    """What a command did before the error it is about to raise: the ``data`` of its error
    envelope under --json (one document on stdout, not a report and then an error)."""
    global PARTIAL
    PARTIAL = value


def emit_error(code: int, kind: str, text: str, hint: str | None) -> None:
    """An error under ``--json``: the envelope with ``ok`` false, on stdout (docs/json.md)."""
    write_json(envelope(PARTIAL, {"code": code, "type": kind, "message": text, "hint": hint}))


def report(data: Any, as_json: bool, text: str) -> None:
    """What a writing command did: ``data`` as JSON on stdout with --json, else ``text`` on stderr."""
    if as_json:
        emit_json(data)
    else:
        message(text)


def out(text: str = "", mark: tuple[str, str] | None = None) -> None:
    """A line (or lines) of human output on stdout, cleaned (``clean``) even into a pipe, as a
    pager or ``watch`` shows it on a terminal. ``mark`` is pmm's own leading symbol and its SGR
    colour, painted only on a colour terminal."""
    text = clean(text)
    if mark is not None:
        symbol, sgr = mark
        text = f"{paint(symbol, sgr, sys.stdout)} {text}"
    sys.stdout.write(text + "\n")


def paint(text: str, sgr: str, stream: Any) -> str:
    return f"\x1b[{sgr}m{text}\x1b[0m" if color_ok(stream) else text


@contextlib.contextmanager
def progress(label: str, total: int | None = None
             ) -> Iterator[tuple[Callable[[int], None] | None, Callable[[int], None]]]:
    """Yield (advance, set_total) callbacks; a rich bar on stderr only when it is a terminal."""
    if QUIET or not is_tty(sys.stderr):
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
    if QUIET or not is_tty(sys.stderr):
        yield
        return
    from rich.console import Console

    with Console(stderr=True, no_color=not color_ok(sys.stderr)).status(label):
        yield


def one_line(text: str, width: int = 100) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis, cleaned (``clean``)."""
    return clip(clean(" ".join(text.split()), multiline=False), width)


# -- the spinner: "the model is working" on stderr until the first piece of an answer -------------

ERASE_LINE = "\r\x1b[K"  # back to the line's start, then clear it: the spinner leaves no trace
_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_SPINNER_LOCK = threading.Lock()
_SPINNING = False


class Spinner:
    """A one-line spinner on stderr, drawn by a thread every ``interval`` seconds until ``stop()``,
    which erases it (idempotent). Only on a terminal and without --quiet; else it does nothing.
    ``say`` erases the line before a message, so a retry notice is not written over it."""

    def __init__(self, label: str, interval: float = 0.1) -> None:
        self.label = clean(label, multiline=False)
        self.interval = interval
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Spinner:
        global _SPINNING
        if QUIET or not is_tty(sys.stderr):
            return self
        with _SPINNER_LOCK:
            _SPINNING = True
        self._thread = threading.Thread(target=self._spin, name="pmm-spinner", daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        n = 0
        while True:
            with _SPINNER_LOCK:
                if self._stopped.is_set():
                    return
                try:
                    frame = _FRAMES[n % len(_FRAMES)]
                    sys.stderr.write(f"{ERASE_LINE}{paint(frame, '36', sys.stderr)} {self.label}")
                    sys.stderr.flush()
                except (OSError, ValueError):
                    return
            n += 1
            if self._stopped.wait(self.interval):
                return

    def stop(self) -> None:
        """Stop drawing and erase the line; returns once the spinner can draw no more."""
        global _SPINNING
        if self._thread is None:
            return
        with _SPINNER_LOCK:
            self._stopped.set()
            _SPINNING = False
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(ERASE_LINE)
                sys.stderr.flush()
        self._thread.join()
        self._thread = None


@contextlib.contextmanager
def spinning(label: str) -> Iterator[None]:
    """A ``Spinner`` for the duration of the block, erased however it ends."""
    spinner = Spinner(label).start()
    try:
        yield
    finally:
        spinner.stop()


# -- words, times and widths for people ------------------------------------------------------------


def when(ts: str | None) -> str:
    """A ledger timestamp (UTC, ISO 8601) as a person reads it: ``2025-03-01 14:05`` in the local
    time zone (``TZ``, else the system's). Every human line that shows a time goes through here;
    --json keeps the ISO 8601 UTC text."""
    from pmm.services.browse import local

    return local(ts) if ts else ""


def width(stream: Any = None) -> int | None:
    """The columns a line may take on ``stream`` (stdout by default): the terminal's width when it
    is a terminal, None (no limit) into a pipe or a file, so scripts get whole lines."""
    import shutil

    target = sys.stdout if stream is None else stream
    if not is_tty(target):
        return None
    return max(20, shutil.get_terminal_size().columns)


def fit(line: str, stream: Any = None) -> str:
    """``line`` (one line, already cleaned) cut to the terminal's width with an ellipsis on a
    terminal (a wide character takes two columns, a combining one none); whole into a pipe."""
    columns = width(stream)
    if columns is None or sum(map(_cell, line)) <= columns:
        return line
    used = 0
    for at, char in enumerate(line):
        used += _cell(char)
        if used > columns - 1:  # one column left for the ellipsis
            return line[:at] + "…"
    return line


def _cell(char: str) -> int:
    import unicodedata

    return 0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
