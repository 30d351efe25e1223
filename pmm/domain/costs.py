"""What an answer cost: the prices recorded on it, and its tokens priced at them.

A model's prices (``pmm model add/set --price-in --price-out --price-cache-read
--price-cache-write --currency``) are per million tokens. Every answer, reflection and summary
made while a model has prices records the prices in force on its event, so its cost never
changes when the prices do: cost = fresh input x price-in + output x price-out + cache reads x
price-cache-read + cache writes x price-cache-write, where the fresh input is the prompt
(``tokens_in``) less the parts read from and written to the provider's cache. What caching saved
is the same tokens priced as if nothing had been cached, less the cost. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, TypedDict

PRICE_FIELDS = ("price_in", "price_out", "price_cache_read", "price_cache_write")
DEFAULT_CURRENCY = "USD"
CURRENCY = re.compile(r"[A-Z]{3}")  # an ISO 4217 code
PER = 1_000_000  # prices are per million tokens
UNKNOWN_CURRENCY = "XXX"  # ISO 4217's "no currency": what a crafted mind's odd currency text becomes


def currency_of(value: Any) -> str:
    """``value`` when it is a currency code, else ``XXX``: a mind file from elsewhere may hold
    any text there, and it is printed beside every cost (never a terminal escape)."""
    if value is None:
        return DEFAULT_CURRENCY
    return value if type(value) is str and CURRENCY.fullmatch(value) else UNKNOWN_CURRENCY


class Prices(NamedTuple):
    """Per million tokens, in ``currency``. Cache prices left unset charge the input price: pmm
    assumes no discount it was not told about, so a cost is never understated."""

    price_in: float = 0.0
    price_out: float = 0.0
    price_cache_read: float | None = None
    price_cache_write: float | None = None
    currency: str = DEFAULT_CURRENCY

    def recorded(self) -> dict[str, Any]:
        """The prices as an event records them: all four, resolved, and the currency."""
        return {"price_in": self.price_in, "price_out": self.price_out,
                "price_cache_read": self.read_rate(), "price_cache_write": self.write_rate(),
                "currency": self.currency}

    def read_rate(self) -> float:
        return self.price_in if self.price_cache_read is None else self.price_cache_read

    def write_rate(self) -> float:
        return self.price_in if self.price_cache_write is None else self.price_cache_write

    def cost(self, tokens_in: int, tokens_out: int, cache_read: int = 0, cache_write: int = 0) -> float:
        fresh = max(0, tokens_in - cache_read - cache_write)
        return (fresh * self.price_in + tokens_out * self.price_out + cache_read * self.read_rate()
                + cache_write * self.write_rate()) / PER

    def uncached(self, tokens_in: int, tokens_out: int) -> float:
        """What the same answer would cost had nothing been read from or written to a cache."""
        return (tokens_in * self.price_in + tokens_out * self.price_out) / PER

    def most(self, prompt_tokens: int, answer_tokens: int) -> float:
        """The most a request of ``prompt_tokens`` answered in at most ``answer_tokens`` can
        cost: every prompt token at the dearest input rate (a cache write usually)."""
        dearest = max(self.price_in, self.read_rate(), self.write_rate())
        return (prompt_tokens * dearest + answer_tokens * self.price_out) / PER


class CostJson(TypedDict):
    """A cost as ``--json`` shows it (``pmm chat``, ``stats``, ``trace``, ``run``)."""

    amount: float
    saved: float  # what caching saved against the same tokens sent uncached
    currency: str


class Spent(NamedTuple):
    """One event's cost and what caching saved on it, in ``currency``."""

    cost: float
    saved: float
    currency: str

    def as_json(self) -> CostJson:
        return {"amount": round(self.cost, 8), "saved": round(self.saved, 8), "currency": self.currency}


def recorded_prices(meta: dict[str, Any]) -> Prices | None:
    """The prices an event recorded, or None (made while its model had none, or before pmm
    recorded prices)."""
    if "price_in" not in meta and "price_out" not in meta:
        return None
    return Prices(float(meta.get("price_in") or 0), float(meta.get("price_out") or 0),
                  meta.get("price_cache_read"), meta.get("price_cache_write"),
                  currency_of(meta.get("currency")))


def counts(meta: dict[str, Any]) -> tuple[int, int, int, int]:
    """An event's tokens in, out, read from the cache and written to it (0 where unknown)."""
    return (int(meta.get("tokens_in") or 0), int(meta.get("tokens_out") or 0),
            int(meta.get("tokens_cache_read") or 0), int(meta.get("tokens_cache_write") or 0))


def spent(meta: dict[str, Any], prices: Prices | None = None) -> Spent | None:
    """What the event cost at the prices it recorded (else at ``prices``); None: unpriced.
    Replay prices every priced answer here, so it reads the meta directly (``Prices.cost``
    and ``Prices.uncached`` are the same sums)."""
    if "price_in" in meta or "price_out" in meta:
        price_in, price_out = meta.get("price_in") or 0, meta.get("price_out") or 0
        read_rate, write_rate = meta.get("price_cache_read"), meta.get("price_cache_write")
        currency = currency_of(meta.get("currency"))
    elif prices is not None:
        price_in, price_out, currency = prices.price_in, prices.price_out, prices.currency
        read_rate, write_rate = prices.price_cache_read, prices.price_cache_write
    else:
        return None
    read_rate = price_in if read_rate is None else read_rate
    write_rate = price_in if write_rate is None else write_rate
    tokens_in, tokens_out = meta.get("tokens_in") or 0, meta.get("tokens_out") or 0
    read, write = meta.get("tokens_cache_read") or 0, meta.get("tokens_cache_write") or 0
    fresh = tokens_in - read - write
    cost = ((fresh if fresh > 0 else 0) * price_in + tokens_out * price_out + read * read_rate
            + write * write_rate) / PER
    return Spent(cost, (tokens_in * price_in + tokens_out * price_out) / PER - cost, currency)


def saving(saved: float, currency: str) -> str:
    """What caching did to a cost, in words ("" when nothing): cache writes alone cost more."""
    if abs(saved) < 5e-7:
        return ""
    if saved > 0:
        return f"caching saved {money(saved, currency)}"
    return f"cache writes cost {money(-saved, currency)} more"


def money(amount: float, currency: str) -> str:
    """``0.0038 USD``: four significant decimals at least, so a cheap answer is not 0.00."""
    text = f"{amount:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.ljust(4, '0')} {currency}"
