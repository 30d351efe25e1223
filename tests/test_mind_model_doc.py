"""docs/mind-model.md is exact: every worked example and table is recomputed with pmm's own code.

Each ```json example block is turned into real ``Event`` rows (checked against their kind's
declaration unless the example says ``"raw": true``), folded with ``replay``, and compared with
its ``expect``; the tables after ``<!-- check: NAME -->`` markers are compared with the
constants and functions of ``pmm.domain``.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pmm.domain import dynamics, growth, projections, temperament
from pmm.domain import events as ev
from pmm.domain.checks import check_draft
from pmm.domain.events import Draft, Event

DOC = Path(__file__).resolve().parent.parent / "docs" / "mind-model.md"
TEXT = DOC.read_text(encoding="utf-8")
BASE_TS = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ROUNDING = 5e-5  # the page gives numbers exact or to 4 decimals


def examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"^```json\n(.*?)^```", TEXT, re.S | re.M)
    return [json.loads(block) for block in blocks]


def table(name: str) -> list[list[str]]:
    """The body rows of the table right after ``<!-- check: name -->``, cells stripped."""
    match = re.search(rf"<!-- check: {re.escape(name)} -->\n((?:\|.*\n)+)", TEXT)
    assert match, f"docs/mind-model.md has no table after <!-- check: {name} -->"
    lines = match.group(1).splitlines()[2:]  # header and --- row
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


def _raw_table(name: str) -> list[list[str]]:
    """Like ``table`` but cells keep their inner spacing (only the padding is removed)."""
    match = re.search(rf"<!-- check: {re.escape(name)} -->\n((?:\|.*\n)+)", TEXT)
    assert match
    lines = match.group(1).splitlines()[2:]
    return [[cell[1:-1] for cell in line.strip()[1:-1].split("|")] for line in lines]


def build(rows: list[list[Any]], *, raw: bool = False) -> list[Event]:
    out: list[Event] = []
    for row in rows:
        ident, kind, meta = row[0], row[1], row[2]
        content = row[3] if len(row) > 3 else ""
        if isinstance(ident, str):
            first, last = (int(part) for part in ident.split("-"))
        else:
            first = last = ident
        if not raw:
            check_draft(Draft(kind, content, meta))
        for i in range(first, last + 1):
            assert i == len(out) + 1, f"event ids must run 1, 2, ... without gaps; got {i}"
            ts = (BASE_TS + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            meta_json = json.dumps(meta, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
            out.append(Event(i, ts, kind, content, meta_json, "", ""))
    return out


def _field(states: dict[str, Any], dotted: str) -> Any:
    value: Any = states
    for part in dotted.split("."):
        assert isinstance(value, dict) and part in value, f"the state has no {dotted!r}"
        value = value[part]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _same(actual: Any, expected: Any) -> bool:
    actual = _plain(actual)
    if isinstance(expected, float) or (isinstance(actual, float) and isinstance(expected, int)):
        return (isinstance(actual, int | float) and not isinstance(actual, bool)
                and math.isclose(actual, expected, rel_tol=0, abs_tol=ROUNDING))
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(actual) == len(expected)
                and all(_same(a, e) for a, e in zip(actual, expected, strict=True)))
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(_same(actual[k], expected[k]) for k in expected))
    return type(actual) is type(expected) and actual == expected


EXAMPLES = examples()


def test_the_page_has_examples_for_every_quantity() -> None:
    assert len(EXAMPLES) >= 8
    checked = {key.split(".")[0] if not key.startswith("metrics.") else key
               for example in EXAMPLES for key in example["expect"]}
    for needed in ("traits", "commitments", "metrics.ias", "metrics.gas", "metrics.trait_stability",
                   "metrics.name_stability", "metrics.commitment_reliability",
                   "metrics.reflection_depth", "metrics.commitment_success",
                   "metrics.trait_development", "metrics.engagement", "stage", "overdue",
                   "reflection_due", "temperament"):
        assert needed in checked, f"no worked example checks {needed}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["example"] for e in EXAMPLES])
def test_worked_example(example: dict[str, Any]) -> None:
    events = build(example["events"], raw=example.get("raw", False))
    states = projections.replay(events)
    # The same events folded one by one from a JSON cache give the same state.
    fold = projections.Fold()
    for event in events:
        fold = projections.Fold(json.loads(json.dumps(fold.states)))
        fold.add(event)
    assert fold.states == states
    metrics = dynamics.metrics(states)
    for key, expected in example["expect"].items():
        if key.startswith("metrics."):
            actual: Any = getattr(metrics, key.removeprefix("metrics."))
        elif key == "stage":
            actual = metrics.stage
        elif key == "overdue":
            actual = {now: dynamics.overdue(states, now) for now in expected}
        elif key == "reflection_due":
            actual = {s: dynamics.reflection_due(states, None if s == "null" else float(s))
                      for s in expected}
        elif key == "temperament.bands":
            actual = temperament.bands(states["traits"]["values"])
        elif key == "temperament.line":
            actual = temperament.prompt_line(states["traits"]["values"])
        else:
            actual = _field(states, key)
        assert _same(actual, expected), f"{key}: the page says {expected!r}, the code gives {actual!r}"


def test_constants_table() -> None:
    values = {row[0].strip("`"): float(row[1]) for row in table("constants")}
    assert values == {
        "TRAIT_DEFAULT": growth.TRAIT_DEFAULT,
        "MAX_TRAIT_STEP": growth.MAX_TRAIT_STEP,
        "RECENT_STEPS": growth.RECENT_STEPS,
        "EXPIRE_AFTER_TURNS": dynamics.EXPIRE_AFTER_TURNS,
        "RETRACTABLE": growth.RETRACTABLE,
        "KEPT_STEPS": growth.KEPT_STEPS,
    }


def test_kinds_table_names_declared_kinds_and_their_meta() -> None:
    rows = table("kinds")
    read_by_projections = {"mind_created", "mind_named", "message_received", "reflection_recorded",
                           "trait_adjusted", "commitment_opened", "commitment_closed",
                           "commitment_expired", "commitment_reopened", "reflection_retracted",
                           "commitment_dropped"}
    assert {row[0].strip("`") for row in rows} == read_by_projections
    for row in rows:
        kind = ev.KINDS[row[0].strip("`")]
        for field in re.findall(r"`([a-z_]+)`", row[2]):
            if field in ("user", "conversation"):
                continue  # values of commitment_opened's source, not fields
            assert field in kind.meta, f"{kind.name} has no meta field {field!r}"


def test_stage_table_is_the_code_s_thresholds_words_and_cadence() -> None:
    rows = table("stages")
    assert [row[0] for row in rows] == list(dynamics.STAGES)
    for stage, words, reflections, turns, ias, gas, cadence in rows:
        assert words == dynamics.STAGE_WORDS[stage]
        need = dynamics.THRESHOLDS.get(stage, (0, 0, 0.0, 0.0))
        assert (int(reflections), int(turns), float(ias), float(gas)) == need, stage
        assert int(cadence.split()[0]) == dynamics.CADENCE_SECONDS[stage], stage


def test_stage_of_examples() -> None:
    rows = table("stage_of")
    assert len(rows) >= 5
    for reflections, turns, ias, gas, stage in rows:
        got = dynamics.stage_of(int(reflections), int(turns), float(ias), float(gas))
        assert got == stage, f"stage_of({reflections}, {turns}, {ias}, {gas}) is {got}, not {stage}"


def test_conversation_rule_examples() -> None:
    rows = _raw_table("conversation")
    assert len(rows) >= 5
    for answer, opened in rows:
        expected = None if opened.strip().startswith("none") else opened.strip()
        assert dynamics.commitment_in(answer) == expected, answer


def test_same_text_examples() -> None:
    for open_text, new_text, same in _raw_table("same-text"):
        assert dynamics.same_commitment(new_text, open_text) is (same.strip() == "yes"), (open_text, new_text)


def _block(name: str) -> str:
    """The plain code block right after ``<!-- check: name -->``."""
    match = re.search(rf"<!-- check: {re.escape(name)} -->\n```\n(.*?)^```", TEXT, re.S | re.M)
    assert match, f"docs/mind-model.md has no code block after <!-- check: {name} -->"
    return match.group(1)


def _example(name: str) -> dict[str, Any]:
    return projections.replay(build(next(e for e in EXAMPLES if e["example"] == name)["events"]))


def test_trait_band_limits_are_the_code_s() -> None:
    limits = {row[0]: (row[1], row[2]) for row in table("trait-band-limits")}
    low, high = temperament.LOW_AT_MOST, temperament.HIGH_AT_LEAST
    assert limits == {"low": (f"at most {low}", "the trait's low sentence"),
                      "middle": (f"above {low} and below {high}", "nothing"),
                      "high": (f"at least {high}", "the trait's high sentence")}
    assert list(limits) == list(temperament.BANDS)
    # "two full steps from the default", as the page says
    assert math.isclose(high - growth.TRAIT_DEFAULT, 2 * growth.MAX_TRAIT_STEP)
    assert math.isclose(growth.TRAIT_DEFAULT - low, 2 * growth.MAX_TRAIT_STEP)


def test_trait_band_sentences_are_the_code_s_both_ways() -> None:
    page = [(trait, band, sentence) for trait, band, sentence in table("trait-bands")]
    code = [(trait, band, temperament.SENTENCES[trait][band])
            for trait in ev.OCEAN for band in temperament.BANDS if band in temperament.SENTENCES[trait]]
    assert page == code  # every sentence of the code is on the page, in OCEAN order, and no other
    assert {trait for trait, _, _ in page} == set(ev.OCEAN)
    assert all(band != "middle" for _, band, _ in page)  # the middle band says nothing
    for trait, band, sentence in page:  # and each is what a trait in that band gets
        value = temperament.LOW_AT_MOST if band == "low" else temperament.HIGH_AT_LEAST
        assert temperament.sentences({trait: value}) == [sentence]


def test_the_system_prompt_example_is_what_a_chat_sends() -> None:
    from pmm.services.context import system_prompt

    states = _example("a trait at a band limit gets its sentence")
    assert _block("system-prompt") == system_prompt(states) + "\n"


def test_the_stats_example_is_what_pmm_stats_prints() -> None:
    import pmm.cli.app  # noqa: F401 (the app first: it registers pmm.cli.browse's commands)
    from pmm.cli.browse import stage_lines
    from pmm.services.stats import explain

    states = _example("S2 reflects every 10 minutes")
    assert _block("stats") == "\n".join(stage_lines(explain(dynamics.metrics(states)), False)) + "\n"
