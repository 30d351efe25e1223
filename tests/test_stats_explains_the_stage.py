"""`pmm stats` says in words what IAS, GAS and the stage are: what each measures, what the next
stage needs against what the mind has (from pmm.domain.dynamics's THRESHOLDS, never a copy), and
with --explain what IAS and GAS are made of now and where docs/mind-model.md is; --json has all
of it under "explained"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import invoke, json_data

from pmm.domain import dynamics
from pmm.domain.events import Draft
from pmm.services import opening, stats


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def stage_block(out: str) -> list[str]:
    """The stage line and the indented lines under it."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Stage "))
    block = [lines[at]]
    for line in lines[at + 1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


def grown(path: Path) -> None:
    """A mind at S2 (like the one in docs/mind-model.md): 42 user turns, 6 reflections, a kept commitment
    and two small trait steps."""
    ok("--mind", str(path), "init", "--name", "Ada")
    drafts = [Draft("message_received", f"Turn {i}.", {"source": "pmm"}) for i in range(41)]
    drafts += [Draft("reflection_recorded", "A look back.", {"first_id": 1, "last_id": 42, "trigger": "cadence"})
               for _ in range(6)]
    with opening.open_write(path, lambda _m: None) as opened:
        opened.append(drafts)
        (commitment,) = opened.append([Draft("commitment_opened", "Ask how the week went", {"source": "user"})])
        (asked,) = opened.append([Draft("message_received", "My week was good.", {"source": "pmm"})])
        opened.append([
            Draft("commitment_closed", "Asked; answered.", {"commitment": commitment.id, "evidence": [asked.id]}),
            Draft("trait_adjusted", "Curious", {"trait": "openness", "delta": 0.01}),
            Draft("trait_adjusted", "Warm", {"trait": "agreeableness", "delta": 0.02})])


def test_a_new_mind_says_what_ias_gas_and_the_next_stage_are(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    ok("--mind", str(mind), "init")
    need = dict(zip(stats.NEEDS, dynamics.THRESHOLDS["S1"], strict=True))
    assert stage_block(ok("--mind", str(mind), "stats")) == [
        "Stage S0: just beginning (IAS 1.00, GAS 0.00)",
        "  IAS 1.00, identity stability: how steady its identity is (traits, name, commitments)",
        "  GAS 0.00, growth: how much it has grown (reflections, kept commitments, trait change, conversation)",
        # S1's IAS and GAS minimums are 0: always met, so not said
        f"  Next: S1 (starting to reflect) needs {need['reflections']} reflection (has 0),"
        f" {need['user turns']} user turns (has 0)",
        "  What they are made of: pmm stats --explain"]
    assert "\n  In the prompt: nothing (every trait is above 0.4 and below 0.6)\n" in ok("--mind", str(mind), "stats")


def test_a_grown_mind_shows_the_next_stage_against_what_it_has_and_its_parts(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    grown(mind)
    report = json_data(ok("--mind", str(mind), "stats", "--json"))
    metrics, explained = report["metrics"], report["explained"]
    assert report["stage"] == explained["stage"]["stage"] == "S2"
    assert explained["stage"]["reflects_every_seconds"] == dynamics.CADENCE_SECONDS["S2"]
    upcoming = explained["stage"]["next"]
    assert (upcoming["stage"], upcoming["words"]) == ("S3", dynamics.STAGE_WORDS["S3"])
    has = (metrics["reflections"], metrics["turns"], metrics["ias"], metrics["gas"])
    for need, what, at_least, got in zip(upcoming["needs"], stats.NEEDS, dynamics.THRESHOLDS["S3"], has,
                                         strict=True):
        assert (need["what"], need["at_least"]) == (what, at_least)
        assert round(need["has"], 4) == got and need["met"] is (need["has"] >= at_least)
    assert not all(n["met"] for n in upcoming["needs"])  # else the stage would be S3
    for quantity in ("ias", "gas"):
        assert explained[quantity]["value"] == metrics[quantity]
        assert {p["name"]: p["value"] for p in explained[quantity]["parts"]} == {
            name: metrics[name] for name, _ in stats.PARTS[quantity]}

    short = stage_block(ok("--mind", str(mind), "stats"))
    r, t, i, g = dynamics.THRESHOLDS["S3"]
    assert short[-2] == (f"  Next: S3 (growing steadily) needs {r} reflections (has {has[0]}), {t} user turns"
                         f" (has {has[1]}), IAS at least {i:.2f} (has {has[2]:.2f}), GAS at least {g:.2f}"
                         f" (has {has[3]:.2f})")
    full = stage_block(ok("--mind", str(mind), "stats", "--explain"))
    assert full[0] == short[0] and full[-2] == short[-2]
    parts = [line.strip() for line in full if line.startswith("    ")]
    assert parts == [f"{p['name'].replace('_', ' ')} {p['value']:.2f}: {p['measures']}"
                     for q in ("ias", "gas") for p in explained[q]["parts"]]
    assert full[-1] == f"  Definitions: {explained['definitions']}"
    assert Path(explained["definitions"]).read_text().count("## Growth (GAS)") == 1


def test_every_part_of_the_metrics_is_explained() -> None:
    """A part added to pmm.domain.dynamics.Metrics needs its words here, or stats would hide it."""
    counts = {"ias", "gas", "reflections", "turns", "stage"}
    floats = set(dynamics.Metrics._fields) - counts
    described = [name for parts in stats.PARTS.values() for name, _ in parts]
    assert sorted(described) == sorted(floats)


def render(metrics: dynamics.Metrics) -> list[str]:
    import pmm.cli.app  # noqa: F401 (the app first: it registers pmm.cli.browse's commands)
    from pmm.cli.browse import stage_lines

    return stage_lines(stats.explain(metrics), False)


def base() -> dynamics.Metrics:
    from pmm.domain import projections

    return dynamics.metrics(projections.replay([]))


def test_the_last_stage_has_no_next() -> None:
    explained: dict[str, Any] = stats.explain(base()._replace(stage="S4"))
    assert explained["stage"]["next"] is None
    assert render(base()._replace(stage="S4"))[3] == "  S4 is the last stage."


def test_a_value_just_below_a_minimum_never_reads_as_met() -> None:
    r, t, i, g = dynamics.THRESHOLDS["S2"]
    just_below = base()._replace(stage="S1", reflections=r, turns=1000, ias=i - 0.00003, gas=0.9)
    assert render(just_below)[3] == (
        f"  Next: S2 (reflecting consistently) needs {r} reflections (has {r}), {t} user turns (has 1,000),"
        f" IAS at least {i:.2f} (has {i - 0.0001:.4f}), GAS at least {g:.2f} (has 0.90)")
