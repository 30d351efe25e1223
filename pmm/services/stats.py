"""``pmm stats``: the mind in plain English (stage, traits, reflections, commitments, usage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pmm.domain import dynamics, temperament
from pmm.domain import events as ev
from pmm.domain.states import ActivityState, States
from pmm.ledger import folded
from pmm.ledger.store import Ledger

span = dynamics.span  # the one duration formatter (domain/dynamics.py), for the CLI


def stats(mind: Ledger) -> dict[str, Any]:
    """Counts so far, the mind's stage, traits, reflections, commitments and model usage, from
    the projections (cache plus newer events, no writes)."""
    states, cache = folded.state(mind)
    activity, identity = states["activity"], states["identity"]
    by_kind: dict[str, int] = activity["by_kind"]
    head_id, head = mind.head()
    metrics = dynamics.metrics(states)
    return {
        "mind": str(mind.path),
        "mind_id": mind.mind_id,
        "name": identity["name"],
        "created_at": identity["created_at"],
        "events": activity["events"],
        "head_id": head_id,
        "head": head,
        "sessions": by_kind.get(ev.SESSION_STARTED.name, 0),
        "messages": by_kind.get(ev.MESSAGE_RECEIVED.name, 0),
        "responses": by_kind.get(ev.RESPONSE_SENT.name, 0),
        "observations": by_kind.get(ev.OBSERVATION_RECORDED.name, 0),
        "by_kind": dict(sorted(by_kind.items())),
        "first_ts": activity["first_ts"],
        "last_ts": activity["last_ts"],
        **said_span(activity),
        "file_bytes": mind.path.stat().st_size,
        "projection_cache": cache.state,
        "stage": metrics.stage,
        "stage_words": dynamics.STAGE_WORDS[metrics.stage],
        "metrics": metrics.as_json(),
        "explained": explain(metrics),
        "traits": {t: states["traits"]["values"][t] for t in ev.OCEAN},  # OCEAN order
        "temperament": {"bands": temperament.bands(states["traits"]["values"]),
                        "sentences": temperament.sentences(states["traits"]["values"]),
                        "low_at_most": temperament.LOW_AT_MOST, "high_at_least": temperament.HIGH_AT_LEAST},
        "reflections": reflections(states),
        "commitments": commitments(states),
        "usage": usage(states),
        "standing": standing(states),
    }


# What IAS, GAS and their parts measure, in words; the formulas and numbers are pmm.domain.dynamics's
# alone (docs/mind-model.md prints them). A test fails when Metrics gains a part not named here.
MEASURES = {
    "ias": ("identity stability", "how steady its identity is (traits, name, commitments)"),
    "gas": ("growth", "how much it has grown (reflections, kept commitments, trait change, conversation)"),
}
PARTS: dict[str, tuple[tuple[str, str], ...]] = {
    "ias": (("trait_stability", "how small its recent trait steps were (1: no trait moved)"),
            ("name_stability", "how well it kept its name (1: one name; less with each new name)"),
            ("commitment_reliability", "commitments kept against those that lapsed (1: none lapsed)")),
    "gas": (("reflection_depth", "how often it has reflected (1: plenty)"),
            ("commitment_success", "of its commitments kept or lapsed, the share kept"),
            ("trait_development", "how far its traits have moved from where they started"),
            ("engagement", "how much the user has talked with it (1: plenty)")),
}
NEEDS = ("reflections", "user turns", "IAS", "GAS")  # the columns of THRESHOLDS, in order


def explain(metrics: dynamics.Metrics) -> dict[str, Any]:
    """IAS, GAS and the stage in words: what each measures, its parts now, and what the next
    stage needs against what the mind has (None at the last stage)."""
    found: dict[str, Any] = {}
    for quantity, (name, measures) in MEASURES.items():
        found[quantity] = {
            "value": round(getattr(metrics, quantity), 4), "name": name, "measures": measures,
            "parts": [{"name": part, "value": round(getattr(metrics, part), 4), "measures": says}
                      for part, says in PARTS[quantity]]}
    stage = metrics.stage
    at = dynamics.STAGES.index(stage)
    following = dynamics.STAGES[at + 1] if at + 1 < len(dynamics.STAGES) else None
    upcoming = None
    if following is not None:
        has = (metrics.reflections, metrics.turns, metrics.ias, metrics.gas)
        needs = [{"what": what, "at_least": need, "has": got, "met": got >= need}  # unrounded: met is exact
                 for what, need, got in zip(NEEDS, dynamics.THRESHOLDS[following], has, strict=True)]
        upcoming = {"stage": following, "words": dynamics.STAGE_WORDS[following], "needs": needs}
    found["stage"] = {"stage": stage, "words": dynamics.STAGE_WORDS[stage],
                      "reflects_every_seconds": dynamics.CADENCE_SECONDS[stage], "next": upcoming}
    found["definitions"] = definitions()
    return found


def definitions() -> str:
    """Where docs/mind-model.md, which defines every quantity, is on this machine: where
    install.sh puts it, else in the source tree pmm runs from."""
    import platformdirs

    # install.sh writes to $XDG_DATA_HOME (else ~/.local/share), the parent of pmm's data dir on Linux
    for share in (Path(platformdirs.user_data_dir("pmm")).parent, Path.home() / ".local" / "share"):
        if (share / "doc" / "pmm" / "mind-model.md").is_file():
            return str(share / "doc" / "pmm" / "mind-model.md")
    source = Path(__file__).resolve().parents[2] / "docs" / "mind-model.md"
    if source.is_file():
        return str(source)
    return "docs/mind-model.md in pmm's source"


def said_span(activity: ActivityState) -> dict[str, Any]:
    """When the things in the mind were said, as opposed to recorded (``first_ts``, ``last_ts``):
    imported events count at their original time. ``first_said`` is the earlier of the first
    recorded event and the oldest import, ``last_said`` the later of the last recorded event and
    the newest import; ``backdated`` is how many events carry an original time."""
    first, last, low, high = (activity[k] for k in ("first_ts", "last_ts", "said_from", "said_to"))
    return {"first_said": min(first, low) if first and low else first,
            "last_said": max(last, high) if last and high else last,
            "backdated": activity["backdated"]}


def standing(states: States) -> dict[str, Any]:
    """The standing memory at a glance: the persona (its event id and length) and how many
    notes are pinned."""
    state = states["standing"]
    persona = state["persona"]
    return {"persona": {"id": persona["id"], "chars": len(persona["text"])} if persona else None,
            "pinned": len(state["pinned"])}


def reflections(states: States) -> dict[str, Any]:
    from pmm.services.reflection import seconds_since

    state = states["reflections"]
    latest = state["latest"]
    return {"count": state["count"], "latest_id": latest["id"] if latest else None,
            "latest_ts": latest["ts"] if latest else None,
            "seconds_since_latest": round(seconds_since(latest["ts"]), 3) if latest else None,
            "turns_since": state["turns_since"], "retracted": state["retracted"]}


def commitments(states: States) -> dict[str, Any]:
    """Counts by status now, and success: kept over kept plus lapsed (None before any was
    either); see services/commitments.py ``counts``."""
    from pmm.services.commitments import counts

    return counts(states["commitments"])


def usage(states: States) -> list[dict[str, Any]]:
    """Answers, tokens and latency per ``provider:model``, with a cost where the mind's model
    configuration prices a model with that provider and model (per million tokens)."""
    from pmm.services.models import known

    prices: dict[str, tuple[float, float]] = {}
    for model in known(states).values():
        if model.price_in is not None or model.price_out is not None:
            prices.setdefault(model.spec.label, (model.price_in or 0.0, model.price_out or 0.0))
    rows = []
    for label, row in sorted(states["usage"].items()):
        price = prices.get(label)
        cost = None if price is None else round(
            (row["tokens_in"] * price[0] + row["tokens_out"] * price[1]) / 1_000_000, 6)
        rows.append({"model": label, **row,
                     "average_latency_ms": round(row["latency_ms"] / row["answers"]) if row["answers"] else 0,
                     "cost": cost})
    return rows
