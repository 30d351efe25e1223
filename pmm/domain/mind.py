"""The mind's dynamics as pure functions of its projections: identity stability (IAS), growth
(GAS), the stage S0-S4, the reflection cadence, and which commitments are overdue.

docs/mind-model.md is the one definition of each quantity; this module is its implementation
and a test recomputes the document's worked examples with it. No clock here: callers pass the
time ("now" as a ledger timestamp, or seconds since the last reflection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pmm.domain.projections import MAX_TRAIT_STEP, TRAIT_DEFAULT

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


@dataclass(frozen=True)
class Metrics:
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

    def as_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def metrics(states: dict[str, Any]) -> Metrics:
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


def reflection_due(states: dict[str, Any], seconds_since_last: float | None) -> tuple[bool, str]:
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


def overdue(states: dict[str, Any], now_ts: str) -> list[tuple[int, str]]:
    """Open commitments to expire at ``now_ts``: past their due time, or open for
    ``EXPIRE_AFTER_TURNS`` live user messages (imported ones do not age a commitment)."""
    found = []
    turns = states["commitments"]["turns"]
    for key, entry in sorted(states["commitments"]["open"].items(), key=lambda kv: int(kv[0])):
        if entry.get("due") and entry["due"] <= now_ts:
            found.append((int(key), f"its due time {entry['due'][:16].replace('T', ' ')} UTC passed"))
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


_PROMISE = re.compile(r"\bI(?: will|'ll|’ll| promise to| commit to)\b(?! not\b| never\b)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def commitment_in(answer: str) -> str | None:
    """The conversation rule: the first statement (not a question) of an answer that promises in
    the first person future ("I will ...", "I'll ...", "I promise to ...", "I commit to ...", but
    not "I will not" or "I'll never") and has 4 to 30 words. Sentences end at . ! or ? followed
    by a space, or at a line break, so "3.5 km" stays whole."""
    for sentence in _SENTENCE_END.split(answer):
        sentence = " ".join(sentence.split())
        if sentence.endswith("?") or not _PROMISE.search(sentence):
            continue
        if 4 <= len(sentence.split()) <= 30:
            return sentence
    return None


def same_commitment(a: str, b: str) -> bool:
    """Commitment texts are the same when they differ only in case, spacing and end punctuation."""
    def norm(text: str) -> str:
        return " ".join(text.lower().split()).strip(" .!?")

    return norm(a) == norm(b)
