"""What a model call used and cost: recorded on its event, and held to the spending caps.

``record`` writes a completion's usage into the meta of the event it becomes (``response_sent``,
``reflection_recorded``, ``summary_recorded``): tokens in (the whole prompt) and out, the parts
read from and written to the prompt cache, and the model's prices in force (per million tokens,
with the currency), so the cost (``pmm.domain.costs``) stays what it was when prices change.
A provider that reports no usage (a server that ignores ``stream_options.include_usage``) gets
its counts estimated here, marked ``usage_estimated``. ``Budget`` refuses a request before it is
sent when what it could cost would pass the model's daily cap (``--max-cost``) or the run's
``--budget``: the most a request can cost is its prompt at the dearest input rate plus the longest
answer it allows, so a refused turn is one that could have passed the cap, never one that did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from pmm import errors
from pmm.domain import costs
from pmm.domain.costs import CostJson
from pmm.domain.events import Event
from pmm.domain.states import States
from pmm.ledger.store import now_ts
from pmm.services import tokens
from pmm.services.models import Model

if TYPE_CHECKING:  # annotations only: `pmm stats` needs none of the provider interface
    from pmm.providers.base import Completion, Request

money, saving = costs.money, costs.saving  # for the CLI, which reads the domain through services


def estimate(completion: Completion, request: Request, count: tokens.Count | None = None) -> None:
    """Fill in the counts the provider did not report, from the request and the answer, and
    mark the completion estimated (high, as pmm's estimate is: a cost is never understated)."""
    if completion.tokens_in is not None and completion.tokens_out is not None:
        return
    cost = tokens.Cost(count)
    if completion.tokens_in is None:
        completion.tokens_in = cost.request(request)
    if completion.tokens_out is None:
        completion.tokens_out = cost.text(completion.text) if completion.text else 0
    completion.estimated = True


def record(meta: dict[str, Any], completion: Completion, model: Model) -> None:
    """Add the completion's usage and the model's prices in force to ``meta``."""
    for key, value in (("tokens_in", completion.tokens_in), ("tokens_out", completion.tokens_out),
                       ("tokens_cache_read", completion.cache_read),
                       ("tokens_cache_write", completion.cache_write)):
        if value is not None:
            meta[key] = value
    if completion.estimated:
        meta["usage_estimated"] = True
    prices = model.prices()
    if prices is not None:
        meta.update(prices.recorded())


def spent_today(states: States, model: Model, day: str | None = None) -> float:
    """What ``model`` spent today (UTC), in its currency."""
    prices = model.prices()
    currency = prices.currency if prices is not None else costs.DEFAULT_CURRENCY
    day = day or now_ts()[:10]
    return states["spend"].get(day, {}).get(model.name, {}).get(currency, 0.0)


@dataclass
class Budget:
    """The caps a run holds its requests to: each model's ``max_cost`` per UTC day, and
    ``limit`` (``--budget``) on what this run spends, in the currency of the model that spends it."""

    limit: float | None = None
    spent: dict[str, float] = field(default_factory=dict)  # this run's spend, by currency
    tally: Tally = field(default_factory=lambda: Tally())  # and its tokens, costs and savings

    def check(self, states: States, model: Model, request: Request) -> None:
        """Refuse (``BudgetExceeded``, nothing sent) a request that could pass a cap."""
        if self.limit is None and model.max_cost is None:
            return  # no cap: nothing to weigh (a turn's overhead stays what it was)
        prices = model.prices()
        if prices is None:
            raise errors.UsageError(
                f"a spending cap needs prices: model {model.name!r} has none",
                hint=f"pmm model set {model.name} --price-in X --price-out Y (per million tokens)")
        most = prices.most(tokens.Cost(None).request(request), request.max_tokens)
        currency = prices.currency
        if model.max_cost is not None:
            today = spent_today(states, model)
            if today + most > model.max_cost:
                raise errors.BudgetExceeded(
                    f"refused before sending: this request could cost up to {costs.money(most, currency)},"
                    f" and {model.name} has spent {costs.money(today, currency)} of its"
                    f" {costs.money(model.max_cost, currency)} daily cap (UTC day {now_ts()[:10]})",
                    hint=f"the cap lifts at midnight UTC; raise it with pmm model set {model.name}"
                         " --max-cost X, or use another model", scope="day")
        if self.limit is not None:
            run = self.spent.get(currency, 0.0)
            if run + most > self.limit:
                raise errors.BudgetExceeded(
                    f"refused before sending: this request could cost up to {costs.money(most, currency)},"
                    f" and this run has spent {costs.money(run, currency)} of its"
                    f" {costs.money(self.limit, currency)} --budget",
                    hint="start again with a larger --budget, or ask for a shorter answer (--max-tokens)")

    def add(self, event: Event) -> None:
        """Count what ``event`` (a recorded answer, reflection or summary) cost against the run."""
        meta = event.meta
        self.tally.add(meta)
        paid = costs.spent(meta)
        if paid is not None:
            self.spent[paid.currency] = self.spent.get(paid.currency, 0.0) + paid.cost


class UsageJson(TypedDict):
    """Tokens and cost of one answer or of several (``pmm chat --json``, ``/usage``, trace)."""

    tokens_in: int
    tokens_out: int
    tokens_cache_read: int
    tokens_cache_write: int
    estimated: bool  # some counts were estimated: the provider reported none
    cost: list[CostJson]  # one per currency; empty when no answer was priced


@dataclass
class Tally:
    """Tokens and cost summed over recorded events (a REPL session, its last answer)."""

    answers: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cache_read: int = 0
    cache_write: int = 0
    estimated: int = 0
    cost: dict[str, list[float]] = field(default_factory=dict)  # by currency: [cost, saved]

    def add(self, meta: dict[str, Any]) -> Tally:
        self.answers += 1
        tokens_in, tokens_out, read, write = costs.counts(meta)
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cache_read += read
        self.cache_write += write
        self.estimated += 1 if meta.get("usage_estimated") else 0
        paid = costs.spent(meta)
        if paid is not None:
            before = self.cost.get(paid.currency, [0.0, 0.0])
            self.cost[paid.currency] = [before[0] + paid.cost, before[1] + paid.saved]
        return self

    def as_json(self) -> UsageJson:
        return {"tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
                "tokens_cache_read": self.cache_read, "tokens_cache_write": self.cache_write,
                "estimated": self.estimated > 0,
                "cost": [{"amount": round(c, 8), "saved": round(s, 8), "currency": cur}
                         for cur, (c, s) in sorted(self.cost.items())]}

    def line(self) -> str:
        """``1,234 in (1,000 cached) / 56 out, 0.0038 USD (saved 0.0021)``."""
        cached = [f"{self.cache_read:,} cache read"] if self.cache_read else []
        cached += [f"{self.cache_write:,} cache write"] if self.cache_write else []
        text = f"{self.tokens_in:,} in" + (f" ({', '.join(cached)})" if cached else "") + f" / {self.tokens_out:,} out"
        if self.estimated:
            text += " (estimated)" if self.estimated == self.answers else f" ({self.estimated} estimated)"
        for currency, (cost, saved) in sorted(self.cost.items()):
            text += f", {costs.money(cost, currency)}"
            if said := costs.saving(saved, currency):
                text += f" ({said})"
        return text


    def short(self) -> str:
        """``1,290 tokens, 0.0038 USD`` for the REPL's toolbar (``~``: some counts estimated)."""
        text = ("~" if self.estimated else "") + f"{self.tokens_in + self.tokens_out:,} tokens"
        return text + "".join(f", {costs.money(cost, currency)}" for currency, (cost, _s) in sorted(self.cost.items()))


def tally(meta: dict[str, Any]) -> Tally:
    return Tally().add(meta)
