"""`pmm verify` and `pmm verify --deep` at 10k, 100k and 1M events, and the fsyncs of a write.

    .venv/bin/python bench/bench_verify.py [--sizes 10000,100000,1000000] [--compare DIR]

Each verify figure is printed beside two limits measured in the same run on the same file:
reading the rows and hashing them in a tight Python loop (one process: the least a Python
verify can do), and SQLite reading them alone (its C code, no Python object per row). --deep
adds a full replay of the projections, the canonical check of every meta, the sessions
table against the replay's read of the events and SQLite's quick_check; the replay alone is
printed too. Bar (issue 15): --deep under 4 s at 1M events.

The fsyncs (and fdatasyncs) of `pmm remember` and of `pmm chat -m` against a loopback
OpenAI-compatible server are counted with strace, beside the least a WAL commit costs,
counted the same way on a plain SQLite file: a first commit into a new WAL, and each later one.

--compare DIR runs the same commands with another checkout's pmm (PYTHONPATH=DIR) too, for a
before/after under the same load. The machine's load (os.getloadavg) is printed with the figures:
on a busy machine prefer the ratios to the same-run limits.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ledger import PMM, synthetic_export  # noqa: E402

from pmm.domain import projections  # noqa: E402
from pmm.ledger.store import Ledger  # noqa: E402
from pmm.services import integrity  # noqa: E402

STRACE = shutil.which("strace")
COLUMNS = "id, ts, kind, content, meta, prev_hash, hash"


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def median_of(runs: int, work: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """Median wall and CPU seconds of ``runs`` runs of ``work`` (which returns both)."""
    results = [work() for _ in range(runs)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def timed_here(work: Callable[[], object]) -> tuple[float, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall0, time.process_time() - cpu0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of a command (its forked helpers' CPU included)."""
    wall0, cpu0 = time.perf_counter(), _children_cpu()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - wall0, _children_cpu() - cpu0


def python_floor(path: Path) -> None:
    """Read every row and hash its fields in a tight loop: what any Python verify must do."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.text_factory = bytes
    sha256, join = hashlib.sha256, b"".join
    for row in conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY id"):
        sha256(join(row[1:6])).hexdigest()
    conn.close()


def sqlite_floor(path: Path) -> None:
    """SQLite reading every field of every row in its own C code."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute("SELECT count(*), sum(length(ts) + length(kind) + length(content) + length(meta)"
                 " + length(prev_hash) + length(hash)) FROM events").fetchone()
    conn.close()


def replay_alone(path: Path) -> None:
    with Ledger.open(path) as mind:
        projections.replay(mind.events())


def deep_halves(path: Path) -> tuple[float, float]:
    """``verify --deep`` in-process: CPU seconds here (quick_check, then pieces of the chain) and
    in the forked child (the replay, the metas, the snapshots and the sessions table, then
    pieces of the chain). A quiet two-core machine takes about the larger of the two (they
    differ by about one piece), plus the interpreter's start-up."""
    cpu0, child0 = time.process_time(), _children_cpu()
    assert integrity.verify_mind(path, deep=True).ok
    return time.process_time() - cpu0, _children_cpu() - child0


def build(work: Path, n: int, env: dict[str, str]) -> Path:
    src, mind = work / f"src-{n}.jsonl", work / f"mind-{n}.db"
    synthetic_export(src, n)
    subprocess.run([PMM, "--mind", str(mind), "-q", "import", str(src)], check=True, env=env)
    src.unlink()
    return mind


def verify_figures(mind: Path, n: int, envs: dict[str, dict[str, str]], runs: int | None) -> None:
    runs = runs or (3 if n >= 1_000_000 else 5)
    print(f"\n## {n:,} events ({load()}); seconds as wall / CPU, medians of {runs}")
    _, py = median_of(runs, lambda: timed_here(lambda: python_floor(mind)))
    _, lite = median_of(runs, lambda: timed_here(lambda: sqlite_floor(mind)))
    _, replay = median_of(runs, lambda: timed_here(lambda: replay_alone(mind)))
    print(f"  limit: rows read and hashed in a Python loop  {py:.3f} CPU ({n / py:,.0f} events/s)")
    print(f"  limit: SQLite reading the rows                {lite:.3f} CPU")
    print(f"  projections.replay alone (part of --deep)     {replay:.3f} CPU")
    for name, env in envs.items():
        for args in (["verify"], ["verify", "--deep"]):
            cmd = [PMM, "--mind", str(mind), "-q", *args]
            run(cmd, env)  # warm the page cache and the bytecode
            took, cpu = median_of(runs, lambda: run(cmd, env))  # noqa: B023 (used at once)
            label = f"pmm {' '.join(args)}" + (f" [{name}]" if len(envs) > 1 else "")
            bar = " (bar: under 4 s)" if n >= 1_000_000 and "--deep" in args else ""
            print(f"  {label:<28} {took:7.3f} / {cpu:.3f} = {took / py:.2f}x / {cpu / py:.2f}x the Python"
                  f" loop, {took / lite:.0f}x / {cpu / lite:.0f}x SQLite{bar}")
    here, child = median_of(runs, lambda: deep_halves(mind))
    if child:
        print(f"  --deep of this tree in-process: {here:.3f} CPU here (quick_check, pieces of the chain),"
              f" {child:.3f} CPU in the replaying child (the replay, the sessions table, pieces of"
              f" the chain): on two idle cores the wall time is about the larger"
              f" ({max(here, child) / py:.2f}x the Python loop) plus start-up")
    else:
        print(f"  --deep of this tree in-process: {here:.3f} CPU, all in one process (below"
              f" {integrity.DEEP_PARALLEL_FROM:,} events)")
    print(f"  ({load()})")


