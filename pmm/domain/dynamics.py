"""The mind's dynamics as pure functions of its projections: identity stability (IAS), growth
(GAS), the stage S0-S4, the reflection cadence, and which commitments are overdue.

docs/mind-model.md is the one definition of each quantity; this module is its implementation
and a test recomputes the document's worked examples with it. No clock here: callers pass the
time ("now" as a ledger timestamp, or seconds since the last reflection).
"""

from __future__ import annotations

import re
from typing import NamedTuple, TypedDict

from pmm.domain import lazy_re
from pmm.domain.growth import MAX_TRAIT_STEP, TRAIT_DEFAULT
from pmm.domain.states import States

STAGES = ("S0", "S1", "S2", "S3", "S4")
STAGE_WORDS = {
    "S0": "just beginning",
    "S1": "starting to reflect",
    "S2": "reflecting consistently",
    "S3": "growing steadily",
    "S4": "mature and self-directed",
}
# Minimums to be at a stage: reflections (not retracted), live user turns, IAS, GAS. Each column
# never decreases from one stage to the next, so more of anything never lowers the stage.
THRESHOLDS = {
    "S1": (1, 5, 0.0, 0.0),
    "S2": (5, 25, 0.5, 0.15),
    "S3": (15, 100, 0.6, 0.35),
    "S4": (40, 300, 0.7, 0.55),
}
CADENCE_SECONDS = {"S0": 3600, "S1": 1800, "S2": 600, "S3": 180, "S4": 60}
EXPIRE_AFTER_TURNS = 50


class MetricsJson(TypedDict):
    """``Metrics`` as JSON, each fraction rounded to 4 places."""
    ias: float
    gas: float
    trait_stability: float
    name_stability: float
    commitment_reliability: float
    reflection_depth: float
    commitment_success: float
    trait_development: float
    engagement: float
    reflections: int
    turns: int
    stage: str


class Metrics(NamedTuple):
    ias: float
    gas: float
    trait_stability: float
    name_stability: float
    commitment_reliability: float
    reflection_depth: float
    commitment_success: float
    trait_development: float
    engagement: float
    reflections: int
    turns: int
    stage: str

    def as_json(self) -> MetricsJson:
        def r(v: float) -> float:
            return round(v, 4)

        return {"ias": r(self.ias), "gas": r(self.gas), "trait_stability": r(self.trait_stability),
                "name_stability": r(self.name_stability),
                "commitment_reliability": r(self.commitment_reliability),
                "reflection_depth": r(self.reflection_depth),
                "commitment_success": r(self.commitment_success),
                "trait_development": r(self.trait_development), "engagement": r(self.engagement),
                "reflections": self.reflections, "turns": self.turns, "stage": self.stage}


def metrics(states: States) -> Metrics:
    """IAS, GAS and their parts, and the stage. Commitments count by their status now (each
    once: kept, lapsed; dropped and open ones in neither), reflections only when not retracted,
    and turns only live ones (imported turns are history, docs/mind-model.md)."""
    traits, commitments = states["traits"], states["commitments"]
    identity, reflections = states["identity"], states["reflections"]
    recent = traits["recent"]
    trait_stability = 1.0 - (sum(recent) / len(recent)) / MAX_TRAIT_STEP if recent else 1.0
    name_stability = 1.0 / (1 + max(0, identity["names"] - 1))
    closed, expired = commitments["current"]["closed"], commitments["current"]["expired"]
    commitment_reliability = (closed + 1) / (closed + expired + 1)
    ias = 0.5 * trait_stability + 0.25 * name_stability + 0.25 * commitment_reliability

    reflection_depth = min(1.0, reflections["count"] / 20)
    commitment_success = closed / (closed + expired) if closed + expired else 0.0
    trait_development = min(1.0, sum(abs(v - TRAIT_DEFAULT) for v in traits["values"].values()))
    turns = commitments["turns"]
    engagement = min(1.0, turns / 200)
    gas = 0.3 * reflection_depth + 0.3 * commitment_success + 0.2 * trait_development + 0.2 * engagement
    ias, gas = _unit(ias), _unit(gas)
    return Metrics(ias, gas, _unit(trait_stability), name_stability, commitment_reliability,
                   reflection_depth, commitment_success, trait_development, engagement,
                   reflections["count"], turns, stage_of(reflections["count"], turns, ias, gas))


def _unit(value: float) -> float:
    return max(0.0, min(1.0, value))


