"""The one exception tree. Every error pmm raises on purpose is a ``PmmError``.

Each class carries the process exit code of SPEC section 5 and a hint for the user::

    PmmError                      1  unexpected / generic
    ├── UsageError                2  a bad combination of options or arguments
    ├── IntegrityError            3  a hash, link or id check failed (verify, tamper found)
    ├── MindFileError             4  the mind file is missing or cannot be used
    │   ├── MindNotFound          4  no file at the resolved path
    │   ├── NotAMind              4  not SQLite, or SQLite but not a pmm mind
    │   ├── NewerFormat           4  written by a newer pmm
    │   └── MindLocked            4  another process held the write lock past the timeout
    ├── ProviderError             5  a model provider failed (later issue)
    └── InputRejected             6  an import, restore or key file was refused

Foreign exceptions are translated where they enter: ``sqlite3`` errors in ``pmm.ledger``.
"""

from __future__ import annotations


def quoted(value: object, limit: int = 48) -> str:
    """A value from outside (a mind file, an export, the environment) quoted for a one-line
    message: short (it may be a pasted key or a wall of text) and printable (``repr``)."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


class PmmError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(PmmError):
    exit_code = 2


class IntegrityError(PmmError):
    exit_code = 3


class MindFileError(PmmError):
    exit_code = 4


class MindNotFound(MindFileError):
    pass


class NotAMind(MindFileError):
    pass


class NewerFormat(MindFileError):
    pass


class MindLocked(MindFileError):
    pass


class ProviderError(PmmError):
    exit_code = 5


class InputRejected(PmmError):
    exit_code = 6

    def __init__(self, message: str, hint: str | None = None, line: int | None = None) -> None:
        if line is not None:
            message = f"line {line}: {message}"
        super().__init__(message, hint)
        self.line = line
