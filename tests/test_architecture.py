"""Imports point one way (STYLE.md): cli -> services -> {domain, ledger, providers}; ledger -> domain.

Also holds the start-up promise: `pmm --help`, `--version` and the read commands (`stats`, `log`,
`verify`) import none of the heavy packages, so they stay fast; and pmm's own coercion of
command-line values (pmm.cli.coercion, which keeps pydantic out of start-up) accepts and refuses
exactly what Typer's would.
"""

from __future__ import annotations

import ast
import enum
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    loaded = modules_after(args)
    assert "pmm.cli.app" in loaded
    assert not {m for m in HEAVY if m in loaded}, f"pmm {args[0]} imported heavy modules"


def modules_after(args: list[str], entry: str = "pmm.cli.boundary", env: dict[str, str] | None = None) -> set[str]:
    """Every module loaded once ``pmm ARGS`` has run in a fresh interpreter through ``entry``'s
    ``main`` (``pmm.cli.entry``: the console script itself)."""
    code = (
        "import sys, json\n"
        f"from {entry} import main\n"
        f"sys.argv = ['pmm', *{args!r}]\n"
        f"try:\n    main({'' if entry == 'pmm.cli.entry' else repr(args)})\nexcept SystemExit:\n    pass\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('\\n' + json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"COLUMNS": "100", "NO_COLOR": "1", "PATH": "/usr/bin:/bin", **(env or {})})
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


# What the start-up path of a read command must not import: pydantic (Typer's per-parameter
# TypeAdapters, replaced by pmm.cli.coercion), importlib.metadata (pydantic's plugin loader),
# httpx (and with it its own CLI: click, rich, pygments), rich (plain output needs none: it is for
# progress bars and a terminal's markdown) and prompt_toolkit (the REPL's).
NOT_AT_START = ["pydantic", "pydantic_core", "importlib.metadata", "httpx", "click", "rich", "pygments",
                "prompt_toolkit", "numpy", "wordllama", "llama_cpp", "cryptography", "pmm.crypto"]


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["stats"], ["stats", "--json"], ["log"],
                                  ["log", "--json"], ["verify"], ["verify", "--json"], ["-q", "log", "-n", "3"],
                                  ["search", "garden"]])