def stage_of(reflections: int, turns: int, ias: float, gas: float) -> str:
    """The highest stage whose every minimum is met (monotone in each argument)."""
    reached = "S0"
    for stage in STAGES[1:]:
        need = THRESHOLDS[stage]
        if reflections >= need[0] and turns >= need[1] and ias >= need[2] and gas >= need[3]:
            reached = stage
        else:
            break
    return reached


def reflection_due(states: States, seconds_since_last: float | None) -> tuple[bool, str]:
    """Due when there is something new to reflect on (a user message since the last
    reflection) and the stage's cadence has passed since the last one (or there was none)."""
    reflections = states["reflections"]
    if reflections["turns_since"] == 0:
        if reflections["latest"] is None:
            return False, "no user message to reflect on yet"
        return False, "nothing new since the last reflection"
    stage = metrics(states).stage
    cadence = CADENCE_SECONDS[stage]
    if reflections["latest"] is None:
        return True, "no reflection yet"
    if seconds_since_last is None:
        return True, "the time of the last reflection is unknown"
    if seconds_since_last >= cadence:
        return True, f"{stage} reflects every {span(cadence)}; the last was {span(seconds_since_last)} ago"
    return False, f"{stage} reflects every {span(cadence)}; the next is due in {span(cadence - seconds_since_last)}"


def overdue(states: States, now_ts: str) -> list[tuple[int, str]]:
    """Open commitments to expire at ``now_ts``: past their due time, or open for
    ``EXPIRE_AFTER_TURNS`` live user messages (imported ones do not age a commitment)."""
    found = []
    turns = states["commitments"]["turns"]
    for key, entry in sorted(states["commitments"]["open"].items(), key=lambda kv: int(kv[0])):
        if (due := entry["due"]) and due <= now_ts:
            found.append((int(key), f"its due time {due[:16].replace('T', ' ')} UTC passed"))
        elif turns - entry["turns_at"] >= EXPIRE_AFTER_TURNS:
            found.append((int(key), f"open for {EXPIRE_AFTER_TURNS} turns without being kept"))
    return found


def span(seconds: float) -> str:
    """A duration in words a person reads at a glance: 45 s, 12 min, 3 h, 2 days."""
    seconds = max(0, int(round(seconds)))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


# The conversation rule (docs/mind-model.md, "Commitments from conversation"). A commitment costs
# the mind's metrics when it lapses, a missed one costs nothing (the owner can open it), so the rule
# is built for precision: a sentence counts only when a first-person future in its main clause
# names an act that happens after this answer, by its verb or by a time ahead.
_SENTENCE_END = lazy_re.compile(r"(?<=[.!?])\s+|\n+")
_PROMISE = lazy_re.compile(
    r"\bi(?: will| shall|'ll| am going to|'m going to| commit to| promise to)\s+")
# The word before "I" makes it reported or embedded speech ("you said I'll", "what I'll do").
_EMBEDDED = lazy_re.compile(r"\b(?:that|what|whether|if|how|why|where|said|says|say|think|thought|"
                       r"hope|wonder|wondering|asked|ask|guess|suppose|unless|when|once)\s+$")
# A condition or a request before the promise makes it an offer ("if you want, I'll ...").
_CONDITION = lazy_re.compile(r"\b(?:if|unless|whenever|in case|should you|once|as soon as|provided)\b")
_WHEN = lazy_re.compile(r"\bwhen\b(?! (?:we|you) (?:next|come back|get back|are back|'re back|return|"
                   r"talk|speak|chat|meet)\b)")
_SUBJECT = lazy_re.compile(r"\b(?:i|we|he|she|they)\b")
_OFFER_AFTER = lazy_re.compile(
    r"\bif (?:you(?:'d| would)? (?:like|want|prefer|wish|need)|you're interested|"
    r"(?:that|it)(?:'s| is| would be| would)? (?:helps?|works?|useful|okay|ok|fine|alright))\b|"
    r"\bif (?:needed|necessary|so)\b|\bshould you (?:want|wish|need)\b")
# Right after "I'll": a refusal or a hedge, neither of them a promise.
_NEGATED = lazy_re.compile(r"(?:not|never|no longer|probably|maybe|perhaps|likely)\b")
# Where the verb phrase ends: a new clause with its own subject, or a clause that gives a reason.
_CLAUSE_END = lazy_re.compile(r"[;:—]| - |,\s*(?:but|so|and (?:you|we|it|that|this|then you))\b|"
                         r"\s(?:but|because|since|while|although|though)\s")
_HEDGE = lazy_re.compile(r"(?:also|always|definitely|certainly|just|then|first|still|happily|gladly|personally|"
                    r"absolutely|really|make sure to|be sure to|make a point (?:of|to)|try to|"
                    r"try and|aim to|go ahead and|remember to|make a note to)\s+")
