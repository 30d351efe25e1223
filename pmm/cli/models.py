"""``pmm model list|add|use|info|remove``: the models a mind talks through."""

from __future__ import annotations

import enum
from typing import Annotated, Optional

import typer

from pmm.cli import output
from pmm.cli.app import mind_path
from pmm.cli.options import JsonOpt, MindOpt

model_app = typer.Typer(
    rich_markup_mode=None,
    name="model", no_args_is_help=True,
    help="List, add, switch and remove the models this mind talks through (keys stay in the environment).",
)



class Role(str, enum.Enum):
    chat = "chat"
    reflection = "reflection"


RoleOpt = Annotated[Role, typer.Option("--for", help="Which job: chat or reflection.")]


def register(app: typer.Typer) -> None:
    app.add_typer(model_app)


@model_app.command("list")
def list_(mind: MindOpt = None, json: JsonOpt = False) -> None:
    """Every model the mind knows and which one is in use for chat and for reflection."""
    from pmm.services import models

    known, using = models.listing(mind_path(mind))
    if json:
        output.emit_json({"models": [m.as_json() for m in known], "active": using})
        return
    for model in known:
        roles = [role for role, name in using.items() if name == model.name]
        mark = "*" if roles else " "
        extra = f"  {model.spec.base_url}" if model.spec.base_url else ""
        note = "  (built in, runs on this machine)" if model.builtin else ""
        used = f"  [{', '.join(roles)}]" if roles else ""
        output.out(f"{mark} {model.name:<16} {model.spec.label}{extra}{note}{used}")


@model_app.command()
def add(
    name: Annotated[str, typer.Argument(help="A short name for this model, e.g. fast.")],
    spec: Annotated[str, typer.Argument(help="PROVIDER:MODEL, e.g. ollama:llama3.1, openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest, openai-compatible:NAME, local:/path/model.gguf.")],
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="Server URL (needed for openai-compatible).")] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help="Environment variable holding the key (default OPENAI_API_KEY / ANTHROPIC_API_KEY).")] = None,
    context_window: Annotated[Optional[int], typer.Option("--context-window", min=256, max=10_000_000, help="Tokens the model accepts (default 8192; local: 2048).")] = None,
    price_in: Annotated[Optional[float], typer.Option("--price-in", min=0, max=1_000_000, help="Price per million input tokens, for cost in `pmm stats`.")] = None,
    price_out: Annotated[Optional[float], typer.Option("--price-out", min=0, max=1_000_000, help="Price per million output tokens.")] = None,
    use: Annotated[bool, typer.Option("--use", help="Also switch chat to it.")] = False,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Add a model to the mind (its name, provider and endpoint travel with the mind; keys do not)."""
    from pmm.services import models

    path = mind_path(mind)
    model, event = models.add(path, name, spec, base_url, api_key_env, context_window, output.message,
                              price_in, price_out)
    switched = models.use(path, name, "chat", output.message)[1] if use else None
    if json:
        output.emit_json({**model.as_json(), "event_id": event.id,
                          "switched_event_id": switched.id if switched else None})
        return
    output.message(f"Added {name} = {model.spec.label}" + (" and switched chat to it" if use else "")
                   + ("" if use else f"; switch with: pmm model use {name}"))


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
        output.emit_json({**model.as_json(), "role": role.value, "event_id": event.id,
                          "model_hash": info.hash if info else None,
                          "model_version": info.version if info else None})
        return
    digest = f" ({info.hash[:19]}…)" if info and info.hash else ""
    output.message(f"{role.value.capitalize()} now uses {name}: {model.spec.label}{digest}")


@model_app.command()
def info(
    name: Annotated[Optional[str], typer.Argument(help="Model name (default: the chat model).")] = None,
    online: Annotated[bool, typer.Option("--online/--offline", help="Ask the provider about the model (opens a connection).")] = True,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """A model's configuration and, online, what its provider reports (hash, version, context)."""
    from pmm.services import models

    model, roles, reported = models.describe(mind_path(mind), name, online)
    key_env = model.spec.key_env()
    value = {**model.as_json(), "roles": roles, "key_env": key_env, "key_set": model.spec.key_set(),
             "reported": None if reported is None else {
                 "hash": reported.hash, "version": reported.version,
                 "context_length": reported.context_length, "details": reported.details}}
    if json:
        output.emit_json(value)
        return
    lines = [f"{model.name}: {model.spec.label}" + ("  (built in)" if model.builtin else ""),
             f"Used for: {', '.join(roles) or 'nothing yet'}"]
    if model.spec.base_url:
        lines.append(f"Endpoint: {model.spec.base_url}")
    if key_env:
        lines.append(f"Key: ${key_env} ({'set' if value['key_set'] else 'not set'})")
    lines.append(f"Context window used for prompts: {model.window()} tokens")
    if reported is not None:
        lines.append(f"Reachable: yes; hash {reported.hash or '-'}; version {reported.version or '-'}")
        if reported.context_length:
            lines.append(f"Provider context length: {reported.context_length}")
    output.out("\n".join(lines))


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