def counted_fsyncs(cmd: list[str], env: dict[str, str], out: Path, folder: Path | None = None) -> str:
    """How many fsync + fdatasync calls ``cmd`` and its children made; with ``folder``, how many
    of them were on the files in it (the mind's) and how many elsewhere (pmm's state dir)."""
    if STRACE is None:
        return "(no strace)"
    log = out.with_name(out.name + ".strace")
    done = subprocess.run([STRACE, "-f", "-qq", "-y", "-o", str(log), "-e", "trace=fsync,fdatasync", *cmd],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return f"(strace failed: {done.stderr.strip()[:100]})"
    synced = [line for line in log.read_text().splitlines() if "sync(" in line and "= 0" in line]
    if folder is None:
        return str(len(synced))
    own = sum(1 for line in synced if f"<{folder}/" in line or f"<{folder}>" in line)
    return f"{len(synced)} fsyncs ({own} on the mind's files, {len(synced) - own} on pmm's state)"


WAL_COMMITS = r"""
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA synchronous=FULL")
for i in range(int(sys.argv[2])):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (?)", (i,))
    conn.execute("COMMIT")
os._exit(0)  # no close: only the commits are counted, not the checkpoint a close makes
"""


def wal_minimum(work: Path, commits: int) -> int | None:
    """fsyncs of ``commits`` commits into a WAL database at rest (no -wal file yet)."""
    path = work / f"wal-{commits}.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    script = work / "commits.py"
    script.write_text(WAL_COMMITS)
    # the interpreter's own start-up makes no fsync, so the count is the commits'
    count = counted_fsyncs([sys.executable, str(script), str(path), str(commits)], dict(os.environ), path)
    return int(count) if count.isdigit() else None


def write_figures(work: Path, envs: dict[str, dict[str, str]], runs: int | None) -> None:
    print(f"\n## fsyncs per write command ({load()})")
    if STRACE is None:
        print("  strace is not installed (apt-get install strace): nothing counted")
        return
    first, two = wal_minimum(work, 1), wal_minimum(work, 2)
    if first is not None and two is not None:
        print(f"  least a WAL commit needs (plain SQLite, synchronous=FULL): {first} for a first commit"
              f" into a new WAL (its header, the folder, the commit), {two - first} for each later one")
    sys.path.insert(0, str(ROOT / "tests"))
    from provider_servers import FakeServer  # the loopback server the tests use

    with FakeServer("openai", text="An answer.") as server:
        for tag, (name, env) in enumerate(envs.items()):
            mind = work / f"minds-{tag}" / "write.db"
            mind.parent.mkdir()
            pmm = [PMM, "--mind", str(mind), "-q"]
            subprocess.run([*pmm, "init"], check=True, env=env)
            subprocess.run([*pmm, "model", "add", "box", "openai-compatible:test-model", "--base-url",
                            server.url, "--use"], check=True, env=env, stdout=subprocess.DEVNULL)
            subprocess.run([*pmm, "remember", "warm"], check=True, env=env, stdout=subprocess.DEVNULL)
            label = f" [{name}]" if len(envs) > 1 else ""
            for what, args in (("pmm remember", ["remember", "a note"]), ("pmm chat -m", ["chat", "-m", "hello"])):
                count = counted_fsyncs([*pmm, *args], env, work / f"{tag}-{args[0]}", mind.parent)
                took, _ = median_of(runs or 7, lambda: run([*pmm, *args], env))  # noqa: B023 (used at once)
                print(f"  {what + label:<28} {count}, {took * 1000:.0f} ms wall (median of {runs or 7})")
            fresh = mind.with_name("fresh.db")
            count = counted_fsyncs([PMM, "--mind", str(fresh), "-q", "init"], env, fresh, mind.parent)
            print(f"  {'pmm init' + label:<28} {count}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--compare", type=Path, help="another checkout to run beside this one")
    ap.add_argument("--dir", type=Path, help="where to build the minds (default: a temp dir)")
    ap.add_argument("--no-verify", action="store_true", help="only count the fsyncs")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3 at 1M events, else 5; 7 for writes)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        base = {**os.environ, "XDG_STATE_HOME": str(work / "state"), "XDG_DATA_HOME": str(work / "data"),
                "XDG_CONFIG_HOME": str(work / "config"), "PYTHONPATH": str(ROOT)}
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ.update({k: base[k] for k in ("XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME")})
        envs = {"this tree": base}
        if args.compare is not None:
            envs[str(args.compare)] = {**base, "PYTHONPATH": str(args.compare.resolve())}
        print(f"# {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()},"
              f" SQLite {sqlite3.sqlite_version}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        write_figures(work, envs, args.runs)
        if not args.no_verify:
            for n in sizes:
                mind = build(work, n, base)
                verify_figures(mind, n, envs, args.runs)
                mind.unlink()


if __name__ == "__main__":
    main()
