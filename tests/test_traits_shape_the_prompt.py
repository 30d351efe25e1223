"""Traits change how the mind is told to answer: a trait that crosses into its low or high band
puts that band's sentence (docs/mind-model.md, "Traits in the prompt") into the system prompt a
chat sends, and no number; a trait still in the middle band changes nothing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import invoke, json_data
from provider_servers import FakeServer

from pmm.domain import temperament
from pmm.domain.events import Draft
from pmm.services import opening

CURIOUS = "Be curious: offer unusual ideas and connections."
RESERVED = "Be reserved: answer briefly and do not chatter."


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def step(mind: Path, trait: str, delta: float) -> None:
    """One trait_adjusted event, as a reflection writes it."""
    with opening.open_write(mind, lambda _m: None) as opened:
        opened.append([Draft("trait_adjusted", "a reflection said so", {"trait": trait, "delta": delta})])


def system_sent(mind: Path, server: FakeServer) -> str:
    """The system prompt that one real `pmm chat -m` turn sent: its system message up to the
    context (the prompt's lines are joined by single line breaks, the context follows a blank line)."""
    ok("--mind", str(mind), "chat", "-m", "What should we talk about?")
    body = server.requests[-1].body
    assert body["messages"][0]["role"] == "system"
    return body["messages"][0]["content"].split("\n\n")[0]


def test_a_trait_crossing_a_band_limit_changes_the_prompt_a_chat_sends(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    with FakeServer("openai", text="Let us talk about rivers.") as server:
        ok("--mind", str(mind), "init", "--name", "Ada")
        ok("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
           "--base-url", server.url, "--use")
        new = system_sent(mind, server)
        assert new.startswith("You are Ada, a persistent mind.")
        assert temperament.HEADING not in new and "0.50" not in new and "openness" not in new

        step(mind, "openness", 0.05)  # 0.55: still the middle band
        step(mind, "extraversion", -0.05)  # 0.45
        one_step = system_sent(mind, server)
        assert one_step == new  # no temperament line yet

        step(mind, "openness", 0.05)  # 0.6: high
        curious = system_sent(mind, server)
        assert curious == f"{new}\n{temperament.HEADING} {CURIOUS}"

        step(mind, "extraversion", -0.05)  # 0.4: low; OCEAN order puts it after openness
        both = system_sent(mind, server)
        assert both == f"{new}\n{temperament.HEADING} {CURIOUS} {RESERVED}"
        assert "0.6" not in both and "0.4" not in both  # sentences, never the numbers

        step(mind, "openness", -0.05)  # back to 0.55: the middle again
        assert system_sent(mind, server) == f"{new}\n{temperament.HEADING} {RESERVED}"

    # and pmm stats says what the traits put in the prompt
    assert f"\n  In the prompt: {RESERVED}\n" in ok("--mind", str(mind), "stats")
    shown = json_data(ok("--mind", str(mind), "stats", "--json"))["temperament"]
    assert shown["sentences"] == [RESERVED]
    assert shown["bands"] == {"openness": "middle", "conscientiousness": "middle", "extraversion": "low",
                              "agreeableness": "middle", "neuroticism": "middle"}


@pytest.mark.parametrize(("value", "band"), [
    (0.0, "low"), (0.4, "low"), (0.400001, "middle"), (0.5, "middle"), (0.599999, "middle"),
    (0.6, "high"), (1.0, "high"), (math.nan, "middle"), (math.inf, "middle")])
def test_band_limits(value: float, band: str) -> None:
    assert temperament.band(value) == band


def test_every_low_or_high_band_has_one_short_sentence() -> None:
    for trait, by_band in temperament.SENTENCES.items():
        assert set(by_band) == {"low", "high"}, trait
    everything = {t: (0.0 if i % 2 else 1.0) for i, t in enumerate(temperament.SENTENCES)}
    line = temperament.prompt_line(everything)
    assert line is not None and len(temperament.sentences(everything)) == 5
    from pmm.services.tokens import estimate_tokens

    assert estimate_tokens(line) < 120  # the most the line can cost in a 2,048-token window
    assert temperament.prompt_line({}) is None  # missing traits are at the default: the middle