# Not an act: a memory statement (the ledger remembers anyway), a feeling, a state, an effort.
_NO_ACT = lazy_re.compile(
    r"(?:remember|memori[sz]e|note|make a note|take note|jot|store|save|record|log|"
    r"keep (?:\S+ ){0,3}in mind|bear (?:\S+ ){0,3}in mind|keep track|keep (?:my |our )?fingers crossed|"
    r"cross my fingers|be (?:thinking|rooting|cheering)|think (?:of|about) you|root for|cheer|hope|"
    r"wish|pray|be (?!\S+ing\b|in touch\b)|(?:try|do) (?:my|our) (?:best|utmost)|do what i can|"
    r"try\b(?! to| and)|see you|talk to you|speak to you|be waiting|wait for|look forward)\b")
# Verbs of an act no answer can contain.
_LATER_ACT = lazy_re.compile(
    r"(?:send (?:you|over|along|it over|them over|(?:\S+ ){0,4}(?:to you|your way))|"
    r"(?:e-?mail|mail|text|ping|message|notify|update) you|remind(?! (?:you )?(?:that|how|why|what)\b)|"
    r"follow up(?= with you| on (?:this|that|it)\b|\s*$| afterwards| after)|check back|"
    r"check in(?= with| on|\s*$| again| (?:tomorrow|next|later|soon|after|before|each|every|once|"
    r"in a|in \d|this|to see))|get back to you|circle back (?:to|with) you|touch base|"
    r"reach out (?:to you|again)|be in touch|keep you (?:posted|updated|informed|in the loop)|"
    r"set (?:up )?(?:a )?reminders?)\b")
# Words that put the act inside this answer.
_IN_ANSWER = lazy_re.compile(r"\b(?:below|here|right now|now(?! on\b)|in a (?:moment|second|minute|sec)|"
                        r"in this (?:answer|reply|message|response|thread|section|post)|"
                        r"at the end(?! of (?:the|this|next) (?:day|week|month))|"
                        r"in the next (?:section|paragraph|step|part)|as follows)\b")
# Discourse verbs: acts on the answer itself, where "later" or "on Friday" usually mean "in this
# answer" or belong to the object ("assume the deadline is on Friday").
_DISCOURSE = lazy_re.compile(
    r"(?:explain|walk|go (?:over|through|with)|cover|discuss|talk|mention|point|show|describe|"
    r"summari[sz]e|outline|list|break|clarify|elaborate|expand|illustrate|demonstrate|answer|"
    r"address|get to|come (?:back )?to|return to|start|begin|focus|keep|assume|use|give|tell|"
    r"say|add|include|provide|compare|recap|highlight|touch on|leave|stick|interpret|admit|"
    r"write|draft|make|put|take|help)\b")
_DAYS = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
# A time or occasion ahead that fixes when the act happens.
_AHEAD = lazy_re.compile(
    r"\b(?:tomorrow|tonight|this (?:evening|afternoon|weekend)|from now on|going forward|"
    rf"next (?:time|session|conversation|chat|message|reply|lesson|meeting|week|month|year|{_DAYS})|"
    r"later (?:today|tonight|this (?:week|month|evening|afternoon|weekend))|"
    r"in (?:a|one|two|three|a few|a couple of|\d+) (?:days?|weeks?|months?|hours?)|"
    rf"(?:every|each) (?:day|morning|evening|night|week|month|session|{_DAYS})|"
    r"in (?:the )?future|by the end of|"
    r"(?:when|before|after) (?:we|you) (?:next|come back|get back|are back|'re back|return|talk|speak|"
    r"chat|meet))\b"
    r"(?!'s)")
# A time ahead that opens the sentence: "Next time we talk, I'll ...", "In our next session I'll".
_FRONTED = lazy_re.compile(r"(?:\W*(?:ok|okay|sure|great|alright|yes|good|perfect|then|so|and)\b)*\W*"
                      r"(?:(?:in|at|during|on) (?:our |my |the )?)?" + _AHEAD.pattern)
_AHEAD_WEAK = lazy_re.compile(rf"\b(?:later|soon|(?:on|by) {_DAYS}|before (?:your|our|the) \S+|"
                         r"after (?:your|our|the) \S+)\b(?!'s)")
# A time after these belongs to an object or an embedded clause, not to the promised act.
_DETACHED = lazy_re.compile(r"\b(?:what|which|that|who|whom|whose|where)\b|"
                       r"\bto (?!(?:you|me|us|them|him|her|it|the|a|an|my|your|our|this|that|these|those)\b)\S+|"
                       r"\bfor (?:the )?$")

