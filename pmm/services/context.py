"""What a model is shown for a turn, within a token budget, and why each part is there.

The prompt's parts:
1. the system prompt: who the mind is (name, traits); it changes only when they do;
2. standing memory: the persona and pinned notes, then open commitments and the latest
   reflection, within ``STANDING_SHARE`` of the budget;
3. recalled memory: past turns, notes and reflections ranked by BM25 for the new message
   (with the turn that completes each recalled exchange), labelled with the date they were
   said, the session and who said it, oldest first;
4. the recent conversation, newest turns kept first, as chat messages.

They are sent stable-first, so that a provider's prompt cache holds all but the new message:
1 and 2 as the system prompt, then the conversation (4), then, opening the new user message,
3 and the date line (``Request.context``): what changes every turn comes after what does not.

What 2 leaves is split between 3 and 4: recall may use up to ``RECALL_SHARE`` of it, recent turns
are guaranteed the rest, and whatever one does not use the other may. An event is left out of
one part only when the other part actually holds it, so nothing is dropped for being "recent"
yet not sent. ``plan`` returns the parts with every event's id, date, reason and token cost
(``pmm recall`` prints it, ``pmm chat`` sends it, and the ids are recorded with the answer for
``pmm trace``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, cast

from pmm.domain import events as ev
from pmm.domain import projections, temperament
from pmm.domain.events import Event
from pmm.domain.states import States
from pmm.domain.when import said_at
from pmm.ledger import lookup
from pmm.ledger.store import Ledger, now_ts
from pmm.providers.base import Message, Request
from pmm.services import ranking
from pmm.services.dates import spelled
from pmm.services.reports import ItemJson, PromptJson, Reason, SectionJson
from pmm.services.safe_text import clip
from pmm.services.tokens import Cost, Count

TURN_KINDS = ranking.TURN_KINDS
STANDING_SHARE = 0.25  # of the budget, at most, for persona, pinned notes, commitments, reflection
RECALL_SHARE = 0.875  # of the room standing memory leaves, at most, for recalled memory
RECENT_PAGE = 200  # recent turns fetched at a time
STANDING_HEADER_TOKENS = 16  # "Standing memory (always shown):"
MISFITS = 50  # recall stops after this many candidates in a row too long for the room left
REFLECTION_CHARS = 600
SUMMARY_CHARS = 1000  # consolidation writes at most 600; a longer (foreign) one is clipped
COMMITMENTS_SHOWN = 10
WHO = {ev.MESSAGE_RECEIVED.name: "user", ev.RESPONSE_SENT.name: "you",
       ev.OBSERVATION_RECORDED.name: "note", ev.NOTE_PINNED.name: "note",
       ev.REFLECTION_RECORDED.name: "your reflection", ev.SUMMARY_RECORDED.name: "your summary",
       ev.PERSONA_SET.name: "persona"}



class Item(NamedTuple):
    """One event in the prompt: why it is there and what it costs."""

    event: Event
    reason: Reason
    tokens: int
    score: float | None = None  # BM25 (higher is better), for recalled events
    beside: int | None = None  # for an exchange: the recalled event it completes

    def as_json(self) -> ItemJson:
        found: dict[str, Any] = {"id": self.event.id, "kind": self.event.kind,
                                 "said_at": said_at(self.event), "who": WHO.get(self.event.kind),
                                 "reason": self.reason, "tokens": self.tokens}
        if self.score is not None:
            found["score"] = round(self.score, 3)
        if self.beside is not None:
            found["beside"] = self.beside
        found["text"] = self.event.content  # last, after the optional keys: the JSON's order
        return cast(ItemJson, found)


@dataclass
class Section:
    name: Literal["standing", "recalled", "recent"]
    title: str
    items: list[Item] = field(default_factory=list)
    tokens: int = 0  # what the section costs in the prompt, headers and labels included
    titles: dict[str, str] = field(default_factory=dict)  # session id -> its title, for labels

    def as_json(self) -> SectionJson:
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
    system_tokens: int = 0
    exact: bool = False  # tokens counted by the model's own tokenizer, not estimated

    def ids(self, name: str) -> list[int]:
        return sorted(i.event.id for s in self.sections if s.name == name for i in s.items)

    def as_json(self) -> PromptJson:
        return {"budget": self.budget, "tokens": self.tokens, "query": self.query,
                "system_tokens": self.system_tokens,
                "tokens_counted": "model" if self.exact else "estimate",
                "sections": [s.as_json() for s in self.sections],
                "context_ids": self.context_ids, "prompt_xxh3": self.signature}


def system_prompt(states: States) -> str:
    """The stable part: it changes only when the mind's name changes or a trait crosses into
    another band (pmm.domain.temperament): a sentence of how to behave per low or high trait,
    since a bare number tells a model nothing about how to answer."""
    name = states["identity"]["name"]
    who = f"You are {name}, a persistent mind." if name else "You are a persistent mind with no name yet."
    lines = [who, "Your memory is a ledger the user owns; past conversations and notes you "
             "recall from it are shown to you before the user's message, with the dates they "
             "were said. Answer the user directly and briefly."]
    behave = temperament.prompt_line(states["traits"]["values"])
    if behave:
        lines.append(behave)
    return "\n".join(lines)




class Scope(NamedTuple):
    """What a chat run sets: ``session`` (recent turns only from it; None: the mind's latest
    turns, whatever their session), ``system`` (this run's system prompt, added after the
    identity block) and ``hide`` (turns left out, besides the withdrawn answers)."""

    session: str | None = None
    system: str = ""
    hide: frozenset[int] = frozenset()


NO_SCOPE = Scope()


def build(mind: Ledger, states: States, user_text: str, *, window: int,
          answer_tokens: int, temperature: float = 0.7,
          similar: ranking.Similar | None = None, count: Count | None = None,
          scope: Scope = NO_SCOPE) -> Prompt:
    """The request for ``user_text`` given the mind as it is now, with its plan; ``similar``
    finds events by meaning (optional, see ``ranking``); ``count`` is the model's own token
    count when it is known (a local model's vocabulary), else tokens are estimated high."""
    from pmm.services import sessions

    scope = Scope(scope.session, scope.system, scope.hide | sessions.hidden(mind))
    cost = Cost(count)
    budget = max(64, window - answer_tokens - 32)
    prompt = _build(mind, states, user_text, budget, answer_tokens, temperature, similar, cost,
                    scope)
    if count is not None:
        # Exact counts are summed per piece: joins and the chat template could still tip the
        # whole over. Measured whole, it is planned again in what is left, never sent too long.
        over = cost.request(prompt.request) - budget
        if over > 0:
            prompt = _build(mind, states, user_text, max(64, budget - 2 * over), answer_tokens,
                            temperature, similar, cost, scope)
    return prompt


def _build(mind: Ledger, states: States, user_text: str, budget: int, answer_tokens: int,
           temperature: float, similar: ranking.Similar | None, cost: Cost,
           scope: Scope) -> Prompt:
    system = "\n\n".join(p for p in (system_prompt(states), scope.system.strip()) if p)
    spent = cost.text(system) + cost.text(user_text)
    standing, spent = _standing(states, mind, budget, spent, cost, scope.hide)

    recent_pool, whole = _recent_pool(mind, budget - spent, cost, scope)
    previous = next((e.content for e in recent_pool if e.kind == ev.MESSAGE_RECEIVED.name), None)
    query = ranking.query(user_text, previous)
    # the time line measured at its longest: two days of the longest month name
    time_line = cost.text(_time_line_text(now_ts()[:10], "2000-09-28", "2000-09-30"))
    avail = max(0, budget - spent - time_line)
    pool_cost = sum(cost.turn(e) for e in recent_pool)
    # the recent part is sure of its share, and of the last exchange when that fits in half
    last_exchange = sum(cost.turn(e) for e in recent_pool[:2])
    reserved = min(pool_cost, max(avail - int(avail * RECALL_SHARE),
                                  last_exchange if last_exchange <= avail // 2 else 0))
    if whole and pool_cost <= avail // 2:
        # the whole conversation, while it fits in half the room, is sent whole: recall taking
        # a turn of it into the new message would change the prefix a provider's cache holds
        reserved = pool_cost
    held = _reserved_ids(recent_pool, reserved, cost) | {i.event.id for i in standing.items} | scope.hide
    ranked = ranking.rank(mind, query, user_text, similar) if avail - reserved > 0 else ([], {})
    recalled = _recall(mind, ranked, avail - reserved, held, cost)
    recent = _recent(recent_pool, avail - recalled.tokens, {i.event.id for i in recalled.items}, cost)
    if avail - recalled.tokens - recent.tokens > 0 and recalled.items:
        # what the recent turns left (a long turn they stop at) goes back to recall, with the
        # time line's room when no recent turn is sent (it dates them)
        held |= {i.event.id for i in recent.items}
        room = avail - recent.tokens + (0 if recent.items else time_line)
        recalled = _recall(mind, ranked, room, held, cost)
    spent += recalled.tokens + recent.tokens

    sections = [s for s in (standing, recalled, recent) if s.items]
    # stable first (see the module's docstring): standing memory joins the system prompt, the
    # recalled memory and the date line open the new message, after the older conversation
    stable = [system, *(_render(s) for s in sections if s.name == "standing")]
    per_turn = [_render(s) for s in sections if s.name == "recalled"]
    turns = [i.event for i in recent.items]
    if turns:
        per_turn.append(_time_line(turns))
        spent += cost.text(per_turn[-1])
    # the conversation comes back unchanged next turn while it starts where the scope's turns do;
    # once its oldest turns give way (a leading answer is never sent), caching it would not pay
    sent = {i.event.id for s in sections for i in s.items}
    repeats = whole and all(e.id in sent for e in recent_pool[:-1])
    request = Request(messages=_conversation(turns, user_text), system="\n\n".join(p for p in stable if p),
                      context="\n\n".join(per_turn), max_tokens=answer_tokens,
                      temperature=temperature, repeats=repeats)
    used = sorted(i.event.id for s in sections for i in s.items)
    return Prompt(request, used, signature(request), spent, sections, budget, query,
                  cost.text(system), cost.exact)


# -- standing memory ---------------------------------------------------------------------------


def _standing(states: States, mind: Ledger, budget: int, spent: int,
              cost: Cost, hide: frozenset[int] | set[int] = frozenset()) -> tuple[Section, int]:
    """Persona and pinned notes first, then open commitments, the latest summary of the
    reflections and the latest reflection (when no summary condenses it yet), each while it
    fits in ``STANDING_SHARE`` of the budget."""
    section = Section("standing", "Standing memory")
    left = min(int(budget * STANDING_SHARE), max(0, budget - spent)) - STANDING_HEADER_TOKENS
    wanted: list[tuple[int, str, Reason]] = []
    persona, pinned = projections.standing(states)
    if persona is not None:
        wanted.append((*persona, "persona"))
    wanted += [(*note, "pinned") for note in reversed(pinned)]  # the newest pins first
    # oldest first by id, not by the dict's order (a cache or snapshot read back from JSON has
    # its keys sorted as text: "14458" before "82")
    commitments = sorted((int(opened), c["text"]) for opened, c in states["commitments"]["open"].items())
    wanted += [(opened, text, "commitment") for opened, text in commitments[:COMMITMENTS_SHOWN]]
    summaries = states["summaries"]
    if summary := summaries["latest"]:
        wanted.append((summary["id"], summary["text"], "summary"))
    reflection = states["reflections"]["latest"]
    if reflection and reflection["id"] > summaries["covered_to"]:
        wanted.append((int(reflection["id"]), "", "reflection"))  # its text: the ledger's
    events = {e.id: e for e in lookup.get(mind, [w[0] for w in wanted])}
    for event_id, text, reason in wanted:
        if event_id not in events or event_id in hide:  # hidden: a promise /retry withdraws
            continue
        covers = summary["covers"] if reason == "summary" and summary else None
        shown = events[event_id].content if reason == "reflection" else text
        tokens = cost.text(_standing_line(reason, shown, covers))
        if tokens > left:
            continue
        left -= tokens
        section.items.append(Item(events[event_id], reason, tokens))
    section.tokens = cost.text(_render(section)) if section.items else 0
    return section, spent + section.tokens


# -- recalled memory ---------------------------------------------------------------------------


def _recall(mind: Ledger, candidates: tuple[ranking.Ranked, dict[int, Event]], allowance: int,
            held: set[int], cost: Cost) -> Section:
    """Ranked events (``ranking.rank``), each with the turn that completes its exchange where
    that fits, until ``allowance`` is spent, the header and each group's label included; events
    in ``held`` are in the prompt already."""
    section = Section("recalled", "Recalled memory")
    if allowance <= cost.text(RECALL_HEADER):
        return section
    ranked, read = candidates
    chosen: dict[int, Item] = {}
    labels: dict[tuple[str, str], int] = {}  # each group's label, paid once, by the first of it
    titles: dict[str, str] = {}
    left = allowance - cost.text(RECALL_HEADER)
    misses = 0

    def label_cost(event: Event) -> int:
        group = _group(event)
        if group in labels:
            return 0
        session = group[1]
        if session not in titles:
            titles.update(ranking.session_titles(mind, [event]))
            titles.setdefault(session, "")
        return _line_cost(cost, _label(group[0], titles[session]))

    for event, score in ranked:
        if score <= 0 or misses >= MISFITS:
            break
        if event.id in chosen or event.id in held:
            continue
        tokens, label = _line_cost(cost, _line(event)), label_cost(event)
        if tokens + label > left:
            misses += 1
            continue
        labels.setdefault(_group(event), label)
        chosen[event.id] = Item(event, "recalled", tokens, score)
        left -= tokens + label
        misses = 0
        partner = ranking.partner(event, read)
        if partner is not None and partner.id not in chosen and partner.id not in held:
            extra, label = _line_cost(cost, _line(partner)), label_cost(partner)
            if extra + label <= left:
                labels.setdefault(_group(partner), label)
                chosen[partner.id] = Item(partner, "exchange", extra, beside=event.id)
                left -= extra + label
    section.items = sorted(chosen.values(), key=lambda i: (said_at(i.event), i.event.id))
    section.titles = {s: t for s, t in titles.items() if t}
    section.tokens = cost.text(_render(section)) if section.items else 0
    while section.tokens > allowance:  # estimates of lines joined may round over: drop the weakest
        hits = [i for i in section.items if i.reason == "recalled"]
        if not hits:
            section.items, section.tokens = [], 0
            break
        weakest = min(hits, key=lambda i: i.score or 0.0)
        section.items = [i for i in section.items
                         if i is not weakest and i.beside != weakest.event.id]
        section.tokens = cost.text(_render(section)) if section.items else 0
    return section


STANDING_LABELS = {"persona": "Your persona", "pinned": "Pinned note",
                   "commitment": "Open commitment", "summary": "Summary of your reflections",
                   "reflection": "Latest reflection"}
CLIPPED = {"reflection": REFLECTION_CHARS, "summary": SUMMARY_CHARS}


def _standing_line(reason: str, text: str, covers: list[int] | None = None) -> str:
    """One standing item as the prompt shows it (a reflection or summary clipped; a summary
    cites the reflections it condenses)."""
    shown = clip(text, CLIPPED[reason]) if reason in CLIPPED else " ".join(text.split())
    if covers is None:
        return f"{STANDING_LABELS[reason]}: {shown}"
    from pmm.services.consolidation import cite

    return f"{STANDING_LABELS[reason]} {cite(covers)}: {shown}"


def _line_cost(cost: Cost, line: str) -> int:
    """What one more line adds to a section: its tokens and line break. The estimate's margin
    is per text, not per line (a section is one text), so a line is estimated with its break
    and without the margin, plus a token for rounding."""
    if cost.exact:
        return cost.text(line)  # the count plus a token for the break
    return cost.text(line + "\n") - cost.text("") + 1


def _line(event: Event) -> str:
    return f"{WHO.get(event.kind, event.kind)}: {' '.join(event.content.split())}"


RECALL_HEADER = ("Memories recalled for this message, oldest first (user: the person you talk"
                 " with; you: yourself):")


def _group(event: Event) -> tuple[str, str]:
    """The label a recalled event is shown under: its day and its session (or itself)."""
    return said_at(event)[:10], ranking.session_of(event) or f"#{event.id}"


def _label(day: str, title: str | None) -> str:
    return f"[{spelled(day)}, {title}]" if title else f"[{spelled(day)}]"


def _render(section: Section) -> str:
    """A section as prompt text; recalled events grouped under a [date, session title] label."""
    if section.name == "standing":
        lines = [_standing_line(i.reason, i.event.content,
                                i.event.meta.get("covers") if i.reason == "summary" else None)
                 for i in section.items]
        return "Standing memory (always shown):\n" + "\n".join(lines)
    lines = [RECALL_HEADER]
    label = None
    for item in section.items:
        here = _group(item.event)
        if here != label:
            lines.append(_label(here[0], section.titles.get(here[1])))
            label = here
        lines.append(_line(item.event))
    return "\n".join(lines)


# -- recent turns ------------------------------------------------------------------------------


def _recent_pool(mind: Ledger, room: int, cost: Cost, scope: Scope) -> tuple[list[Event], bool]:
    """The newest turns (of the scope's session, when it names one), newest first, until they
    would fill ``room`` tokens; and whether they are all the scope's turns."""
    from pmm.ledger import sessions

    pool: list[Event] = []
    spent = 0
    before = None
    while spent < room:
        page = (lookup.latest_before(mind, TURN_KINDS, RECENT_PAGE, before) if scope.session is None
                else sessions.turns_of(mind, scope.session, RECENT_PAGE, before))
        for n, event in enumerate(page):
            if event.id in scope.hide:
                continue
            pool.append(event)
            spent += cost.turn(event)
            if spent >= room:
                return pool, n == len(page) - 1 and len(page) < RECENT_PAGE
        if len(page) < RECENT_PAGE:
            return pool, True
        before = page[-1].id
    return pool, False


def _reserved_ids(pool: list[Event], reserved: int, cost: Cost) -> set[int]:
    """The newest turns the recent part is sure to send in ``reserved`` tokens: never ending
    (at its oldest) in an answer, which ``_conversation`` would not send."""
    held: list[Event] = []
    for event in pool:
        reserved -= cost.turn(event)
        if reserved < 0:
            break
        held.append(event)
    while held and held[-1].kind == ev.RESPONSE_SENT.name:
        held.pop()
    return {e.id for e in held}


def _recent(pool: list[Event], room: int, skip: set[int], cost: Cost) -> Section:
    section = Section("recent", "Recent conversation")
    for event in pool:
        if event.id in skip:
            continue
        tokens = cost.turn(event)
        if tokens > room:
            break
        room -= tokens
        section.items.append(Item(event, "recent", tokens))
        section.tokens += tokens
    section.items.reverse()
    while section.items and section.items[0].event.kind == ev.RESPONSE_SENT.name:
        section.tokens -= section.items.pop(0).tokens  # leading answers are not sent (see below)
    return section


def _time_line(turns: list[Event]) -> str:
    dates = [said_at(turn)[:10] for turn in turns]
    return _time_line_text(now_ts()[:10], min(dates), max(dates))


def _time_line_text(today: str, first: str, last: str) -> str:
    span = spelled(first) if first == last else f"{spelled(first)} to {spelled(last)}"
    return f"Today: {spelled(today)}. The conversation above was said {span}."


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
