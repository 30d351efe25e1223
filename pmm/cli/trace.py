"""``pmm trace``: show why an answer is what it is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

from pmm.cli import output
from pmm.cli.declare import Argument
from pmm.cli.options import JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    import typer

    from pmm.services.trace import Brief, Said, Started, Trace, Turn


def register(app: typer.Typer) -> None:
    app.command()(trace)


def trace(
    ref: Annotated[Optional[str], Argument(help="A response or message id, a session id (or its first 8 characters, as `pmm log` shows it; an imported session: its conversation's id), or last (the default).", metavar="[ID|SESSION|last]")] = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """For an answer: the user's message, the context the model saw, model, tokens, latency, and what the turn changed.

    The context is shown as the prompt held it: standing memory (persona, pinned notes,
    open commitments, the latest reflection), recalled memory and the recent conversation
    (an answer recorded by an older pmm: one list); `pmm recall` shows the same before asking.
    Times are when each event was said (an import: its original time, with the day it was
    imported); --json gives both ts, when the ledger recorded it, and said_at.
    """
    from pmm.services import trace as tracing

    report = tracing.trace(mind_path(mind), ref)
    if json:
        output.emit_json(report)
    else:
        output.out("\n".join(output.fit(line) for line in render(report)))  # each line fits a terminal


def render(report: Trace) -> list[str]:
    if report["kind"] == "session":
        lines = [f"Session {report['session']} (started #{report['started']['id']} {_when(report['started'])}),"
                 f" {output.plural(len(report['turns']), 'answer')}"]
        for turn in report["turns"]:
            lines.append("")
            lines += render_turn(turn, brief=True)
        return lines
    return render_turn(report)


def render_turn(turn: Turn, brief: bool = False) -> list[str]:
    response, message, model = turn["response"], turn["message"], turn["model"]
    lines = [f"Answer #{response['id']}  {_when(response)}" + (f"  session {turn['session']}" if turn["session"] else "")]
    if message:
        lines.append(f"  Asked (#{message['id']}): {output.one_line(message['text'], 300 if not brief else 100)}")
    lines.append(f"  Answered: {output.one_line(response['text'], 300 if not brief else 100)}")
    if turn["source"] != "pmm":
        by = f" (model {model['model']})" if model.get("model") else ""
        lines.append(f"  Imported from {turn['source']}{by}: no usage or context was recorded")
    elif model:
        name = model.get("name")
        label = f"{model.get('provider', '?')}:{model.get('model', '?')}"
        lines.append(f"  Model: {name + ' = ' if name else ''}{label}")
    usage = []
    if turn["tokens_in"] is not None or turn["tokens_out"] is not None:
        cached = [f"{turn.get(k) or 0:,} {what}" for k, what in (("tokens_cache_read", "cache read"),
                                                                 ("tokens_cache_write", "cache write"))
                  if turn.get(k)]
        usage.append(f"{turn['tokens_in'] if turn['tokens_in'] is not None else '?'} tokens in"
                     + (f" ({', '.join(cached)})" if cached else "")
                     + f", {turn['tokens_out'] if turn['tokens_out'] is not None else '?'} out"
                     + (" (estimated: the provider reported none)" if turn.get("usage_estimated") else ""))
    if (cost := turn.get("cost")) is not None:
        from pmm.services.usage import money, saving

        said = saving(cost["saved"], cost["currency"])
        usage.append(f"cost {money(cost['amount'], cost['currency'])}" + (f" ({said})" if said else ""))
    if turn["latency_ms"] is not None:
        usage.append(f"{turn['latency_ms'] / 1000:.2f} s")
    if turn["finish"]:
        usage.append(f"finished: {turn['finish']}")
    if usage:
        lines.append("  Usage: " + ", ".join(usage))
    if turn.get("options"):
        lines.append("  Options: " + ", ".join(turn["options"]))
    if brief:
        return lines
    if turn["prompt_xxh3"]:
        lines.append(f"  Prompt signature (XXH3-64): {turn['prompt_xxh3']}")
    if turn["context"] and turn.get("sections") is not None:
        for name, title in SECTIONS:
            shown = [c for c in turn["context"] if c.get("section") == name]
            if shown:
                lines.append(f"  {title} ({_events(len(shown))}):")
                lines += [_context_line(c) for c in shown]
    elif turn["context"]:  # an answer from before pmm recorded the sections: one list
        lines.append(f"  Context ({_events(len(turn['context']))}):")
        lines += [_context_line(c) for c in turn["context"]]
    elif turn["source"] == "pmm":
        lines.append("  Context: no earlier events (identity only)")
    if turn["source"] != "pmm":
        return lines
    if turn["changed"]:
        lines.append("  Changed:")
        lines += [f"    #{c['id']} {c['kind']}: {output.one_line(c['excerpt'], 90)}" for c in turn["changed"]]
    else:
        lines.append("  Changed: nothing beyond the conversation itself")
    return lines


SECTIONS = (("standing", "Standing memory"), ("recalled", "Recalled memory"),
            ("recent", "Recent conversation"))


def _events(n: int) -> str:
    return output.plural(n, "event")


def _context_line(c: Brief) -> str:
    return f"    #{c['id']} {c['kind']}, {_when(c)}: {output.one_line(c['excerpt'], 90)}"


def _when(event: Brief | Said | Started) -> str:
    """When it was said; an imported event also says the day it was imported."""
    from pmm.services.browse import shown

    return shown(event["said_at"], event["ts"])

