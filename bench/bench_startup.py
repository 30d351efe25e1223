"""Start-up of the commands people and scripts run most (SPEC section 7, issue 15: every real
command under 100 ms on a small mind; --version and --help under 150 ms).

    .venv/bin/python bench/bench_startup.py [--runs 21] [--events 100]

Times the real `pmm` console script as a subprocess: the median wall time of N runs (after two
warm-ups, so the bytecode and page caches are warm), the median CPU time (user + system, from
wait4: on a loaded machine it moves less than the wall time) and the peak RSS (GNU time's %M, the
child's own high-water mark). Beside them, the limits measured in the same run: `python -c pass`
(the interpreter alone) and `python -c "import typer"` (the CLI framework alone), so a figure
reads as "pmm's own share" whatever the load; for `chat -m`, also beside importing typer and
httpx (and, with recall, numpy and loading WordLlama's tokenizer): what no turn can skip. It
talks to a loopback OpenAI-compatible server that answers at once (tests/provider_servers.py), so
its figure is pmm's start-up, one turn's work and one local HTTP round trip: once as installed
(with the semantic extra, recall loads WordLlama's weights and tokenizer and numpy) and once
with PMM_SEMANTIC=0 (recall by BM25 alone).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_ledger import PMM  # noqa: E402
from provider_servers import FakeServer  # noqa: E402

GNU_TIME = "/usr/bin/time"
HTTPX = "import sys; sys.modules['httpx._main'] = None; import typer, httpx"  # as pmm imports it
SEMANTIC = ("; import os, importlib.util; os.environ.setdefault('OPENBLAS_NUM_THREADS', '1'); import numpy;"
            " from tokenizers import Tokenizer; spec = importlib.util.find_spec('wordllama');"
            " spec and Tokenizer.from_file(spec.submodule_search_locations[0]"
            " + '/tokenizers/l2_supercat_tokenizer_config.json')")  # as pmm.services.semantic does


def wall(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of ``cmd``."""
    t = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - t
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {child.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> float | None:
    """The child's peak RSS, from GNU time: ru_maxrss of a child this process spawns would
    include this process's own (Linux carries the parent's high-water mark across vfork+exec)."""
    if not os.access(GNU_TIME, os.X_OK):
        return None
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run([GNU_TIME, "-f", "%M", "-o", out.name, *cmd], check=True, env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        return int(out.read().split()[-1]) / 1024


VALGRIND = shutil.which("valgrind")


def instructions(cmd: list[str], env: dict[str, str]) -> float | None:
    """Millions of instructions ``cmd`` runs (callgrind, children included): what load does not
    move, so runs minutes apart on a busy machine compare."""
    if VALGRIND is None:
        return None
    done = subprocess.run([VALGRIND, "--tool=callgrind", "--trace-children=yes",
                           "--callgrind-out-file=/dev/null", *cmd], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    counts = [int(n) for n in re.findall(r"Collected : (\d+)", done.stderr)]
    return sum(counts) / 1e6 if counts else None


def measure(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float, float | None]:
    for _ in range(2):
        wall(cmd, env)
    times = [wall(cmd, env) for _ in range(runs)]
    rss = [peak_rss_mb(cmd, env) for _ in range(3)]
    return (statistics.median(w for w, _ in times), statistics.median(c for _, c in times),
            None if rss[0] is None else statistics.median(r for r in rss if r is not None))


def build_mind(mind: Path, events: int, server_url: str, env: dict[str, str]) -> None:
    def pmm(*args: str) -> None:
        subprocess.run([PMM, "--mind", str(mind), "-q", *args], check=True, env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    pmm("init", "--name", "Bench")
    pmm("model", "add", "loop", "openai-compatible:test-model", "--base-url", server_url, "--use")
    pmm("model", "trust", "loop")
    for i in range(max(0, events - 4) // 2):
        pmm("remember", f"note {i}: the garden needs water in the morning")
        if i % 10 == 0:
            pmm("chat", "-m", f"question {i}?")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--events", type=int, default=40, help="about how many events the small mind holds")
    ap.add_argument("--instructions", action="store_true",
                    help="also count each command's instructions under callgrind (slow: ~50x a run)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pmm-bench-startup-"))
    env = {**os.environ, "PMM_MIND": str(work / "mind.db"), "NO_COLOR": "1", "COLUMNS": "100",
           "XDG_DATA_HOME": str(work / "data"), "XDG_STATE_HOME": str(work / "state"),
           "XDG_CONFIG_HOME": str(work / "config"), "XDG_CACHE_HOME": str(work / "cache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure pmm as users run it: with bytecode caches
    try:
        with FakeServer("openai", text="A short answer.") as server:
            build_mind(work / "mind.db", args.events, server.url, env)
            rows = [
                ("python -c pass", [sys.executable, "-c", "pass"], None),
                ('python -c "import typer"', [sys.executable, "-c", "import typer"], None),
                # what a chat turn cannot do without: the HTTP client, and for recall by meaning
                # numpy and WordLlama's tokenizer (pmm.services.semantic loads nothing else)
                ("  ... and httpx", [sys.executable, "-c", HTTPX], None),
                ("  ... httpx, numpy, tokenizer", [sys.executable, "-c", HTTPX + SEMANTIC], None),
                ("pmm --version", [PMM, "--version"], 150),
                ("pmm --help", [PMM, "--help"], 150),
                ("pmm stats", [PMM, "stats"], 100),
                ("pmm log", [PMM, "log"], 100),
                ("pmm verify", [PMM, "verify"], 100),
                ("pmm chat -m", [PMM, "chat", "-m", "How are you?"], 100),
                ("pmm chat -m, PMM_SEMANTIC=0", [PMM, "chat", "-m", "How are you?"], 100),
            ]
            bm25 = {**env, "PMM_SEMANTIC": "0"}
            results = {name: measure(cmd, bm25 if "SEMANTIC" in name else env, args.runs)
                       for name, cmd, _ in rows}
            counted = {name: instructions(cmd, bm25 if "SEMANTIC" in name else env) if args.instructions else None
                       for name, cmd, _ in rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["python -c pass"][0]
    typer_floor = results['python -c "import typer"'][0]
    load = os.getloadavg()
    print(f"start-up, median of {args.runs} runs, {os.cpu_count()} cores, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, Python {sys.version.split()[0]}")
    floors = {"pmm chat -m": results["  ... httpx, numpy, tokenizer"][0],
              "pmm chat -m, PMM_SEMANTIC=0": results["  ... and httpx"][0]}
    print(f"{'command':30} {'wall ms':>8} {'bar':>5} {'/pass':>6} {'-typer ms':>9} {'-floor ms':>9} "
          f"{'CPU ms':>7} {'peak RSS MB':>12} {'M instr':>8}")
    for name, _, bar in rows:
        seconds, cpu, rss = results[name]
        mark = "" if bar is None else ("ok" if seconds * 1000 < bar else "MISS")
        floor = f"{(seconds - floors[name]) * 1000:9.1f}" if name in floors else f"{'':9}"
        print(f"{name:30} {seconds * 1000:8.1f} {bar or '':>5} {seconds / base:6.1f} "
              f"{(seconds - typer_floor) * 1000:9.1f} {floor} {cpu * 1000:7.1f} "
              f"{'' if rss is None else f'{rss:.1f}':>12} "
              f"{'' if counted[name] is None else f'{counted[name]:.1f}':>8} {mark}")
    print("(/pass: times the bare interpreter's start; -typer: wall beyond `import typer`, pmm's own share;"
          " -floor: a chat turn's wall beyond importing what it cannot do without, the rows above)")


if __name__ == "__main__":
    main()
