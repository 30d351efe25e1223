"""The console script. ``pmm --version`` is answered before anything else is imported: scripts
call it to check an install, and it then costs the interpreter's start-up and little more."""

from __future__ import annotations

import gc
import sys


def main() -> None:
    # Start-up allocates ~50,000 objects and keeps nearly all of them (modules, classes,
    # functions): at the default threshold (700) the collector makes ~40 passes over them that
    # free next to nothing (~5 ms of every command). Cycles are still collected, in larger steps.
    gc.set_threshold(50_000, 10, 10)
    if sys.argv[1:] == ["--version"]:
        from pmm import __version__

        print(f"pmm {__version__}")
        return
    from pmm.cli.boundary import main as run

    run()
