"""The ``pmm`` Typer app, its global options, and the one error boundary (``main``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pmm import __version__
from pmm.cli import output

EXIT_CODES = (
    "Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 integrity failure, 4 mind file missing /"
    " not a mind / newer format / locked, 5 model provider error, 6 input rejected,"
    " 130 interrupted."
)

app = typer.Typer(
    rich_markup_mode=None,  # plain help: fast (rich_utils costs ~90 ms to import) and pipe-friendly
    name="pmm",
    help="pmm, the Persistent Mind Model: an AI's identity in one portable, verifiable SQLite file.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


class Globals:
    mind: Path | None = None


def _version(value: bool) -> None:
    if value:
        print(f"pmm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    mind: Annotated[Optional[Path], typer.Option(
        "--mind", help="Mind file (default: $PMM_MIND, else the user data dir's mind.db).",
        show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only data and errors.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    Globals.mind = mind
    output.QUIET = quiet


def mind_path(option: Path | None) -> Path:
    """The command's ``--mind``, else the global one, else ``$PMM_MIND`` or the default."""
    from pmm.paths import resolve_mind

    return resolve_mind(option if option is not None else Globals.mind)


def _register() -> None:
    from pmm.cli import (
        backup,
        chat,
        evolve,
        health,
        integrity,
        mind,
        models,
        portability,
        run,
        signing,
        trace,
    )

    for module in (mind, chat, models, trace, evolve, run, health, portability, integrity, signing, backup):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every PmmError becomes one line on stderr and its exit code."""
    from pmm.errors import PmmError

    os.umask(0o077)  # everything pmm creates (files, WAL, state) is the owner's alone
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="pmm")
    except PmmError as exc:
        output.error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.stderr = None  # type: ignore[assignment]  # a closed pipe is the reader's choice
        os._exit(0)
    except Exception as exc:  # the boundary: one line, a traceback only when asked for
        if os.environ.get("PMM_DEBUG") == "1":
            raise
        output.error(f"unexpected {type(exc).__name__}: {exc}",
                     "rerun with PMM_DEBUG=1 for a traceback, and please report it")
        sys.exit(1)
