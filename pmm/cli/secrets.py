"""Passphrases for keys and backups: from a file, an environment variable, or a prompt."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

PassphraseFileOpt = Annotated[Optional[Path], typer.Option(
    "--passphrase-file", help="Read the passphrase from the first line of FILE.", show_default=False)]


def passphrase(file: Path | None, env: str, what: str, *, confirm: bool = False) -> Callable[[], str]:
    """A callable that finds the passphrase when it is needed: ``--passphrase-file``, else
    ``$env``, else a prompt on the terminal (asked twice when ``confirm``)."""
    from pmm.errors import UsageError

    def get() -> str:
        if file is not None:
            try:
                text = file.expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read the passphrase file {file}: {exc.strerror}",
                                 hint="give the file that holds the passphrase on its first line") from None
            except UnicodeDecodeError:
                raise UsageError(f"the passphrase file {file} is not UTF-8 text",
                                 hint="write the passphrase as UTF-8 text on the file's first line") from None
            value = text.split("\n", 1)[0].removesuffix("\r")
        elif os.environ.get(env):
            value = os.environ[env]
        elif sys.stdin.isatty():
            import getpass

            value = getpass.getpass(f"Passphrase for {what}: ")
            if confirm and value and getpass.getpass("Same passphrase again: ") != value:
                raise UsageError("the two passphrases differ; nothing was written")
        else:
            raise UsageError(f"no passphrase for {what}",
                             hint=f"give --passphrase-file FILE, set ${env}, or run on a terminal")
        if not value:
            raise UsageError(f"the passphrase for {what} is empty")
        return value

    return get
