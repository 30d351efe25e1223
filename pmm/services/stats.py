"""``pmm stats``: the mind in plain English (stage, traits, reflections, commitments, usage)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict, cast

from pmm.domain import costs, dynamics, temperament
from pmm.domain import events as ev
from pmm.domain.costs import CostJson
from pmm.domain.states import ActivityState, ModelFields, States
from pmm.ledger import folded
from pmm.ledger.store import Ledger

if TYPE_CHECKING:
    from pmm.services.commitments import Counts
    from pmm.services.timetravel import Past, PointJson

span = dynamics.span  # the one duration formatter (domain/dynamics.py), for the CLI


class Part(TypedDict):
    name: str
    value: float
    measures: str


class Quantity(TypedDict):
    value: float
    name: str
    measures: str
    parts: list[Part]


class Need(TypedDict):
    what: str
    at_least: int | float  # reflections and user turns count, IAS and GAS are fractions
    has: int | float
    met: bool


class NextStage(TypedDict):
    stage: str
    words: str
    needs: list[Need]


class Stage(TypedDict):
    stage: str
    words: str
    reflects_every_seconds: int
    next: NextStage | None  # None at the last stage


class Explained(TypedDict):
    ias: Quantity
    gas: Quantity
    stage: Stage
    definitions: str


class SaidSpan(TypedDict):
    first_said: str | None
    last_said: str | None
    backdated: int


class Temperament(TypedDict):
    bands: dict[str, temperament.Band]
    sentences: list[str]
    low_at_most: float
    high_at_least: float


class Persona(TypedDict):
    id: int
    chars: int


class Standing(TypedDict):
    persona: Persona | None
    pinned: int


class Reflections(TypedDict):
    count: int
    latest_id: int | None
    latest_ts: str | None
    seconds_since_latest: float | None
    turns_since: int
    retracted: int


class Used(TypedDict):
    """One row of the usage projection, as folded."""

    answers: int
    reflections: NotRequired[int]  # not in usage folded before pmm counted reflections
    tokens_in: int  # the whole prompts, cached parts included
    tokens_out: int
    latency_ms: int
    cache_read: NotRequired[int]  # of tokens_in, read from the provider's prompt cache
    cache_write: NotRequired[int]  # of tokens_in, written to it
    estimated: NotRequired[int]  # answers and reflections whose counts pmm estimated


class Usage(Used):
    """``model`` first, then the usage projection's counts, then these two."""

    model: str  # provider:model
    average_latency_ms: int
    # per currency, what the answers and reflections cost and what caching saved: at the prices
    # each recorded, and for those that recorded none (made before pmm recorded prices) at the
    # mind's prices now for a model with that provider and model; empty: nothing was priced
    cost: list[CostJson]


class Stats(SaidSpan):
    """``pmm stats --json``, key for key in this order (``SaidSpan``'s keys come after ``last_ts``)."""

    mind: str
    mind_id: str
    name: str | None
    created_at: str | None
    events: int
    head_id: int
    head: str
    sessions: int
    messages: int
    responses: int
    observations: int
    by_kind: dict[str, int]
    first_ts: str | None
    last_ts: str | None
    file_bytes: int
    projection_cache: str  # CacheStatus.state
    stage: str
    stage_words: str
    metrics: dynamics.MetricsJson  # each quantity, and the stage
    explained: Explained
    traits: dict[str, float]  # OCEAN order
    temperament: Temperament
    reflections: Reflections
    commitments: Counts
    usage: list[Usage]
    standing: Standing
    as_of: NotRequired[PointJson]  # with --as-of: the event it stood at, and the replay's start


