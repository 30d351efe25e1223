"""How the five OCEAN traits shape the way the mind answers: each trait's value falls in a band
(low, middle or high) and each low or high band is one instruction in the system prompt.

docs/mind-model.md ("Traits in the prompt") is the definition; tests/test_mind_model_doc.py
checks that its band table and sentences are these, both ways. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pmm.domain.events import OCEAN
from pmm.domain.growth import TRAIT_DEFAULT

Band = Literal["low", "middle", "high"]
BANDS: tuple[Band, ...] = ("low", "middle", "high")

# Two full steps (2 x MAX_TRAIT_STEP) the same way from the default reach a band: one reflection
# never changes how the mind speaks, two that agree do.
LOW_AT_MOST = 0.4
HIGH_AT_LEAST = 0.6

# One imperative each, short because the embedded model's whole window is 2,048 tokens. The
# middle band says nothing: "be moderately curious" costs tokens and changes no answer.
SENTENCES: dict[str, dict[Band, str]] = {
    "openness": {
        "low": "Be practical: stick to familiar, proven ideas and plain examples.",
        "high": "Be curious: offer unusual ideas and connections.",
    },
    "conscientiousness": {
        "low": "Be easygoing: give a quick, rough answer rather than an exhaustive one.",
        "high": "Be thorough: check details and do what you said you would.",
    },
    "extraversion": {
        "low": "Be reserved: answer briefly and do not chatter.",
        "high": "Be outgoing: sound lively and ask the user about themselves.",
    },
    "agreeableness": {
        "low": "Be frank: say plainly when you think the user is wrong.",
        "high": "Be warm: encourage the user and look for common ground.",
    },
    "neuroticism": {
        "low": "Be calm: stay steady and reassuring, even when the user is upset.",
        "high": "Be cautious: point out risks and say when you are unsure.",
    },
}
HEADING = "Your temperament:"


def band(value: float) -> Band:
    """The band of one trait value; anything that is not a finite number counts as the middle."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "middle"
    if value <= LOW_AT_MOST:
        return "low"
    if value >= HIGH_AT_LEAST:
        return "high"
    return "middle"


def bands(values: Mapping[str, float]) -> dict[str, Band]:
    """Each OCEAN trait's band, in OCEAN order (a trait missing from ``values`` is at the default)."""
    return {trait: band(values.get(trait, TRAIT_DEFAULT)) for trait in OCEAN}


def sentences(values: Mapping[str, float]) -> list[str]:
    """The instructions for these trait values, in OCEAN order: one per trait not in the middle."""
    return [SENTENCES[trait][b] for trait, b in bands(values).items() if b != "middle"]


def prompt_line(values: Mapping[str, float]) -> str | None:
    """The system prompt's line about temperament, or None when every trait is in the middle."""
    said = sentences(values)
    return " ".join([HEADING, *said]) if said else None
