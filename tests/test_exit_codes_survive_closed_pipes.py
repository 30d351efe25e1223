"""An error's exit code survives a reader that went away: a closed stderr (or stdout) pipe, or
no stderr at all, never turns exit 4 into exit 1 (`pmm verify other.db 2>&1 | true`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import PMM


def _run_into_a_closed_pipe(*args: str) -> int:
    """`pmm ARGS 2>&1 | true`, made deterministic: the pipe's read end is closed before pmm starts,
    so its first write already meets a reader that is gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.Popen([PMM, *args], stdin=subprocess.DEVNULL, stdout=write, stderr=write)
    finally:
        os.close(write)
    return proc.wait(timeout=120)


def test_an_error_into_a_closed_pipe_keeps_its_exit_code(tmp_path: Path) -> None:
    assert _run_into_a_closed_pipe("verify", str(tmp_path / "other.db")) == 4
    assert _run_into_a_closed_pipe("--mind", str(tmp_path / "m.db"), "log", "--bogus") == 2


def test_an_error_with_stderr_closed_keeps_its_exit_code(tmp_path: Path) -> None:
    # `pmm verify other.db 2>&-`: no stderr at all, the error has nowhere to go, its code still tells
    proc = subprocess.run(["sh", "-c", 'exec "$0" "$@" 2>&-', PMM, "verify", str(tmp_path / "other.db")],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=120)
    assert proc.returncode == 4 and proc.stdout == b""


def test_data_into_a_reader_that_went_away_is_exit_0(mind: Path) -> None:
    """`pmm log | head -1` under `set -o pipefail`: the reader chose to stop, pmm did not fail
    (Typer alone turns that BrokenPipeError into exit 1)."""
    for args in (["log"], ["stats"], ["export"], ["export", "--format", "md"]):
        assert _run_into_a_closed_pipe("--mind", str(mind), *args) == 0, args