def stats(mind: Ledger, then: Past | None = None) -> Stats:
    """Counts so far, the mind's stage, traits, reflections, commitments and model usage, from
    the projections (cache plus newer events, no writes); with ``then``, as they were at its
    point (``mind`` is then a view that ends there, pmm.services.timetravel)."""
    if then is None:
        states, cache = folded.state(mind)
        status, now = cache.state, None
    else:
        states, status, now = then.states, "as-of", then.point.ts
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
        "projection_cache": status,
        "stage": metrics.stage,
        "stage_words": dynamics.STAGE_WORDS[metrics.stage],
        "metrics": metrics.as_json(),
        "explained": explain(metrics),
        "traits": {t: states["traits"]["values"][t] for t in ev.OCEAN},  # OCEAN order
        "temperament": {"bands": temperament.bands(states["traits"]["values"]),
                        "sentences": temperament.sentences(states["traits"]["values"]),
                        "low_at_most": temperament.LOW_AT_MOST, "high_at_least": temperament.HIGH_AT_LEAST},
        "reflections": reflections(states, now),
        "commitments": commitments(states),
        "usage": usage(states),
        "standing": standing(states),
        **({"as_of": then.as_json()} if then is not None else {}),  # type: ignore[typeddict-item]
    }


# What IAS, GAS and their parts measure, in words; the formulas and numbers are pmm.domain.dynamics's
# alone (docs/mind-model.md prints them). A test fails when Metrics gains a part not named here.
money, saving = costs.money, costs.saving  # for the CLI, which reads the domain through services
BUILTIN = "embedded"  # pmm.services.models.BUILTIN: the built-in model, which has no prices

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


def explain(metrics: dynamics.Metrics) -> Explained:
    """IAS, GAS and the stage in words: what each measures, its parts now, and what the next
    stage needs against what the mind has (None at the last stage)."""
    found: dict[str, Quantity] = {}
    for quantity, (name, measures) in MEASURES.items():
        found[quantity] = {
            "value": round(getattr(metrics, quantity), 4), "name": name, "measures": measures,
            "parts": [{"name": part, "value": round(getattr(metrics, part), 4), "measures": says}
                      for part, says in PARTS[quantity]]}
    stage = metrics.stage
    at = dynamics.STAGES.index(stage)
    following = dynamics.STAGES[at + 1] if at + 1 < len(dynamics.STAGES) else None
    upcoming: NextStage | None = None
    if following is not None:
        has = (metrics.reflections, metrics.turns, metrics.ias, metrics.gas)
        needs: list[Need] = [{"what": what, "at_least": need, "has": got, "met": got >= need}  # unrounded: met is exact
                 for what, need, got in zip(NEEDS, dynamics.THRESHOLDS[following], has, strict=True)]
        upcoming = {"stage": following, "words": dynamics.STAGE_WORDS[following], "needs": needs}
    return {"ias": found["ias"], "gas": found["gas"],
            "stage": {"stage": stage, "words": dynamics.STAGE_WORDS[stage],
                      "reflects_every_seconds": dynamics.CADENCE_SECONDS[stage], "next": upcoming},
            "definitions": definitions()}


def definitions() -> str:
    """Where docs/mind-model.md, which defines every quantity, is on this machine: where
    install.sh puts it, else in the source tree pmm runs from."""
    from pmm.paths import data_dir

    # install.sh writes to $XDG_DATA_HOME (else ~/.local/share), the parent of pmm's data dir on Linux
    for share in (data_dir().parent, Path.home() / ".local" / "share"):
        if (share / "doc" / "pmm" / "mind-model.md").is_file():
            return str(share / "doc" / "pmm" / "mind-model.md")
    source = Path(__file__).resolve().parents[2] / "docs" / "mind-model.md"
    if source.is_file():
        return str(source)
    return "docs/mind-model.md in pmm's source"


def said_span(activity: ActivityState) -> SaidSpan:
    """When the things in the mind were said, as opposed to recorded (``first_ts``, ``last_ts``):
    imported events count at their original time. ``first_said`` is the earlier of the first
    recorded event and the oldest import, ``last_said`` the later of the last recorded event and
    the newest import; ``backdated`` is how many events carry an original time."""
    first, last, low, high = (activity[k] for k in ("first_ts", "last_ts", "said_from", "said_to"))
    return {"first_said": min(first, low) if first and low else first,
            "last_said": max(last, high) if last and high else last,
            "backdated": activity["backdated"]}


