"""Imports point one way (STYLE.md): cli -> services -> {domain, ledger, providers}; ledger -> domain.

Also holds the start-up promise: `pmm --help` and `pmm --version` import none of the heavy
packages, so they stay fast.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "pmm"

# Which pmm packages each layer may import. errors, paths, settings (the environment, declared
# once) and the package root are shared; domain stays pure, so it reads no environment.
ALLOWED = {
    "cli": {"cli", "services", "errors", "paths", "settings", ""},
    "services": {"services", "domain", "ledger", "providers", "crypto", "errors", "paths", "settings", ""},
    "ledger": {"ledger", "domain", "errors", "paths", "settings"},  # paths: the cache seal's key (state dir)
    "domain": {"domain", "errors"},
    "providers": {"providers", "errors", "settings", ""},
    "crypto": {"crypto", "errors", "settings"},
}
FOREIGN_BANNED = {
    "cli": {"sqlite3", "httpx", "click"},
    "domain": {"sqlite3", "httpx", "time", "random", "datetime", "socket"},
    "services": {"sqlite3", "click", "httpx"},
    "providers": {"sqlite3", "click"},
    "crypto": {"sqlite3", "httpx", "click", "socket"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_point_one_way(layer: str) -> None:
    for module in sorted((PKG / layer).glob("*.py")):
        for name in imports_of(module):
            top = name.split(".")[0]
            if name == "pmm":
                continue  # `from pmm import x` is judged by its `pmm.x` entry
            if top == "pmm":
                part = name.split(".")[1] if name.count(".") else ""
                if part == "__version__":
                    part = ""
                assert part in ALLOWED[layer], f"{module.name} imports {name}"
            else:
                assert top not in FOREIGN_BANNED.get(layer, set()), f"{module.name} imports {name}"


HEAVY = ["httpx", "prompt_toolkit", "cryptography", "llama_cpp", "sqlite_utils", "pydantic",
         "rfc8785", "sqlite3", "pyrage", "pmm.crypto"]


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    code = (
        "import sys, json\n"
        "from pmm.cli.app import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"COLUMNS": "100", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    loaded = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    assert "pmm.cli.app" in loaded
    assert not {m for m in HEAVY if m in loaded}, f"pmm {args[0]} imported heavy modules"
