"""pmm/ stays mypy-clean under every strict check, and the projection states are typed deep
enough that a mistyped key is an error, not a KeyError at run time.

mypy runs on the checkout's own cache (.mypy_cache, what a developer's `mypy pmm` warms): cold it
takes ~6 s of CPU, warm under 1 s.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_pmm_is_clean_under_strict_mypy() -> None:
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True
    proc = _mypy("pmm")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout


def test_a_mistyped_state_key_is_a_type_error() -> None:
    program = ("from pmm.domain.projections import replay\n"
               "states = replay([])\n"
               "ok: float = states['traits']['values']['openness']\n"
               "states['traits']['valeus']\n"
               "states['commitments']['open']['1']['opened_ts']\n")
    proc = _mypy("-c", program)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, proc.stdout
    assert errors[0].startswith("<string>:4:") and 'has no key "valeus"' in errors[0]
    assert errors[1].startswith("<string>:5:") and 'has no key "opened_ts"' in errors[1]
