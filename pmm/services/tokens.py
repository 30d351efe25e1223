"""Token counts for a prompt: the model's own where pmm has its vocabulary (a local model),
else a deliberately high estimate, so a prompt never overflows its window."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from pmm.domain.events import Event

if TYPE_CHECKING:  # annotations only: `pmm stats` needs none of the provider interface
    from pmm.providers.base import Request

# What a tokenizer makes of text, counted high: a lowercase run is a token (a long one more),
# a capital run about one per two letters, each digit, control character, punctuation mark and line break one, and
# a non-ASCII character one per UTF-8 byte after its first; then 10% more. Checked against the
# embedded model's own tokenizer (tests/test_context.py): never below it, about 1.3 times it on
# English chat (the plain "3 characters a token" was 1.6 times, wasting a third of the window).
_LOWER = re.compile(r"[a-z]+")
_LONG = re.compile(r"[a-z]{7,}")
_CAPITALS = re.compile(r"[A-Z]+(?![a-z])")  # a capital before lowercase starts that word
# every ASCII character but a space or letter (as a positive class: the negated one,
# [^\x20A-Za-z\x80-\U0010ffff], takes ~3 ms to compile in every process)
_ONES = re.compile(r"[\x00-\x1f\x21-\x40\x5b-\x60\x7b-\x7f]")
_WIDE = re.compile(r"[^\x00-\x7f]")
_INNER_CAPITALS = re.compile(r"(?<=[a-z0-9])[A-Z]")  # "aBcDeF", base64: a case change splits
_MORE_SPACES = re.compile(r"(?<= ) ")  # a space after a space is a token of its own


def estimate_tokens(text: str) -> int:
    """A deliberately high guess at ``text``'s token count, so a prompt never overflows."""
    count = len(_LOWER.findall(text)) + len(_ONES.findall(text))
    count += sum((len(w) - 6) // 3 if len(w) <= 24 else len(w) // 2 for w in _LONG.findall(text))
    count += sum(1 + len(w) // 2 for w in _CAPITALS.findall(text))
    count += len(_INNER_CAPITALS.findall(text)) + len(_MORE_SPACES.findall(text))
    if not text.isascii():  # a byte-level tokenizer never makes more tokens than bytes
        count += sum(len(c.encode()) for c in _WIDE.findall(text))
    return count * 11 // 10 + 4


Count = Callable[[str], int]  # a model's own token count for a text
TEMPLATE_TOKENS = 6  # a chat message's role markers: "<|im_start|>user\n" ... "<|im_end|>\n"


class Cost:
    """What a piece of the prompt costs in tokens: the model's own count plus a token for the
    line break or join beside it when ``count`` is given, else the high estimate."""

    def __init__(self, count: Count | None) -> None:
        self.exact = count is not None
        self._count = count or estimate_tokens

    def text(self, text: str) -> int:
        return self._count(text) + 1 if self.exact else self._count(text)

    def turn(self, event: Event) -> int:
        """A recent turn: its text as a chat message."""
        return self.message(event.content)

    def message(self, text: str) -> int:
        """A text sent as a chat message, with its role markers."""
        return self.text(text) + (TEMPLATE_TOKENS if self.exact else 4)

    def request(self, request: Request) -> int:
        """The whole prompt, measured as sent (the context in the last user message)."""
        parts = [request.system, *(m.content for m in request.sent())]
        return sum(self.text(p) + TEMPLATE_TOKENS for p in parts if p)
