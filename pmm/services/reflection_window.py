"""What one reflection is shown: a contiguous window of unreflected history, oldest first, as
many events as fit the model's context window less the answer's limit and the fixed parts (the
instructions, the traits, the open commitments: shown fewer, or clipped harder, rather than crowd
out the events or the answer). A very long event is clipped, and its line says so."""

from __future__ import annotations

from collections.abc import Iterator

from pmm import errors
from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.domain.states import States
from pmm.ledger import lookup
from pmm.ledger.store import Ledger
from pmm.providers.base import Message, Request
from pmm.services import reflection_answer as answer
from pmm.services import tokens
from pmm.services.context import WHO
from pmm.services.safe_text import clip

SEEN_KINDS = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name, ev.OBSERVATION_RECORDED.name,
              ev.NOTE_PINNED.name)
LINE_CHARS = 400  # of an event shown in a window; a longer one is clipped and says so
MIN_ROOM = 128  # tokens for events, however small the model's window
MARGIN = 32  # tokens kept free for what a provider adds around the messages
PAGE = 200  # events read at a time
COMMITMENTS_SHOWN = 20


def request(mind: Ledger, states: States, first_id: int, window: int, until: int,
             cost: tokens.Cost, limit: int | None = None) -> tuple[Request, dict[int, str]]:
    """The events from ``first_id`` to ``until``, oldest first, as many as fit (``cost``: the
    model's own token count for a local model, else the estimate), at most ``limit``:
    (request, the text of each event as shown, by id, in order)."""
    system, frame, fixed = _fixed(states, until, window, cost)
    room = window - answer.ANSWER_TOKENS - fixed - MARGIN
    lines: list[str] = []
    shown: dict[int, str] = {}
    more = False
    for event in _unreflected(mind, first_id, until):
        line, text = _line(event, None if shown else room, cost)  # the first is clipped until it fits
        spent = cost.text(line) + 1
        if spent > room or (limit is not None and len(shown) >= limit):
            more = True
            break
        lines.append(line)
        shown[event.id] = text
        room -= spent
    if not shown:
        return Request(messages=()), {}
    seen = list(shown)
    ctx = frame + _header(seen[0], seen[-1], len(seen), more) + "\n" + "\n".join(lines)
    request = Request(messages=(Message("user", answer.INSTRUCTIONS),), system=system, context=ctx,
                      max_tokens=answer.ANSWER_TOKENS, temperature=0.2, json_schema=answer.SCHEMA)
    return request, shown


# how the open commitments are shown, most first, until the fixed parts leave room for events
FRAMES = ((COMMITMENTS_SHOWN, 200), (COMMITMENTS_SHOWN, 100), (10, 80), (5, 60), (0, 0))


def _fixed(states: States, until: int, window: int, cost: tokens.Cost) -> tuple[str, str, int]:
    """The system text, the frame and what they cost with the instructions and the header, with
    as many open commitments, clipped as little, as leave ``MIN_ROOM`` for events and the whole
    answer; a window too small even without them is a clear error."""
    for count, chars in FRAMES:
        system, frame = _frame(states, count, chars)
        fixed = sum(cost.text(t) for t in (
            system, answer.INSTRUCTIONS, frame, _header(until, until, until, more=True)))
        need = fixed + MIN_ROOM + answer.ANSWER_TOKENS + MARGIN
        if need <= window:
            return system, frame, fixed
    raise errors.ProviderError(
        f"the reflection model's context window ({window:,} tokens) is too small for a reflection,"
        f" which needs at least {need:,}",
        hint="use a model with a larger window, or set its size: pmm model set NAME --context-window N")


def _frame(states: States, count: int = COMMITMENTS_SHOWN, chars: int = 200) -> tuple[str, str]:
    """The window's fixed parts: the system text, and traits and the latest ``count`` open
    commitments (each clipped to ``chars``)."""
    name = states["identity"]["name"]
    system = (f"You are {name}, a persistent mind, reflecting on your experience."
              if name else "You are a persistent mind with no name yet, reflecting on your"
              " experience. You may propose a name for yourself in the name field.")
    open_ = sorted(states["commitments"]["open"].items(), key=lambda kv: int(kv[0]))
    shown = [f"#{k}: {clip(v['text'], chars)}" for k, v in open_[len(open_) - count:]] if count else []
    if len(open_) > len(shown):
        shown.insert(0, f"({len(open_) - len(shown):,} older ones not shown)")
    traits = ", ".join(f"{k} {v:.2f}" for k, v in states["traits"]["values"].items())
    return system, (f"Your traits: {traits}.\nYour open commitments:\n{chr(10).join(shown) or '(none)'}\n\n")


def _header(first: int, last: int, count: int, more: bool) -> str:
    later = " Later events come in your next reflection." if more else ""
    return (f"Events #{first} to #{last} ({count:,}), oldest first: everything you have not"
            f" reflected on before from #{first}, in order (a long event is clipped, and says so).{later}")


def _unreflected(mind: Ledger, first_id: int, until: int) -> Iterator[Event]:
    since = first_id
    while True:
        page = lookup.following(mind, SEEN_KINDS, since, PAGE)
        yield from (e for e in page if e.id <= until)
        if len(page) < PAGE or page[-1].id >= until:
            return
        since = page[-1].id + 1


def _line(event: Event, fit: int | None, cost: tokens.Cost) -> tuple[str, str]:
    """One event as the window shows it, clipped to ``LINE_CHARS`` (and, when ``fit`` is
    given, further until it costs at most ``fit`` tokens): (line, its text as shown)."""
    who = WHO.get(event.kind, "note")  # as the chat prompt names them
    text = " ".join(event.content.split())
    chars = LINE_CHARS
    while True:
        if len(text) <= chars:
            line, part = f"#{event.id} {who}: {text}", text
        else:
            part = text[:chars]
            line = f"#{event.id} {who} (clipped to {chars:,} of {len(text):,} characters): {part}…"
        if fit is None or chars == 0 or cost.text(line) + 1 <= fit:
            return line, part
        chars //= 2


