"""The one exception tree. Every error pmm raises on purpose is a ``PmmError``.

Each class carries, as class attributes, its process exit code (SPEC section 5), a default hint
for the user (a raise site passes a more specific one when it has it) and its meaning, the line
``pmm --help`` and the man page print for the code (``EXIT_STATUS``)::

    PmmError                      1  unexpected / generic
    ├── WriteRefused              1  the system refused a write (full disk, quota, I/O error)
    ├── UsageError                2  a bad combination of options or arguments
    ├── IntegrityError            3  a hash, link or id check failed (verify, tamper found)
    ├── MindFileError             4  the mind file is missing or cannot be used
    │   ├── MindNotFound          4  no file at the resolved path
    │   ├── NotAMind              4  not SQLite, or SQLite but not a pmm mind
    │   ├── NewerFormat           4  written by a newer pmm
    │   └── MindLocked            4  another process held the write lock past the timeout
    ├── ProviderError             5  a model provider failed
    │   └── BudgetExceeded        5  a request could pass a spending cap: refused before it was sent
    └── InputRejected             6  an import, restore or key file was refused

(tests/test_errors_carry_their_exit_codes.py holds this drawing to the classes.) The exit codes
that are not errors are declared once beside them: ``OK``, ``WARNINGS`` and ``INTERRUPTED``.

Foreign exceptions are translated where they enter: ``sqlite3`` errors in ``pmm.ledger``
(``ledger.sqlite_errors``), ``httpx`` errors in ``pmm.providers``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar


def quoted(value: object, limit: int = 48) -> str:
    """A value from outside (a mind file, an export, the environment) quoted for a one-line
    message: short (it may be a pasted key or a wall of text) and printable (``repr``)."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


class PmmError(Exception):
    exit_code: ClassVar[int] = 1
    meaning: ClassVar[str] = "unexpected error (please report it) or a full disk (nothing half-written)"
    default_hint: ClassVar[str | None] = "rerun with PMM_DEBUG=1 for a traceback, and please report it"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint


class WriteRefused(PmmError):
    meaning = "the system refused a write (a full disk, a quota, a file size limit, an I/O error)"
    default_hint = "nothing was half-written; free some space and run the command again"


class UsageError(PmmError):
    exit_code = 2
    meaning = "usage error (a bad command / option / argument / value / -o target / untrusted model)"
    default_hint = None  # the raise site says what to change; click's own errors get `--help`


class IntegrityError(PmmError):
    exit_code = 3
    meaning = "integrity failure (a hash / link / signature / witness check failed: tampering or rollback)"
    default_hint = ("`pmm verify --json` gives the full report; docs/signing.md explains signatures"
                    " and the witness")


class MindFileError(PmmError):
    exit_code = 4
    meaning = "mind file missing / not a mind / from a newer pmm / locked past the timeout"
    default_hint = "check the path (--mind, $PMM_MIND); `pmm init` makes a new mind"


class MindNotFound(MindFileError):
    meaning = "no mind file at the resolved path"
    default_hint = "create one with `pmm init`, or pass --mind PATH"


class NotAMind(MindFileError):
    meaning = "not SQLite, a damaged SQLite file, or SQLite but not a pmm mind"


class NewerFormat(MindFileError):
    meaning = "a mind written by a newer pmm"
    default_hint = "upgrade pmm to open it; the file was left untouched"


class MindLocked(MindFileError):
    meaning = "another process held the write lock past the timeout"
    default_hint = "wait for it to finish, or raise PMM_LOCK_TIMEOUT (seconds)"


class ProviderError(PmmError):
    exit_code = 5
    meaning = "model provider error (unreachable / auth / rate limit / bad answer)"
    default_hint = ("`pmm model info` shows the model in use; PMM_PROVIDER_TIMEOUT and"
                    " PMM_PROVIDER_RETRIES tune waiting")


class BudgetExceeded(ProviderError):
    """``scope`` says which cap: ``"day"`` (a model's ``--max-cost`` per UTC day, which the next
    day lifts) or ``"run"`` (``--budget`` of this chat or autonomous run)."""

    meaning = "a request could pass a spending cap (--budget, --max-cost): refused before it was sent"
    default_hint = "raise the cap (pmm model set NAME --max-cost X, or --budget), or use a cheaper model"

    def __init__(self, message: str, hint: str | None = None, scope: str = "run") -> None:
        super().__init__(message, hint)
        self.scope = scope


class InputRejected(PmmError):
    exit_code = 6
    meaning = "input rejected (a bad import / restore / key file or stdin; nothing was written)"
    default_hint = "nothing was written; fix the input and run the command again"

    def __init__(self, message: str, hint: str | None = None, line: int | None = None) -> None:
        if line is not None:
            message = f"line {line}: {message}"
        super().__init__(message, hint)
        self.line = line


OK = 0
WARNINGS = 7  # `health --strict` found warnings: "look at this mind", not a failed check
INTERRUPTED = 130  # 128 + SIGINT, as shells report it
NOT_ERRORS: dict[int, str] = {
    OK: "ok",
    WARNINGS: "health --strict found warnings (nothing failed)",
    INTERRUPTED: "interrupted (Ctrl-C or a declined prompt)",
}


def tree(root: type[PmmError] = PmmError) -> Iterator[type[PmmError]]:
    """``root`` and every class below it, depth first in the order they were declared."""
    yield root
    for sub in root.__subclasses__():
        yield from tree(sub)


def _exit_status() -> tuple[tuple[int, str], ...]:
    """Every exit code with its meaning: for an error code, the meaning of the highest class
    that has it (``MindFileError``'s for 4, not ``MindLocked``'s)."""
    meanings = dict(NOT_ERRORS)
    for cls in tree():
        meanings.setdefault(cls.exit_code, cls.meaning)
    return tuple(sorted(meanings.items()))


EXIT_STATUS = _exit_status()  # what `pmm --help` and the man page's EXIT STATUS print
