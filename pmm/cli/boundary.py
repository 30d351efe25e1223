"""The one error boundary of the CLI (``main``): every command runs inside it, read by
``pmm.cli.fast`` when it can, else by Typer (``pmm.cli.app``), which this module imports only then."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from pmm import errors, settings
from pmm.cli import output
from pmm.cli.leaving import Exit, ReaderGone


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every error becomes one ``Error:`` line (and a ``Hint:``) on stderr and its
    exit code (SPEC section 5); under ``--json`` also the error envelope on stdout (docs/json.md)."""
    os.umask(0o077)  # everything pmm creates (files, WAL, state) is the owner's alone
    # httpx's own command line (click, rich, pygments: ~50 ms) is imported with httpx when it is
    # installed; pmm never runs it, and httpx does without it when it cannot be imported
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args[:args.index("--")] if "--" in args else "--json" in args
    output.COMMAND, output.PARTIAL = "pmm", None  # until the command is known

    def fail(code: int, kind: str, text: str, hint: str | None) -> NoReturn:
        output.error(text, hint)
        if as_json:
            output.emit_error(code, kind, text, hint)
        _exit(code)

    try:
        code = _runner(args, argv)()
    except errors.PmmError as exc:
        fail(exc.exit_code, type(exc).__name__, exc.message, exc.hint)
    except Exit as exc:
        _exit(exc.code)
    except (BrokenPipeError, ReaderGone):
        sys.stderr = None  # a closed pipe is the reader's choice
        os._exit(0)
    except KeyboardInterrupt:  # as Typer ends a command on Ctrl-C: exit 130, nothing more said
        _exit(errors.INTERRUPTED)
    except EOFError:  # what Typer makes an Abort of, after a new line
        output.say("")
        fail(errors.INTERRUPTED, "Aborted", "aborted", None)
    except Exception as exc:  # the boundary: one line, a traceback only when asked for
        if _is_typers(exc, "Abort"):
            fail(errors.INTERRUPTED, "Aborted", "aborted", None)
        if _is_typers(exc, "NoArgsIsHelpError"):  # bare `pmm` or `pmm model`: the help
            output.say(exc.format_message())  # type: ignore[attr-defined]
            _exit(exc.exit_code)  # type: ignore[attr-defined]
        if _is_usage_error(exc):
            path = getattr(getattr(exc, "ctx", None), "command_path", "pmm")
            output.COMMAND = path
            fail(exc.exit_code, "UsageError", exc.format_message(),  # type: ignore[attr-defined]
                 f"see `{path} --help`")
        if isinstance(exc, UnicodeEncodeError) and "surrogates" in exc.reason:
            # lone surrogates have one source: bytes that are not UTF-8 in argv (or a file name
            # from it), which Python escapes; text parameters are refused early (command_tree),
            # this covers any other way such bytes reach something that needs text
            fail(errors.UsageError.exit_code, "UsageError",
                 "an argument or file name is not valid UTF-8, and it is needed as text here",
                 "use UTF-8 text and file names")
        if settings.DEBUG.get() == "1":
            raise
        fail(errors.PmmError.exit_code, type(exc).__name__, f"unexpected {type(exc).__name__}: {exc}",
             errors.PmmError.default_hint)
    sys.exit(code if isinstance(code, int) else 0)


def _runner(args: list[str], argv: list[str] | None) -> Callable[[], Any]:
    """What runs the command ``args`` name: read without Typer when ``pmm.cli.fast`` can, else by
    Typer; ``output.COMMAND`` names it either way (for the --json envelope of an error)."""
    from pmm.cli import fast

    prepared = fast.prepare(args)
    if prepared is not None:
        output.COMMAND = prepared.path
        return prepared.run
    from pmm.cli import app

    output.COMMAND = app.command_path(args)
    tree = app.command_tree()
    return lambda: tree.main(args=argv, prog_name="pmm", standalone_mode=False)


def _exit(code: int) -> NoReturn:
    """Exit with an error's ``code`` whatever became of the output: data still buffered for a
    stdout whose reader went away must not make the interpreter's final flush fail (exit 120)."""
    stream = sys.stdout
    if stream is not None:
        try:
            stream.flush()
        except (OSError, ValueError):
            output.silence(stream)
    sys.exit(code)


def _is_typers(exc: Exception, name: str) -> bool:
    return type(exc).__name__ == name and type(exc).__module__.startswith("typer")


def _is_usage_error(exc: Exception) -> bool:
    """A bad option, argument or command, as Typer's click reports it."""
    return type(exc).__module__.startswith("typer") and hasattr(exc, "format_message") \
        and isinstance(getattr(exc, "exit_code", None), int)
