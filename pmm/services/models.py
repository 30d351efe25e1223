"""The mind's models: ``pmm model list|add|use|info|trust|remove`` and which model answers.

Model configuration is part of the mind (events, so it travels with an export); API keys are
not: a model names the environment variable its key is read from. Whether a model may be used
on this machine is not part of the mind either: every path that talks to a model goes through
``connect`` (or ``probe``), which refuses a setting this machine's owner has not trusted
(``pmm.services.trust``). With nothing configured the embedded local model (``embedded``,
SPEC section 6) answers, and it needs no trust.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NotRequired, TypedDict, cast

from pmm import errors
from pmm.domain import costs
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.domain.states import ModelFields, States, Switched
from pmm.ledger import folded
from pmm.providers.registry import EMBEDDED_MODEL, ModelSpec
from pmm.services import opening, trust
from pmm.services.opening import Notify

if TYPE_CHECKING:  # annotations only: `pmm stats` needs none of the provider interface
    from pmm.providers.base import ModelInfo, Provider

BUILTIN = "embedded"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FALLBACK_CONTEXT = 8192


class ModelJson(TypedDict):
    """A model as ``--json`` shows it; the optional keys only when set."""

    name: str
    provider: str
    model: str
    builtin: bool
    base_url: NotRequired[str]
    api_key_env: NotRequired[str]
    context_window: NotRequired[int]
    price_in: NotRequired[float]
    price_out: NotRequired[float]
    price_cache_read: NotRequired[float]
    price_cache_write: NotRequired[float]
    currency: NotRequired[str]
    max_cost: NotRequired[float]


# The settings of a model that say what it costs, as model add/set and the events name them
PRICING = ("price_in", "price_out", "price_cache_read", "price_cache_write", "currency", "max_cost")
SETTINGS = ("context_window", *PRICING)  # the optional settings beside the spec


class Pricing(NamedTuple):
    """What a model costs (per million tokens, in ``currency``: absent, USD) and the most it
    may spend per UTC day (``max_cost``, in that currency). None: not set."""

    price_in: float | None = None
    price_out: float | None = None
    price_cache_read: float | None = None
    price_cache_write: float | None = None
    currency: str | None = None
    max_cost: float | None = None

    def check(self) -> None:
        """The bounds ``model add`` and ``model set`` hold prices and the cap to."""
        for price in (self.price_in, self.price_out, self.price_cache_read, self.price_cache_write):
            if price is not None and not 0 <= price <= 1_000_000:
                raise errors.UsageError("prices are per million tokens, between 0 and 1000000")
        if self.currency is not None and not costs.CURRENCY.fullmatch(self.currency):
            raise errors.UsageError(f"--currency must be a three-letter ISO 4217 code such as USD or EUR,"
                                    f" not {self.currency!r}")
        if self.max_cost is not None and not 0 <= self.max_cost <= 1_000_000_000:
            raise errors.UsageError("--max-cost is an amount per day, between 0 and 1000000000")

UNPRICED = Pricing()  # no prices and no cap


class Model(NamedTuple):
    """A model the mind can use, by name."""

    name: str
    spec: ModelSpec
    context_window: int | None = None
    price_in: float | None = None  # per million tokens, in currency
    price_out: float | None = None
    price_cache_read: float | None = None  # None: the input price
    price_cache_write: float | None = None
    currency: str | None = None  # None: USD
    max_cost: float | None = None  # the most it may spend per UTC day, in currency

    def prices(self) -> costs.Prices | None:
        """The model's prices, or None when it has neither an input nor an output price."""
        if self.price_in is None and self.price_out is None:
            return None
        return costs.Prices(self.price_in or 0.0, self.price_out or 0.0, self.price_cache_read,
                            self.price_cache_write, costs.currency_of(self.currency))

    def check_cap(self) -> None:
        """A daily cap is money: the model must have prices to hold it to."""
        if self.max_cost is not None and self.prices() is None:
            raise errors.UsageError("--max-cost needs prices to measure spending against",
                                    hint="give --price-in and --price-out too (per million tokens)")

    def pricing(self) -> Pricing:
        return Pricing(*(getattr(self, key) for key in PRICING))

    @property
    def builtin(self) -> bool:
        return self.name == BUILTIN

    def window(self) -> int:
        if self.context_window:
            return self.context_window
        if self.spec.provider == "local":
            from pmm.providers.local import context_size

            return context_size()
        return FALLBACK_CONTEXT

    def token_counter(self, mind_id: str) -> Callable[[str], int] | None:
        """The model's own token count where this machine has its vocabulary (a local model the
        owner trusts for ``mind_id``: a path from someone else's mind file is never opened),
        else None: the prompt's tokens are then estimated high."""
        if self.spec.provider != "local" or not trusted(mind_id, self):
            return None
        from pmm.providers.local import token_counter

        return token_counter(self.spec)

    def as_json(self) -> ModelJson:
        value: dict[str, Any] = {"name": self.name, "provider": self.spec.provider,
                                 "model": self.spec.model, "builtin": self.builtin}
        for key in ("base_url", "api_key_env"):
            if getattr(self.spec, key):
                value[key] = getattr(self.spec, key)
        for key in SETTINGS:
            if getattr(self, key) is not None:
                value[key] = getattr(self, key)
        return cast(ModelJson, value)  # keys by name from the spec's fields, each of ModelJson's type


