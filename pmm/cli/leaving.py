"""How a command leaves before its end: what the boundary (``pmm.cli.boundary``) turns into an exit."""

from __future__ import annotations


class ReaderGone(Exception):
    """stdout's reader went away (``pmm log | head -1``). Typer turns a BrokenPipeError that
    leaves a command into exit 1; this carries it past Typer to the boundary instead. Provider
    sockets never raise it here: their errors are translated into ProviderError where they
    enter (pmm.providers)."""


class Exit(Exception):
    """Leave the command with exit ``code``, everything it had to say said (``pmm verify``'s
    FAILED report: exit 3 without a further ``Error:`` line)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
