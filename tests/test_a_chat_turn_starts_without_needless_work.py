"""`pmm chat -m` is a real command too (issue 15: under 100 ms on a small mind): a turn against a
model on this machine does only what it needs. Checked by what it imports, loads and compiles
(bench/bench_startup.py measures the time):

- semantic recall reads WordLlama's files itself: neither the ``wordllama`` package nor its
  dependencies (pydantic, toml, requests, safetensors) nor importlib.metadata; and on a small
  mind not numpy or tokenizers either (pmm.services.plain_vectors and bpe do its work);
- plain HTTP loads no certificate roots (tests/test_tls_roots_are_loaded_only_for_tls.py);
- nothing of the REPL, of rich output or of httpx's own command line;
- the conversation rule (pmm.domain.dynamics) compiles only the patterns the answer reaches;
- the witness hears the head at open and after the commit, not once more at close.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from provider_servers import FakeServer

ROOT = Path(__file__).resolve().parent.parent

NEVER = ["wordllama", "pydantic", "pydantic_core", "toml", "requests", "urllib3", "safetensors",
         "importlib.metadata", "prompt_toolkit", "rich", "pygments", "click", "httpx._main",
         "cryptography", "pmm.crypto", "llama_cpp"]
# pmm.paths answers plain absolute XDG dirs on Linux itself (platformdirs: ~2 ms)
NEVER += ["platformdirs"] if sys.platform == "linux" else []
WITHOUT_SEMANTIC = ["numpy", "tokenizers"]

TURN = """
import fcntl, json, os, ssl, sys
roots, locks = [], []
real_load, real_flock = ssl.SSLContext.load_verify_locations, fcntl.flock
def load(self, *args, **kwargs):
    roots.append(args)
    return real_load(self, *args, **kwargs)
def flock(handle, op):
    fd = handle if isinstance(handle, int) else handle.fileno()
    if op & fcntl.LOCK_EX and os.readlink(f"/proc/self/fd/{fd}").endswith("/witness/.lock"):
        locks.append(op)
    return real_flock(handle, op)
ssl.SSLContext.load_verify_locations, fcntl.flock = load, flock
sys.argv = ["pmm", "chat", "-m", "How are you today?"]
from pmm.cli.entry import main
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
from pmm.domain import dynamics, lazy_re
compiled = sorted(name for name, value in vars(dynamics).items()
                  if name.startswith("_") and isinstance(value, lazy_re._Deferred) and lazy_re.compiled(value))
sys.stdout.flush()
sys.stderr.write("\\n" + json.dumps({"modules": sorted(m for m, v in sys.modules.items() if v is not None), "roots": len(roots),
                                     "witness_locks": len(locks), "compiled": compiled}))
"""


@pytest.fixture(scope="module")
def server() -> Any:
    with FakeServer("openai", text="A short answer, and nothing promised.") as running:
        yield running


def _env(tmp_path: Path, semantic: str) -> dict[str, str]:
    return {"PMM_MIND": str(tmp_path / "mind.db"), "XDG_STATE_HOME": str(tmp_path / "state"),
            "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path), "PMM_SEMANTIC": semantic,
            "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}


def _turn(tmp_path: Path, server: FakeServer, semantic: str) -> dict[str, Any]:
    env = _env(tmp_path, semantic)
    for args in (["init", "--name", "Ada"], ["remember", "the garden needs water in the morning"],
                 ["model", "add", "loop", "openai-compatible:test-model", "--base-url", server.url, "--use"],
                 ["model", "trust", "loop"], ["chat", "-m", "an earlier turn"]):
        made = subprocess.run([sys.executable, "-m", "pmm", "-q", *args], capture_output=True, env=env)
        assert made.returncode == 0, made.stderr
    proc = subprocess.run([sys.executable, "-c", TURN], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "A short answer, and nothing promised."
    return json.loads(proc.stderr.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("semantic", ["1", "0"])
def test_a_turn_imports_only_what_it_uses(tmp_path: Path, server: FakeServer, semantic: str) -> None:
    run = _turn(tmp_path, server, semantic)
    loaded = set(run["modules"])
    assert "httpx" in loaded and "pmm.services.chat" in loaded  # it did talk to the model
    if semantic == "1":  # ... and recalled by meaning, in plain Python on a mind this small
        assert "pmm.services.plain_vectors" in loaded
    banned = NEVER + WITHOUT_SEMANTIC
    assert [m for m in banned if m in loaded] == []
    assert run["roots"] == 0  # plain HTTP: no certificate roots loaded


def test_a_turn_compiles_only_the_rule_patterns_its_answer_reaches(tmp_path: Path,
                                                                   server: FakeServer) -> None:
    """The answer says no "I will": the sentence splitter and the promise finder are all the
    conversation rule runs (the other ~16 patterns cost ~5 ms to compile)."""
    assert _turn(tmp_path, server, "0")["compiled"] == ["_PROMISE", "_SENTENCE_END"]


def test_the_witness_hears_a_turn_at_open_and_after_its_commit_only(tmp_path: Path,
                                                                    server: FakeServer) -> None:
    assert _turn(tmp_path, server, "0")["witness_locks"] == 2


def test_a_deferred_pattern_matches_as_the_compiled_one() -> None:
    import re

    from pmm.domain import lazy_re

    text = "I'll send it tomorrow. I will check back, then I'll walk you through it!"
    for source in (r"\bi(?:'ll| will)\s+(\w+)", r"(?<=[.!?])\s+", r"(?P<word>[a-z]+)"):
        lazy, real = lazy_re.compile(source, re.IGNORECASE), re.compile(source, re.IGNORECASE)
        assert lazy.pattern == real.pattern and not lazy_re.compiled(lazy)
        assert [m.span() for m in lazy.finditer(text)] == [m.span() for m in real.finditer(text)]
        assert lazy_re.compiled(lazy)
        assert lazy.findall(text) == real.findall(text) and lazy.split(text) == real.split(text)
        assert lazy.sub("-", text) == real.sub("-", text) and lazy.subn("-", text) == real.subn("-", text)
        assert bool(lazy.match(text)) == bool(real.match(text))
        assert bool(lazy.fullmatch(text)) == bool(real.fullmatch(text))
        assert (lazy.search(text) or real.search(text)) and lazy.search(text).span() == real.search(text).span()
        assert (lazy.flags, lazy.groups, lazy.groupindex) == (real.flags, real.groups, real.groupindex)


def test_the_token_estimates_ascii_class_is_the_negated_one_it_replaced() -> None:
    """``[^\\x20A-Za-z\\x80-\\U0010ffff]`` took ~3 ms to compile in every process; the positive
    class that replaced it must match exactly the same characters."""
    import re

    from pmm.services import tokens

    negated = re.compile(r"[^\x20A-Za-z\x80-\U0010ffff]")
    assert all(bool(negated.fullmatch(c)) == bool(tokens._ONES.fullmatch(c))
               for c in map(chr, range(0x110000)))
