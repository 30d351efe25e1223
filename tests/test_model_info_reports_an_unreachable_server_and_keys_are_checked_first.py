"""`pmm model info` shows a model's settings with "Reachable: no (why)" when its server is down
(exit 0, `reachable: false` and the reason under --json); a model whose key variable is empty
is refused before any request, naming the variable (no socket opened); and a llama.cpp server,
which lists its model under the GGUF file's path, serves `openai-compatible:NAME` without a
warning."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_json, invoke, mind_kinds, run_in, run_pmm
from provider_servers import FakeServer
from realmodel import free_port


class CountingListener:
    """A loopback port that counts the connections made to it (and answers none)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    made = CountingListener()
    yield made
    made.close()


def test_info_of_a_model_whose_server_is_down_shows_its_settings_and_exits_0(mind: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    run_in("--mind", str(mind), "model", "add", "box", "openai-compatible:qwen", "--base-url", url,
           "--context-window", "4096", check=True)
    result = run_pmm("--mind", str(mind), "model", "info", "box")  # the exit code as the shell sees it
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "box: openai-compatible:qwen" in text and f"talks to {url}" in text and "4096 tokens" in text
    assert "Reachable: no (cannot reach openai-compatible" in text
    assert "pmm model set box --base-url URL" in text  # the hint names the model, and a command that exists
    data = cli_json(mind, "model", "info", "box")
    assert data["reachable"] is False and "cannot reach" in data["reason"] and data["reported"] is None
    assert data["base_url"] == url and data["context_window"] == 4096


def test_info_of_a_reachable_model_and_offline(mind: Path) -> None:
    with FakeServer("openai") as server:
        run_in("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
               "--base-url", server.url, check=True)
        up = cli_json(mind, "model", "info", "srv")
        offline = cli_json(mind, "model", "info", "srv", "--offline")
    assert up["reachable"] is True and up["reason"] is None and up["reported"]["version"]
    assert offline["reachable"] is None and "--offline" in offline["reason"]


def test_a_named_key_variable_that_is_empty_is_refused_before_any_connection(
        mind: Path, listener: CountingListener) -> None:
    run_in("--mind", str(mind), "model", "add", "gpt", "openai:gpt-4o-mini", "--base-url", listener.url,
           "--api-key-env", "MY_PROXY_KEY", "--use", env={"MY_PROXY_KEY": None}, check=True)
    kinds = mind_kinds(mind)
    result = run_pmm("--mind", str(mind), "chat", "-m", "hello", env={"MY_PROXY_KEY": ""})
    assert result.returncode == 5
    error, hint = result.stderr.decode().strip().splitlines()
    assert error == "Error: model 'gpt' (openai:gpt-4o-mini) needs an API key and $MY_PROXY_KEY is not set"
    assert "export MY_PROXY_KEY=..." in hint and "pmm model set gpt --api-key-env OTHER" in hint
    assert listener.connections == 0 and mind_kinds(mind) == kinds
    info = cli_json(mind, "model", "info", "gpt", env={"MY_PROXY_KEY": None})
    assert info["reachable"] is False and "$MY_PROXY_KEY is not set" in info["reason"]
    assert listener.connections == 0


@pytest.mark.parametrize(("spec", "variable"), [("openai:gpt-4o-mini", "OPENAI_API_KEY"),
                                                ("anthropic:claude-3-5-haiku-latest", "ANTHROPIC_API_KEY")])
def test_a_keyed_provider_without_its_key_is_refused_by_name(mind: Path, spec: str, variable: str) -> None:
    run_in("--mind", str(mind), "model", "add", "k", spec, "--use", env={variable: None}, check=True)
    result = invoke("--mind", str(mind), "chat", "-m", "hello", env={variable: None})
    assert result.exit_code == 5
    assert f"needs an API key and ${variable} is not set" in result.stderr
    assert "pmm model set k --api-key-env OTHER" in result.stderr and "Traceback" not in result.stderr


def test_the_fix_the_hint_names_works(mind: Path, listener: CountingListener) -> None:
    with FakeServer("openai", text="Keyed answer.") as server:
        run_in("--mind", str(mind), "model", "add", "gpt", "openai:test-model", "--base-url", server.url,
               "--api-key-env", "UNSET_VAR", "--use", env={"UNSET_VAR": None}, check=True)
        run_in("--mind", str(mind), "model", "set", "gpt", "--api-key-env", "SET_VAR", check=True)
        turn = cli_json(mind, "chat", "-m", "hello", env={"SET_VAR": "sk-test-key", "UNSET_VAR": None})
        assert turn["answer"] == "Keyed answer."
        assert server.requests[-1].headers["authorization"] == "Bearer sk-test-key"


@pytest.mark.parametrize(("listed", "name"), [
    (["/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"], "qwen"),            # the only model served
    (["/srv/a.gguf", "/srv/qwen2.5-0.5b.gguf"], "qwen2.5-0.5b"),      # the file name, without .gguf
    (["/srv/a.gguf", "/srv/qwen2.5-0.5b.gguf"], "qwen2.5-0.5b.gguf"),  # the file name
])
def test_a_llama_cpp_server_listing_a_gguf_path_serves_the_model_without_warnings(
        mind: Path, listed: list[str], name: str) -> None:
    with FakeServer("openai", model=listed[-1]) as server:
        server.listed = listed
        run_in("--mind", str(mind), "model", "add", "box", f"openai-compatible:{name}",
               "--base-url", server.url, check=True)
        used = invoke("--mind", str(mind), "model", "use", "box")
        info = cli_json(mind, "model", "info", "box")
        text = invoke("--mind", str(mind), "model", "info", "box").stdout
    assert used.exit_code == 0 and "Warning" not in used.stderr, used.stderr
    assert f"Served as: {listed[-1]}" in text
    assert info["reachable"] is True and info["reported"]["details"]["served_as"] == listed[-1]
    assert info["reported"]["version"] == "1700000000"


def test_a_server_offering_other_models_still_says_which(mind: Path) -> None:
    with FakeServer("openai") as server:
        server.listed = ["/srv/a.gguf", "/srv/b.gguf"]
        run_in("--mind", str(mind), "model", "add", "box", "openai-compatible:c", "--base-url", server.url,
               check=True)
        info = cli_json(mind, "model", "info", "box")
    assert info["reachable"] is False
    assert "'c' is not served" in info["reason"] and "/srv/a.gguf, /srv/b.gguf" in info["reason"]
