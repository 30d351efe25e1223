"""The interactive chat session: prompt-toolkit input with history, answers streamed (``stream``).

Ctrl-C while an answer streams cancels it (nothing of the turn is saved); Ctrl-C at the prompt
clears the line; Ctrl-D, /exit, or ``exit`` or ``quit`` alone on the line leaves; Ctrl-X Ctrl-E
edits the line in $EDITOR. Each mind has its own input history. The slash commands are one table (``COMMANDS``): the
dispatch, ``/help`` and Tab completion all read it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pmm.cli import output, stream
from pmm.errors import PmmError
from pmm.services.chat import Chat


def _read_prompt(chat: Chat) -> Callable[[], str]:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings

    from pmm.paths import state_dir

    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("enter")
    def _submit(event: Any) -> None:
        buffer = event.current_buffer
        if buffer.text.endswith("\\"):
            buffer.delete_before_cursor(1)
            buffer.insert_text("\n")
        else:
            buffer.validate_and_handle()

    try:
        directory = state_dir() / "history"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        history: Any = FileHistory(str(directory / history_name(chat.mind.mind_id)))
    except OSError:
        history = InMemoryHistory()
    # Tab completes a command's name; while typing nothing pops up (a menu would cover answers).
    session: PromptSession[str] = PromptSession(
        history=history, key_bindings=bindings, multiline=True,
        completer=_completer(), complete_while_typing=False, enable_open_in_editor=True,
        prompt_continuation=lambda width, _n, _soft: "." * (width - 1) + " ",
    )

    def read() -> str:
        model = chat.model()  # once per prompt: the toolbar is redrawn on every key
        spent = _spent(chat)  # once there is usage to show, the model's name alone makes room for it
        where = model.name if spent else f"{model.name} ({model.spec.label})"
        toolbar = output.clean(f" {where} · {spent}/help · Ctrl-D leaves", multiline=False)
        return session.prompt("you> ", bottom_toolbar=toolbar)

    return read


def _spent(chat: Chat) -> str:
    """The toolbar's usage: the last answer's tokens and cost, and the session's (/usage: more)."""
    if chat.last_usage is None:
        return ""
    return f"last {chat.last_usage.short()} · session {chat.session_usage.short()} · "


LEAVE_WORDS = ("exit", "quit")  # alone on the line: leave, as in a shell (never sent to the model)


def history_name(mind_id: str) -> str:
    """The input history's file name for a mind: a digest of its id, so that each mind has its
    own and a crafted id (``../x``) cannot name a path."""
    import hashlib

    return "chat-" + hashlib.sha256(mind_id.encode("utf-8", "replace")).hexdigest()[:32]


def run(chat: Chat) -> None:
    """The read-answer loop until /exit or Ctrl-D."""
    name = chat.states()["identity"]["name"] or "your mind"
    model = chat.model()
    from pmm.services import trust

    where = trust.endpoint(model.spec).describe()
    output.message(f"Talking to {name} through {model.name} ({model.spec.label}; {where}). /help lists commands.")
    read = _read_prompt(chat)
    while True:
        try:
            text = read()
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt clears the line
        except EOFError:
            break
        text = text.strip()
        if not text:
            continue
        if text.lower() in LEAVE_WORDS:
            break
        if text.startswith("/"):
            if dispatch(chat, text):
                break
            continue
        stream.answer(chat, text)
    output.message("Bye.")


# -- slash commands ------------------------------------------------------------------------------


def _help(chat: Chat, rest: str) -> None:
    output.message(HELP)


def _model(chat: Chat, rest: str) -> None:
    if rest:
        model = chat.use(rest, output.message)
        from pmm.services import models, trust

        states = chat.states()
        reflection = models.active(states, "reflection")
        follows = states["models"]["active"].get("reflection") is None
        output.message(f"Chat now uses {model.name} ({model.spec.label}; "
                       f"{trust.endpoint(model.spec).describe()}); the mind stays the same.")
        output.message("Reflection follows the chat model (none was chosen for it:"
                       " `pmm model use NAME --for reflection` sets one)." if follows else
                       f"Reflection still uses {reflection.name} ({reflection.spec.label}).")
    else:
        model = chat.model()
        output.message(f"{model.name}: {model.spec.label}")


def _models(chat: Chat, rest: str) -> None:
    from pmm.services import models

    for model in models.known(chat.states()).values():
        output.message(f"  {model.name:<16} {model.spec.label}")


def _new(chat: Chat, rest: str) -> None:
    chat.new(rest or None)
    output.message("New session" + (f" {rest!r}" if rest else "") + ": the recent turns start"
                   " empty (recalled memory still comes from the whole mind).")


def _retry(chat: Chat, rest: str) -> None:
    from pmm.cli import stream

    output.message("Asking again…")
    turn = stream.show(chat.retry)
    if turn is not None:
        output.message(f"(answer {turn.response.id} replaces {turn.events[0].meta['response']},"
                       " which no longer enters the model's context)")


def _sessions(chat: Chat, rest: str) -> None:
    from pmm.cli.sessions import render
    from pmm.services import sessions

    found = sessions.newest(chat.mind, 10)
    output.message("\n".join(render(found)) if found else "No sessions yet.")
    output.message(f"This session: {chat.session[:12]}" + ("" if chat.started else " (new)"))


