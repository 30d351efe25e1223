"""``pmm chat``: talk to the mind; one turn from ``-m`` or piped stdin, else the REPL."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from pmm.cli import output
from pmm.cli.options import JsonOpt, MindOpt, mind_path, stdin_text

if TYPE_CHECKING:
    from pmm.services.chat import Chat


def register(app: typer.Typer) -> None:
    app.command()(chat)


def chat(
    message: Annotated[Optional[str], typer.Option("-m", "--message", help="Say this, print the answer and exit (- reads stdin: UTF-8, other bytes are refused with exit 6).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Use this model (a name from `pmm model list`) for this run only.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", min=1, max=100_000, help="Longest answer, in tokens (at most half the window; default: 512, or an eighth of a smaller model's window).")] = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Talk to the mind: an interactive session, or one turn with -m TEXT or piped stdin.

    In the session: Enter sends, Esc then Enter adds a line, Ctrl-C cancels an answer in
    progress (nothing of it is saved), Ctrl-D or /exit leaves; /help lists the commands.
    """
    from pmm.errors import UsageError
    from pmm.services.chat import Chat

    if message == "-" or (message is None and not sys.stdin.isatty()):
        message = stdin_text("the message")
    if message is None and json:
        raise UsageError("--json needs one turn: pass -m TEXT or pipe the message in")
    if message is not None and not message.strip():
        raise UsageError("the message is empty", hint='pmm chat -m "hello", or pipe text in')
    with Chat(mind_path(mind), output.message, model, max_tokens) as session:
        if message is None:
            from pmm.cli import repl

            repl.run(session)
            return
        _one_turn(session, message, json)


def _one_turn(session: Chat, text: str, json: bool) -> None:
    """The answer alone on stdout (streamed on a terminal), or the --json envelope."""
    if json or not sys.stdout.isatty():
        turn = session.turn(text)
        if json:
            output.emit_json(turn.as_json())
        else:
            output.out(turn.response.content.strip())
        return
    from pmm.cli import repl

    repl.answer(session, text, interactive=False)
