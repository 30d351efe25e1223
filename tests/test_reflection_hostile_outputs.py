"""A scripted conversation with crafted (valid, invalid, hostile) reflection outputs from a
loopback model, and the exact projections docs/mind-model.md says it must replay to; in-process.
(The embedded model's own reflection is smoke-tested in test_reflection_and_commitments.py, the
autonomous loop on a fake in test_autonomous_run.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke, json_data
from provider_servers import FakeServer


def pmm_json(mind: Path, *args: str):
    result = invoke("--mind", str(mind), *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json_data(result.stdout)


def test_hostile_outputs_are_contained_and_the_projections_are_exact(mind: Path) -> None:
    with FakeServer("openai", text="Noted.") as server:
        pmm_json(mind, "model", "add", "srv", "openai-compatible:test-model", "--base-url", server.url, "--use")
        first = pmm_json(mind, "chat", "-m", "I will be travelling next week, a trip to Rome.")
        m1 = first["message_id"]
        server.text = json.dumps({
            "reflection": "The user travels soon.",
            "traits": [{"trait": "openness", "delta": 0.04, "evidence": [m1], "reason": "new places"},
                       {"trait": "neuroticism", "delta": -9, "evidence": [m1], "reason": "out of range"},
                       {"trait": "agreeableness", "delta": 0.02, "evidence": [m1], "reason": "past the limit"}],
            "open": [{"text": "I will ask how the trip went"}, {"text": "x" * 5000}],
            "close": [{"commitment": 77, "evidence": [m1], "statement": "an unknown one"}],
        })
        one = pmm_json(mind, "reflect")
        assert [c["kind"] for c in one["changes"]] == ["trait_adjusted", "commitment_opened"]
        commitment = one["changes"][-1]["id"]
        assert one["changes"][0]["id"] == one["reflection"]["id"] + 1  # one batch, in order
        second = pmm_json(mind, "chat", "-m", "The trip went well, thanks for asking.")
        server.text = json.dumps({
            "reflection": "The trip went well. " + "y" * 100_000,
            "traits": [{"trait": "extraversion", "delta": "lots", "evidence": [m1], "reason": "not a number"},
                       {"trait": "openness", "delta": 0.05, "evidence": [9999], "reason": "no such event"}],
            "open": [{"text": "I will " + "x" * 5000}],
            "close": [{"commitment": commitment, "evidence": [second["message_id"]], "statement": "They told me."}],
            "name": "Robert'); DROP TABLE events;--",
        })
        two = pmm_json(mind, "reflect")
    assert [c["kind"] for c in two["changes"]] == ["commitment_closed"]
    assert two["changes"][0]["meta"]["evidence"] == [second["message_id"]]
    assert len(two["reflection"]["text"]) == 4000
    rejected = " | ".join(one["rejected"] + two["rejected"])
    for needle in ("traits[1].delta", "traits: 1 past the first 2 ignored", "open: 1 past the first 1 ignored",
                   "#77 is not an open", "traits[0].delta", "traits[1].evidence: #9999 not among the events shown",
                   "open[0].text", "name: not a usable name", "cut to 4000"):
        assert needle in rejected, needle
    stats = pmm_json(mind, "stats")
    assert stats["traits"] == {"openness": 0.54, "conscientiousness": 0.5, "extraversion": 0.5,
                               "agreeableness": 0.5, "neuroticism": 0.5}
    metrics = stats["metrics"]
    # docs/mind-model.md: trait_stability = 1 - mean(0.04) / 0.05
    assert metrics["trait_stability"] == pytest.approx(1 - 0.04 / 0.05, abs=1e-4)
    assert metrics["commitment_reliability"] == 1.0 and metrics["name_stability"] == 1.0
    assert metrics["ias"] == pytest.approx(0.5 * (1 - 0.04 / 0.05) + 0.25 + 0.25, abs=1e-4)
    assert metrics["gas"] == pytest.approx(0.3 * 2 / 20 + 0.3 * 1.0 + 0.2 * 0.04 + 0.2 * 2 / 200, abs=1e-4)
    assert stats["stage"] == "S0" and metrics["reflections"] == 2 and metrics["turns"] == 2
    listing = pmm_json(mind, "commitments", "list")
    assert (listing["opened"], listing["closed"], listing["expired"], listing["open"]) == (1, 1, 0, 0)
    report = pmm_json(mind, "verify", "--deep")  # the cache equals a full replay
    assert report["ok"]

