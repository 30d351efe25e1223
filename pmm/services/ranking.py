"""Which past events best answer a message: the ranking behind recalled memory.

1. **Words.** The message's content words (all of them, up to ``QUERY_WORDS``; a short follow-up
   is read with the user's previous message). The index stems them (porter), so "dogs" finds
   "dog" and "running" finds "run".
2. **BM25.** SQLite FTS5's ``bm25()`` over turns, notes and reflections, with the words taken
   rarest first within a bounded number of postings (``lookup.ranked``), so the cost of a query
   does not grow with the mind.
3. **Meaning** (when the optional semantic extra is installed): cosine similarity of WordLlama
   embeddings of the newest events (``semantic.SPAN``) to the message's words, each word
   weighted by its rarity in this mind (``rarity``: BM25's inverse document frequency), blended
   with BM25 after scaling both to 0..1 (``SEMANTIC_WEIGHT``, see ``blend``), so a turn that
   says the same thing in other words can rank. Weighted so, the words that tell this
   question from the others lead its meaning, not the ones every turn shares.
4. **Conversation.** A turn also earns part of the score of its neighbours in the same session
   (``NEIGHBOURS``: half of the next turn's, a quarter of the one after): an answer is usually
   said next to the words that name its topic ("How was the trip?" / "Amazing, we saw ...").

The constants are round and general, chosen for conversations in general: the recall benchmark
(bench/bench_recall.py) measures them, it does not fit them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Protocol

from pmm.domain import events as ev
from pmm.domain.events import Event
from pmm.ledger import lookup
from pmm.ledger.store import Ledger
from pmm.services.safe_text import clip

TURN_KINDS = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)
RECALL_KINDS = (*TURN_KINDS, ev.OBSERVATION_RECORDED.name, ev.NOTE_PINNED.name,
                ev.REFLECTION_RECORDED.name, ev.SUMMARY_RECORDED.name)
CANDIDATES = 300  # events ranked by BM25 (and by meaning) before neighbours join them
QUERY_WORDS = 48
FOLLOW_UP_WORDS = 2  # a message with fewer content words is read with the user's previous one
NEIGHBOURS = (0.5, 0.25)  # the share of a turn's score its neighbours at distance 1, 2 earn
JOINED_BY = 100  # the best candidates whose neighbours join the candidates
SEMANTIC_WEIGHT = 0.5  # meaning's weight beside BM25's 1, both scaled to 0..1
MIN_SIMILARITY = 0.1  # a cosine below this is unrelated text (WordLlama: ~0 for unrelated words)
MIN_SPREAD = 0.25  # similarity counts fully only when the best stands this far above the rest
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

Ranked = list[tuple[Event, float]]


class Similar(Protocol):
    """Events of ``kinds`` by meaning, best first, or None when unavailable: nearest the
    ``weights``' words so weighted, or the ``text`` as a whole when there are none."""

    def __call__(self, mind: Ledger, text: str, kinds: tuple[str, ...], limit: int, *,
                 weights: Mapping[str, float] | None = None) -> Ranked | None: ...


def words_of(text: str, most: int = QUERY_WORDS) -> list[str]:
    """Distinct content words of ``text`` in order: no stopwords, no numbers but years."""
    seen: dict[str, None] = {}
    for word in re.findall(r"\w+", text.lower()):
        if len(word) > 1 and word not in STOPWORDS and (not word.isdigit() or len(word) == 4):
            seen.setdefault(word, None)
    return list(seen)[:most]


def query(message: str, previous: str | None) -> list[str]:
    """The words to recall by: the message's, and the user's previous message's when this one
    is too short to stand alone (a follow-up such as "and when was that?")."""
    words = words_of(message)
    if len(words) < FOLLOW_UP_WORDS and previous:
        words += [w for w in words_of(previous) if w not in words]
    return words[:QUERY_WORDS]


def rank(mind: Ledger, words: list[str], message: str, similar: Similar | None = None
         ) -> tuple[Ranked, dict[int, Event]]:
    """Candidate events for recall, best first, with their scores (see the module's steps),
    and the turns read around them on the way (for ``partners``)."""
    counts = lookup.word_counts(mind, words) if words else {}
    lexical = lookup.ranked(mind, words, RECALL_KINDS, CANDIDATES, counts=counts) if words else []
    by_meaning = (similar(mind, message, RECALL_KINDS, CANDIDATES,
                          weights=rarity(counts, mind.head()[0])) if similar else None)
    blended = blend(lexical, by_meaning) if by_meaning else lexical
    if any(e.kind == ev.REFLECTION_RECORDED.name for e, _ in blended):  # the owner overruled some?
        gone = lookup.retractions(mind)
        blended = [(e, s) for e, s in blended
                   if e.id not in gone or e.kind != ev.REFLECTION_RECORDED.name]
    return spread(mind, blended)