def _stats(chat: Chat, rest: str) -> None:
    from pmm.services import stats

    report = stats.stats(chat.mind)
    output.message(f"{output.plural(report['events'], 'event')}; {output.plural(report['sessions'], 'session')},"
                   f" {output.plural(report['messages'], 'message')}, {output.plural(report['observations'], 'note')}")


def _reflect(chat: Chat, rest: str) -> None:
    from pmm.cli.reflect import render as render_reflection
    from pmm.services import reflection

    output.message("Reflecting…")
    outcome = reflection.reflect(chat.mind.path, notify=output.message, budget=chat.budget)
    output.message("\n".join(render_reflection(outcome.as_json())) if outcome.recorded
                   else f"No reflection: {outcome.reason}")


def _usage(chat: Chat, rest: str) -> None:
    from pmm.services import usage
    from pmm.services.usage import money

    model = chat.model()
    if chat.last_usage is None:
        lines = ["No answer in this run yet."]
    else:
        lines = [f"Last answer: {chat.last_usage.line()}",
                 f"This run: {output.plural(chat.session_usage.answers, 'answer')}, {chat.session_usage.line()}"]
    prices = model.prices()
    if prices is None:
        lines.append(f"{model.name} has no prices: pmm model set {model.name} --price-in X --price-out Y"
                     " (per million tokens) records a cost with every answer")
    else:
        lines.append(f"{model.name} costs {prices.price_in:g} in, {prices.price_out:g} out, {prices.read_rate():g}"
                     f" cache read, {prices.write_rate():g} cache write per million tokens ({prices.currency})")
        if model.max_cost is not None:
            today = usage.spent_today(chat.states(), model)
            lines.append(f"Daily cap: {money(today, prices.currency)} of {money(model.max_cost, prices.currency)}"
                         " spent today (UTC)")
    if chat.budget.limit is not None:
        spent = ", ".join(money(v, k) for k, v in sorted(chat.budget.spent.items())) or "nothing"
        lines.append(f"--budget {chat.budget.limit:g}: {spent} spent")
    output.message("\n".join(lines))


def _commitments(chat: Chat, rest: str) -> None:
    from pmm.cli.commitments import render_list
    from pmm.services import commitments

    output.message("\n".join(render_list(commitments.listing(chat.mind.path), rest == "all")))


def _trace(chat: Chat, rest: str) -> None:
    from pmm.cli.trace import render
    from pmm.services import trace

    output.message("\n".join(render(trace.trace(chat.mind.path, rest or None))))


@dataclass(frozen=True)
class Command:
    usage: str  # as /help shows it: the name, then what it takes
    help: str
    run: Callable[[Chat, str], None] | None  # None: the command leaves the session

    @property
    def name(self) -> str:
        return self.usage.split()[0]


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("/help", "this list", _help),
    Command("/model", "the model answering now; /model NAME switches to it (recorded in the mind)",
            _model),
    Command("/models", "every model the mind knows", _models),
    Command("/new [TITLE]", "start a new session (its recent turns start empty)", _new),
    Command("/retry", "withdraw the last answer and ask its message again", _retry),
    Command("/sessions", "the latest sessions, and this one's id", _sessions),
    Command("/stats", "what the mind holds so far", _stats),
    Command("/usage", "tokens and cost of the last answer and of this run, prices and caps", _usage),
    Command("/reflect", "reflect now on what happened since the last reflection", _reflect),
    Command("/commitments", "open commitments (/commitments all: every one)", _commitments),
    Command("/trace [ID]", "why the last answer (or answer ID) is what it is", _trace),
    Command("/exit", "leave (Ctrl-D, or exit or quit alone, works too)", None),
)}
ALIASES = {"/quit": "/exit"}  # accepted, not listed

HELP = "\n".join([
    "Commands:",
    *(f"  {c.usage:<21} {c.help}" for c in COMMANDS.values()),
    "Enter sends; Esc then Enter starts a new line; a line ending in \\ continues on the next.",
    "Ctrl-X Ctrl-E opens the input in $EDITOR; it is sent when the editor closes.",
    "Ctrl-C cancels an answer while it streams: nothing of that turn is saved.",
])


def dispatch(chat: Chat, line: str) -> bool:
    """Run the slash command ``line``; True when it leaves the session. Its errors are shown
    and the session goes on."""
    word, _, rest = line.partition(" ")
    command = COMMANDS.get(ALIASES.get(word, word))
    if command is None:
        output.message(f"unknown command {word}; /help lists them")
        return False
    if command.run is None:
        return True
    try:
        command.run(chat, rest.strip())
    except PmmError as exc:
        output.error(exc.message, exc.hint)
    return False


def completions(text: str) -> list[str]:
    """The command names that complete ``text``, the line typed so far (none once past the name)."""
    if not text.startswith("/") or " " in text or "\n" in text:
        return []
    return [name for name in COMMANDS if name.startswith(text)]


def _completer() -> Any:
    from prompt_toolkit.completion import Completer, Completion

    class Commands(Completer):
        def get_completions(self, document: Any, complete_event: Any) -> Iterator[Completion]:
            typed = document.text_before_cursor
            for name in completions(typed):
                yield Completion(name, start_position=-len(typed), display_meta=COMMANDS[name].help)

    return Commands()
