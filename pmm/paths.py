"""Where pmm's files live: the mind file (``--mind``, ``$PMM_MIND``, the user data dir) and state."""

from __future__ import annotations

from pathlib import Path


def default_mind_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("pmm")) / "mind.db"


def resolve_mind(option: Path | None) -> Path:
    """``--mind PATH``, else ``$PMM_MIND``, else the user data dir's ``mind.db``."""
    if option is not None:
        return option.expanduser()
    from pmm import settings

    env = settings.MIND.get()
    if env:
        return Path(env).expanduser()
    return default_mind_path()


def state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("pmm"))
