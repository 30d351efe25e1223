"""Words for counts, shared by every human message (pure)."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word``, in the plural unless ``n`` is 1: "1 event", "2,000 events", "3 matches"."""
    if n == 1:
        return f"1 {word}"
    return f"{n:,} {many or (word + 'es' if word.endswith(('s', 'sh', 'ch', 'x')) else word + 's')}"
