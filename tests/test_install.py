"""./install.sh in a scratch HOME gives a user pmm on PATH, its completions, its man page, the mind
model beside it and the embedded model: `pmm chat -m` answers right after install, and a re-run
changes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import json_data

from pmm import __version__

ROOT = Path(__file__).resolve().parent.parent

# Read at import, before tests/conftest.py's autouse fixture points HOME and XDG_* at tmp_path:
# the llama-cpp-python wheel that scripts/local-model.sh builds (~4 min) and pip's download cache
# are shared with the real environment, so an install here takes seconds once CI has them.
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
WHEEL_CACHE = os.environ.get("PMM_WHEEL_CACHE") or str(_CACHE / "pmm" / "wheels")
PIP_CACHE = os.environ.get("PIP_CACHE_DIR") or str(_CACHE / "pip")


def scratch_env(home: Path) -> dict[str, str]:
    """A user with an empty HOME and the standard XDG layout; the system PATH without this test
    run's own venv, so `pmm` and `python3` are the installed and the system ones."""
    own_bin = str(Path(sys.executable).parent)
    system_path = [p for p in os.environ["PATH"].split(os.pathsep) if p and p != own_bin]
    env = {k: v for k, v in os.environ.items()
           if k not in {"MANPATH", "PMM_MIND", "PMM_BIN_DIR", "VIRTUAL_ENV", "PYTHONHOME",
                        "BASH_COMPLETION_USER_DIR", "ZDOTDIR"}}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"),
               XDG_CONFIG_HOME=str(home / ".config"), XDG_STATE_HOME=str(home / ".local" / "state"),
               XDG_CACHE_HOME=str(home / ".cache"), PMM_WHEEL_CACHE=WHEEL_CACHE,
               PIP_CACHE_DIR=PIP_CACHE,
               # a user's install, minus work no check here needs: pip's self-check on the index,
               # and byte-compiling every installed module (numpy's included) ahead of first use
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_COMPILE="0",  # pip reads "0" as --no-compile
               PATH=os.pathsep.join([str(home / ".local" / "bin"), *system_path]))
    return env


def install(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Without the cached wheel, llama-cpp-python is built from source: about 4 minutes on 2 cores.
    proc = subprocess.run([str(ROOT / "install.sh")], env=env, cwd=env["HOME"], capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def installed_files(home: Path) -> dict[Path, Path]:
    """Where each shell, `man` and `pmm stats --explain` look for a user's own files -> the file in
    the repo."""
    share = home / ".local" / "share"
    return {
        share / "bash-completion" / "completions" / "pmm": ROOT / "completions" / "pmm.bash",
        share / "zsh" / "site-functions" / "_pmm": ROOT / "completions" / "_pmm",
        home / ".config" / "fish" / "completions" / "pmm.fish": ROOT / "completions" / "pmm.fish",
        share / "man" / "man1" / "pmm.1": ROOT / "man" / "pmm.1",
        share / "doc" / "pmm" / "mind-model.md": ROOT / "docs" / "mind-model.md",  # where man pmm says
    }


def test_install_sh_gives_a_working_pmm_with_completions_man_page_and_embedded_model(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = scratch_env(home)
    run = install(env)

    pmm = home / ".local" / "bin" / "pmm"
    assert shutil.which("pmm", path=env["PATH"]) == str(pmm)
    version = subprocess.run(["pmm", "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert (version.returncode, version.stdout) == (0, f"pmm {__version__}\n")

    files = installed_files(home)
    for installed, generated in files.items():
        assert installed.read_bytes() == generated.read_bytes(), installed
        assert f"Installed {installed}" in run.stdout
    assert f"fpath=({home}/.local/share/zsh/site-functions $fpath)" in run.stdout

    if shutil.which("man", path=env["PATH"]):
        found = subprocess.run(["man", "-w", "pmm"], env=env, capture_output=True, text=True, timeout=60)
        assert found.stdout.strip() == str(home / ".local" / "share" / "man" / "man1" / "pmm.1"), found
        assert "MANPATH" not in run.stdout  # no hint needed: man finds it through PATH

    # What bash-completion does on the first <Tab> after `pmm`: source the file from its user dir.
    bash = subprocess.run(["bash", "-c", (
        'source "${XDG_DATA_HOME}/bash-completion/completions/pmm"\n'
        "complete -p pmm\n"
        'COMP_WORDS=(pmm ver); COMP_CWORD=1; _pmm; echo "${COMPREPLY[@]}"\n')],
        env=env, capture_output=True, text=True, timeout=60)
    assert bash.returncode == 0, bash.stderr
    assert bash.stdout.splitlines() == ["complete -o filenames -F _pmm pmm", "verify"]

    before = {path: path.read_bytes() for path in files}
    rerun = install(env)
    assert "Creating" not in rerun.stdout  # the venv is upgraded in place, not made again
    assert {path: path.read_bytes() for path in files} == before
    assert os.readlink(pmm) == str(home / ".local" / "share" / "pmm" / "venv" / "bin" / "pmm")

    # The README's promise: right after install, the embedded model answers.
    assert "Embedded model ready" in run.stdout
    chat = subprocess.run(["pmm", "--mind", str(tmp_path / "mind.db"), "chat", "-m", "Hello", "--max-tokens", "8"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip()
    # and stats points to the mind model where it was installed (the path `man pmm` gives)
    stats = subprocess.run(["pmm", "--mind", str(tmp_path / "mind.db"), "stats", "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert json_data(stats.stdout)["explained"]["definitions"] == str(
        home / ".local" / "share" / "doc" / "pmm" / "mind-model.md"), stats.stderr
    # and semantic recall is installed with it (the `semantic` extra), its weights included
    health = subprocess.run(["pmm", "--mind", str(tmp_path / "mind.db"), "health"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert "recall vectors:" in health.stdout and "not installed" not in health.stdout, health.stdout


def test_install_sh_refuses_unknown_options_before_touching_anything(tmp_path: Path) -> None:
    proc = subprocess.run([str(ROOT / "install.sh"), "--bogus"], env=scratch_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown option" in proc.stderr
    assert not (tmp_path / ".local").exists()
    usage = subprocess.run([str(ROOT / "install.sh"), "--help"], env=scratch_env(tmp_path),
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "[--no-semantic]" in usage.stdout
    assert not (tmp_path / ".local").exists()
