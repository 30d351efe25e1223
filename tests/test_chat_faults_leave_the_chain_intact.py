"""Every provider fault during `pmm chat` is exit 5 with one clear line, and the chain is exactly
as it was: refused connection, timeout, 401, 429 and 500 after retries, malformed JSON, a stream
cut mid-answer; for each protocol pmm speaks."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import run_in, run_pmm
from provider_servers import FakeServer
from realmodel import free_port

PROTOCOLS = {"openai": "openai-compatible", "ollama": "ollama", "anthropic": "anthropic"}
FAULTS = {  # fault pushed before each try (retries included), environment
    "401": (["401"], {}),
    "500 after retries": (["500"] * 3, {"PMM_PROVIDER_RETRIES": "2"}),
    "429 after retries": (["429"] * 3, {"PMM_PROVIDER_RETRIES": "2"}),
    "malformed JSON": (["malformed"], {}),
    "stream cut": (["cut"], {}),
    "timeout": (["hang"], {"PMM_PROVIDER_TIMEOUT": "1", "PMM_PROVIDER_RETRIES": "0"}),
}


def chain(mind: Path) -> str:
    conn = sqlite3.connect(f"file:{mind}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, hash FROM events ORDER BY id").fetchall()
    finally:
        conn.close()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def add_model(mind: Path, protocol: str, url: str, model: str = "test-model") -> None:
    run_in("--mind", str(mind), "model", "add", "m", f"{PROTOCOLS[protocol]}:{model}",
            "--base-url", url, "--use", check=True)


def one_clear_line(stderr: bytes) -> None:
    lines = stderr.decode().strip().splitlines()
    assert lines and lines[0].startswith("Error: "), stderr
    assert len(lines) <= 2 and b"Traceback" not in stderr, stderr


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_is_exit_5_and_writes_nothing(mind: Path, protocol: str, fault: str) -> None:
    pushes, env = FAULTS[fault]
    with FakeServer(protocol, text="This answer will be cut off somewhere in the middle.") as server:
        add_model(mind, protocol, server.url)
        before = chain(mind)
        for kind in pushes:
            server.push(kind, retry_after="0", seconds=3) if kind in ("429", "hang") else server.push(kind)
        # Piped, one turn is a plain request (a cut body); a cut *stream* is the contract
        # suite's and the REPL test's.
        result = run_in("--mind", str(mind), "chat", "-m", "hello", env=env)
        assert result.returncode == 5, (result.returncode, result.stderr)
        one_clear_line(result.stderr)
        assert result.stdout == b""
        assert chain(mind) == before, "a failed turn changed the chain"
        # The next turn works and is recorded whole.
        ok = run_in("--mind", str(mind), "chat", "-m", "hello again", env=env)
        assert ok.returncode == 0, ok.stderr.decode()
    assert run_in("--mind", str(mind), "verify").returncode == 0


def test_a_refused_connection_is_exit_5_and_writes_nothing(mind: Path) -> None:
    add_model(mind, "openai", f"http://127.0.0.1:{free_port()}/v1")
    before = chain(mind)
    result = run_pmm("--mind", str(mind), "chat", "-m", "hello")  # a real process: exit 5 as the shell sees it
    assert result.returncode == 5
    one_clear_line(result.stderr)
    assert b"cannot reach" in result.stderr
    assert chain(mind) == before


def test_a_missing_key_names_the_variable(mind: Path) -> None:
    run_in("--mind", str(mind), "model", "add", "gpt", "openai:gpt-4o-mini", "--use", check=True)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = run_in("--mind", str(mind), "chat", "-m", "hello", env={**env, "OPENAI_API_KEY": ""})
    assert result.returncode == 5 and b"OPENAI_API_KEY" in result.stderr
