"""What a model is shown for a turn, within a token budget, and why each part is there.

The prompt, in order:
1. the system prompt: who the mind is (name, traits); it changes only when they do;
2. standing memory: the persona and pinned notes, then open commitments and the latest
   reflection, within ``STANDING_SHARE`` of the budget;
3. recalled memory: past turns, notes and reflections ranked by BM25 for the new message
   (with the turn that completes each recalled exchange), labelled with the date they were
   said, the session and who said it, oldest first;
4. the recent conversation, newest turns kept first, as chat messages.

What 2 leaves is split between 3 and 4: recall may use up to ``RECALL_SHARE`` of it, recent turns
are guaranteed the rest, and whatever one does not use the other may. An event is left out of
one part only when the other part actually holds it, so nothing is dropped for being "recent"
yet not sent. ``plan`` returns the parts with every event's id, date, reason and token cost
(``pmm recall`` prints it, ``pmm chat`` sends it, and the ids are recorded with the answer for
``pmm trace``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pmm.domain import events as ev
from pmm.domain import projections
from pmm.domain.events import Event
from pmm.domain.when import said_at
from pmm.ledger import lookup
from pmm.ledger.store import Mind, now_ts
from pmm.providers.base import Message, Request

TURN_KINDS = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)
RECALL_KINDS = (*TURN_KINDS, ev.OBSERVATION_RECORDED.name, ev.NOTE_PINNED.name,
                ev.REFLECTION_RECORDED.name)
STANDING_SHARE = 0.25  # of the budget, at most, for persona, pinned notes, commitments, reflection
RECALL_SHARE = 0.5  # of what standing memory leaves, at most, for recalled memory
CANDIDATES = 300  # ranked events considered for recall
EXCHANGES = True  # recall the turn that completes a recalled exchange too
QUERY_WORDS = 48  # content words of the message (and of the turn before it) used for recall
FOLLOW_UP_WORDS = 4  # a message with fewer content words is read with the user's previous one
RECENT_PAGE = 200  # recent turns fetched at a time
REFLECTION_CHARS = 600
COMMITMENTS_SHOWN = 10
WHO = {ev.MESSAGE_RECEIVED.name: "user", ev.RESPONSE_SENT.name: "you",
       ev.OBSERVATION_RECORDED.name: "note", ev.NOTE_PINNED.name: "note",
       ev.REFLECTION_RECORDED.name: "your reflection", ev.PERSONA_SET.name: "persona"}
STOPWORDS = frozenset({
    "the", "and", "for", "are", "but", "not", "you", "your", "yours", "with", "this", "that",
    "have", "has", "had", "was", "were", "what", "when", "where", "which", "who", "whom", "why",
    "how", "can", "could", "would", "should", "will", "shall", "did", "does", "doing", "done",
    "from", "into", "onto", "about", "there", "their", "they", "them", "then", "than", "too",
    "very", "just", "also", "some", "any", "all", "our", "ours", "out", "over", "been", "being",
    "its", "it's", "i'm", "i've", "let", "lets", "tell", "please", "me", "my", "mine", "we",
    "us", "he", "she", "his", "her", "him", "is", "am", "be", "do", "to", "of", "in", "on", "at",
    "an", "or", "if", "so", "as", "by", "it", "i", "a", "yes", "no", "ok", "okay",
})

Reason = Literal["persona", "pinned", "commitment", "reflection", "recalled", "exchange", "recent"]


# What a tokenizer makes of text, counted high: a lowercase run is a token (a long one more),
# a capital run about one per two letters, each digit, control character, punctuation mark and line break one, and
# a non-ASCII character one per UTF-8 byte after its first; then 10% more. Checked against the
# embedded model's own tokenizer (tests/test_context.py): never below it, about 1.3 times it on
# English chat (the plain "3 characters a token" was 1.6 times, wasting a third of the window).
_LOWER = re.compile(r"[a-z]+")
_LONG = re.compile(r"[a-z]{7,}")
_CAPITALS = re.compile(r"[A-Z]+(?![a-z])")  # a capital before lowercase starts that word
_ONES = re.compile(r"[^\x20A-Za-z\x80-\U0010ffff]")  # every ASCII character but a space or letter
_WIDE = re.compile(r"[^\x00-\x7f]")


def estimate_tokens(text: str) -> int:
    """A deliberately high guess at ``text``'s token count, so a prompt never overflows."""
    count = len(_LOWER.findall(text)) + len(_ONES.findall(text))
    count += sum((len(w) - 6) // 3 if len(w) <= 24 else len(w) // 2 for w in _LONG.findall(text))
    count += sum(1 + len(w) // 2 for w in _CAPITALS.findall(text))
    if not text.isascii():
        count += sum(len(c.encode()) - 1 for c in _WIDE.findall(text))
    return count * 11 // 10 + 4


@dataclass(frozen=True)
class Item:
    """One event in the prompt: why it is there and what it costs."""

    event: Event
    reason: Reason
    tokens: int
    score: float | None = None  # BM25 (higher is better), for recalled events
    beside: int | None = None  # for an exchange: the recalled event it completes

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"id": self.event.id, "kind": self.event.kind,
                                 "said_at": said_at(self.event), "who": WHO.get(self.event.kind),
                                 "reason": self.reason, "tokens": self.tokens}
        if self.score is not None:
            found["score"] = round(self.score, 3)
        if self.beside is not None:
            found["beside"] = self.beside
        found["text"] = self.event.content
        return found


@dataclass
class Section:
    name: Literal["standing", "recalled", "recent"]
    title: str
    items: list[Item] = field(default_factory=list)
    tokens: int = 0  # what the section costs in the prompt, headers and labels included

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "tokens": self.tokens,
                "items": [item.as_json() for item in self.items]}


