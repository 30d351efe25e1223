"""The shape of every projection's state, for mypy: ``states["traits"]["values"]`` is checked.

States are plain JSON values (the ledger caches them as JSON, keyed by the projections'
versions), so each is a TypedDict: a dict at run time, equal to itself read back from JSON.
Changing a shape here means bumping that projection's ``version`` (pmm.domain.projections).
"""

# No ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated
# annotations only, and tests/test_types.py checks folded states against __required_keys__.
from typing import Literal, NotRequired, TypedDict

Status = Literal["closed", "expired", "dropped"]  # a commitment that is not open


class IdentityState(TypedDict):
    name: str | None
    created_at: str | None
    renamed: int
    names: int


class ActivityState(TypedDict):
    events: int
    by_kind: dict[str, int]
    first_ts: str | None
    last_ts: str | None
    backdated: int
    said_from: str | None
    said_to: str | None


class ModelFields(TypedDict):
    """A model as a model_added event's meta holds it, without its name (the key it is stored
    under); a model_switched event's meta holds the same first fields."""
    provider: str
    model: str
    base_url: NotRequired[str]
    api_key_env: NotRequired[str]
    context_window: NotRequired[int]
    price_in: NotRequired[float]
    price_out: NotRequired[float]
    price_cache_read: NotRequired[float]
    price_cache_write: NotRequired[float]
    currency: NotRequired[str]
    max_cost: NotRequired[float]


class Switched(ModelFields):
    """A model_switched event's meta without its role (the key it is stored under)."""
    name: str
    model_hash: NotRequired[str]
    model_version: NotRequired[str]


class ModelsState(TypedDict):
    models: dict[str, ModelFields]
    active: dict[str, Switched | None]  # by role (events.ROLES)
    switches: int


class UsageRow(TypedDict):
    answers: int
    reflections: int
    tokens_in: int  # the whole prompts, cached parts included
    tokens_out: int
    latency_ms: int
    cache_read: int
    cache_write: int
    estimated: int  # answers and reflections whose counts pmm estimated
    # by currency: [cost, saved by caching], of the events that recorded their prices
    spent: dict[str, list[float]]
    # tokens in, out, cache read, cache write of the events that recorded no prices
    unpriced: list[int]


UsageState = dict[str, UsageRow]  # by "provider:model"
# What each model (by name) spent per UTC day ("YYYY-MM-DD"), by currency: the daily caps
SpendState = dict[str, dict[str, dict[str, float]]]


class TraitsPublic(TypedDict):
    values: dict[str, float]  # by OCEAN trait
    adjustments: int
    recent: list[float]
    moved: float


# One kept trait step, a JSON array: [event id, reflection id or 0, trait, bounded step].
TraitStep = list[int | str | float]


class Noted(TypedDict):
    """One of the last reflections in a projection's window (ts and last_id: Reflections only)."""
    id: int
    ts: NotRequired[str]
    last_id: NotRequired[int | None]
    retracted: NotRequired[bool]


class TraitsState(TraitsPublic):
    base: TraitsPublic
    steps: list[TraitStep]
    reflections: list[Noted]
    undone: int
    refused: int


class Commitment(TypedDict):
    text: str
    opened_id: int
    opened_at: str
    due: str | None
    turns_at: int
    source: str | None
    reflection: NotRequired[int]
    since_id: NotRequired[int]
    status: NotRequired[Status]
    closed_id: NotRequired[int]
    closed_by_reflection: NotRequired[int]


class CommitmentsState(TypedDict):
    open: dict[str, Commitment]  # by the opening event's id, as text (a JSON key)
    done: dict[str, Commitment]
    opened: int
    closed: int
    expired: int
    reopened: int
    dropped: int
    refused: int
    turns: int
    imported_turns: int
    current: dict[Status, int]
    reflections: list[Noted]


class LatestReflection(TypedDict):
    id: int
    ts: str
    last_id: int | None


class ReflectionsState(TypedDict):
    count: int
    latest: LatestReflection | None
    turns_since: int
    recorded: int
    retracted: int
    refused: int
    reflected_to: int
    window: list[Noted]


class Note(TypedDict):
    """A pinned note or the persona: the event that set it, its text and time."""
    id: int
    text: str
    ts: str


class StandingState(TypedDict):
    persona: Note | None
    pinned: list[Note]
    personas: int
    pins: int
    unpins: int


class StandingSummary(TypedDict):
    id: int
    ts: str
    text: str
    covers: list[int]


class KeptSummary(StandingSummary):
    to: int  # the newest reflection it covers, with the summaries it folds in


class SummariesState(TypedDict):
    count: int
    latest: StandingSummary | None
    covered_to: int
    kept: list[KeptSummary]
    retracted: list[int]


class States(TypedDict):
    """Every projection's state, by projection name (pmm.domain.projections.PROJECTIONS)."""
    identity: IdentityState
    activity: ActivityState
    models: ModelsState
    usage: UsageState
    spend: SpendState
    traits: TraitsState
    commitments: CommitmentsState
    reflections: ReflectionsState
    standing: StandingState
    summaries: SummariesState
