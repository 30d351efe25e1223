"""The shell completions and the man page cover the whole command tree: `pmm model <Tab>` offers
the subcommands, every command completes its options, an option's choices and file names; the man
page documents every command, the exit codes, the environment and the files.

The completions run in real shells (bash always; zsh and fish when installed) and the man page is
rendered by man (or groff) when there is one.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASH, ZSH, FISH = (ROOT / "completions" / name for name in ("pmm.bash", "_pmm", "pmm.fish"))
MAN = ROOT / "man" / "pmm.1"
ENV_VARS = ("PMM_MIND", "PMM_LOCK_TIMEOUT", "PMM_DEBUG", "PMM_PROVIDER_TIMEOUT", "PMM_PROVIDER_RETRIES",
            "PMM_LOCAL_CTX", "PMM_KEY_PASSPHRASE", "PMM_BACKUP_PASSPHRASE", "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY", "OLLAMA_HOST", "NO_COLOR", "XDG_DATA_HOME", "XDG_CONFIG_HOME",
            "XDG_STATE_HOME")
# What zsh and fish must offer for each line typed so far (a file mind.age is in the directory).
SHELL_CASES = {
        "pmm model ": {"add", "list", "set", "use", "info", "trust", "remove"},
        "pmm commitments cl": {"close"},
        "pmm sign --f": {"--format"},
        "pmm sign --format ": {"minisign", "ssh"},
        "pmm --mind x.db model a": {"add"},
        "pmm restore mi": {"mind.age"},
        "pmm model use --for ": {"chat", "reflection"},
}


def gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tree() -> list[tuple[tuple[str, ...], Any]]:
    """(path, click command) for every command and subcommand, as Typer builds them."""
    import typer

    from pmm.cli.app import app

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*path, name))

    return list(walk(typer.main.get_command(app), ()))


def option_names(command: Any) -> set[str]:
    return {n for p in command.params if p.param_type_name == "option" for n in (*p.opts, *p.secondary_opts)}


PATHS = [path for path, _ in tree() if path]
GROUPS = {path: sorted(command.commands) for path, command in tree() if hasattr(command, "commands")}


# --- bash ----------------------------------------------------------------------------------------------

def bash_complete(*lines: list[str], cwd: Path = ROOT) -> list[set[str]]:
    """What `_pmm` offers for each command line (its last word is the one being completed)."""
    calls = "".join(
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
        "COMPREPLY=(); _pmm; (IFS='|'; echo \"${COMPREPLY[*]}\")\n" for words in lines)
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", f"source {shlex.quote(str(BASH))}\n{calls}"],
                          capture_output=True, text=True, timeout=60, cwd=cwd)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return [set(filter(None, line.split("|"))) for line in proc.stdout.split("\n")[:len(lines)]]


def test_bash_completes_nested_groups_options_choices_and_files(tmp_path: Path) -> None:
    (tmp_path / "mind.age").touch()
    assert bash_complete(
        ["pmm", "model", ""],
        ["pmm", "sign", "--f"],
        ["pmm", "sign", "--format", ""],
        ["pmm", "commitments", "cl"],
        ["pmm", "--mind", "x.db", "-q", "model", "a"],  # global options and their values are skipped
        ["pmm", "import", "--format", "=", ""],  # --format=<Tab>: bash splits at the =
        ["pmm", "model", "use", "--for", "r"],
        ["pmm", "restore", "mi"],
        ["pmm", "backup", "-o", ""],
        ["pmm", "-"],
        ["pmm", "chat", "-m", ""],  # free text: nothing to offer
        cwd=tmp_path,
    ) == [
        {"add", "list", "set", "use", "info", "trust", "remove"},
        {"--format"},
        {"minisign", "ssh"},
        {"close"},
        {"add"},
        {"jsonl", "chatgpt", "claude"},
        {"reflection"},
        {"mind.age"},
        {"mind.age"},
        {"--mind", "--quiet", "-q", "--version", "-h", "--help"},
        set(),
    ]


def test_bash_offers_every_option_of_every_command_and_every_subcommand() -> None:
    commands = dict(tree())
    offered = bash_complete(*[["pmm", *path, "-"] for path in PATHS])
    for path, options in zip(PATHS, offered, strict=True):
        assert option_names(commands[path]) | {"-h", "--help"} <= options, path
    for group, subcommands in GROUPS.items():
        assert bash_complete(["pmm", *group, ""]) == [set(subcommands)], group


def test_bash_file_registers_for_on_demand_loading() -> None:
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", f"source {shlex.quote(str(BASH))}; complete -p pmm"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "complete -o filenames -F _pmm pmm"


# --- zsh -----------------------------------------------------------------------------------------------

# Drives an interactive zsh through a pty: each LINE then <Tab>, printing "LINE<Tab>match" for
# every match the completion functions add. The Tab widget prints a marker once completion is done.
ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=; RPROMPT=; fpath=(${(q)1} \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd() { local -a m; if (( ${@[(I)-[OAD]]} )); then builtin compadd "$@"; return; fi; builtin compadd -O m "$@"; print -rl -- "<<${^m[@]}>>"; builtin compadd "$@"; }'
zpty -w z '_tab() { zle complete-word; print -n "__TAB""DONE__"; }; zle -N _tab; bindkey "^I" _tab'
zpty -w z 'print __READY""__'
zpty -r z out '*__READY__*'
shift
for line in "$@"; do
  zpty -n -w z "$line"$'\t'
  zpty -r z out '*__TABDONE__*'
  for m in ${(f)out}; do [[ $m == *'<<'*'>>'* ]] && print -r -- "$line"$'\t'"${${m##*<<}%%>>*}"; done
  zpty -n -w z $'\C-u'
done
zpty -d z
"""