def embedded() -> Model:
    return Model(BUILTIN, ModelSpec("local", EMBEDDED_MODEL))


def from_state(name: str, spec: ModelFields) -> Model:
    return Model(name, ModelSpec(spec["provider"], spec["model"], spec.get("base_url"),
                                 spec.get("api_key_env")), spec.get("context_window"),
                 spec.get("price_in"), spec.get("price_out"), spec.get("price_cache_read"),
                 spec.get("price_cache_write"), spec.get("currency"), spec.get("max_cost"))


def _named(switched: Switched | None) -> str | None:
    return None if switched is None else switched["name"]


def known(states: States) -> dict[str, Model]:
    """Every model the mind knows, the built-in ``embedded`` first; then any model a switch
    names that no ``model_added`` defines (only a crafted mind has one), so it can be seen,
    judged and trusted like the others."""
    found = {BUILTIN: embedded()}
    for name, spec in sorted(states["models"]["models"].items()):
        if name != BUILTIN:  # `add` refuses the name; a crafted mind must not pass as built in
            found[name] = from_state(name, spec)
    for switched in states["models"]["active"].values():
        if switched is not None and switched["name"] not in found:
            found[switched["name"]] = from_state(switched["name"], switched)
    return found


def active(states: States, role: str = "chat") -> Model:
    """The model for ``role``: the last switch for it; reflection falls back to the chat model."""
    switched = states["models"]["active"].get(role)
    if switched is None and role != "chat":
        return active(states, "chat")
    if switched is None:
        return embedded()
    return known(states)[switched["name"]]


def pick(states: States, name: str | None, role: str = "chat") -> Model:
    """``name`` when given (it must be known), else the active model for ``role``."""
    if name is None:
        return active(states, role)
    models = known(states)
    if name not in models:
        raise unknown(name, models)
    return models[name]


def unknown(name: str, models: dict[str, Model]) -> errors.UsageError:
    hint = "see `pmm model list`; add one with `pmm model add NAME PROVIDER:MODEL`"
    if ":" in name:
        hint = f"models are used by name: `pmm model add NAME {name}` first, then `pmm model use NAME`"
    return errors.UsageError(f"no model named {name!r} (known: {', '.join(models)})", hint=hint)


def _states(path: Path) -> tuple[States, str]:
    """The mind's states and id, or a new mind's when there is no file yet (nothing is
    created; its only model is the built-in one, so the empty id is never asked about)."""
    if not path.exists():
        from pmm.domain.projections import initial_state

        return initial_state(), ""
    with opening.open_read(path) as mind:
        return folded.state(mind)[0], mind.mind_id


def check_name(path: Path, name: str | None) -> None:
    """Refuse an unknown model name before anything is created for a mind that does not exist
    yet (an existing mind is checked once it is open)."""
    if name is not None and not path.exists():
        pick(_states(path)[0], name)


def trusted(mind_id: str, model: Model) -> bool:
    """Whether this machine's owner lets ``mind_id`` use ``model`` as it is set."""
    return trust.is_trusted(mind_id, model.name, model.spec)


def require_trusted(mind_id: str, model: Model) -> None:
    """The one check before any connection: an untrusted setting opens no socket."""
    if not trusted(mind_id, model):
        raise errors.UsageError(
            f"model {model.name!r} ({trust.shown(model.spec.label)}, {trust.endpoint(model.spec).describe()})"
            " is not trusted on this machine: that setting came from the mind file, not from you",
            hint=f"check it, then trust it once: pmm model trust {trust.shown(model.name)}")


