"""Shapes the services hand to the CLI that more than one service uses: an event as ``--json``
shows it, and what a command changed. Each command's own report is declared beside the service
that builds it, as a ``TypedDict`` when the dict is also the ``--json`` output (so the JSON is
exactly what it was), and tests/test_reports_are_typed.py holds that no report is untyped."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

# An event's meta as stored, passed through to --json and never read by key on the way: its
# shape is its kind's declaration (pmm.domain.events), checked when the event was appended.
# The one JSON pass-through the reports test allows (see ALLOWED there).
Meta = dict[str, Any]


class EventJson(TypedDict):
    """One stored event (``ts``: when the ledger recorded it) plus ``said_at``: when it was said."""

    id: int
    ts: str
    said_at: str
    kind: str
    content: str
    meta: Meta
    prev_hash: str
    hash: str


class SearchHit(EventJson):
    snippet: str
    ranked_newest: int | None  # None: every match was ranked; else how many, the newest, were


class Change(TypedDict):
    """An event a command or a reflection appended, as its report lists it."""

    id: int
    kind: str
    content: str
    meta: Meta
    applied: NotRequired[float]  # a trait_adjusted change: the step the trait took (meta.delta: the one asked)


# Why an event is in a prompt (pmm.services.context), and the prompt's plan as ``pmm recall``
# shows it and ``pmm chat`` sends it.
Reason = Literal["persona", "pinned", "commitment", "summary", "reflection", "recalled", "exchange",
                 "recent"]


class ItemJson(TypedDict):
    id: int
    kind: str
    said_at: str
    who: str | None
    reason: Reason
    tokens: int
    score: NotRequired[float]  # recalled events: BM25, higher is better
    beside: NotRequired[int]  # an exchange: the recalled event it completes
    text: str


class SectionJson(TypedDict):
    name: Literal["standing", "recalled", "recent"]
    title: str
    tokens: int
    items: list[ItemJson]


class PromptJson(TypedDict):
    budget: int
    tokens: int
    query: list[str]
    system_tokens: int
    tokens_counted: Literal["model", "estimate"]
    sections: list[SectionJson]
    context_ids: list[int]
    prompt_xxh3: str


# What the witness (pmm.services.witness) saw of a mind, as ``verify --json`` reports it.
class HeadJson(TypedDict):
    events: int
    head: str
    at: str
    file: str


class VerdictJson(TypedDict):
    """``verify --json``'s ``witness``."""

    state: str
    ok: bool
    message: str
    since: int
    witnessed: HeadJson | None


class ErrorJson(TypedDict):
    """The ``error`` of a ``--json`` document that failed (docs/json.md)."""

    code: int  # the exit code
    type: str  # the error's class: UsageError, MindNotFound, ProviderError, ...
    message: str
    hint: str | None