def installed(name: str) -> str:
    """The shell's path; the test is skipped where it is not installed (.ci/run installs it)."""
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found


@pytest.fixture
def zsh() -> str:
    return installed("zsh")


def zsh_complete(zsh: str, tmp_path: Path, *lines: str) -> dict[str, set[str]]:
    driver = tmp_path / "driver.zsh"
    driver.write_text(ZSH_DRIVER)
    proc = subprocess.run([zsh, "-f", str(driver), str(ZSH.parent), *lines],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found: dict[str, set[str]] = {line: set() for line in lines}
    for row in proc.stdout.splitlines():
        line, match = row.split("\t")
        found[line].add(match)
    return found


def test_zsh_script_parses_and_registers(zsh: str) -> None:
    assert subprocess.run([zsh, "-n", str(ZSH)], capture_output=True, text=True).returncode == 0
    for load in (f"fpath=({ZSH.parent} $fpath); autoload -U compinit; compinit -u -D",  # installed
                 f"autoload -U compinit; compinit -u -D; source {ZSH}"):  # sourced
        proc = subprocess.run([zsh, "-f", "-c", f"{load}; print -r -- $_comps[pmm]"],
                              capture_output=True, text=True, timeout=60)
        assert (proc.stdout, proc.stderr) == ("_pmm\n", ""), load


def test_zsh_completes_nested_groups_options_choices_and_files(zsh: str, tmp_path: Path) -> None:
    (tmp_path / "mind.age").touch()
    assert zsh_complete(zsh, tmp_path, *SHELL_CASES) == SHELL_CASES


def test_zsh_offers_every_long_option_of_every_command(zsh: str, tmp_path: Path) -> None:
    commands = dict(tree())
    offered = zsh_complete(zsh, tmp_path, *[" ".join(("pmm", *path, "--")) for path in PATHS])
    for path in PATHS:
        expected = {n for n in option_names(commands[path]) if n.startswith("--")} | {"--help"}
        assert expected <= offered[" ".join(("pmm", *path, "--"))], path


# --- fish ----------------------------------------------------------------------------------------------

def fish_complete(fish: str, *lines: str, cwd: Path = ROOT) -> dict[str, set[str]]:
    script = f"source {shlex.quote(str(FISH))}\n" + "".join(
        f"complete -C {shlex.quote(line)} | string replace -r '\\t.*' ''; echo __END__\n" for line in lines)
    proc = subprocess.run([fish, "--no-config", "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=cwd)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return {line: set(part.split()) for line, part in zip(lines, proc.stdout.split("__END__\n"), strict=False)}


@pytest.fixture
def fish() -> str:
    return installed("fish")


def test_fish_script_parses_and_completes(fish: str, tmp_path: Path) -> None:
    assert subprocess.run([fish, "--no-execute", str(FISH)], capture_output=True, text=True).returncode == 0
    (tmp_path / "mind.age").touch()
    assert fish_complete(fish, *SHELL_CASES, cwd=tmp_path) == SHELL_CASES


def test_fish_offers_every_option_of_every_command(fish: str) -> None:
    commands = dict(tree())
    offered = fish_complete(fish, *[" ".join(("pmm", *path, "-")) for path in PATHS])
    for path in PATHS:
        assert option_names(commands[path]) | {"-h", "--help"} <= offered[" ".join(("pmm", *path, "-"))], path


# --- every file names every command --------------------------------------------------------------------

def test_every_command_path_is_in_each_completion_file_and_the_man_page() -> None:
    bash, zsh, fish, man = (f.read_text() for f in (BASH, ZSH, FISH, MAN))
    for path in PATHS:
        key, parent, name = " ".join(path), " ".join(path[:-1]), path[-1]
        assert f'"{key}")' in bash, path
        assert f"{'_'.join(('_pmm', *path))}() {{" in zsh and f"{name}) {'_'.join(('_pmm', *path))}" in zsh, path
        assert f"""-n '__pmm_is "{parent}"' -a {name} """ in fish, path
        assert f'.SS "pmm {key} ' in man, path


# --- man page ------------------------------------------------------------------------------------------

def rendered_man_page() -> str:
    if shutil.which("man"):
        command = ["man", "-l", str(MAN)]
    elif shutil.which("groff"):
        command = ["groff", "-man", "-Tutf8", "-P-cbou", str(MAN)]
    else:
        pytest.skip("neither man nor groff is installed")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", "MANWIDTH": "200", "LANG": "C.UTF-8"})
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    text = re.sub(".\b", "", proc.stdout)  # overstrikes, should a pager's formatting get through
    return text.replace("\u2010", "-").replace("\u2212", "-")


def test_man_page_renders_every_command_exit_status_environment_and_files() -> None:
    text = rendered_man_page()
    sections = re.findall(r"^([A-Z][A-Z ]+)$", text, flags=re.M)
    assert {"NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES",
            "SEE ALSO"} <= set(sections)
    for path in PATHS:
        assert f"pmm {' '.join(path)} [OPTIONS]" in text, path
    assert "-f, --format <minisign|ssh>" in text and "--online / --offline" in text

    def section(name: str) -> str:
        return text.split(f"\n{name}\n", 1)[1].split("\n\n\n")[0].split("\nSEE ALSO\n")[0]

    status = section("EXIT STATUS")
    for code in ("0", "1", "2", "3", "4", "5", "6", "130"):
        assert re.search(rf"^\s+{code}\s+\S", status, flags=re.M), code
    environment = section("ENVIRONMENT")
    for name in ENV_VARS:
        assert re.search(rf"^\s+{name}\b", environment, flags=re.M), name
    files = section("FILES")
    for file in ("~/.local/share/pmm/mind.db", "~/.config/pmm/signing-key.pem", "~/.local/state/pmm/chat_history",
                 "~/.local/state/pmm/witness/", "~/.local/state/pmm/locks/",
                 "~/.local/share/doc/pmm/mind-model.md"):  # where install.sh puts docs/mind-model.md
        assert file in files, file
    for page in ("minisign(1)", "age(1)", "ssh-keygen(1)", "sqlite3(1)"):
        assert page in text
    assert "docs/mind-model.md" in text.split("\nSEE ALSO\n", 1)[1]  # where the definitions live


def test_man_page_is_clean_roff() -> None:
    if not shutil.which("groff"):
        pytest.skip("groff is not installed")
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN)], capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")


def environment_names_in_the_code() -> set[str]:
    """Every variable pmm's code reads: os.environ.get("X"), os.environ["X"], "X" in os.environ,
    string constants named like pmm's own variables or API keys (read through a constant), and
    the ``..._env="X"`` of a provider's registry entry."""
    names: set[str] = set()
    for module in (ROOT / "pmm").rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"PMM_[A-Z0-9_]+|[A-Z]+_API_KEY", node.value):
                names.add(node.value)
            if isinstance(node, ast.keyword) and (node.arg or "").endswith("_env") \
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                names.add(node.value.value)  # a provider's variables, in pmm.providers.registry
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) \
                    and isinstance(node.left.value, str) and "environ" in ast.unparse(node.comparators[0]):
                names.add(node.left.value)
            call = ast.unparse(node) if isinstance(node, ast.Call | ast.Subscript) else ""
            found = re.match(r"os\.environ(?:\.get\(|\[)'([A-Z_]+)'", call)
            if found:
                names.add(found[1])
    return names


def test_the_environment_table_matches_the_code() -> None:
    table = {name for name, _ in gen_docs().ENVIRONMENT}
    in_code = environment_names_in_the_code()
    assert {"PMM_MIND", "PMM_LOCK_TIMEOUT", "OLLAMA_HOST", "NO_COLOR", "TERM", "OPENAI_API_KEY"} <= in_code
    assert in_code <= table, f"add to ENVIRONMENT in scripts/gen_docs.py: {sorted(in_code - table)}"
    # The XDG variables are read by platformdirs, for pmm's data, config and state dirs.
    assert table - in_code == {"XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"}
    assert set(ENV_VARS) <= table