@dataclass
class Prompt:
    request: Request
    context_ids: list[int] = field(default_factory=list)
    signature: str = ""
    tokens: int = 0
    sections: list[Section] = field(default_factory=list)
    budget: int = 0
    query: list[str] = field(default_factory=list)

    def ids(self, name: str) -> list[int]:
        return sorted(i.event.id for s in self.sections if s.name == name for i in s.items)

    def as_json(self) -> dict[str, Any]:
        return {"budget": self.budget, "tokens": self.tokens, "query": self.query,
                "system_tokens": estimate_tokens(self.request.system),
                "sections": [s.as_json() for s in self.sections],
                "context_ids": self.context_ids, "prompt_xxh3": self.signature}


def system_prompt(states: dict[str, Any]) -> str:
    """The stable part: it changes only when the mind's name or traits do."""
    name = states["identity"]["name"]
    who = f"You are {name}, a persistent mind." if name else "You are a persistent mind with no name yet."
    lines = [who, "Your memory is a ledger the user owns; past conversations and notes you "
             "recall from it are shown to you below with the dates they were said. Answer the "
             "user directly and briefly."]
    traits = states.get("traits")
    if traits:
        described = ", ".join(f"{k} {float(v):.2f}" for k, v in sorted(traits.get("values", traits).items()))
        lines.append(f"Your traits (OCEAN, 0 to 1): {described}.")
    return "\n".join(lines)


def words_of(text: str, most: int = QUERY_WORDS) -> list[str]:
    """Distinct content words of ``text`` in order, for recall."""
    seen: dict[str, None] = {}
    for word in re.findall(r"\w+", text.lower()):
        if len(word) > 1 and word not in STOPWORDS and (not word.isdigit() or len(word) == 4):
            seen.setdefault(word, None)
    return list(seen)[:most]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build(mind: Mind, states: dict[str, Any], user_text: str, *, window: int,
          answer_tokens: int, temperature: float = 0.7) -> Prompt:
    """The request for ``user_text`` given the mind as it is now, with its plan."""
    budget = max(64, window - answer_tokens - 32)
    system = system_prompt(states)
    spent = estimate_tokens(system) + estimate_tokens(user_text)
    standing, spent = _standing(states, mind, budget, spent)

    recent_pool = _recent_pool(mind, budget - spent)
    query = _query(user_text, recent_pool)
    avail = max(0, budget - spent - 24)  # 24: the section headers and the date line
    pool_cost = sum(_turn_cost(e) for e in recent_pool)
    reserved = min(pool_cost, avail - int(avail * RECALL_SHARE))
    held = _reserved_ids(recent_pool, reserved) | {i.event.id for i in standing.items}
    recalled = _recall(mind, query, avail - reserved, held, user_text)
    spent += recalled.tokens
    recent = _recent(recent_pool, budget - spent - 12, {i.event.id for i in recalled.items})
    spent += recent.tokens

    sections = [s for s in (standing, recalled, recent) if s.items]
    text_parts = [_render(s) for s in sections if s.name != "recent"]
    turns = [i.event for i in recent.items]
    if turns:
        text_parts.append(_time_line(turns))
    request = Request(messages=_conversation(turns, user_text), system=system,
                      context="\n\n".join(text_parts), max_tokens=answer_tokens,
                      temperature=temperature)
    used = sorted(i.event.id for s in sections for i in s.items)
    return Prompt(request, used, signature(request), spent, sections, budget, query)


