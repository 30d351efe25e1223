"""Which models this machine's owner lets a mind talk through (the trust store, user config dir).

A mind's events name each model's provider, endpoint and key variable, and a mind can come from
anyone (an import, a restored backup, a copied file). So where requests go and which secret they
carry is decided here, per machine (SPEC section 6): ``pmm model add`` trusts the model it adds,
``pmm model trust NAME`` trusts one that came with the mind. An entry is keyed by a digest of
(mind id, name, provider, model, base URL, key variable): another setting under the same name,
or the same setting in another mind, is untrusted again. Nothing of this is in the mind file.

One small JSON file, changed under a lock and written whole or not at all, mode 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pmm import errors
from pmm.providers.registry import EMBEDDED_MODEL, ModelSpec
from pmm.services import files

FORMAT = 1
FILE_NAME = "trusted-models.json"
BUILT_IN = "(built in)"


def store_path() -> Path:
    from pmm.paths import config_dir

    return config_dir() / FILE_NAME


def built_in(spec: ModelSpec) -> bool:
    """The embedded model: a file in pmm's own installation, no network, no key. Always fine."""
    return spec == ModelSpec("local", EMBEDDED_MODEL)


class Endpoint(NamedTuple):
    """What a model setting does on this machine, in words the owner can judge."""

    provider: str
    target: str          # a host URL, or the model file's path for ``local``
    key_env: str | None  # the variable whose value is sent, if any

    def describe(self) -> str:
        if self.provider == "local" and self.target == BUILT_IN:
            return "runs the built-in model on this machine"
        if self.provider == "local":
            return f"runs the model file {shown(self.target)} on this machine"
        key = f"sends ${shown(self.key_env)}" if self.key_env else "sends no key"
        return f"talks to {shown(self.target)} and {key}"


def shown(text: str) -> str:
    """``text`` as the owner must see it before trusting it: a crafted mind's control
    characters (which could redraw the line to show another host) are escaped, not sent."""
    return text if text.isprintable() else repr(text)[1:-1]


def endpoint(spec: ModelSpec) -> Endpoint:
    """Where ``spec`` goes: the host URL (without any user:password part) or the local file."""
    if spec.provider == "local":
        return Endpoint("local", BUILT_IN if built_in(spec) else str(Path(spec.model).expanduser()), None)
    try:
        url = spec.url()
    except errors.PmmError:
        url = "(no URL)"
    return Endpoint(spec.provider, _without_userinfo(url), spec.key_env())


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def fingerprint(mind_id: str, name: str, spec: ModelSpec) -> str:
    """The key of a trust entry. The stored fields are used, not the effective URL: an
    ``OLLAMA_HOST`` or a default is this machine's own choice, not the mind's."""
    setting = [mind_id, name, spec.provider, spec.model, spec.base_url, spec.api_key_env]
    return hashlib.sha256(json.dumps(setting, separators=(",", ":")).encode()).hexdigest()


def is_trusted(mind_id: str, name: str, spec: ModelSpec) -> bool:
    return built_in(spec) or fingerprint(mind_id, name, spec) in _load(store_path())


def grant(mind_id: str, name: str, spec: ModelSpec) -> None:
    """Trust this exact setting of ``name`` in mind ``mind_id``, on this machine."""
    if built_in(spec):
        return
    entry = {"mind_id": mind_id, "name": name, "provider": spec.provider, "model": spec.model,
             "base_url": spec.base_url, "api_key_env": spec.api_key_env,
             "trusted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    with _changing() as entries:
        entries[fingerprint(mind_id, name, spec)] = entry


def revoke(mind_id: str, name: str) -> int:
    """Forget every setting of ``name`` trusted for mind ``mind_id``; how many there were."""
    path = store_path()
    if not path.exists():
        return 0
    with _changing() as entries:
        gone = [fp for fp, e in entries.items() if e.get("mind_id") == mind_id and e.get("name") == name]
        for fp in gone:
            del entries[fp]
    return len(gone)


@contextlib.contextmanager
def _changing() -> Iterator[dict[str, Any]]:
    """The entries, read and written back under a lock, so two writers never lose one's change."""
    path = store_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(path.with_name(f".{FILE_NAME}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = _load(path)
            yield entries
            data = {"pmm": "trusted-models", "version": FORMAT, "models": entries}
            files.write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise errors.UsageError(f"cannot write the trusted models file {path}: {exc.strerror}",
                                hint="check that the folder is writable") from None


def _load(path: Path) -> dict[str, Any]:
    """The entries by fingerprint; no file is no trust. A damaged file is an error rather than
    silently empty, so a later write does not throw away what the owner trusted."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise errors.UsageError(f"cannot read the trusted models file {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("version") != FORMAT or not isinstance(data.get("models"), dict):
            raise ValueError("not a trusted-models file")
    except (ValueError, UnicodeDecodeError):
        raise errors.UsageError(f"the trusted models file {path} is damaged",
                                hint="move it aside; then `pmm model trust NAME` each model again") from None
    return dict(data["models"])

