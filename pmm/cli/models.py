"""``pmm model list|add|set|use|info|trust|remove``: the models a mind talks through."""

from __future__ import annotations

import enum
import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from pmm.cli import output
from pmm.cli.options import JsonOpt, MindOpt, mind_path
from pmm.services import provider_help

if TYPE_CHECKING:
    from pmm.services.models import Description, Model, Pricing

model_app = typer.Typer(
    rich_markup_mode=None,
    name="model", no_args_is_help=True,
    help="List, add, change, switch, trust and remove the models this mind talks through (keys stay in the environment).",
)


class Role(str, enum.Enum):
    chat = "chat"
    reflection = "reflection"


RoleOpt = Annotated[Role, typer.Option("--for", help="Which job: chat or reflection.")]
# Prices: no built-in table that goes stale, the owner's own figures (docs/costs.md)
PriceInOpt = Annotated[Optional[float], typer.Option(
    "--price-in", min=0, max=1_000_000, help="Price per million input tokens (the provider's list price),"
    " for the cost pmm records with every answer.")]
PriceOutOpt = Annotated[Optional[float], typer.Option(
    "--price-out", min=0, max=1_000_000, help="Price per million output tokens.")]
CacheReadOpt = Annotated[Optional[float], typer.Option(
    "--price-cache-read", min=0, max=1_000_000,
    help="Price per million prompt tokens read from the provider's cache (Anthropic: 0.1x input,"
    " OpenAI: 0.5x or less). Unset: the input price.")]
CacheWriteOpt = Annotated[Optional[float], typer.Option(
    "--price-cache-write", min=0, max=1_000_000,
    help="Price per million prompt tokens written to the cache (Anthropic: 1.25x input). Unset: the input price.")]
CurrencyOpt = Annotated[Optional[str], typer.Option(
    "--currency", help="ISO 4217 code the prices are in, e.g. USD or EUR (default USD).")]
MaxCostOpt = Annotated[Optional[float], typer.Option(
    "--max-cost", min=0, max=1_000_000_000,
    help="Most this model may spend per UTC day (in its currency): a turn, reflection or"
    " autonomous step that could pass it is refused before the request (exit 5).")]


def _pricing(price_in: float | None, price_out: float | None, cache_read: float | None,
             cache_write: float | None, currency: str | None, max_cost: float | None) -> Pricing:
    """The price options of ``model add`` and ``model set``, the currency in capitals."""
    from pmm.services.models import Pricing

    return Pricing(price_in, price_out, cache_read, cache_write, currency.upper() if currency else None, max_cost)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app)


@model_app.command("list")
def list_(mind: MindOpt = None, json: JsonOpt = False) -> None:
    """Every model the mind knows and which one is in use for chat and for reflection."""
    from pmm.services import models
    from pmm.services.trust import shown

    known, using, trusted = models.listing(mind_path(mind))
    if json:
        output.emit_json({"models": [{**m.as_json(), "trusted": trusted[m.name]} for m in known],
                          "active": using})
        return
    for model in known:
        roles = [role for role, name in using.items() if name == model.name]
        mark = "*" if roles else " "
        extra = f"  {shown(model.spec.base_url)}" if model.spec.base_url else ""
        note = "  (built in, runs on this machine)" if model.builtin else ""
        if not trusted[model.name]:
            note += f"  (not trusted here: pmm model trust {shown(model.name)})"
        used = f"  [{', '.join(roles)}]" if roles else ""
        output.out(f"{mark} {shown(model.name):<16} {shown(model.spec.label)}{extra}{note}{used}")


def _where(model: Model) -> str:
    from pmm.services import trust

    return trust.endpoint(model.spec).describe()


ADD_HELP = ("Add a model to the mind (its name, provider and endpoint travel with the mind; keys do not).\n\n"
            + provider_help.providers_paragraph())


