"""Text from a mind file or a model made safe to show: shown, never obeyed by a terminal.

Pure and import-light: the CLI cleans everything it prints with it (``pmm.cli.output``), and the
Markdown export cleans the document it writes, since that is read with ``cat`` and pagers too.
"""

from __future__ import annotations

import re

# What a terminal would act on rather than show: C0 controls and DEL (ESC starts CSI/OSC sequences:
# clipboard writes, screen clears, title changes, cursor reports; CR overwrites a line), C1
# controls (U+009B is CSI on its own), bidi overrides and isolates (text that reads other than it
# is stored), line/paragraph separators, and lone surrogates (undecodable argv or stdin) that
# would make the write itself fail.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                     "\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ONE_LINE_UNSAFE = re.compile("[\n\t]")


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ESC shows as U+241B
    if code == 0x7F:
        return "\u2421"
    return f"<U+{code:04X}>"


def clean(text: str, multiline: bool = True) -> str:
    """``text`` (from a mind file or a model) safe to show on a terminal: every control character,
    escape sequence introducer and bidi control is replaced by a visible stand-in, so it is shown,
    never obeyed. Newlines and tabs stay in ``multiline`` bodies (a CRLF becomes a newline).
    Idempotent; plain text passes unchanged."""
    if multiline:
        text = text.replace("\r\n", "\n")
    else:
        text = _ONE_LINE_UNSAFE.sub(_visible, text)
    return _UNSAFE.sub(_visible, text)


# "<" that would open raw HTML (a tag, a comment, "</blockquote>") becomes "\<": a Markdown
# escape that renders as "<" and opens nothing
_MD_HTML = re.compile(r"<(?=[A-Za-z/!?])")


def md_line(text: str) -> str:
    """``text`` for a one-line slot of a Markdown document (a heading, a label): all whitespace,
    every kind of line break included, collapsed to single spaces, so it cannot start a heading
    or a turn of its own; controls shown (``clean``); raw HTML defused."""
    return clean(_MD_HTML.sub(r"\\<", " ".join(text.split())), multiline=False)


def md_quote(text: str) -> str:
    """``text`` as a Markdown block quote: every line, whichever line break (CR, LF, CRLF) ended
    the one before, starts with ``> ``, so nothing in it can close the quote and write outside."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join("> " + _MD_HTML.sub(r"\\<", clean(line)) for line in lines)


def clip(text: str, limit: int) -> str:
    """``text`` on one line (its runs of spaces and line breaks made one space), cut to ``limit``
    characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
