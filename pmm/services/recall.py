"""``pmm recall``: the prompt a message would get right now, planned exactly as ``pmm chat``
plans it (``chat.prompt_for``), on a read-only open: no model is called or its weights loaded
(a local model's vocabulary is read, to count its tokens), no socket is opened, nothing is
written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

from pmm import errors
from pmm.domain.states import States
from pmm.ledger import folded
from pmm.ledger.store import Ledger
from pmm.services import chat, context, models, opening
from pmm.services.reports import PromptJson

if TYPE_CHECKING:
    from pmm.services.timetravel import PointJson

MIN_WINDOW, MAX_WINDOW = 256, 10_000_000  # as `pmm model add --context-window`
MAX_ANSWER_TOKENS = 100_000  # as `pmm chat --max-tokens`


class Said(TypedDict):
    role: str
    content: str


class Request(TypedDict):
    system: str
    context: str
    messages: list[Said]


class PlanJson(PromptJson):
    """``pmm recall --json``: the message and model first, then the prompt's plan and request."""

    message: str
    model: models.ModelJson
    window: int
    answer_tokens: int
    request: Request  # the prompt exactly as it would be sent
    as_of: NotRequired[PointJson]  # with --as-of: the event the mind stood at


@dataclass(frozen=True)
class Plan:
    """What the prompt for ``message`` holds, for which model and window."""

    message: str
    prompt: context.Prompt
    model: models.Model
    window: int
    answer_tokens: int  # kept free for the answer
    then: PointJson | None = None  # --as-of: where the mind stood

    def as_json(self) -> PlanJson:
        request = self.prompt.request
        found: PlanJson = {
            "message": self.message,
            "model": self.model.as_json(),
            "window": self.window,
            "answer_tokens": self.answer_tokens,
            **self.prompt.as_json(),  # type: ignore[typeddict-item]
            # the prompt exactly as it would be sent, for whoever wants more than the plan
            "request": {"system": request.system, "context": request.context,
                        "messages": [{"role": m.role, "content": m.content} for m in request.messages]},
        }
        if self.then is not None:
            found["as_of"] = self.then
        return found

    def fixed_tokens(self) -> int:
        """What the system prompt and the new message cost, beside the sections."""
        return self.prompt.tokens - sum(s.tokens for s in self.prompt.sections)


def plan(path: Path, text: str, model_name: str | None = None, window: int | None = None,
         max_tokens: int | None = None, as_of: str | None = None,
         notify: opening.Notify | None = None) -> Plan:
    """The plan for ``text`` to ``model_name`` (default: the mind's chat model), with
    ``window`` tokens of context instead of the model's when given; with ``as_of`` (an id or
    a date), as the mind would have planned it then: its states at that event, and recall over
    the events up to it only, ranked by their own word statistics (an index of them is made
    in memory for this: it costs about as much as indexing those events; ``notify`` hears it)."""
    text = chat.checked_message(text)
    if window is not None and not MIN_WINDOW <= window <= MAX_WINDOW:
        raise errors.UsageError(f"--window must be between {MIN_WINDOW} and {MAX_WINDOW} tokens")
    if max_tokens is not None and not 1 <= max_tokens <= MAX_ANSWER_TOKENS:
        raise errors.UsageError(f"--max-tokens must be between 1 and {MAX_ANSWER_TOKENS}")
    if as_of is not None:
        from pmm.services import timetravel

        with timetravel.opened(path, as_of, index=True) as (mind, then):
            if notify is not None:
                notify(then.said())
            return _plan(mind, then.states, text, model_name, window, max_tokens, then.as_json())
    with opening.open_read(path) as mind:
        return _plan(mind, folded.state(mind)[0], text, model_name, window, max_tokens, None)


def _plan(mind: Ledger, states: States, text: str, model_name: str | None, window: int | None,
          max_tokens: int | None, then: PointJson | None) -> Plan:
    model = models.pick(states, model_name)  # trust is not asked: nothing is contacted
    window = window or model.window()  # a local model's window is a setting: no weights load
    prompt = chat.prompt_for(mind, states, text, model, max_tokens, window)
    return Plan(text, prompt, model, window, chat.answer_reserve(window, max_tokens), then)
