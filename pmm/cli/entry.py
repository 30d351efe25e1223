"""The console script. ``pmm --version`` is answered before Typer is imported: scripts call it to
check an install, and it then costs the interpreter's start-up and little more."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from pmm import __version__

        print(f"pmm {__version__}")
        return
    from pmm.cli.app import main as run

    run()