# -- standing memory ---------------------------------------------------------------------------


def _standing(states: dict[str, Any], mind: Mind, budget: int, spent: int) -> tuple[Section, int]:
    """Persona and pinned notes first, then open commitments and the latest reflection, each
    while it fits in ``STANDING_SHARE`` of the budget."""
    section = Section("standing", "Standing memory")
    left = int(budget * STANDING_SHARE)
    wanted: list[tuple[int, str, Reason]] = []
    persona, pinned = projections.standing(states)
    if persona is not None:
        wanted.append((*persona, "persona"))
    wanted += [(*note, "pinned") for note in reversed(pinned)]  # the newest pins first
    for opened_id, commitment in list(((states.get("commitments") or {}).get("open") or {}).items())[:COMMITMENTS_SHOWN]:
        wanted.append((int(opened_id), commitment["text"], "commitment"))
    reflection = (states.get("reflections") or {}).get("latest")
    if reflection and reflection.get("id"):
        wanted.append((int(reflection["id"]), _clip(reflection["text"], REFLECTION_CHARS), "reflection"))
    events = {e.id: e for e in lookup.get(mind, [w[0] for w in wanted])}
    for event_id, text, reason in wanted:
        cost = estimate_tokens(text) + 3
        if event_id not in events or cost > left:
            continue
        left -= cost
        section.items.append(Item(events[event_id], reason, cost))
        section.tokens += cost
    return section, spent + section.tokens


# -- recalled memory ---------------------------------------------------------------------------


def _query(user_text: str, recent_pool: list[Event]) -> list[str]:
    """The content words of the message, and of the user's previous message when this one is
    too short to stand alone (a follow-up such as "and when was that?")."""
    words = words_of(user_text)
    if len(words) < FOLLOW_UP_WORDS:
        previous = next((e for e in recent_pool if e.kind == ev.MESSAGE_RECEIVED.name), None)
        if previous is not None:
            words += [w for w in words_of(previous.content) if w not in words]
    return words[:QUERY_WORDS]


def _recall(mind: Mind, query: list[str], allowance: int, held: set[int], user_text: str = "") -> Section:
    """Ranked events, each with the turn that completes its exchange where that fits, until
    ``allowance`` is spent; events in ``held`` are in the recent part already."""
    section = Section("recalled", "Recalled memory")
    if allowance <= 0 or not query:
        return section
    ranked = lookup.ranked(mind, query, RECALL_KINDS, CANDIDATES)
    if SEMANTIC is not None:
        ranked = fuse(ranked, SEMANTIC(mind, user_text, CANDIDATES))
    if SPREAD:
        ranked = _spread(mind, ranked)
    if RERANK is not None:
        ranked = RERANK(user_text, ranked)
    partners = _partners(mind, [e for e, _ in ranked if e.kind in TURN_KINDS])
    chosen: dict[int, Item] = {}
    left = allowance
    for event, score in ranked:
        if event.id in chosen or event.id in held:
            continue
        cost = _line_cost(event)
        if cost > left:
            continue
        chosen[event.id] = Item(event, "recalled", cost, score)
        left -= cost
        partner = partners.get(event.id)
        if EXCHANGES and partner is not None and partner.id not in chosen and partner.id not in held:
            extra = _line_cost(partner)
            if extra <= left:
                chosen[partner.id] = Item(partner, "exchange", extra, beside=event.id)
                left -= extra
    section.items = sorted(chosen.values(), key=lambda i: (said_at(i.event), i.event.id))
    section.tokens = estimate_tokens(_render(section))
    return section


SEMANTIC = None
RERANK = None
RRF_K = 60
SPREAD = 0.0
SPREAD2 = 0.0
DENSITY = 0.0
SESSION_BOOST = 0.0