@pytest.mark.parametrize("entry", ["pmm.cli.entry", "pmm.cli.boundary"])
def test_read_commands_start_without_heavy_imports(tmp_path: Path, args: list[str], entry: str) -> None:
    """The read commands people and scripts run most stay fast (SPEC section 7: under 100 ms on a
    small mind; bench/bench_startup.py measures it): checked by what they import, not by a clock.
    They run without Typer (pmm.cli.fast); its help is Typer's."""
    mind = tmp_path / "mind.db"
    env = {"PMM_MIND": str(mind), "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path)}
    made = subprocess.run([sys.executable, "-m", "pmm", "init", "-q"], capture_output=True, env={**env, "PATH": "/usr/bin:/bin"})
    assert made.returncode == 0, made.stderr
    loaded = modules_after(args, entry, env)
    if args == ["--help"] or (args == ["--version"] and entry != "pmm.cli.entry"):
        assert "typer" in loaded  # help is Typer's, and so is --version past the console script's
    elif args != ["--version"]:
        assert "pmm.cli.fast" in loaded and "typer" not in loaded  # the command ran without Typer
    if args[0] != "--help" and args[0] != "--version":
        assert "sqlite3" in loaded  # ... and read the mind
    assert not [m for m in NOT_AT_START if m in loaded], f"pmm {' '.join(args)} imported heavy modules"


def test_verify_compiles_a_kinds_shortcut_pattern_only_once_it_pays(tmp_path: Path) -> None:
    """verify's per-kind shortcut patterns took ~20 ms to compile for all ~24 kinds, more than
    the full check of a small mind costs: a kind's is compiled once FAST_AFTER of its events
    were checked in full (the verdict is the same either way). Each note's meta differs here: a
    meta met before is answered from the memo of those that passed, without any pattern."""
    from pmm.domain import checks
    from pmm.domain.events import Draft
    from pmm.ledger.store import Ledger

    mind = tmp_path / "mind.db"
    with Ledger.create(mind, Draft("mind_created", "made", {"pmm_version": "0"})) as ledger:
        ledger.append([Draft("observation_recorded", f"note {n}", {"source": f"user {n}"})
                       for n in range(checks.FAST_AFTER + 5)])
        ledger.append([Draft("mind_named", "Ada", {"name": "Ada"})])
    env = {"PMM_MIND": str(mind), "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    code = ("import sys\nfrom pmm.cli.boundary import main\n"
            "try:\n    main(['verify'])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "from pmm.domain import events\nprint(sorted(k.decode() for k in events.FAST_PATTERNS))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "['observation_recorded']"


def test_chat_never_imports_httpx_own_command_line() -> None:
    """httpx imports its CLI (click, rich, pygments) when they are installed; pmm's boundary
    keeps it out, and httpx still imports."""
    code = ("import sys\nfrom pmm.cli.boundary import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "import httpx\n"
            "print(sorted(m for m in ('click', 'rich', 'pygments', 'httpx._main') if sys.modules.get(m)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines()[-1] == "[]"


# -- pmm.cli.coercion: Typer's coercion without pydantic ------------------------------------------

def test_every_parameter_is_coerced_without_pydantic() -> None:
    """Every parameter of every command gets pmm's simple coercion (a new parameter type would
    fall back to Typer's pydantic one, and bring its ~65 ms back): this also fails when the Typer
    internals pmm.cli.coercion relies on move (pyproject.toml pins the Typer it was checked on)."""
    import typer.core

    from pmm.cli import coercion
    from pmm.cli.app import command_tree

    assert coercion.install()
    assert getattr(typer.core.build_runtime_param, "pmm_simple", False)

    def params(command: Any) -> Iterator[Any]:
        ctx = typer.Context(command, info_name=command.name)
        yield from command.get_params(ctx)  # with the help option Typer adds
        for sub in getattr(command, "commands", {}).values():
            yield from params(sub)

    seen = 0
    for param in params(command_tree()):
        if isinstance(param, typer.core._TyperParameter):
            param._runtime_param = None  # Typer fills it lazily, through build_runtime_param
            assert isinstance(param.get_runtime_param(), coercion._Simple), param.name
            seen += 1
    assert seen > 100


def typers_and_ours(annotation: Any, **info: Any) -> tuple[Any, Any]:
    from typer._coercion import build_runtime_param, resolve_type_descriptor
    from typer.models import OptionInfo

    from pmm.cli import coercion

    descriptor = resolve_type_descriptor(annotation, OptionInfo(**info))
    ours = coercion.runtime_param(descriptor)
    assert ours is not None
    return build_runtime_param(descriptor), ours


def outcome(runtime: Any, value: Any) -> tuple[str, Any]:
    import typer

    try:
        result = runtime._coerce_value(value, param=None, ctx=None)
    except typer.BadParameter as exc:
        return "refused", exc.message
    return "accepted", (type(result), result if result == result else "nan")


class _Format(enum.Enum):
    JSONL = "jsonl"
    MD = "md"


NUMBERS = ["12", " 12 ", "+12", "-3", "1_000", "1.0", "12.000", "1.5", "1e3", "0x10", "\u0663", "", "abc",
           "99999999999999999999999", "0", "-0", "00012", "1__0", "_1", "1_", "1 2", "\t7\n", "1.", ".0",
           ".5", "5.", "1e0", "1e400", "inf", "-inf", "nan", "NaN", "Infinity", "INF", "in f", "1e", "1_0.5",
           "1e1_0", "+-1", "-nan", "\u00a012", "1.0e3", "0.0", "9223372036854775807", "9223372036854775808",
           5, 5.0, 5.5, True]
CASES = [
    (int, {}, NUMBERS), (int, {"min": 1, "max": 100}, NUMBERS), (int, {"min": 1, "max": 2**63 - 1}, NUMBERS),
    (float, {}, NUMBERS), (float, {"max": 604800}, NUMBERS), (float, {"min": 0, "max": 1000000}, NUMBERS),
    (int, {"min": 1, "max": 10, "clamp": True}, NUMBERS), (float, {"min": 1, "max": 10, "clamp": True}, NUMBERS),
    (bool, {}, ["true", "1", "yes", "on", "t", "y", "no", "0", "off", "f", "n", "False", "", " yes ", "TRUE",
                "x", "2", True, False, 0, 1]),
    (str, {}, ["abc", "", " a ", "\udcff", "é"]),
    (Path, {}, ["a/b", "", ".", "/", "x\x00y", "\udcff"]),
    (_Format, {}, ["jsonl", "md", "JSONL", "x", "", "\x1b[31m"]),
    (list[str], {}, [("a", "b"), ["a"], "a", ()]),
    (list[int], {"min": 1, "max": 9}, [("1", "2"), ("1", "x"), ("1", "0"), "3", ()]),
]


@pytest.mark.parametrize(("annotation", "info", "values"), CASES, ids=lambda c: repr(c)[:40])
def test_pmm_coercion_accepts_and_refuses_as_typers_does(annotation: Any, info: dict[str, Any],
                                                        values: list[Any]) -> None:
    """Value by value, the same result (type and value) or the same message as Typer's own
    pydantic coercion."""
    typers, ours = typers_and_ours(annotation, **info)
    for value in values:
        assert outcome(ours, value) == outcome(typers, value), repr(value)


def test_pmm_coercion_of_paths_keeps_typers_checks(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for info in ({"exists": True}, {"dir_okay": False}, {"file_okay": False}, {"resolve_path": True}):
        typers, ours = typers_and_ours(Path, **info)
        for value in (str(tmp_path / "f"), str(tmp_path), str(tmp_path / "missing")):
            assert outcome(ours, value) == outcome(typers, value), (info, value)


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"\s?[+-]?[0-9_]{0,4}\.?[0-9_]{0,3}(?:[eE][+-]?[0-9_]{0,2})?\s?|[+-]?(?:inf|nan)\w{0,5}",
                     fullmatch=True))
def test_pmm_coercion_parses_numbers_as_typers_does(text: str) -> None:
    """Numbers as people type them, and their typos (pydantic also reads "0-6" as -6, a quirk
    pmm leaves out: its bounds refuse that either way)."""
    for annotation in (int, float):
        typers, ours = _NUMBER_RUNTIMES[annotation]
        assert outcome(ours, text) == outcome(typers, text), (annotation, text)


_NUMBER_RUNTIMES = {kind: typers_and_ours(kind, min=1, max=1000) for kind in (int, float)}


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


# -- pmm.cli.lazy: each command built when first looked up ----------------------------------------

@pytest.mark.parametrize(("args", "built"), [(["unpin", "1"], "['unpin']"), (["stats", "--explain"], "[]")])
def test_a_command_run_builds_only_itself(tmp_path: Path, args: list[str], built: str) -> None:
    """A command Typer runs builds itself alone; one pmm.cli.fast runs builds nothing."""
    code = ("import sys\nfrom pmm.cli.boundary import main\n"
            f"try:\n    main(['--mind', {str(tmp_path / 'missing.db')!r}, *{args!r}])\nexcept SystemExit:\n    pass\n"
            "print(sorted(sys.modules['pmm.cli.app'].command_tree().commands._built)"
            " if 'pmm.cli.app' in sys.modules else [])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines()[-1] == built


@pytest.mark.parametrize(("args", "module"), [(["log"], "browse"), (["stats"], "browse"),
                                              (["verify"], "verify"), (["chat", "--help"], "chat")])
def test_a_command_run_imports_only_its_own_command_module(tmp_path: Path, args: list[str],
                                                           module: str) -> None:
    """Registering every command imported all the pmm.cli modules (and the provider
    registry, for `pmm model add --help`) on every run: ~5 ms that `pmm log` never used."""
    from pmm.cli.app import MODULES

    env = {"PMM_MIND": str(tmp_path / "mind.db"), "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path)}
    made = subprocess.run([sys.executable, "-m", "pmm", "init", "-q"], capture_output=True,
                          env={**env, "PATH": "/usr/bin:/bin"})
    assert made.returncode == 0, made.stderr
    loaded = modules_after(args, "pmm.cli.entry", env)
    assert [m for m in MODULES if f"pmm.cli.{m}" in loaded] == [module]
    if args[0] != "stats":  # stats reports the models' usage: it needs the provider registry
        assert "pmm.providers.registry" not in loaded
    if args[0] != "chat":  # ... but none of the adapters' interface
        assert "pmm.providers.base" not in loaded


def test_the_lazy_tree_is_typers_tree() -> None:
    """Every command, in Typer's order, with Typer's parameters (plus pmm's --quiet and group
    --mind) and help."""
    import typer

    from pmm.cli.app import app, command_tree

    def shape(command: Any) -> Iterator[tuple[Any, ...]]:
        names = [p.name for p in command.params if p.name not in ("quiet", "group_mind")]
        yield command.name, command.help, names, list(getattr(command, "commands", {}))
        for sub in getattr(command, "commands", {}).values():
            yield from shape(sub)

    assert list(shape(command_tree())) == list(shape(typer.main.get_command(app)))


def test_help_lists_commands_without_building_them_and_says_the_same() -> None:
    """`pmm --help` (and a group's) from the commands' summaries, in a fresh process, is the
    help of the fully built tree, character for character."""
    groups = [[], ["model"], ["commitments"], ["persona"], ["reflections"]]
    code = (
        "import contextlib, io, json\n"
        "from pmm.cli.app import command_tree\nfrom pmm.cli.boundary import main\n"
        "def help(path):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n            main([*path, '--help'])\n        except SystemExit:\n            pass\n"
        "    return out.getvalue()\n"
        f"lazy = [help(p) for p in {groups!r}]\n"
        "built = sorted(command_tree().commands._built)\n"
        "def walk(c):\n    for s in getattr(c, 'commands', {}).values():\n        walk(s)\n"
        "walk(command_tree())\n"
        f"print(json.dumps([built, lazy, [help(p) for p in {groups!r}]]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**__import__("os").environ, "COLUMNS": "100"})
    built, lazy, whole = json.loads(proc.stdout)
    assert built == sorted(g[0] for g in groups if g)  # only the groups asked for, no command
    assert "Commands:" in lazy[0] and "reflections" in lazy[0]
    assert lazy == whole


@pytest.fixture(scope="module")
def small_mind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A small mind as bench/bench_startup.py makes it (about 40 events: notes, and a chat turn
    every tenth), talking to a loopback model, with semantic recall on (as installed)."""
    from provider_servers import FakeServer

    home = tmp_path_factory.mktemp("small")
    env = {"PMM_MIND": str(home / "mind.db"), "XDG_STATE_HOME": str(home / "state"),
           "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_CACHE_HOME": str(home / "cache"), "HOME": str(home), "PMM_SEMANTIC": "1"}
    with FakeServer("openai", text="A short answer.") as server:
        steps = [["init", "--name", "Bench"],
                 ["model", "add", "loop", "openai-compatible:test-model", "--base-url", server.url, "--use"],
                 ["model", "trust", "loop"]]
        for i in range(18):
            steps.append(["remember", f"note {i}: the garden needs water in the morning"])
            if i % 10 == 0:
                steps.append(["chat", "-m", f"question {i}?"])
        for step in steps:
            made = subprocess.run([sys.executable, "-m", "pmm", "-q", *step], capture_output=True,
                                  env={**env, "PATH": "/usr/bin:/bin"})
            assert made.returncode == 0, made.stderr
        yield env


@pytest.mark.parametrize("args", [["chat", "-m", "Do I water the garden?"], ["recall", "Do I water the garden?"]])
def test_recall_by_meaning_on_a_small_mind_imports_neither_numpy_nor_tokenizers(
        small_mind: dict[str, str], args: list[str]) -> None:
    """numpy's import (45-90 ms) and tokenizers' load of WordLlama's tokenizer (70-90 ms, the
    GIL held) cost more than a small mind's whole turn: below the plain path's span
    (pmm.services.semantic.PLAIN_SPAN) recall by meaning imports neither."""
    loaded = modules_after(args, "pmm.cli.entry", small_mind)
    assert {"pmm.services.semantic", "pmm.services.plain_vectors", "sqlite3"} <= loaded  # it recalled
    allowed = {"httpx"} if args[0] == "chat" else set()  # a turn talks to its model
    assert not [m for m in ("numpy", "tokenizers", "wordllama", *NOT_AT_START) if m in loaded
                and m not in allowed], f"pmm {args[0]} imported heavy modules"
