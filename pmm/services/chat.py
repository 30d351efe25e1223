"""A chat turn: context, the model's answer, and the turn appended as one transaction.

The user's message and the answer are written together only once the answer is complete, so a
failed, cut or cancelled turn leaves the chain exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

from pmm import errors
from pmm.domain import dynamics
from pmm.domain import events as ev
from pmm.domain.costs import CostJson
from pmm.domain.events import Draft, Event
from pmm.domain.states import States
from pmm.ledger import connection as cx
from pmm.ledger import folded
from pmm.ledger.store import Ledger
from pmm.providers import options
from pmm.providers.base import Completion, OnText, Provider
from pmm.services import context, models, opening, semantic, sessions, usage
from pmm.services.opening import Notify

ANSWER_TOKENS = 512  # the longest answer by default ...
ANSWER_SHARE = 8  # ... and at most this fraction (1/8) of a window: 256 tokens at 2,048
MAX_MESSAGE_CHARS = 200_000


def checked_message(text: str) -> str:
    """``text`` without surrounding space, if it can be a message: not empty, not too long."""
    text = text.strip()
    if not text:
        raise errors.UsageError("the message is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise errors.UsageError(f"the message is too long ({len(text)} characters; at most {MAX_MESSAGE_CHARS})")
    return text


def answer_reserve(window: int, max_tokens: int | None) -> int:
    """Tokens of ``window`` kept for the answer: the longest answer asked for, at most half
    the window, so a small model's prompt is never squeezed out by a large ``--max-tokens``;
    unasked (None), ``ANSWER_TOKENS`` but at most an eighth of the window, as an answer asked
    to be brief needs no quarter of a small model's window (which recall uses better)."""
    if max_tokens is None:
        return min(ANSWER_TOKENS, window // ANSWER_SHARE)
    return min(max_tokens, window // 2)


def prompt_for(mind: Ledger, states: States, text: str, model: models.Model,
               max_tokens: int | None, window: int | None = None,
               scope: context.Scope = context.NO_SCOPE,
               model_options: dict[str, options.Value] | None = None) -> context.Prompt:
    """The prompt a turn sends ``model`` for ``text``: ``pmm chat`` sends it, ``pmm recall``
    shows it, so what one shows is what the other sends. ``window`` overrides the model's;
    ``model_options`` are ``pmm chat -o`` (``pmm.providers.options``)."""
    window = window or model.window()
    chosen = dict(model_options or {})
    if "max_tokens" in chosen:
        max_tokens = int(chosen.pop("max_tokens"))
    temperature = float(chosen.pop("temperature", 0.7))
    prompt = context.build(mind, states, text, window=window,
                           answer_tokens=answer_reserve(window, max_tokens), temperature=temperature,
                           similar=semantic.nearest, count=model.token_counter(mind.mind_id),
                           scope=scope)
    if chosen:
        prompt.request = replace(prompt.request, options=chosen)
    return prompt


parse_options = options.parse  # ``pmm chat -o``: the CLI reaches the option table through here


def check_options(model: models.Model, chosen: dict[str, options.Value]) -> None:
    """A usage error when ``model``'s protocol has no field for one of the options."""
    from pmm.providers import registry

    info = registry.find(model.spec.provider)
    missing = options.unsupported(chosen, info.protocol if info else None)
    if missing:
        raise errors.UsageError(f"{model.spec.label} takes no {', '.join(missing)} option",
                                hint="drop that -o, or use another model (`pmm model list`)")


class Changed(TypedDict):
    id: int
    kind: str
    content: str


class TurnJson(TypedDict):
    """``pmm chat --json``: one answer, its cost, and what the prompt held."""

    answer: str
    session: str
    message_id: int
    response_id: int
    model: models.ModelJson
    tokens_in: int | None  # the whole prompt, cached parts included
    tokens_out: int | None
    tokens_cache_read: int | None
    tokens_cache_write: int | None
    usage_estimated: bool  # the provider reported no usage: pmm estimated the counts
    cost: CostJson | None  # None: the model has no prices (pmm model set NAME --price-in ...)
    latency_ms: int
    finish: str | None
    context: list[int]
    sections: dict[str, list[int]]  # standing, recalled, recent
    prompt_xxh3: str
    changed: list[Changed]


@dataclass
class Turn:
    message: Event
    response: Event
    completion: Completion
    prompt: context.Prompt
    model: models.Model
    session: str
    events: list[Event]

    def as_json(self) -> TurnJson:
        cost = usage.tally(self.response.meta).as_json()["cost"]
        return {
            "answer": self.response.content,
            "session": self.session,
            "message_id": self.message.id,
            "response_id": self.response.id,
            "model": self.model.as_json(),
            "tokens_in": self.completion.tokens_in,
            "tokens_out": self.completion.tokens_out,
            "tokens_cache_read": self.completion.cache_read,
            "tokens_cache_write": self.completion.cache_write,
            "usage_estimated": self.completion.estimated,
            "cost": cost[0] if cost else None,
            "latency_ms": self.completion.latency_ms,
            "finish": self.completion.finish_reason,
            "context": self.prompt.context_ids,
            "sections": {name: self.prompt.ids(name) for name in ("standing", "recalled", "recent")},
            "prompt_xxh3": self.prompt.signature,
            "changed": [{"id": e.id, "kind": e.kind, "content": e.content}
                        for e in self.events if e.id > self.response.id],
        }


class Chat:
    """A conversation with one mind: a session id, an open mind file, providers kept warm.

    ``session`` continues that session (an id or an unambiguous prefix; ``pmm sessions`` lists
    them), ``resume`` the one with the newest activity; otherwise a new session starts with the
    first turn, named ``title`` when given. A continued session, or one begun with ``new``, gets
    its recent turns from itself alone; a plain new run sees the mind's latest turns, whatever
    their session, as ``pmm chat`` always has. ``system`` is a system prompt for this run,
    added after the identity block; ``model_options`` are ``-o`` options, checked here.
    ``budget`` caps what this run spends (``pmm chat --budget``, in the model's currency), beside
    each model's own daily cap; ``session_usage`` and ``last_usage`` tally this run's answers.
    """

    def __init__(self, path: Path, notify: Notify, model_name: str | None = None,
                 max_tokens: int | None = None, *, session: str | None = None,
                 resume: bool = False, title: str | None = None, system: str = "",
                 model_options: dict[str, options.Value] | None = None,
                 budget: float | None = None) -> None:
        if max_tokens is not None and not 1 <= max_tokens <= 100_000:
            raise errors.UsageError("--max-tokens must be between 1 and 100000")
        if title is not None and (session is not None or resume):
            raise errors.UsageError("--title names a new session; it cannot rename one that is continued",
                                    hint="drop --title, or -c/--session")
        if session is not None and resume:
            raise errors.UsageError("-c continues the latest session, --session the one named: give one")
        if budget is not None and not 0 <= budget <= 1_000_000_000:
            raise errors.UsageError("--budget is an amount of money, between 0 and 1000000000")
        self.max_tokens = max_tokens
        self.budget = usage.Budget(budget)
        self.session_usage = usage.Tally()
        self.last_usage: usage.Tally | None = None
        self.system = system.strip()
        self.model_options = dict(model_options or {})
        self.title = " ".join(title.split()) if title else ""
        models.check_name(path, model_name)  # a typo in --model creates no mind and no folder
        if (session is not None or resume) and not path.exists():  # nor -c before any chat
            raise errors.UsageError("there is no session to continue yet: the mind does not exist",
                                    hint="start one with `pmm chat`")
        self.mind: Ledger = opening.open_write(path, notify)
        self.session = cx.random_id()
        self.started = False
        self.scoped = False  # recent turns from this session only
        self.model_name = model_name  # --model: for this run only, no switch recorded
        self._providers: dict[models.Model, Provider] = {}
        try:
            if session is not None or resume:
                found = sessions.resolve(self.mind, session) if session is not None else sessions.latest(self.mind)
                if found is None:
                    raise errors.UsageError("there is no session to continue yet",
                                            hint="start one with `pmm chat`")
                self.session, self.started, self.scoped = found.id, True, True
                self.title = found.title
            # An unknown or untrusted model fails before the first turn (and the REPL).
            model = self.model()
            models.require_trusted(self.mind.mind_id, model)
            check_options(model, self.model_options)
            if budget is not None and model.prices() is None:
                raise errors.UsageError(f"--budget needs prices: model {model.name!r} has none",
                                        hint=f"pmm model set {model.name} --price-in X --price-out Y"
                                             " (per million tokens)")
        except BaseException:
            self.mind.close()
            raise

    def __enter__(self) -> Chat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        self._providers.clear()
        self.mind.close()

    def states(self) -> States:
        return folded.state(self.mind)[0]

    def model(self) -> models.Model:
        return models.pick(self.states(), self.model_name)

    def use(self, name: str, notify: Notify) -> models.Model:
        """Switch this mind's chat model (a ``model_switched`` event for role chat), from now
        on. Reflection keeps its own model when one was chosen for it (``pmm model use NAME
        --for reflection``); without one it follows the chat model (``models.active``)."""
        model, _, _ = models.use(self.mind.path, name, "chat", notify)
        self.model_name = None
        return model

    def new(self, title: str | None = None) -> str:
        """Start a new session (recorded, like every session, with its first turn); from now
        on the recent turns come from it alone."""
        self.session = cx.random_id()
        self.started, self.scoped = False, True
        self.title = " ".join(title.split()) if title else ""
        return self.session

    def scope(self, hide: frozenset[int] = frozenset()) -> context.Scope:
        return context.Scope(self.session if self.scoped else None, self.system, hide)

    def _provider(self, model: models.Model) -> Provider:
        if model not in self._providers:
            self._providers[model] = models.connect(self.mind.mind_id, model)
        return self._providers[model]

    def _ask(self, text: str, on_text: OnText | None, hide: frozenset[int] = frozenset()
             ) -> tuple[models.Model, context.Prompt, Completion]:
        states = self.states()
        model = models.pick(states, self.model_name)
        check_options(model, self.model_options)
        prompt = prompt_for(self.mind, states, text, model, self.max_tokens, scope=self.scope(hide),
                            model_options=self.model_options)
        self.budget.check(states, model, prompt.request)  # before any socket is opened
        completion = self._provider(model).complete(prompt.request, on_text)
        usage.estimate(completion, prompt.request, model.token_counter(self.mind.mind_id))
        if not completion.text.strip():
            raise errors.ProviderError(f"{model.spec.label} returned an empty answer",
                                       hint="try again, or another model (`pmm model use NAME`)")
        return model, prompt, completion

    def turn(self, text: str, on_text: OnText | None = None) -> Turn:
        """Ask the model and record the turn; raises ``ProviderError`` (nothing written) on failure."""
        text = checked_message(text)
        model, prompt, completion = self._ask(text, on_text)
        events = self.mind.append(lambda first_id: self._drafts(first_id, text, model, prompt, completion))
        self.started = True
        message, response = (e for e in events if e.kind in (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name))
        self._spent(response)
        return Turn(message, response, completion, prompt, model, self.session, events)

    def _spent(self, response: Event) -> None:
        self.budget.add(response)
        self.session_usage.add(response.meta)
        self.last_usage = usage.tally(response.meta)

    def retry(self, on_text: OnText | None = None) -> Turn:
        """Ask the last message of this session again: the new answer and a ``response_withdrawn``
        for the old one are appended together, so the old answer leaves the model's context
        (it stays in the chain). Nothing is written when the new answer fails."""
        last = sessions.last_exchange(self.mind, self.session) if self.started else None
        if last is None:
            raise errors.UsageError("there is no answer in this session to retry",
                                    hint="say something first")
        message, old = last
        model, prompt, completion = self._ask(message.content, on_text, frozenset(
            {message.id, old.id, *_commitments_of(self.mind, old.id)}))  # all that goes with it

        def drafts(first_id: int) -> list[Draft]:
            if sessions.last_exchange(self.mind, self.session) != last:  # another process answered
                raise errors.UsageError("the session changed while the answer was asked again",
                                        hint="nothing was saved; /retry again")
            withdrawn = Draft(ev.RESPONSE_WITHDRAWN.name, f"answer {old.id} withdrawn to ask again",
                              {"response": old.id, "message": message.id, "session": self.session})
            # a promise the withdrawn answer made goes with it (the new answer may make it again)
            still_open = folded.state(self.mind)[0]["commitments"]["open"]
            gone = [c for c in _commitments_of(self.mind, old.id) if str(c) in still_open]
            dropped = [Draft(ev.COMMITMENT_DROPPED.name, f"the answer that made it ({old.id}) was withdrawn",
                             {"commitment": c, "source": "retry"}) for c in gone]
            return [withdrawn, *dropped,
                    *self._answer_drafts(first_id + 1 + len(dropped), message.id, model, prompt, completion,
                                         frozenset(str(c) for c in gone))]

        events = self.mind.append(drafts)
        response = next(e for e in events if e.kind == ev.RESPONSE_SENT.name)
        self._spent(response)
        return Turn(message, response, completion, prompt, model, self.session, events)

    def _drafts(self, first_id: int, text: str, model: models.Model, prompt: context.Prompt,
                completion: Completion) -> list[Draft]:
        drafts = []
        if not self.started:
            meta: dict[str, Any] = {"session": self.session}
            if self.title:
                meta["title"] = self.title
            drafts.append(Draft(ev.SESSION_STARTED.name, self.title, meta))
        message_id = first_id + len(drafts)
        drafts.append(Draft(ev.MESSAGE_RECEIVED.name, text, {"session": self.session}))
        return drafts + self._answer_drafts(message_id + 1, message_id, model, prompt, completion)

    def _answer_drafts(self, response_id: int, message_id: int, model: models.Model,
                       prompt: context.Prompt, completion: Completion,
                       dropping: frozenset[str] = frozenset()) -> list[Draft]:
        meta: dict[str, Any] = {
            "session": self.session, "provider": model.spec.provider, "model": model.spec.model,
            "model_name": model.name, "reply_to": message_id, "latency_ms": completion.latency_ms,
            "context": prompt.context_ids, "prompt_xxh3": prompt.signature,
            # which of them were standing and recalled memory (the rest: recent turns), for trace
            "standing": prompt.ids("standing"), "recalled": prompt.ids("recalled"),
        }
        usage.record(meta, completion, model)
        if completion.finish_reason:
            meta["finish"] = completion.finish_reason
        if self.model_options:
            meta["options"] = options.recorded(self.model_options)
        drafts = [Draft(ev.RESPONSE_SENT.name, completion.text, meta)]
        promised = dynamics.commitment_in(completion.text)
        open_now = [c for key, c in folded.state(self.mind)[0]["commitments"]["open"].items()
                    if key not in dropping]  # inside the transaction; not those dropped with it
        if promised and not any(dynamics.same_commitment(promised, c["text"]) for c in open_now):
            drafts.append(Draft(ev.COMMITMENT_OPENED.name, promised,
                                {"source": "conversation", "turn": response_id}))
        return drafts


def _commitments_of(mind: Ledger, response: int) -> list[int]:
    """The commitments answer ``response`` opened: appended with it, right after it."""
    found = []
    for event in mind.events(since=response + 1, kind=ev.COMMITMENT_OPENED.name):
        if event.id > response + 2:
            break
        if event.meta.get("turn") == response:
            found.append(event.id)
    return found