def _spread(mind: Mind, ranked: list[tuple[Event, float]]) -> list[tuple[Event, float]]:
    """Each turn also scores SPREAD times its neighbours' scores in the same session."""
    own = {e.id: s for e, s in ranked}
    events = {e.id: e for e, _ in ranked}
    reach = 2 if SPREAD2 else 1
    for e in lookup.around(mind, list(own), TURN_KINDS, reach=reach):
        events.setdefault(e.id, e)
    total: dict[int, float] = {}
    for i, e in events.items():
        if e.kind not in TURN_KINDS:
            total[i] = own.get(i, 0.0)
            continue
        near = sum(own.get(j, 0.0) for j in (i - 1, i + 1)
                   if j in events and _session(events[j]) == _session(e))
        far = sum(own.get(j, 0.0) for j in (i - 2, i + 2)
                  if SPREAD2 and j in events and _session(events[j]) == _session(e))
        total[i] = own.get(i, 0.0) + SPREAD * near + SPREAD2 * far
    if SESSION_BOOST:
        by_session: dict[str | None, float] = {}
        for i, v in total.items():
            key = _session(events[i])
            if key is not None:
                by_session[key] = by_session.get(key, 0.0) + own.get(i, 0.0)
        top = max(by_session.values(), default=0.0) or 1.0
        best = max(total.values(), default=0.0)
        for i in total:
            key = _session(events[i])
            if key is not None and total[i] > 0:
                total[i] += SESSION_BOOST * best * by_session[key] / top
    if DENSITY:
        order = sorted(total, key=lambda i: -total[i] / _line_cost(events[i]) ** DENSITY)
    else:
        order = sorted(total, key=lambda i: -total[i])
    return [(events[i], total[i]) for i in order]


def _partners(mind: Mind, hits: list[Event]) -> dict[int, Event]:
    """For each turn in ``hits``, the other half of its exchange in the same session: a
    message's answer, an answer's message."""
    near = {e.id: e for e in lookup.around(mind, [e.id for e in hits], TURN_KINDS, reach=1)}
    found: dict[int, Event] = {}
    for hit in hits:
        step = 1 if hit.kind == ev.MESSAGE_RECEIVED.name else -1
        other = near.get(hit.id + step)
        if other is not None and other.kind != hit.kind and _session(other) == _session(hit):
            found[hit.id] = other
    return found


def _session(event: Event) -> str | None:
    if '"session"' not in event.meta_json:
        return None
    value = event.meta.get("session")
    return value if isinstance(value, str) else None


def _line(event: Event) -> str:
    return f"{WHO.get(event.kind, event.kind)}: {' '.join(event.content.split())}"


def _line_cost(event: Event) -> int:
    return estimate_tokens(_line(event))


def _render(section: Section) -> str:
    """A section as prompt text; recalled events grouped under a [date, session] label."""
    if section.name == "standing":
        labels = {"persona": "Your persona", "pinned": "Pinned note",
                  "commitment": "Open commitment", "reflection": "Latest reflection"}
        lines = [f"{labels[i.reason]}: {' '.join(i.event.content.split()) if i.reason != 'reflection' else _clip(i.event.content, REFLECTION_CHARS)}"
                 for i in section.items]
        return "Standing memory (always shown):\n" + "\n".join(lines)
    lines = ["Memories recalled for this message, oldest first (user: the person you talk with;"
             " you: yourself):"]
    label = None
    for item in section.items:
        here = (said_at(item.event)[:10], _session(item.event) or f"#{item.event.id}")
        if here != label:
            lines.append(f"[{here[0]}]")
            label = here
        lines.append(_line(item.event))
    return "\n".join(lines)


# -- recent turns ------------------------------------------------------------------------------


def _recent_pool(mind: Mind, room: int) -> list[Event]:
    """The newest turns, newest first, until they would fill ``room`` tokens."""
    pool: list[Event] = []
    cost = 0
    before = None
    while cost < room:
        page = lookup.latest_before(mind, TURN_KINDS, RECENT_PAGE, before)
        for event in page:
            pool.append(event)
            cost += _turn_cost(event)
            if cost >= room:
                break
        if len(page) < RECENT_PAGE:
            break
        before = page[-1].id
    return pool


def _turn_cost(event: Event) -> int:
    return estimate_tokens(event.content) + 4


def _reserved_ids(pool: list[Event], reserved: int) -> set[int]:
    held: set[int] = set()
    for event in pool:
        reserved -= _turn_cost(event)
        if reserved < 0:
            break
        held.add(event.id)
    return held


def _recent(pool: list[Event], room: int, skip: set[int]) -> Section:
    section = Section("recent", "Recent conversation")
    for event in pool:
        if event.id in skip:
            continue
        cost = _turn_cost(event)
        if cost > room:
            break
        room -= cost
        section.items.append(Item(event, "recent", cost))
        section.tokens += cost
    section.items.reverse()
    if section.items and section.items[0].event.kind == ev.RESPONSE_SENT.name:
        section.tokens -= section.items.pop(0).tokens  # a leading answer is not sent (see below)
    return section


def _time_line(turns: list[Event]) -> str:
    first, last = said_at(turns[0])[:10], said_at(turns[-1])[:10]
    span = first if first == last else f"{first} to {last}"
    return f"Today is {now_ts()[:10]}. The recent conversation below was said {span}."


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
