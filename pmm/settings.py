"""Every environment variable pmm reads, declared once: name, type, default, bounds, one line of doc.

Readers call ``NAME.get()``; a value that does not parse or is out of bounds is a ``UsageError``
(exit 2) naming the variable and what it takes, whichever command reads it. The man page's
ENVIRONMENT table is generated from ``ALL`` (scripts/gen_docs.py), so the two cannot drift.
Nothing here is read at import time: a bad value fails the command that needs it, not ``--help``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pmm import errors

T = TypeVar("T", int, float, str)


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One variable. ``kind`` is int, float or str; a str setting is passed through as set
    (secrets, paths, flags), an int or float one is parsed and checked against its bounds."""

    name: str
    kind: type[T]
    default: T
    doc: str
    minimum: T | None = None
    maximum: T | None = None
    unit: str = ""

    def raw(self) -> str | None:
        """The value as set, or None when unset or blank (blank means "use the default")."""
        value = os.environ.get(self.name)
        return value if value is not None and value.strip() else None

    def get(self) -> T:
        raw = self.raw()
        if raw is None:
            return self.default
        if self.kind is str:
            return raw  # type: ignore[return-value]
        try:
            value = self.kind(raw.strip())
        except ValueError:
            value = None
        if value is None or (isinstance(value, float) and not math.isfinite(value)) \
                or (self.minimum is not None and value < self.minimum) \
                or (self.maximum is not None and value > self.maximum):
            raise errors.UsageError(f"${self.name} must be {self.takes()}, not {errors.quoted(raw, 40)}",
                                    hint=f"unset it for the default ({_num(self.default)}); `man pmm`"
                                         " lists the variables under ENVIRONMENT")
        return value

    def takes(self) -> str:
        """What the variable accepts, in words: "a number of seconds from 0 to 3600"."""
        what = "a whole number" if self.kind is int else "a number"
        if self.unit:
            what += f" of {self.unit}"
        if self.minimum is not None and self.maximum is not None:
            return f"{what} from {_num(self.minimum)} to {_num(self.maximum)}"
        if self.minimum is not None:
            return f"{what} of at least {_num(self.minimum)}"
        return what


def _num(value: float | str) -> str:
    """3, 0.5, 86400: as a person would write the bound, never 1.04858e+06."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


MIND = Setting("PMM_MIND", str, "", "The mind file when --mind is not given (default: the user data dir's mind.db).")
LOCK_TIMEOUT = Setting(
    "PMM_LOCK_TIMEOUT", float, 10.0, "Seconds a writer waits for another process's write lock before"
    " giving up with exit 4 (default 10).", minimum=0.0, maximum=86400.0, unit="seconds")
PROVIDER_TIMEOUT = Setting(
    "PMM_PROVIDER_TIMEOUT", float, 120.0, "Seconds to wait for the next part of a model provider's"
    " answer (default 120).", minimum=0.001, maximum=86400.0, unit="seconds")
PROVIDER_DEADLINE = Setting(
    "PMM_PROVIDER_DEADLINE", float, 600.0, "Seconds a whole model request may take, connecting, retries"
    " and a slowly trickling answer included (default 600); then it fails with exit 5 and nothing is"
    " saved.", minimum=0.001, maximum=86400.0, unit="seconds")
PROVIDER_MAX_BYTES = Setting(
    "PMM_PROVIDER_MAX_BYTES", int, 8 * 1024 * 1024, "Largest answer body, streamed or not, in bytes after"
    " decompression, that pmm reads from a model provider (default 8388608, 8 MiB); a longer one fails"
    " with exit 5.", minimum=1024, maximum=1024 * 1024 * 1024, unit="bytes")
PROVIDER_RETRIES = Setting(
    "PMM_PROVIDER_RETRIES", int, 3, "How many times a failed model request is tried again (default 3).",
    minimum=0, maximum=20)
LOCAL_CTX = Setting(
    "PMM_LOCAL_CTX", int, 2048, "Context size in tokens for local GGUF models (default 2048, at least 256).",
    minimum=256, maximum=1048576, unit="tokens")
LOCAL_THREADS = Setting(
    "PMM_LOCAL_THREADS", int, 0, "Threads a local GGUF model runs on (default 0: half the cores, as"
    " llama-cpp-python does, at most 4). Keep it below the number of idle cores: llama.cpp's threads wait"
    " for each other by spinning, and on busy cores two threads can be many times slower than one.", minimum=0, maximum=256)
SEMANTIC = Setting(
    "PMM_SEMANTIC", int, 1, "Set to 0 to recall by BM25 alone even with the semantic extra installed"
    " (saves loading WordLlama, about 0.5 s, in each process that recalls).", minimum=0, maximum=1)
STOP_GRACE = Setting(
    "PMM_STOP_GRACE", float, 5.0, "Seconds pmm run lets the current step finish after Ctrl-C or SIGTERM"
    " before it abandons the step (default 5; an abandoned step writes nothing).",
    minimum=0.0, maximum=600.0, unit="seconds")
KEY_PASSPHRASE = Setting(
    "PMM_KEY_PASSPHRASE", str, "", "Passphrase of a protected signing key (keygen --protect, sign) when"
    " --passphrase-file is not given; otherwise it is asked for on the terminal.")
BACKUP_PASSPHRASE = Setting(
    "PMM_BACKUP_PASSPHRASE", str, "", "Passphrase for backup and restore when --passphrase-file is not"
    " given; otherwise it is asked for on the terminal.")
BACKUP_WORK_FACTOR = Setting(
    "PMM_BACKUP_WORK_FACTOR", int, 18, "The scrypt work factor (log2 N) pmm backup encrypts with (default 18,"
    " as age itself: about a second and 256 MiB; each step up doubles both, each step down halves what"
    " guessing the passphrase of a stolen backup costs). Restore accepts up to 22 whatever this is.",
    minimum=10, maximum=22)
MARKDOWN = Setting(
    "PMM_MARKDOWN", int, 0, "Set to 1 to render chat answers on a terminal as Markdown, as pmm chat"
    " --markdown does (default 0: the model's text exactly as written).", minimum=0, maximum=1)
DEBUG = Setting("PMM_DEBUG", str, "", "Set to 1 to get a traceback instead of one line for an unexpected error.")

# Variables pmm reads that are not its own: documented here too, so the man page has one source
# (a provider's key and host variables are declared with the provider, in pmm.providers.registry).
VISUAL = Setting("VISUAL", str, "", "The editor pmm persona edit opens (a command line; the file is its"
                 " last argument).")
EDITOR = Setting("EDITOR", str, "", "The editor pmm persona edit opens when VISUAL is not set.")
NO_COLOR = Setting("NO_COLOR", str, "", "When set, to anything, no colour.")
TERM = Setting("TERM", str, "", "When dumb, no colour.")

ALL: tuple[Setting[Any], ...] = (MIND, LOCK_TIMEOUT, PROVIDER_TIMEOUT, PROVIDER_DEADLINE, PROVIDER_MAX_BYTES,
                            PROVIDER_RETRIES, LOCAL_CTX, LOCAL_THREADS, SEMANTIC, STOP_GRACE, KEY_PASSPHRASE,
                            BACKUP_PASSPHRASE, BACKUP_WORK_FACTOR, MARKDOWN, DEBUG, VISUAL, EDITOR, NO_COLOR, TERM)
