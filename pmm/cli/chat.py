"""``pmm chat``: talk to the mind; one turn from ``-m`` or piped stdin, else the REPL."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Optional

from pmm.cli import output
from pmm.cli.declare import Option
from pmm.cli.options import JsonOpt, MindOpt, mind_path, stdin_text, utf8

# the option table's one-line summary, without importing it (``pmm --help`` stays fast)
_OPTIONS = ("temperature 0..2, top_p 0..1, top_k, seed, max_tokens, frequency_penalty and"
            " presence_penalty -2..2; a model whose API lacks one refuses it")

if TYPE_CHECKING:
    import typer

    from pmm.services.chat import Chat


def register(app: typer.Typer) -> None:
    # -o KEY VALUE: Typer has no repeatable two-value option, so VALUE arrives as an extra
    # argument and is paired with its KEY in order (``_pairs``); -o KEY=VALUE works too.
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(chat)


def chat(
    ctx: typer.Context,
    message: Annotated[Optional[str], Option("-m", "--message", help="Say this, print the answer and exit (- reads stdin: UTF-8, other bytes are refused with exit 6).")] = None,
    model: Annotated[Optional[str], Option("--model", help="Use this model (a name from `pmm model list`) for this run only.")] = None,
    max_tokens: Annotated[Optional[int], Option("--max-tokens", min=1, max=100_000, help="Longest answer, in tokens (at most half the window; default: 512, or an eighth of a smaller model's window).")] = None,
    markdown: Annotated[Optional[bool], Option("--markdown/--raw", help="Render answers on a terminal as Markdown, block by block (default: the text exactly as the model wrote it; PMM_MARKDOWN=1 makes --markdown the default).")] = None,
    resume: Annotated[bool, Option("-c", "--continue", help="Continue the most recent session (its recent turns come back into the prompt).")] = False,
    session_id: Annotated[Optional[str], Option("--session", metavar="ID", help="Continue this session (an id from `pmm sessions`, or the start of one).", callback=utf8)] = None,
    title: Annotated[Optional[str], Option("--title", help="Name the new session this run starts (shown by `pmm sessions`).", callback=utf8)] = None,
    system: Annotated[Optional[str], Option("-s", "--system", help="A system prompt for this run only, added after the mind's own (who it is), not replacing it; not recorded.", callback=utf8)] = None,
    option: Annotated[Optional[list[str]], Option("-o", "--option", metavar="KEY VALUE", help="A model option for this run, recorded with each answer (repeatable): " + _OPTIONS + ".")] = None,
    budget: Annotated[Optional[float], Option("--budget", min=0, max=1_000_000_000, metavar="AMOUNT", help="Most this run may spend, in the model's currency (its prices: pmm model set NAME --price-in ...): a turn that could pass it is refused before it is sent (exit 5). Each model's own daily cap (--max-cost) holds too.")] = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Talk to the mind: an interactive session, or one turn with -m TEXT or piped stdin.

    In the session: Enter sends, Esc then Enter adds a line, Ctrl-X Ctrl-E edits the input in
    $EDITOR, Ctrl-C cancels an answer in progress (nothing of it is saved), Ctrl-D, /exit or
    exit leaves; /help lists the commands (/new, /retry, /sessions ...). The toolbar shows the
    tokens and cost of the last answer and of the session; /usage gives the detail.
    """
    from pmm.cli import stream
    from pmm.errors import UsageError
    from pmm.services.chat import Chat, parse_options

    chosen = parse_options(_pairs(option or [], list(ctx.args)))

    stream.MARKDOWN = markdown
    if message == "-" or (message is None and not sys.stdin.isatty()):
        message = stdin_text("the message")
    if message is None and json:
        raise UsageError("--json needs one turn: pass -m TEXT or pipe the message in")
    if message is not None and not message.strip():
        raise UsageError("the message is empty", hint='pmm chat -m "hello", or pipe text in')
    with Chat(mind_path(mind), output.message, model, max_tokens, session=session_id, resume=resume,
              title=title, system=system or "", model_options=chosen, budget=budget) as session:
        if message is None:
            from pmm.cli import repl

            repl.run(session)
            return
        _one_turn(session, message, json)


def _pairs(keys: list[str], extra: list[str]) -> list[tuple[str, str]]:
    """``-o KEY VALUE`` (or ``-o KEY=VALUE``) pairs from the option's values and the extra
    arguments, in order; an extra argument no -o takes is a usage error, as without -o."""
    from pmm.errors import UsageError

    pairs = []
    for key in keys:
        if "=" in key:
            name, _, value = key.partition("=")
            pairs.append((name, value))
        elif extra:
            pairs.append((key, extra.pop(0)))
        else:
            raise UsageError(f"-o {key} needs a value", hint="-o temperature 0.2")
    if extra:
        raise UsageError(f"unexpected argument {extra[0]!r}", hint="pmm chat -m TEXT sends one message; see pmm chat --help")
    return pairs


def _one_turn(session: Chat, text: str, json: bool) -> None:
    """The answer alone on stdout (streamed on a terminal), or the --json envelope."""
    from pmm.cli import stream

    if json or not sys.stdout.isatty():
        with output.spinning(stream.SPINNER):  # stderr may still be a terminal
            turn = session.turn(text)
        if json:
            output.emit_json(turn.as_json())
        else:
            output.out(turn.response.content.strip())
        return
    stream.answer(session, text, interactive=False)