def standing(states: States) -> Standing:
    """The standing memory at a glance: the persona (its event id and length) and how many
    notes are pinned."""
    state = states["standing"]
    persona = state["persona"]
    return {"persona": {"id": persona["id"], "chars": len(persona["text"])} if persona else None,
            "pinned": len(state["pinned"])}


def reflections(states: States, now: str | None = None) -> Reflections:
    """The reflections at a glance; ``now`` (a ledger timestamp, default the present) is what
    ``seconds_since_latest`` counts to (``--as-of``: the point's time)."""
    from datetime import UTC, datetime

    from pmm.services.dates import TS_FORMAT, seconds_since

    state = states["reflections"]
    latest = state["latest"]
    moment = datetime.strptime(now, TS_FORMAT).replace(tzinfo=UTC) if now else None
    return {"count": state["count"], "latest_id": latest["id"] if latest else None,
            "latest_ts": latest["ts"] if latest else None,
            "seconds_since_latest": round(seconds_since(latest["ts"], moment), 3) if latest else None,
            "turns_since": state["turns_since"], "retracted": state["retracted"]}


def commitments(states: States) -> Counts:
    """Counts by status now, and success: kept over kept plus lapsed (None before any was
    either); see services/commitments.py ``counts``."""
    from pmm.services.commitments import counts

    return counts(states["commitments"])


def prices(states: States) -> dict[str, costs.Prices]:
    """The prices per ``provider:model``: of the first model with that label that has prices, in
    ``pmm.services.models.known``'s order (the built-in model, which has none, first; then by
    name; then a model only a switch names). Read from the state here: ``pmm stats`` need not
    import the model and provider machinery (a test holds this to ``known``)."""
    fields = states["models"]["models"]
    found: list[ModelFields] = [spec for name, spec in sorted(fields.items()) if name != BUILTIN]
    names = set(fields) | {BUILTIN}
    for switched in states["models"]["active"].values():
        if switched is not None and switched["name"] not in names:
            names.add(switched["name"])
            found.append(switched)
    priced: dict[str, costs.Prices] = {}
    for spec in found:
        if spec.get("price_in") is None and spec.get("price_out") is None:
            continue
        priced.setdefault(f"{spec['provider']}:{spec['model']}", costs.Prices(
            spec.get("price_in") or 0.0, spec.get("price_out") or 0.0, spec.get("price_cache_read"),
            spec.get("price_cache_write"), costs.currency_of(spec.get("currency"))))
    return priced


def usage(states: States) -> list[Usage]:
    """Answers, tokens (with the prompt cache's share) and latency per ``provider:model``, and
    the cost per currency (``Usage.cost``)."""
    prices_now = prices(states)
    rows: list[Usage] = []
    for label, kept in sorted(states["usage"].items()):
        spent = {currency: list(pair) for currency, pair in kept["spent"].items()}
        tokens_in, tokens_out, read, write = kept["unpriced"]
        if label in prices_now and (tokens_in or tokens_out):
            now = prices_now[label]
            cost = now.cost(tokens_in, tokens_out, read, write)
            before = spent.get(now.currency, [0.0, 0.0])
            spent[now.currency] = [before[0] + cost, before[1] + now.uncached(tokens_in, tokens_out) - cost]
        row = cast(Used, {k: v for k, v in kept.items() if k not in ("spent", "unpriced")})
        rows.append({"model": label, **row,
                     "average_latency_ms": round(row["latency_ms"] / row["answers"]) if row["answers"] else 0,
                     "cost": [{"amount": round(c, 8), "saved": round(s, 8), "currency": currency}
                              for currency, (c, s) in sorted(spent.items())]})
    return rows