_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'})


def is_commitment(sentence: str) -> bool:
    """Whether one sentence is a first-person promise of an action after the current answer.

    It must be a statement of 4 to 30 words (not a question) with "I will", "I'll", "I shall",
    "I'm going to", "I promise to" or "I commit to" in its main clause: not negated or hedged
    ("I'll never", "I'll probably"), not reported or embedded ("you said I'll", "what I'll do"),
    not in quotes, not an offer ("if you want, I'll", "let me know and I'll", "... if you'd like").
    The promised verb phrase must then name an act no answer can contain (send, remind, check
    back, follow up, get back to you, keep you posted, ...) with no word that puts it inside the
    answer (below, here, now), or carry a time or occasion ahead (tomorrow, next time, in a week,
    every Monday, from now on, when you come back) that is not part of an object or an embedded
    clause ("a plan for next week", "what to expect tomorrow", "tomorrow's agenda"). Vaguer times
    (later, soon, on Friday, before your exam) count only for verbs that do not describe the answer
    itself (explain, walk through, keep it short, summarise, assume, ...). A memory statement
    ("I'll remember that", "I'll keep it in mind"), a feeling or a state ("I'll be honest") is
    never a commitment.
    """
    text = " ".join(sentence.split())
    if not 4 <= len(text.split()) <= 30 or text.rstrip("\"')”’ ").endswith("?"):
        return False
    low = text.lower().translate(_QUOTES)
    return any(_later(low, match) for match in _PROMISE.finditer(low))


def is_promise(sentence: str) -> bool:
    """Whether one sentence is a first-person promise of an act, whenever it happens: the tests
    of ``is_commitment`` but the one that the act comes after the current answer. For what a
    reflection commits to, which is about later by nature (a reflection answers no one): "I will
    ask how the trip went" is a promise, "You're right there in my store" and "I will remember
    that" are not."""
    text = " ".join(sentence.split())
    if not 4 <= len(text.split()) <= 30 or text.rstrip("\"')”’ ").endswith("?"):
        return False
    low = text.lower().translate(_QUOTES)
    return any(_promised(low, match) is not None for match in _PROMISE.finditer(low))


def _promised(low: str, match: re.Match[str]) -> str | None:
    """The verb phrase promised at ``match`` when it is a first-person promise of an act
    (not reported, conditional, an offer, negated, hedged away, or no act at all)."""
    before = low[:match.start()]
    clause = re.split(r"[;—]| - ", before)[-1]
    if _EMBEDDED.search(before) or before.count('"') % 2 or before.endswith("'"):
        return None
    if _CONDITION.search(clause) or _WHEN.search(clause):
        return None
    if re.search(r"\band\s*$", clause) and not _SUBJECT.search(clause):
        return None  # "let me know and I'll ...": a request to the user, then an offer
    rest = low[match.end():]
    if _NEGATED.match(rest) or _OFFER_AFTER.search(rest):
        return None
    phrase = _CLAUSE_END.split(rest)[0]
    while hedge := _HEDGE.match(phrase):
        phrase = phrase[hedge.end():]
    return None if _NO_ACT.match(phrase) else phrase


def _later(low: str, match: re.Match[str]) -> bool:
    """A promise of an act after the current answer."""
    clause = re.split(r"[;—]| - ", low[:match.start()])[-1]
    phrase = _promised(low, match)
    if phrase is None:
        return False
    if _LATER_ACT.match(phrase):
        return not _IN_ANSWER.search(phrase)
    if _FRONTED.match(clause) or _attached(phrase, _AHEAD):
        return True
    return not _DISCOURSE.match(phrase) and _attached(phrase, _AHEAD_WEAK)


def _attached(phrase: str, times: re.Pattern[str]) -> bool:
    """A time in the phrase that tells when the act happens (not part of an object or a clause)."""
    return any(not _DETACHED.search(phrase[:found.start()]) for found in times.finditer(phrase))


def commitment_in(answer: str) -> str | None:
    """The conversation rule: the first sentence of an answer that ``is_commitment``, its spaces
    collapsed. Sentences end at . ! or ? followed by a space, or at a line break, so "3.5 km"
    stays whole."""
    for sentence in _SENTENCE_END.split(answer):
        sentence = " ".join(sentence.split())
        if is_commitment(sentence):
            return sentence
    return None


def same_commitment(a: str, b: str) -> bool:
    """Commitment texts are the same when they differ only in case, spacing and end punctuation."""
    def norm(text: str) -> str:
        return " ".join(text.lower().split()).strip(" .!?")

    return norm(a) == norm(b)
