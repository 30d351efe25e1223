"""What a model is shown for a turn, within a token budget.

In order: who the mind is (name, traits: the stable system prompt), its open commitments and
latest reflection, past events recalled by full-text search for the new message, then recent
turns newest first until the budget is spent. The ids of every event used are kept, so that
``pmm trace`` can show exactly what the model saw, with an xxhash signature of the prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.ledger import lookup
from pmm.ledger.store import Mind
from pmm.providers.base import Message, Request

RECALL_KINDS = (ev.OBSERVATION_RECORDED.name, ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)
TURN_KINDS = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)
RECENT_LIMIT = 40
RECALL_LIMIT = 5
RECALL_SNIPPET = 300
STOPWORDS = frozenset({
    "the", "and", "for", "are", "but", "not", "you", "your", "yours", "with", "this", "that",
    "have", "has", "had", "was", "were", "what", "when", "where", "which", "who", "whom", "why",
    "how", "can", "could", "would", "should", "will", "shall", "did", "does", "doing", "done",
    "from", "into", "onto", "about", "there", "their", "they", "them", "then", "than", "too",
    "very", "just", "also", "some", "any", "all", "our", "ours", "out", "over", "been", "being",
    "its", "it's", "i'm", "i've", "let", "lets", "tell", "please", "me", "my", "mine", "we",
    "us", "he", "she", "his", "her", "him",
})


def estimate_tokens(text: str) -> int:
    """A deliberately high guess (about 3 characters a token) so a prompt never overflows."""
    return len(text) // 3 + 4


@dataclass
class Prompt:
    request: Request
    context_ids: list[int] = field(default_factory=list)
    signature: str = ""
    tokens: int = 0


def system_prompt(states: dict[str, Any]) -> str:
    """The stable part: it changes only when the mind's name or traits do."""
    name = states["identity"]["name"]
    who = f"You are {name}, a persistent mind." if name else "You are a persistent mind with no name yet."
    lines = [who, "Your memory is a ledger the user owns; past conversations and notes you "
             "recall from it are shown to you below. Answer the user directly and briefly."]
    traits = states.get("traits")
    if traits:
        described = ", ".join(f"{k} {float(v):.2f}" for k, v in sorted(traits.get("values", traits).items()))
        lines.append(f"Your traits (OCEAN, 0 to 1): {described}.")
    return "\n".join(lines)


def words_of(text: str, most: int = 12) -> list[str]:
    """Distinct content words of ``text`` in order, for recall."""
    seen: list[str] = []
    for word in re.findall(r"\w+", text.lower()):
        if len(word) >= 3 and word not in STOPWORDS and word not in seen:
            seen.append(word)
    return seen[:most]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build(mind: Mind, states: dict[str, Any], user_text: str, *, window: int,
          answer_tokens: int, temperature: float = 0.7) -> Prompt:
    """The request for ``user_text`` given the mind as it is now."""
    budget = max(64, window - answer_tokens - 32)
    system = system_prompt(states)
    spent = estimate_tokens(system) + estimate_tokens(user_text)
    used: list[int] = []
    sections: list[str] = []

    for title, lines in _standing(states):
        text = title + "\n" + "\n".join(lines)
        if spent + estimate_tokens(text) <= budget:
            sections.append(text)
            spent += estimate_tokens(text)

    recent = lookup.latest(mind, TURN_KINDS, RECENT_LIMIT)
    recent_ids = {e.id for e in recent}
    recalled: list[str] = []
    recall_budget = budget // 4
    for event in lookup.recall(mind, words_of(user_text), RECALL_KINDS, RECALL_LIMIT + len(recent_ids)):
        if event.id in recent_ids:
            continue
        who = {"message_received": "the user said", "response_sent": "you said"}.get(event.kind, "a note")
        line = f"- ({who}, {event.ts[:10]}) {_clip(event.content, RECALL_SNIPPET)}"
        cost = estimate_tokens(line)
        if len(recalled) >= RECALL_LIMIT or spent + cost > budget or cost > recall_budget:
            break
        recall_budget -= cost
        recalled.append(line)
        used.append(event.id)
        spent += cost
    if recalled:
        sections.append("Things you remember that may be relevant:\n" + "\n".join(recalled))

    turns: list[Event] = []
    for event in recent:  # newest first, until the budget is spent
        cost = estimate_tokens(event.content) + 4
        if spent + cost > budget:
            break
        turns.append(event)
        spent += cost
    turns.reverse()
    used += [e.id for e in turns]

    request = Request(messages=_conversation(turns, user_text), system=system,
                      context="\n\n".join(sections), max_tokens=answer_tokens, temperature=temperature)
    return Prompt(request, sorted(used), signature(request), spent)


def _standing(states: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Open commitments and the latest reflection, when the mind has them."""
    found: list[tuple[str, list[str]]] = []
    commitments = (states.get("commitments") or {}).get("open") or {}
    if commitments:
        found.append(("Your open commitments:", [f"- {c['text']}" for c in commitments.values()][:10]))
    reflection = (states.get("reflections") or {}).get("latest")
    if reflection:
        found.append(("Your latest reflection:", [_clip(reflection["text"], 600)]))
    return found


def _conversation(turns: list[Event], user_text: str) -> tuple[Message, ...]:
    """Alternating user/assistant messages ending with the new user message: a leading answer
    is dropped and consecutive messages of one role are joined, as every API accepts that."""
    messages: list[Message] = []
    for event in turns:
        role: Literal["user", "assistant"] = (
            "user" if event.kind == ev.MESSAGE_RECEIVED.name else "assistant")
        if not messages and role == "assistant":
            continue
        if messages and messages[-1].role == role:
            messages[-1] = Message(role, messages[-1].content + "\n\n" + event.content)
        else:
            messages.append(Message(role, event.content))
    if messages and messages[-1].role == "user":
        messages[-1] = Message("user", messages[-1].content + "\n\n" + user_text)
    else:
        messages.append(Message("user", user_text))
    return tuple(messages)


def signature(request: Request) -> str:
    """XXH3-64 of the prompt's canonical JSON: a fingerprint, not a security hash."""
    import xxhash

    text = json.dumps({"system": request.system, "context": request.context,
                       "messages": [[m.role, m.content] for m in request.messages],
                       "schema": request.json_schema}, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":"))
    return xxhash.xxh3_64_hexdigest(text.encode())