def rarity(counts: Mapping[str, int], events: int) -> dict[str, float]:
    """Each word's weight in the message's meaning: BM25's inverse document frequency among
    the mind's ``events``, ln(1 + (N - n + 0.5) / (n + 0.5)), from how many events hold it
    (``lookup.word_counts``). A word the mind has never seen weighs the most: its meaning
    is what semantic recall is for ("puppy" in a mind that says "dog")."""
    total = max(events, *counts.values(), 1)
    return {word: math.log(1 + (total - n + 0.5) / (n + 0.5)) for word, n in counts.items()}


def blend(lexical: Ranked, by_meaning: Ranked) -> Ranked:
    """BM25 and similarity, each scaled to 0..1 over its own candidates, added with
    ``SEMANTIC_WEIGHT`` (then scaled back to BM25's range, so scores read alike). Similarity
    below ``MIN_SIMILARITY`` adds nothing, and when all candidates are about as (dis)similar,
    within ``MIN_SPREAD``, none counts fully: a message unlike anything in the mind recalls
    nothing by meaning, and the recent turns get the room."""
    top = max((s for _, s in lexical), default=0.0) or 1.0
    scores = {e.id: s / top for e, s in lexical}
    events = {e.id: e for e, _ in lexical}
    high = max(s for _, s in by_meaning)
    # the baseline: the weakest candidate when the list was cut at CANDIDATES, else the floor
    low = min(s for _, s in by_meaning) if len(by_meaning) >= CANDIDATES else MIN_SIMILARITY
    for event, similarity in by_meaning:
        if similarity < MIN_SIMILARITY:
            continue
        share = max(0.0, similarity - low) / max(high - low, MIN_SPREAD)
        scores[event.id] = scores.get(event.id, 0.0) + SEMANTIC_WEIGHT * share
        events.setdefault(event.id, event)
    return sorted(((events[i], s * top) for i, s in scores.items()), key=lambda p: -p[1])


def spread(mind: Ledger, ranked: Ranked) -> tuple[Ranked, dict[int, Event]]:
    """Each turn plus ``NEIGHBOURS`` shares of the scores of the turns beside it in its session
    (turns next to the best ``JOINED_BY`` join the candidates); also every event read, by id."""
    own = {e.id: s for e, s in ranked}
    events = {e.id: e for e, _ in ranked}
    for event in lookup.around(mind, [e.id for e, _ in ranked[:JOINED_BY]], TURN_KINDS,
                               reach=len(NEIGHBOURS)):
        events.setdefault(event.id, event)
    sessions = {i: session_of(e) for i, e in events.items()}
    total: dict[int, float] = {}
    for event_id, event in events.items():
        score = own.get(event_id, 0.0)
        if event.kind in TURN_KINDS:
            for distance, weight in enumerate(NEIGHBOURS, 1):
                for other in (event_id - distance, event_id + distance):
                    if other in own and sessions[other] == sessions[event_id]:
                        score += weight * own[other]
        total[event_id] = score
    order = sorted(total, key=lambda i: (-total[i], -i))
    return [(events[i], total[i]) for i in order], events


def partner(hit: Event, events: dict[int, Event]) -> Event | None:
    """The other half of ``hit``'s exchange in the same session (a message's answer, an
    answer's message) when ``events`` holds it."""
    if hit.kind not in TURN_KINDS:
        return None
    other = events.get(hit.id + (1 if hit.kind == ev.MESSAGE_RECEIVED.name else -1))
    if other is None or other.kind not in TURN_KINDS or other.kind == hit.kind:
        return None
    return other if session_of(other) == session_of(hit) else None


TITLE_CHARS = 80


def session_titles(mind: Ledger, events: list[Event]) -> dict[str, str]:
    """The title of each session among ``events`` that has one (an imported conversation's),
    from the ``session_started`` event that opens it (one indexed lookup per session)."""
    titles: dict[str, str] = {}
    firsts: dict[str, Event] = {}
    for event in events:
        session = session_of(event)
        if session is not None and session not in firsts:
            firsts[session] = event
    for session, event in firsts.items():
        found = lookup.latest_before(mind, [ev.SESSION_STARTED.name], 1, event.id)
        start = found[0] if found else None
        if start is None or not start.content.strip():
            continue
        meta = start.meta
        if session in (meta.get("session"), meta.get("source_id")):
            titles[session] = clip(start.content, TITLE_CHARS)
    return titles


_SESSION = re.compile(r'"session":"([^"\\]*)"')


def session_of(event: Event) -> str | None:
    """The chat session an event belongs to (``meta.session``), or None."""
    if '"session"' not in event.meta_json:
        return None
    plain = _SESSION.search(event.meta_json)  # canonical JSON: no spaces, a plain value quoted
    if plain is not None and event.meta_json.count('"session"') == 1:
        return plain.group(1)
    value = event.meta.get("session")
    return value if isinstance(value, str) else None