def require_key(model: Model) -> None:
    """A model that needs a key whose variable is empty is refused here, before any request."""
    name = model.spec.key_env()
    if model.spec.needs_key() and not model.spec.key_set():
        raise errors.ProviderError(
            f"model {model.name!r} ({trust.shown(model.spec.label)}) needs an API key and ${name} is not set",
            hint=f"export {name}=... (pmm reads keys from the environment only), or read it from"
                 f" another variable: pmm model set {trust.shown(model.name)} --api-key-env OTHER")


def connect(mind_id: str, model: Model) -> Provider:
    """The provider for ``model``, once the owner trusts its setting for this mind and its
    key (if it needs one) is set: a refused model opens no socket."""
    from pmm.providers.registry import create

    require_trusted(mind_id, model)
    require_key(model)
    return create(model.spec)


def named_hint(exc: errors.PmmError, model: Model) -> str | None:
    """``exc``'s hint with the model's own name where a provider could only say NAME."""
    return exc.hint.replace("model set NAME", f"model set {trust.shown(model.name)}") if exc.hint else None


def listing(path: Path) -> tuple[list[Model], dict[str, str], dict[str, bool]]:
    """The known models, the name in use for each role, and which models are trusted here."""
    states, mind_id = _states(path)
    found = list(known(states).values())
    return (found, {role: active(states, role).name for role in ev.ROLES},
            {m.name: trusted(mind_id, m) for m in found})


def check_numbers(context_window: int | None, pricing: Pricing) -> None:
    """The bounds ``model add`` and ``model set`` hold a window, prices and the cap to."""
    if context_window is not None and not 256 <= context_window <= 10_000_000:
        raise errors.UsageError("--context-window must be between 256 and 10000000 tokens")
    pricing.check()


def add(path: Path, name: str, spec_text: str, base_url: str | None, api_key_env: str | None,
        context_window: int | None, notify: Notify, pricing: Pricing = UNPRICED) -> tuple[Model, Event]:
    from pmm.providers.registry import parse_spec

    if not NAME_PATTERN.fullmatch(name):
        raise errors.UsageError(f"bad model name {name!r}: use letters, digits, '.', '_' or '-'")
    if name == BUILTIN:
        raise errors.UsageError(f"{BUILTIN!r} is the built-in local model and cannot be redefined",
                                hint="pick another name")
    check_numbers(context_window, pricing)
    spec = parse_spec(spec_text, base_url, api_key_env)
    model = Model(name, spec, context_window, *(getattr(pricing, key) for key in PRICING))
    model.check_cap()
    meta = {k: v for k, v in model.as_json().items() if k != "builtin"}
    with opening.open_write(path, notify) as mind:
        mind_id = mind.mind_id

        def drafts(_first_id: int) -> list[Draft]:
            states, _ = folded.state(mind)  # inside the write transaction: no race with another add
            if name in states["models"]["models"]:
                raise errors.UsageError(f"a model named {name!r} already exists",
                                        hint=f"change it in place with `pmm model set {name} --spec {spec_text}`"
                                        " (and add's other options: --base-url, --api-key-env, ...)")
            return [Draft(ev.MODEL_ADDED.name, f"{name} = {spec.label}", meta)]

        (event,) = mind.append(drafts)
    try:
        trust.grant(mind_id, name, spec)  # the owner chose this setting here: no question
    except errors.PmmError as exc:
        notify(f"Warning: {exc.message}; trust the model with: pmm model trust {name}")
    return model, event


def remove(path: Path, name: str) -> Event:
    with opening.open_write(path, lambda _m: None) as mind:

        def drafts(_first_id: int) -> list[Draft]:
            states, _ = folded.state(mind)
            if name == BUILTIN:
                raise errors.UsageError(f"{BUILTIN!r} is built in and cannot be removed")
            if name not in states["models"]["models"]:
                raise unknown(name, known(states))
            using = [role for role in ev.ROLES if _named(states["models"]["active"].get(role)) == name]
            if using:
                raise errors.UsageError(f"{name!r} is in use for {' and '.join(using)}",
                                        hint=f"switch first: pmm model use OTHER --for {using[0]}")
            return [Draft(ev.MODEL_REMOVED.name, name, {"name": name})]

        (event,) = mind.append(drafts)
        mind_id = mind.mind_id
    try:
        trust.revoke(mind_id, name)
    except errors.PmmError:
        pass  # a stale entry trusts only the exact setting that was removed
    return event


