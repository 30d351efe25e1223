"""``pmm recall``: see what the prompt for a message would hold, without asking a model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

from pmm.cli import output
from pmm.cli.declare import Argument, Option
from pmm.cli.options import AsOfOpt, JsonOpt, MindOpt, mind_path, stdin_text

if TYPE_CHECKING:
    import typer

    from pmm.services.context import Item, Section
    from pmm.services.recall import Plan

SECTIONS = (("standing", "Standing memory"), ("recalled", "Recalled memory"),
            ("recent", "Recent conversation"))
WHO = {"message_received": "user", "response_sent": "mind", "observation_recorded": "note",
       "note_pinned": "note", "persona_set": "persona", "reflection_recorded": "reflection",
       "summary_recorded": "summary", "commitment_opened": "commitment"}
EXCERPT = 80


def register(app: typer.Typer) -> None:
    app.command()(recall)


def recall(
    query: Annotated[str, Argument(help="The message to plan for, or - to read it from stdin.")],
    model: Annotated[Optional[str], Option("--model", help="Plan for this model's window (a name from `pmm model list`; default: the chat model).")] = None,
    window: Annotated[Optional[int], Option("--window", min=256, max=10_000_000, help="Plan for a context window of this many tokens instead of the model's.")] = None,
    max_tokens: Annotated[Optional[int], Option("--max-tokens", min=1, max=100_000, help="Tokens kept for the answer, as pmm chat's --max-tokens (at most half the window; default: 512, or an eighth of a smaller window).")] = None,
    full: Annotated[bool, Option("--full", help="Whole texts instead of one-line excerpts.")] = False,
    as_of: AsOfOpt = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show what the prompt for QUERY would hold now, without calling a model.

    The same plan `pmm chat -m QUERY` would send: standing memory (persona, pinned notes, open
    commitments, the latest reflection), recalled memory (with each event's BM25 score, and
    the turn that completes a recalled exchange) and the recent conversation, each event with
    its id, when it was said, who said it and why it is there, and the tokens each section
    costs. Reads only: nothing is written, no model is contacted or its weights loaded.
    --as-of plans it as the mind would have then: its states at that event, recall over the
    events up to it, ranked by their own word statistics (indexed in memory for this run).
    """
    from pmm.services import recall as recalling

    if query == "-":
        query = stdin_text("the query")
    plan = recalling.plan(mind_path(mind), query, model, window, max_tokens, as_of, output.message)
    if json:
        output.emit_json(plan.as_json())
    else:
        output.out("\n".join(render(plan, full)))


def render(plan: Plan, full: bool = False) -> list[str]:
    prompt = plan.prompt
    lines = [f"Prompt for {plan.model.name} ({plan.model.spec.label}): a window of {plan.window:,}"
             f" tokens, {plan.answer_tokens:,} kept for the answer. Nothing was sent.",
             "Recall words: " + (", ".join(prompt.query) if prompt.query else "none (no content words)")]
    by_name: dict[str, Section] = {s.name: s for s in prompt.sections}
    rows = [item for s in prompt.sections for item in s.items]
    width = (max((len(f"#{i.event.id}") for i in rows), default=0),
             max((len(_when(i)) for i in rows), default=0),
             max((len(_why(i)) for i in rows), default=0))
    for name, title in SECTIONS:
        section = by_name.get(name)
        lines.append("")
        if section is None:
            lines.append(f"{title}: nothing")
            continue
        count = len(section.items)
        lines.append(f"{title}: {output.plural(count, 'event')}, {section.tokens:,} tokens")
        for item in section.items:
            lines += _item_lines(item, width, full)
    lines += ["", f"System prompt and message: {plan.fixed_tokens():,} tokens",
              f"Total: {prompt.tokens:,} of {prompt.budget:,} tokens (what the window leaves"
              " beside the answer; " + ("counted with the model's own tokenizer)" if prompt.exact
                                        else "estimated high, so the prompt never overflows)")]
    if prompt.tokens > prompt.budget:
        lines.append("Over budget: the window is too small for the system prompt and the message"
                     " alone (see --window, --max-tokens)")
    return lines


def _item_lines(item: Item, width: tuple[int, int, int], full: bool) -> list[str]:
    head = (f"  {f'#{item.event.id}':<{width[0]}}  {_when(item):<{width[1]}}  {_why(item):<{width[2]}}"
            f"  {WHO.get(item.event.kind, item.event.kind)}:")
    if not full:
        return [f"{head} {output.one_line(item.event.content, EXCERPT)}"]
    body = output.clean(item.event.content.replace("\r\n", "\n").replace("\r", "\n"))
    return [head, *("      " + line for line in body.split("\n"))]


def _when(item: Item) -> str:
    from pmm.services.browse import when

    return when(item.event)


def _why(item: Item) -> str:
    if item.reason == "recalled" and item.score is not None:
        return f"recalled {item.score:.2f}"
    if item.reason == "exchange" and item.beside is not None:
        return f"exchange beside #{item.beside}"
    return item.reason
