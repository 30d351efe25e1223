"""Where pmm's files live: the mind file (``--mind``, ``$PMM_MIND``, the user data dir) and state."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _xdg(variable: str, under_home: str) -> Path | None:
    """``$variable/pmm``, else ``$HOME/under_home/pmm``, on Linux when the answer is the one every
    platformdirs 4 gives there (both absolute); None otherwise (another OS, Android, a relative
    or unset value), and platformdirs decides. Importing platformdirs costs ~3 ms, about what
    the rest of `pmm stats` does on a small mind (a test holds this to platformdirs)."""
    if sys.platform != "linux" or hasattr(sys, "getandroidapilevel") \
            or any(name.startswith("ANDROID_") for name in os.environ):  # maybe Android: its own dirs
        return None
    if (set_to := os.environ.get(variable, "")).startswith("/"):
        return Path(set_to, "pmm")
    home = os.environ.get("HOME", "")
    if set_to.strip() or not home.startswith("/"):
        return None
    return Path(home, under_home, "pmm")


def data_dir() -> Path:
    """The user data dir (``$XDG_DATA_HOME/pmm`` on Linux)."""
    if (found := _xdg("XDG_DATA_HOME", ".local/share")) is not None:
        return found
    import platformdirs

    return Path(platformdirs.user_data_dir("pmm"))


def config_dir() -> Path:
    """The user config dir (``$XDG_CONFIG_HOME/pmm`` on Linux): the trusted models, the signing key."""
    if (found := _xdg("XDG_CONFIG_HOME", ".config")) is not None:
        return found
    import platformdirs

    return Path(platformdirs.user_config_dir("pmm"))


def default_mind_path() -> Path:
    return data_dir() / "mind.db"


def resolve_mind(option: Path | None) -> Path:
    """``--mind PATH``, else ``$PMM_MIND``, else the user data dir's ``mind.db``."""
    if option is not None:
        return option.expanduser()
    from pmm import settings

    env = settings.MIND.get()
    if env:
        return Path(env).expanduser()
    return default_mind_path()


def cache_dir() -> Path:
    """The user cache dir (``$XDG_CACHE_HOME/pmm`` on Linux): files pmm can always make again."""
    if (found := _xdg("XDG_CACHE_HOME", ".cache")) is not None:
        return found
    import platformdirs

    return Path(platformdirs.user_cache_dir("pmm"))


def state_dir() -> Path:
    """The user state dir (``$XDG_STATE_HOME/pmm`` on Linux): the witness, the cache key."""
    if (found := _xdg("XDG_STATE_HOME", ".local/state")) is not None:
        return found
    import platformdirs

    return Path(platformdirs.user_state_dir("pmm"))
