"""pmm.cli.fast reads a command line exactly as Typer would, or leaves it to Typer.

Typer's side is its own parser, run on the same tree pmm runs (``app.command_tree``): the root's
context, then the command's, and the values Typer's wrapper would pass the command
(``_normalize_collection_value``). So a command line the fast path takes runs with the very values
Typer would have given the command; one it does not take runs through Typer as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmm.cli import fast, options, output
from pmm.cli.app import command_tree


def typers(args: list[str]) -> tuple[str, dict[str, Any], Path | None, bool] | None:
    """The command's path, its values, the --mind given before it (pmm's, or its group's) and
    whether -q was given anywhere, as Typer's parser reads ``args``; None when Typer refuses
    them (or would not run a command: --help, --version, ...)."""
    import typer.main

    output.QUIET = False
    options.Globals.mind = None
    tree = command_tree()
    path = []
    try:
        ctx = tree.make_context("pmm", list(args))
        mind = ctx.params.get("mind")
        quiet = bool(ctx.params.get("quiet"))
        command: Any = tree
        while hasattr(command, "commands"):
            name, *rest = [*ctx._protected_args, *ctx.args]  # the next command's name, then its words
            sub = command.get_command(ctx, name)
            if sub is None:
                return None
            path.append(name)
            ctx = sub.make_context(name, rest, parent=ctx)
            command = sub
    except Exception as exc:  # a usage error, --help, --version: what Typer says, not a run
        if type(exc).__module__.startswith("typer") or isinstance(exc, SystemExit):
            return None
        raise
    by_name = {p.name: p for p in command.params}
    values = {k: typer.main._normalize_collection_value(by_name[k], v) for k, v in ctx.params.items()}
    values.pop("ctx", None)
    # a group's --mind (its callback sets the global) wins over pmm's; a command's -q is its callback's
    return " ".join(path), values, options.Globals.mind or mind, quiet or output.QUIET


def ours(args: list[str]) -> tuple[str, dict[str, Any], Path | None, bool] | None:
    prepared = fast.prepare(list(args))
    if prepared is None:
        return None
    values = {k: v for k, v in prepared.values.items() if not isinstance(v, fast.Context)}
    return prepared.path.removeprefix("pmm "), values, prepared.mind, prepared.quiet


COMMON = [
    ["stats"], ["stats", "--json"], ["stats", "--explain", "--as-of", "12"], ["log"], ["log", "-n", "5"],
    ["log", "--number=5", "--kind", "note", "--json"], ["-q", "log", "--since", "2026-01-01"],
    ["--mind", "x.db", "log", "-q"], ["--mind=x.db", "stats"], ["verify"], ["verify", "--deep", "--json"],
    ["verify", "-"], ["verify", "other.db", "--no-witness"], ["search", "garden"],
    ["search", "garden", "-n", "3", "--on", "today"], ["chat", "-m", "hello"],
    ["chat", "-m", "-", "--json"], ["chat", "--message", "hi", "--model", "loop", "--max-tokens", "64"],
    ["chat", "-m", "hi", "-o", "temperature=0.2", "-o", "seed=1"], ["chat", "-m", "hi", "--raw", "-c"],
    ["chat", "-m", "hi", "--budget", "0.5", "--title", "t", "-s", "be brief", "--session", "ab12"],
    ["sessions"], ["sessions", "-n", "3", "--json"], ["trace"], ["trace", "12", "--json"], ["recall", "garden"],
    ["recall", "do I have a dog", "--json"], ["health"], ["health", "--json"], ["export"], ["export", "-o", "out.jsonl"],
    ["diff", "12"], ["diff", "12", "other.db", "--json"], ["pins"], ["pins", "--json"],
    ["commitments", "list"], ["commitments", "list", "--all", "--json"], ["commitments", "--mind", "g.db", "list"],
    ["--mind", "m.db", "commitments", "--mind", "g.db", "-q", "list", "-a"], ["reflections", "list", "--json"],
    ["reflections", "show", "3"], ["persona", "show"], ["-q", "persona", "show", "--json"],
]


@pytest.mark.parametrize("args", COMMON)
def test_the_common_command_lines_run_without_typer_and_as_typer_reads_them(args: list[str]) -> None:
    got = ours(args)
    assert got is not None, f"pmm {' '.join(args)} went to Typer"
    assert got == typers(args)


# What Typer reads its own way, or refuses: each goes to Typer.
TYPERS = [
    ["stats", "--help"], ["-h"], ["--version"], ["log", "-n", "+5"], ["log", "-n", "1_000"], ["log", "-n", "0"],
    ["log", "-n", " 5"], ["log", "-n5"], ["log", "--json", "--json"], ["log", "--", "x"], ["stats", "extra"],
    ["verify", "--deep=1"], ["chat", "-m", "hi", "-o", "temperature", "0.2"], ["chat", "-m", "hi", "--bogus"],
    ["chat", "-m", "--json"], ["search"], ["model", "list"], ["remember", "x"], ["stats", "--mind"], ["diff"], ["commitments"],
    ["commitments", "open", "x"], ["commitments", "--mind"], ["commitments", "-h", "list"], ["persona", "set", "x"],
    ["log", "-qn", "3"], ["chat", "-m", "caf\udce9"], ["log", "-n", "99999999999999999999"],
]


@pytest.mark.parametrize("args", TYPERS)
def test_what_typer_reads_its_own_way_is_left_to_it(args: list[str]) -> None:
    assert ours(args) is None


def _func(path: tuple[str, ...]) -> Any:
    module, attribute = fast.FAST[path]
    return getattr(__import__(f"pmm.cli.{module}", fromlist=[attribute]), attribute)


def _typers_command(path: tuple[str, ...]) -> Any:
    command: Any = command_tree()
    for word in path:
        command = command.commands[word]
    return command


def test_every_fast_command_declares_only_what_the_fast_path_reads() -> None:
    """A new parameter of a kind the fast path cannot read would send every run of the command
    through Typer, silently: each command the fast path names must stay readable here."""
    from pmm.cli import app

    for path, (module, _) in fast.FAST.items():
        assert app.COMMANDS[path[0]] == module
        assert fast.params(_func(path)) is not None, f"pmm {' '.join(path)} has a parameter pmm.cli.fast cannot read"


def test_each_parameter_has_typers_names_and_default() -> None:
    for path in fast.FAST:
        ours_ = {p.name: p for p in fast.params(_func(path)) or [] if not isinstance(p.default, fast.Context)}
        theirs = {p.name: p for p in _typers_command(path).params if p.expose_value}
        assert set(ours_) == set(theirs), path
        for key, param in ours_.items():
            click = theirs[key]
            assert (param.on, param.off) == ((*click.opts,), (*click.secondary_opts,)) if param.option \
                else click.opts == [key]
            assert param.flag == bool(getattr(click, "is_flag", False))
            assert param.many == bool(getattr(click, "multiple", False))
            assert param.required == click.required
            assert param.required or param.default == click.default or (param.many and click.default is None)


VALUES = st.sampled_from(["5", "0", "-1", "+5", "007", "1_0", "1e3", "2.5", ".5", "inf", "nan", "-", "--json",
                          "", " ", "x", "garden", "today", "2026-01-01", "caf\udce9", "a b", "é", "12",
                          "100000", "100001", "99999999999999999999", "temperature=0.2", "mind.db", "/", "~",
                          "jsonl", "md", "JSONL", "last"])


def _words(path: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    """Command lines made mostly of the command's own options, flags and arguments (so that many
    are read here), with values Typer may read its own way and some noise."""
    declared = [p for p in fast.params(_func(path)) or [] if not isinstance(p.default, fast.Context)]
    noise = st.sampled_from(["-q", "--quiet", "--help", "-h", "--", "--bogus", "-x", "-qn", "--mind"])
    units = [noise.map(lambda w: [w]), VALUES.map(lambda v: [v])]
    for param in declared:
        if param.flag:
            units.append(st.sampled_from([*param.on, *param.off]).map(lambda w: [w]))
        elif param.option:
            units.append(st.tuples(st.sampled_from(param.on), VALUES).map(list))
            units.append(st.tuples(st.sampled_from([o for o in param.on if o.startswith("--")] or ["--x"]),
                                   VALUES).map(lambda t: [f"{t[0]}={t[1]}"]))
    return st.lists(st.one_of(*units), max_size=5).map(lambda parts: [w for part in parts for w in part])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["-q", "--quiet", "--mind", "m.db", "--mind=m.db", "-h"]), max_size=3),
       st.sampled_from(sorted(fast.FAST)).flatmap(lambda c: st.tuples(st.just(c), _words(c))),
       st.lists(st.sampled_from(["-q", "--mind", "g.db", "--mind=g.db"]), max_size=2))
def test_any_command_line_runs_here_only_with_the_values_typer_reads(
        root: list[str], command: tuple[tuple[str, ...], list[str]], group: list[str]) -> None:
    path, words = command
    args = [*root, path[0], *(group if len(path) > 1 else []), *path[1:], *words]
    got = ours(args)
    if got is not None:
        assert got == typers(args), args


def test_the_console_script_runs_a_fast_command_as_typer_would(tmp_path: Path) -> None:
    """End to end: the same command line, through the fast path and through Typer (a command
    line the fast path leaves to Typer, which only reorders it), says the same."""
    env = {**os.environ, "PMM_MIND": str(tmp_path / "mind.db"), "XDG_STATE_HOME": str(tmp_path / "s"),
           "XDG_DATA_HOME": str(tmp_path / "d"), "XDG_CONFIG_HOME": str(tmp_path / "c"), "NO_COLOR": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pmm", *args], capture_output=True, text=True, env=env)

    assert run("init", "-q", "--name", "Ada").returncode == 0
    assert run("remember", "-q", "the garden needs water").returncode == 0
    fast_ = run("log", "-n", "5", "--json")
    slow = run("log", "-n", "5", "--json", "--json")  # a flag given twice: Typer's to read
    assert fast_.returncode == slow.returncode == 0
    assert fast_.stdout == slow.stdout


def test_a_shell_asking_for_completions_is_answered_by_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ours(["stats"]) is not None
    monkeypatch.setenv("_PMM_COMPLETE", "complete_bash")
    assert ours(["stats"]) is None


READ = {"x86_64": "0", "aarch64": "63"}.get(os.uname().machine)  # read(2)'s number: /proc/PID/syscall


@pytest.mark.skipif(READ is None or not Path("/proc/self/syscall").exists(), reason="Linux x86_64/aarch64")
@pytest.mark.parametrize("args", [["recall", "-", "--json"], ["recall", "-", "--json", "--json"]])
def test_ctrl_c_ends_a_command_as_typer_does_on_either_path(tmp_path: Path, args: list[str]) -> None:
    """Ctrl-C while a command waits (here on stdin): exit 130 and nothing more said, whether
    pmm.cli.fast read the command line (the first) or Typer did (a flag given twice)."""
    import signal
    import time

    env = {**os.environ, "PMM_MIND": str(tmp_path / "mind.db"), "XDG_STATE_HOME": str(tmp_path / "s"),
           "XDG_DATA_HOME": str(tmp_path / "d"), "XDG_CONFIG_HOME": str(tmp_path / "c"), "NO_COLOR": "1"}
    assert subprocess.run([sys.executable, "-m", "pmm", "init", "-q"], env=env).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "pmm", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        syscall = Path(f"/proc/{proc.pid}/syscall")
        while not syscall.read_text().startswith(f"{READ} 0x0 "):  # blocked reading fd 0
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert out == b"" and err == b"", (out, err)
