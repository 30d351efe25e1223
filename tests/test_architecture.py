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
    # paths: the cache seal's key (state dir); "": pmm.__version__, in each migration's record
    "ledger": {"ledger", "domain", "errors", "paths", "settings", ""},
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


HEAVY = ["httpx", "prompt_toolkit", "cryptography", "llama_cpp", "pydantic",
         "rfc8785", "sqlite3", "pmm.crypto"]


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


MODULES = {".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"): p
           for p in sorted(PKG.rglob("*.py"))}


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the pmm modules it imports anywhere (top level, in functions, under
    TYPE_CHECKING): a lazy import is still a dependency, and a cycle through one is a trap."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imports_of(path):
            while name and name not in modules:
                name = name.rpartition(".")[0]  # `from pmm.x import name`: the module pmm.x
            if name and name != module and name != "pmm":
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph(MODULES)) == []


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    """The check itself: two modules that import each other (one lazily) are one component."""
    pkg = tmp_path / "pmm"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "cli" / "a.py").write_text("from pmm.cli import b\n")
    (pkg / "cli" / "b.py").write_text("def f():\n    from pmm.cli.a import g\n")
    (pkg / "cli" / "c.py").write_text("from pmm.cli import a\n")
    planted = {f"pmm.cli.{n}": pkg / "cli" / f"{n}.py" for n in "abc"}
    assert cycles(import_graph(planted)) == [["pmm.cli.a", "pmm.cli.b"]]


def test_every_module_imports_on_its_own() -> None:
    """`python -c "import pmm.cli.X"` works for every module, in one fresh interpreter per module
    (batched into one process that imports each in a clean sys.modules)."""
    code = (
        "import importlib, sys\n"
        "base = set(sys.modules)\n"
        "bad = []\n"
        f"for name in {sorted(set(MODULES) - {'pmm.__main__'})!r}:  # __main__ runs pmm\n"
        "    for loaded in set(sys.modules) - base:\n"
        "        if loaded == 'pmm' or loaded.startswith('pmm.'):\n"
        "            del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        bad.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""
