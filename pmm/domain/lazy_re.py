"""Regular expressions compiled when first used, not when their module is imported.

A module's patterns are compiled on every run of every command that imports it: for the
conversation rule's (``pmm.domain.dynamics``) about 5 ms, which ``pmm stats`` never uses and a
chat turn uses only when an answer says "I will". ``compile`` returns a stand-in that compiles
on the first call of any method and then hands out the compiled pattern's own bound methods,
so a match costs what it costs with ``re.compile``; ``.pattern`` is there before that.
"""

from __future__ import annotations

import re
from typing import Any, cast

_METHODS = ("search", "match", "fullmatch", "finditer", "findall", "sub", "subn", "split")


class _Deferred:
    def __init__(self, pattern: str, flags: int) -> None:
        self.pattern = pattern
        self._flags = flags

    def __getattr__(self, name: str) -> Any:  # only for what the instance does not hold yet
        if name.startswith("__"):
            raise AttributeError(name)
        compiled = re.compile(self.pattern, self._flags)
        for method in _METHODS:
            setattr(self, method, getattr(compiled, method))
        self.flags, self.groups, self.groupindex = compiled.flags, compiled.groups, compiled.groupindex
        return getattr(compiled, name)

    def __repr__(self) -> str:
        return f"lazy_re.compile({self.pattern!r})"


def compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """``re.compile(pattern, flags)``, compiled on first use."""
    return cast("re.Pattern[str]", _Deferred(pattern, flags))


def compiled(pattern: re.Pattern[str]) -> bool:
    """Whether ``pattern`` (from ``compile`` or ``re.compile``) has been compiled yet."""
    return not isinstance(pattern, _Deferred) or "search" in vars(pattern)
