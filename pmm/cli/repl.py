"""The interactive chat session: prompt-toolkit input with history, answers streamed (``stream``).

Ctrl-C while an answer streams cancels it (nothing of the turn is saved); Ctrl-C at the prompt
clears the line; Ctrl-D or /exit leaves. The slash commands are one table (``COMMANDS``): the
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
        directory = state_dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        history: Any = FileHistory(str(directory / "chat_history"))
    except OSError:
        history = InMemoryHistory()
    # Tab completes a command's name; while typing nothing pops up (a menu would cover answers).
    session: PromptSession[str] = PromptSession(
        history=history, key_bindings=bindings, multiline=True,
        completer=_completer(), complete_while_typing=False,
        prompt_continuation=lambda width, _n, _soft: "." * (width - 1) + " ",
    )

    def read() -> str:
        model = chat.model()  # once per prompt: the toolbar is redrawn on every key
        toolbar = output.clean(f" {model.name} ({model.spec.label}) · /help · Ctrl-D leaves", multiline=False)
        return session.prompt("you> ", bottom_toolbar=toolbar)

    return read


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
        from pmm.services import trust

        output.message(f"Chat now uses {model.name} ({model.spec.label}; "
                       f"{trust.endpoint(model.spec).describe()}); the mind stays the same.")
    else:
        model = chat.model()
        output.message(f"{model.name}: {model.spec.label}")


def _models(chat: Chat, rest: str) -> None:
    from pmm.services import models

    for model in models.known(chat.states()).values():
        output.message(f"  {model.name:<16} {model.spec.label}")


def _stats(chat: Chat, rest: str) -> None:
    from pmm.services import stats

    report = stats.stats(chat.mind)
    output.message(f"{output.plural(report['events'], 'event')}; {output.plural(report['sessions'], 'session')},"
                   f" {output.plural(report['messages'], 'message')}, {output.plural(report['observations'], 'note')}")


def _reflect(chat: Chat, rest: str) -> None:
    from pmm.cli.reflect import render as render_reflection
    from pmm.services import reflection

    output.message("Reflecting…")
    outcome = reflection.reflect(chat.mind.path, notify=output.message)
    output.message("\n".join(render_reflection(outcome.as_json())) if outcome.recorded
                   else f"No reflection: {outcome.reason}")


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
    Command("/stats", "what the mind holds so far", _stats),
    Command("/reflect", "reflect now on what happened since the last reflection", _reflect),
    Command("/commitments", "open commitments (/commitments all: every one)", _commitments),
    Command("/trace [ID]", "why the last answer (or answer ID) is what it is", _trace),
    Command("/exit", "leave (Ctrl-D works too)", None),
)}
ALIASES = {"/quit": "/exit"}  # accepted, not listed

HELP = "\n".join([
    "Commands:",
    *(f"  {c.usage:<21} {c.help}" for c in COMMANDS.values()),
    "Enter sends; Esc then Enter starts a new line; a line ending in \\ continues on the next.",
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