def probe(model: Model, mind_id: str) -> ModelInfo:
    """Ask the provider about ``model`` (this talks to it, once the setting is trusted)."""
    provider = connect(mind_id, model)
    try:
        return provider.info()
    finally:
        provider.close()


def in_use(states: States, name: str, role: str) -> bool:
    """Whether ``role`` already uses ``name``: by its own last switch (reflection that merely
    follows chat is not pinned to it), or the built-in one for a chat never switched."""
    switched = states["models"]["active"].get(role)
    if switched is None:
        return role == "chat" and name == BUILTIN
    return switched["name"] == name and name in known(states)


def use(path: Path, name: str, role: str, notify: Notify) -> tuple[Model, Event | None, ModelInfo | None]:
    """Switch ``role`` to ``name``; the event records the model's hash or version when the
    provider reports one. An unreachable provider is a warning, not a failure: switching is a
    decision about the mind, and the hash is recorded when it can be. A role that uses ``name``
    already appends nothing (the event is None)."""
    if role not in ev.ROLES:
        raise errors.UsageError(f"--for must be one of {', '.join(ev.ROLES)}")
    with opening.open_write(path, notify) as mind:
        states = folded.state(mind)[0]
        model = pick(states, name)
        if in_use(states, name, role):
            return model, None, None
        info: ModelInfo | None = None
        try:
            info = probe(model, mind.mind_id)  # no lock is held while the provider answers
        except errors.ProviderError as exc:
            notify(f"Warning: could not ask {model.spec.label} about the model ({exc.message});"
                   " switched without recording its hash")
        meta: dict[str, Any] = {"name": model.name, "provider": model.spec.provider,
                                "model": model.spec.model, "role": role}
        if info is not None and info.hash:
            meta["model_hash"] = info.hash
        if info is not None and info.version:
            meta["model_version"] = str(info.version)

        def drafts(_first_id: int) -> list[Draft]:
            now = folded.state(mind)[0]
            pick(now, name)  # still there (another process may have removed it)
            if in_use(now, name, role):
                return []  # another process switched to it meanwhile
            return [Draft(ev.MODEL_SWITCHED.name, f"{role} now uses {name} ({model.spec.label})", meta)]

        appended = mind.append(drafts)
    return model, appended[0] if appended else None, info


class Description(NamedTuple):
    model: Model
    roles: list[str]
    trusted: bool
    reported: ModelInfo | None
    unreachable: errors.PmmError | None = None  # online, trusted, and the provider failed: why


def describe(path: Path, name: str | None, online: bool) -> Description:
    """A model's configuration, the roles it serves, whether it is trusted here, and (online)
    what its provider reports. An untrusted model is described, never contacted: inspecting it
    is the step before ``pmm model trust``. A provider that fails to answer (down, refused,
    no key) is part of the description, not an error: the settings are what one looks at then."""
    states, mind_id = _states(path)
    model = pick(states, name)
    roles = [role for role in ev.ROLES if active(states, role).name == model.name]
    is_trusted = trusted(mind_id, model)
    if not (online and is_trusted):
        return Description(model, roles, is_trusted, None)
    try:
        return Description(model, roles, is_trusted, probe(model, mind_id))
    except errors.ProviderError as exc:
        exc.hint = named_hint(exc, model)
        return Description(model, roles, is_trusted, None, exc)


def to_trust(path: Path, name: str) -> tuple[Model, str, bool]:
    """The model ``pmm model trust NAME`` would trust: the model, the mind id, and whether it
    is trusted already. Nothing is created: a mind to trust models in must exist."""
    with opening.open_read(path) as mind:
        states, mind_id = folded.state(mind)[0], mind.mind_id
    model = pick(states, name)
    return model, mind_id, trusted(mind_id, model)


def revoke(mind_id: str, model: Model) -> int:
    """Withdraw trust in every setting of ``model``'s name for this mind (the built-in needs none)."""
    return 0 if model.builtin else trust.revoke(mind_id, model.name)


def grant(mind_id: str, model: Model) -> None:
    """Trust exactly the setting the owner was shown (a later change is untrusted again)."""
    trust.grant(mind_id, model.name, model.spec)