@model_app.command(help=ADD_HELP)
def add(
    name: Annotated[str, typer.Argument(help="A short name for this model, e.g. fast.")],
    spec: Annotated[str, typer.Argument(help=provider_help.spec_help())],
    base_url: Annotated[Optional[str], typer.Option("--base-url", help=provider_help.base_url_help())] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help=provider_help.key_env_help())] = None,
    context_window: Annotated[Optional[int], typer.Option("--context-window", min=256, max=10_000_000, help="Tokens the model accepts (default 8192; local: 2048).")] = None,
    price_in: PriceInOpt = None,
    price_out: PriceOutOpt = None,
    price_cache_read: CacheReadOpt = None,
    price_cache_write: CacheWriteOpt = None,
    currency: CurrencyOpt = None,
    max_cost: MaxCostOpt = None,
    use: Annotated[bool, typer.Option("--use", help="Also switch chat to it.")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    from pmm.services import models

    path = mind_path(mind)
    pricing = _pricing(price_in, price_out, price_cache_read, price_cache_write, currency, max_cost)
    model, event = models.add(path, name, spec, base_url, api_key_env, context_window, output.message, pricing)
    switched = models.use(path, name, "chat", output.message)[1] if use else None
    if json:
        output.emit_json({**model.as_json(), "event_id": event.id,
                          "switched_event_id": switched.id if switched else None})
        return
    output.message(f"Added {name} = {model.spec.label} ({_where(model)})"
                   + (" and switched chat to it" if use else f"; switch with: pmm model use {name}"))


SET_HELP = ("Change a model's settings in place (also while it is in use): give only what changes.\n\n"
            "The change is a new event (the mind stays append-only; replay gives the new setting)."
            " Nothing different: nothing is appended. An empty --base-url or --api-key-env clears it"
            " (the provider's default). A model whose setting came with the mind file stays untrusted"
            " unless you give --spec and its endpoint here; `pmm model trust NAME` then.")


@model_app.command("set", help=SET_HELP)
def set_(
    name: Annotated[str, typer.Argument(help="The model's name, from `pmm model list`.")],
    spec: Annotated[Optional[str], typer.Option("--spec", help="New PROVIDER:MODEL, e.g. openai-compatible:qwen.")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help=provider_help.base_url_help() + " Empty: none.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help=provider_help.key_env_help() + " Empty: the default.")] = None,
    context_window: Annotated[Optional[int], typer.Option("--context-window", min=256, max=10_000_000, help="Tokens the model accepts.")] = None,
    price_in: PriceInOpt = None,
    price_out: PriceOutOpt = None,
    price_cache_read: CacheReadOpt = None,
    price_cache_write: CacheWriteOpt = None,
    currency: CurrencyOpt = None,
    max_cost: MaxCostOpt = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    from pmm.services import model_settings
    from pmm.services.trust import shown

    pricing = _pricing(price_in, price_out, price_cache_read, price_cache_write, currency, max_cost)
    changes = model_settings.Changes(spec, base_url, api_key_env, context_window, pricing)
    done = model_settings.change(mind_path(mind), name, changes, output.message)
    if json:
        output.emit_json({**done.model.as_json(), "event_id": done.event.id if done.event else None,
                          "changed": done.event is not None, "changed_fields": done.fields,
                          "trusted": done.trusted})
        return
    if done.event is None:
        output.message(f"{shown(name)} is set that way already; nothing changed")
        return
    output.message(f"Changed {shown(name)}: {', '.join(done.fields)} ({shown(done.model.spec.label)},"
                   f" {_where(done.model)})")
    if not done.trusted:
        output.message(f"Not trusted on this machine yet: check it, then: pmm model trust {shown(name)}")


@model_app.command()
def use(
    name: Annotated[str, typer.Argument(help="A model name from `pmm model list` (embedded: the built-in one).")],
    role: RoleOpt = Role.chat,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Switch chat (or reflection) to a model; identity and memory carry over."""
    from pmm.services import models

    model, event, info = models.use(mind_path(mind), name, role.value, output.message)
    if json:
        output.emit_json({**model.as_json(), "role": role.value, "event_id": event.id if event else None,
                          "changed": event is not None,
                          "model_hash": info.hash if info else None,
                          "model_version": info.version if info else None})
        return
    if event is None:
        output.message(f"{role.value.capitalize()} already uses {name}; nothing changed")
        return
    digest = f" ({info.hash[:19]}…)" if info and info.hash else ""
    output.message(f"{role.value.capitalize()} now uses {name}: {model.spec.label}{digest} ({_where(model)})")


@model_app.command()
def info(
    name: Annotated[Optional[str], typer.Argument(help="Model name (default: the chat model).")] = None,
    online: Annotated[bool, typer.Option("--online/--offline", help="Ask the provider about the model (opens a connection).")] = True,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """A model's configuration and, online, what its provider reports (hash, version, context).

    A provider that does not answer (down, refused, no key) is shown as "Reachable: no (why)"
    beside the settings, exit 0: `pmm health` is the check that fails on it."""
    from pmm.services import models
    from pmm.services.trust import shown

    found = models.describe(mind_path(mind), name, online)
    model, roles, reported = found.model, found.roles, found.reported
    key_env = model.spec.key_env()
    value = {**model.as_json(), "roles": roles, "key_env": key_env, "key_set": model.spec.key_set(),
             "trusted": found.trusted, "reachable": _reachable(found, online),
             "reason": _unreachable_reason(found, online),
             "reported": None if reported is None else {
                 "hash": reported.hash, "version": reported.version,
                 "context_length": reported.context_length, "details": reported.details}}
    if json:
        output.emit_json(value)
        return
    lines = [f"{shown(model.name)}: {shown(model.spec.label)}" + ("  (built in)" if model.builtin else ""),
             f"Used for: {', '.join(roles) or 'nothing yet'}",
             f"Connection: {_where(model)}"]
    if key_env:
        lines.append(f"Key: ${shown(key_env)} ({'set' if value['key_set'] else 'not set'})")
    lines.append("Trusted on this machine: " + ("yes" if found.trusted else
                 f"no (check it, then: pmm model trust {shown(model.name)})"))
    lines.append(f"Context window used for prompts: {model.window()} tokens")
    lines.append(_prices_line(model))
    if online and not found.trusted:
        lines.append("Reachable: not asked (pmm talks to no model it does not trust)")
    if found.unreachable is not None:
        lines.append(f"Reachable: no ({found.unreachable.message})")
        if found.unreachable.hint:
            lines.append(f"  Hint: {found.unreachable.hint}")
    if reported is not None:
        lines.append(f"Reachable: yes; hash {reported.hash or '-'}; version {reported.version or '-'}")
        if isinstance(reported.details.get("served_as"), str):
            lines.append(f"Served as: {shown(reported.details['served_as'])}")
        if reported.context_length:
            lines.append(f"Provider context length: {reported.context_length}")
    output.out("\n".join(lines))


def _prices_line(model: Model) -> str:
    prices = model.prices()
    if prices is None:
        return "Prices: not set (pmm model set NAME --price-in X --price-out Y: per million tokens)"
    cap = f"; at most {model.max_cost:g} {prices.currency} a day" if model.max_cost is not None else ""
    return (f"Prices per million tokens ({prices.currency}): {prices.price_in:g} in, {prices.price_out:g} out,"
            f" {prices.read_rate():g} cache read, {prices.write_rate():g} cache write{cap}")


def _reachable(found: Description, online: bool) -> bool | None:
    """True or False once asked; None when not asked (offline, or a model not trusted here)."""
    if not online or not found.trusted:
        return None
    return found.unreachable is None


def _unreachable_reason(found: Description, online: bool) -> str | None:
    if not online:
        return "not asked (--offline)"
    if not found.trusted:
        return "not asked: the model is not trusted on this machine"
    return None if found.unreachable is None else found.unreachable.message


@model_app.command()
def trust(
    name: Annotated[str, typer.Argument(help="A model name from `pmm model list`.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Trust without asking (for scripts).")] = False,
    revoke: Annotated[bool, typer.Option("--revoke", help="Withdraw this machine's trust in the model instead.")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Let this machine use a model that came with the mind (an import, a restore, a copy).

    Shows the provider, the host it talks to (or the model file it runs) and the key variable it
    sends, and asks on a terminal; without one, pass --yes. Declining changes nothing (exit 130, like any abort).
    Models added here with `pmm model add` are trusted already; a later change of the model's
    host or key variable, or the same model in another mind, needs trusting again.
    """
    from pmm.errors import INTERRUPTED, UsageError
    from pmm.services import models
    from pmm.services import trust as store

    model, mind_id, already = models.to_trust(mind_path(mind), name)
    if revoke:
        gone = models.revoke(mind_id, model)
        output.report({"name": model.name, "trusted": models.trusted(mind_id, model), "revoked": gone},
                      json, f"{store.shown(model.name)} is no longer trusted on this machine" if gone
                      else f"{store.shown(model.name)} was not trusted on this machine; nothing changed")
        return
    where = store.endpoint(model.spec)
    value = {**model.as_json(), "target": where.target, "key_env": where.key_env, "trusted": True,
             "changed": not already}
    what = f"{store.shown(model.name)} ({store.shown(model.spec.label)}), which {where.describe()}"
    if already:
        output.report(value, json, f"{what}: trusted on this machine already")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"trusting {what} needs the owner's confirmation",
                             hint=f"check the host and the variable, then: pmm model trust {name} --yes")
        output.message(f"Model {what}.")
        if not typer.confirm("Trust it on this machine?", default=False, err=True):
            output.message("Not trusted; nothing changed.")
            raise typer.Exit(INTERRUPTED)  # the owner aborted: not pmm failing (1), not a usage error (2)
    models.grant(mind_id, model)
    output.report(value, json, f"Trusted {what}")


@model_app.command()
def remove(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Remove a model from the mind (refused while it is in use)."""
    from pmm.services import models

    event = models.remove(mind_path(mind), name)
    if json:
        output.emit_json({"name": name, "event_id": event.id})
    else:
        output.message(f"Removed {name}")
