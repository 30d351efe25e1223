"""A chat answer on a terminal: streamed append-only as it arrives, never redrawn.

By default the model's text is shown exactly as written (only cleaned of what a terminal would
obey, ``output.clean``): a haiku keeps its line breaks, ``# not a heading`` stays as typed, code
copies and runs. With ``pmm chat --markdown`` (or ``PMM_MARKDOWN=1``) each block is rendered by
rich once it is complete (a blank line outside a code fence ends it), so nothing that has scrolled
off is drawn again. A spinner on stderr shows the model is working until the first piece arrives.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from pmm.cli import output
from pmm.errors import PmmError
from pmm.services.chat import Chat, Turn

MARKDOWN: bool | None = None  # set by `pmm chat --markdown`; None: $PMM_MARKDOWN decides
SPINNER = "waiting for the answer…"
CANCELLED = "(answer cancelled: nothing of this turn was saved)"
_SGR = re.compile(r"\x1b\[[0-9;]*m")  # rich's own colours, around a line it left blank
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def markdown_wanted() -> bool:
    if MARKDOWN is not None:
        return MARKDOWN
    from pmm import settings

    return settings.MARKDOWN.get() == 1


class Faithful:
    """Each piece written as it arrives, cleaned. A run of line breaks is held back until text
    follows it: a CR split from its LF still reads as one line break, leading blank lines are
    dropped and the answer ends in exactly one newline."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.held = ""
        self.started = False  # something visible has been written
        self.at_line_start = True

    def feed(self, piece: str) -> None:
        text = self.held + piece
        body = text.rstrip("\r\n")
        self.held = text[len(body):]
        if not body:
            return
        if not self.started:
            body = body.lstrip("\r\n")
            self.started = True
        self._write(output.clean(body))

    def _write(self, text: str) -> None:
        if text:
            self.stream.write(text)
            self.stream.flush()
            self.at_line_start = text.endswith("\n")

    def finish(self) -> None:
        """The end of the answer: its last line ended."""
        self.held = ""
        self.end_line()

    def end_line(self) -> None:
        """End a line left open (a cancelled or failed answer), so what follows starts clean."""
        if self.started and not self.at_line_start:
            self._write("\n")


def complete_blocks(text: str) -> tuple[list[str], str]:
    """The Markdown blocks of ``text`` that are complete (followed by a blank line outside a code
    fence), and what remains after them."""
    blocks: list[str] = []
    start = pos = 0
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        if not line.endswith(("\n", "\r")):
            break  # a line still arriving
        stripped = line.strip()
        opening = _FENCE.match(line)
        if fence is not None:
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
        elif opening:
            fence = opening.group(1)
        elif not stripped:
            if text[start:pos].strip():
                blocks.append(text[start:pos])
            start = pos + len(line)
        pos += len(line)
    return blocks, text[start:]


class Blocks:
    """Markdown rendered by rich one complete block at a time: what is shown stays shown."""

    def __init__(self, stream: Any) -> None:
        from rich.console import Console

        self.stream = stream
        self.console = Console(file=stream, no_color=not output.color_ok(stream), highlight=False,
                               soft_wrap=False)
        self.buffer = ""
        self.shown = 0  # blocks rendered so far
        self.started = False

    def feed(self, piece: str) -> None:
        self.started = True
        blocks, self.buffer = complete_blocks(self.buffer + piece)
        for block in blocks:
            self._render(block)

    def _render(self, block: str) -> None:
        from rich.markdown import Markdown

        with self.console.capture() as captured:
            self.console.print(Markdown(output.clean(block.replace("\r\n", "\n"))))
        # rich pads a heading or a code block with blank lines: one blank line between blocks
        lines = captured.get().split("\n")
        while lines and not _SGR.sub("", lines[-1]).strip():
            lines.pop()
        while lines and not _SGR.sub("", lines[0]).strip():
            lines.pop(0)
        if lines:
            self.stream.write(("\n" if self.shown else "") + "\n".join(lines) + "\n")
            self.stream.flush()
            self.shown += 1

    def finish(self) -> None:
        if self.buffer.strip():
            self._render(self.buffer)
        self.buffer = ""

    def end_line(self) -> None:
        """A cancelled answer: the block still arriving is not shown (rich ends every line)."""


def answer(chat: Chat, text: str, interactive: bool = True, markdown: bool | None = None) -> Turn | None:
    """One turn, its answer streamed to stdout; None when cancelled or failed (in the REPL). Out of
    the REPL (``interactive`` False) Ctrl-C and errors propagate to the CLI's boundary."""
    return show(lambda on_text: chat.turn(text, on_text), interactive, markdown)


def show(ask: Callable[[Callable[[str], None]], Turn], interactive: bool = True,
         markdown: bool | None = None) -> Turn | None:
    """Stream what ``ask(on_text)`` answers (a turn, or ``Chat.retry``) as ``answer`` does."""
    view: Faithful | Blocks = (Blocks if (markdown_wanted() if markdown is None else markdown)
                               else Faithful)(sys.stdout)
    spinner = output.Spinner(SPINNER)

    def on_text(piece: str) -> None:
        spinner.stop()
        view.feed(piece)

    try:
        spinner.start()
        try:
            turn = ask(on_text)
        finally:
            spinner.stop()
        if not view.started:  # a provider that answered whole
            view.feed(turn.response.content)
        view.finish()
    except KeyboardInterrupt:
        view.end_line()
        if not interactive:
            raise
        output.message(CANCELLED)
        return None
    except PmmError as exc:
        view.end_line()
        if not interactive:
            raise
        output.error(exc.message, exc.hint)
        output.message("(nothing of this turn was saved)")
        return None
    return turn
