"""``pmm model set NAME``: fix a model's settings in place, as a ``model_changed`` event.

The mind is append-only, so a change is a new event holding the model's whole new setting;
replay gives it, and switches that name the model use it from then on (a model in use can be
fixed). Nothing changed appends nothing. Trust follows ``model add``: a setting the owner
chooses here is trusted, but a change to a model whose setting came with the mind file (not
trusted here) stays untrusted unless the owner gave every part that decides where requests go
and which key they carry (``--spec``, and ``--base-url`` / ``--api-key-env`` unless none is set).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pmm import errors
from pmm.domain import events as ev
from pmm.domain.events import Draft, Event
from pmm.ledger import folded
from pmm.providers.registry import parse_spec
from pmm.services import opening, trust
from pmm.services.models import (
    BUILTIN,
    PRICING,
    Model,
    Pricing,
    check_name,
    check_numbers,
    from_state,
    known,
    trusted,
    unknown,
)
from pmm.services.opening import Notify

FIELDS = ("provider", "model", "base_url", "api_key_env", "context_window", *PRICING)


@dataclass(frozen=True)
class Changes:
    """What ``model set`` was asked to change; None leaves a setting as it is, and an empty
    ``base_url`` / ``api_key_env`` clears it (back to the provider's default)."""

    spec: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    context_window: int | None = None
    pricing: Pricing = Pricing()

    def empty(self) -> bool:
        return all(getattr(self, f) is None for f in ("spec", "base_url", "api_key_env", "context_window")) \
            and self.pricing == Pricing()


@dataclass(frozen=True)
class Changed:
    model: Model             # the model as it is now set
    event: Event | None      # None: nothing differed, nothing was appended
    fields: list[str]        # the fields that changed (FIELDS' names)
    trusted: bool            # whether this machine trusts the new setting


def _apply(old: Model, changes: Changes) -> Model:
    """``old`` with ``changes`` made, validated as ``model add`` validates its options."""
    check_numbers(changes.context_window, changes.pricing)
    spec_text = changes.spec if changes.spec is not None else old.spec.label
    base_url = old.spec.base_url if changes.base_url is None else (changes.base_url or None)
    key_env = old.spec.api_key_env if changes.api_key_env is None else (changes.api_key_env or None)
    spec = parse_spec(spec_text, base_url, key_env)
    given = changes.pricing
    new = Model(old.name, spec,
                old.context_window if changes.context_window is None else changes.context_window,
                *(getattr(old, key) if getattr(given, key) is None else getattr(given, key) for key in PRICING))
    new.check_cap()
    return new


def _differing(old: Model, new: Model) -> list[str]:
    before, after = dict(old.as_json()), dict(new.as_json())
    return [f for f in FIELDS if before.get(f) != after.get(f)]


def _owner_chose_endpoint(new: Model, changes: Changes) -> bool:
    """Whether everything that decides where requests go and which variable they send was
    typed by the owner in this command (so the new setting is theirs, as with ``model add``)."""
    return (changes.spec is not None
            and (changes.base_url is not None or new.spec.base_url is None)
            and (changes.api_key_env is not None or new.spec.api_key_env is None))


def change(path: Path, name: str, changes: Changes, notify: Notify) -> Changed:
    if name == BUILTIN:
        raise errors.UsageError(f"{BUILTIN!r} is the built-in local model and cannot be changed",
                                hint="add another model instead: pmm model add NAME local:/path/to/model.gguf")
    if changes.empty():
        raise errors.UsageError("nothing to change: give at least one setting",
                                hint=f"e.g. pmm model set {name} --base-url URL (see pmm model set --help)")
    check_name(path, name)  # no mind yet: nothing to change, and nothing is created
    found: dict[str, Model] = {}
    with opening.open_write(path, notify) as mind:
        mind_id = mind.mind_id

        def drafts(_first_id: int) -> list[Draft]:
            states, _ = folded.state(mind)  # inside the write transaction: no race with another set
            fields = states["models"]["models"].get(name)
            if fields is None and name in known(states):  # only a crafted mind switches to it
                raise errors.UsageError(f"{name!r} is named by a switch but was never added: nothing to change",
                                        hint=f"define it: pmm model add {name} PROVIDER:MODEL")
            if fields is None:
                raise unknown(name, known(states))
            old = found["old"] = from_state(name, fields)
            new = found["new"] = _apply(old, changes)
            differing = _differing(old, new)
            if not differing:
                return []
            meta = {**{k: v for k, v in new.as_json().items() if k != "builtin"}, "changed": differing}
            return [Draft(ev.MODEL_CHANGED.name,
                          f"{name}: {', '.join(differing)} changed ({new.spec.label})", meta)]

        appended = mind.append(drafts)
    old, new = found["old"], found["new"]
    event = appended[0] if appended else None
    owners = trusted(mind_id, old) or _owner_chose_endpoint(new, changes)
    if event is not None and owners and not trusted(mind_id, new):
        try:
            trust.grant(mind_id, name, new.spec)  # the owner's change to the owner's setting
        except errors.PmmError as exc:
            notify(f"Warning: {exc.message}; trust the model with: pmm model trust {name}")
    return Changed(new, event, _differing(old, new), trusted(mind_id, new))
