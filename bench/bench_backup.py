"""`pmm backup` and `pmm restore` at growing sizes (issue 15: memory under 300 MB at any size).

    .venv/bin/python bench/bench_backup.py [--events 10000 100000 1000000] [--before TREE]

For each size it builds a mind with bench_ledger's synthetic export, then prints the wall time
and the peak RSS of each command beside the limits measured in the same run on the same file:

- `cp` of the mind file (the snapshot pmm takes is a copy of it),
- the real `age` binary encrypting the mind with a passphrase (`age -p`, scrypt 2^18 as pmm) and
  decrypting pmm's backup (`age -d`), typed at a pseudo-terminal as age wants,
- `pmm verify` (a backup verifies the mind first, a restore verifies what it decrypted).

Peak RSS is the child's `ru_maxrss` from `wait4`, taken by a small launcher, so the figure is
the command's own and not this script's (Linux carries a parent's peak into a forked child):
the launcher's floor is printed once. scrypt at 2^18 alone touches 256 MiB, in pmm and in age.
With `--before TREE` the same backup and restore also run from another checkout (e.g. main),
for a before/after on the same machine and load.
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_ledger import PMM, synthetic_export  # noqa: E402

PASSPHRASE = "a bench passphrase, long enough"
# Forks the command, waits for it, writes "wall maxrss_kib exit_code" to argv[1]; with "tty" it
# first takes its stdin (a pty) as the controlling terminal, which age reads passphrases from.
LAUNCHER = r"""
import os, sys, time
out, tty, argv = sys.argv[1], sys.argv[2] == "tty", sys.argv[3:]
if tty:
    import fcntl, termios
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(out, "w") as f:
    f.write(f"{wall} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


class Run:
    def __init__(self, wall: float, rss_kib: int) -> None:
        self.wall, self.rss = wall, rss_kib / 1024

    def __str__(self) -> str:
        return f"{self.wall:6.2f} s {self.rss:7.0f} MiB"


def measure(argv: list[str], env: dict[str, str], answers: int = 0) -> Run:
    """Run ``argv`` through the launcher; with ``answers``, on a pty where the passphrase is
    typed at each of that many prompts."""
    with tempfile.NamedTemporaryFile(prefix="bench-backup-", suffix=".txt") as result:
        launcher = [sys.executable, "-S", "-I", "-c", LAUNCHER, result.name, "tty" if answers else "-", *argv]
        said = _on_tty(launcher, env, answers) if answers else subprocess.run(
            launcher, env=env, check=True, stdin=subprocess.DEVNULL, capture_output=True).stderr
        wall, rss, code = Path(result.name).read_text().split()
    if code != "0":
        raise SystemExit(f"{' '.join(argv)} exited {code}: {said.decode(errors='replace')}")
    return Run(float(wall), int(rss))


def _on_tty(launcher: list[str], env: dict[str, str], answers: int) -> bytes:
    master, slave = pty.openpty()
    proc = subprocess.Popen(launcher, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen, sent = b"", 0
    try:
        while proc.poll() is None:
            if select.select([master], [], [], 0.05)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # EIO: the terminal's last user closed it
                    break
            if sent < answers and seen.lower().count(b"passphrase") > sent:
                while termios.tcgetattr(master)[3] & termios.ECHO:  # typed before echo is off: flushed
                    time.sleep(0.005)
                os.write(master, PASSPHRASE.encode() + b"\n")
                sent += 1
        proc.wait(timeout=600)
    finally:
        os.close(master)
    return seen


def size_mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:,.0f} MB"


def bench(n: int, work: Path, before: Path | None) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PMM_BACKUP_PASSPHRASE": PASSPHRASE, "XDG_STATE_HOME": str(work / "state"),
           "XDG_DATA_HOME": str(work / "data"), "XDG_CONFIG_HOME": str(work / "config")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    src, mind = work / "src.jsonl", work / "mind.db"
    synthetic_export(src, n)
    subprocess.run([PMM, "--mind", str(mind), "-q", "import", str(src)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    src.unlink()
    load = os.getloadavg()[0]
    print(f"\n## {n:,} events: mind {size_mb(mind)} (load {load:.1f})")
    age = shutil.which("age")
    copy = measure(["cp", str(mind), str(work / "copy.db")], env)
    (work / "copy.db").unlink()
    verify = measure([PMM, "--mind", str(mind), "verify"], env)
    limits = {"cp (the copy a snapshot is)": copy, "pmm verify": verify}
    if age:
        encrypt = limits["age -p (encrypt the mind)"] = measure(
            [age, "-p", "-o", str(work / "age.age"), str(mind)], env, 2)
        (work / "age.age").unlink()
    trees = [("pmm", env)]
    if before is not None:
        trees.append((f"before ({before})", {**env, "PYTHONPATH": str(before)}))
    for label, tree_env in trees:
        backup = measure([PMM, "--mind", str(mind), "backup", "-o", str(work / "b.age")], tree_env)
        sealed = size_mb(work / "b.age")
        restore = measure([PMM, "--mind", str(work / "r.db"), "restore", str(work / "b.age")], tree_env)
        (work / "r.db").unlink()
        if label == "pmm" and age:
            decrypt = limits["age -d (decrypt pmm's backup)"] = measure(
                [age, "-d", "-o", str(work / "plain.db"), str(work / "b.age")], env, 1)
            (work / "plain.db").unlink()
        (work / "b.age").unlink()
        print(f"{label + ' backup':<34} {backup}   ({sealed})")
        print(f"{label + ' restore':<34} {restore}")
    for name, run in limits.items():
        print(f"  limit: {name:<27} {run}")
    if age:
        print(f"  the same work by other tools: backup's verify + cp + age -p "
              f"{verify.wall + copy.wall + encrypt.wall:.2f} s, restore's age -d + verify "
              f"{decrypt.wall + verify.wall:.2f} s")
    print(f"  load {load:.1f} -> {os.getloadavg()[0]:.1f}; bar: peak RSS under 300 MB (286 MiB) or 300 MiB")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "data-backup")
    parser.add_argument("--before", type=Path, help="another checkout to run the same backup and restore from")
    args = parser.parse_args()
    if shutil.which("age") is None:
        print("age is not installed (apt-get install age): the age limits are left out")
    floor = measure(["true"], dict(os.environ))
    print(f"# launcher floor: {floor.rss:.0f} MiB peak RSS (what `true` measures)")
    for n in args.events:
        bench(n, args.dir, args.before)


if __name__ == "__main__":
    main()
