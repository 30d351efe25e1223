"""docs/development.md's worked example, run: adding a provider is one registry entry plus its
adapter, and everything else (spec parsing, defaults, help, the man page's variables, the
contract suite) follows from the entry. The code is read from the page, so the page stays true.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_provider_contract as contract_tests
from provider_servers import FakeServer
from test_provider_contract import REQUEST, SECRET, Harness

from pmm import errors
from pmm.providers import _http, registry
from pmm.providers.registry import ModelSpec, ProviderInfo, create
from pmm.services import provider_help

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "development.md"


def example(first_line: str) -> str:
    """The guide's python block that starts with ``first_line``, without that line."""
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), flags=re.S | re.M)
    (block,) = [b for b in blocks if b.startswith(first_line + "\n")]
    return block.split("\n", 1)[1]


@pytest.fixture
def acme(monkeypatch: pytest.MonkeyPatch) -> ProviderInfo:
    """The guide's entry in the registry, and its adapter as the module the entry names."""
    entry = eval(example("# entry in PROVIDERS, pmm/providers/registry.py").strip().rstrip(","),
                 {"ProviderInfo": ProviderInfo})
    assert isinstance(entry, ProviderInfo)  # a field the dataclass lacks would have raised
    module = types.ModuleType("pmm.providers.acme")
    exec(compile(example("# pmm/providers/acme.py"), "docs/development.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(registry, "PROVIDERS", (*registry.PROVIDERS, entry))
    monkeypatch.delenv(entry.key_env or "", raising=False)
    return entry


def test_the_entry_is_all_the_registry_needs(acme: ProviderInfo) -> None:
    spec = registry.parse_spec("acme:acme-small")
    assert spec == ModelSpec("acme", "acme-small")
    assert (spec.url(), spec.key_env()) == ("https://api.acme.example/v1", "ACME_API_KEY")
    assert type(create(spec)).__name__ == "AcmeProvider"
    with pytest.raises(errors.UsageError) as caught:
        registry.parse_spec("acne:acme-small")
    assert "acme" in caught.value.message and "acme:acme-small" in (caught.value.hint or "")
    with pytest.raises(errors.ProviderError, match=r"\$ACME_API_KEY is not set"):
        create(spec).complete(REQUEST)  # refused before any socket is opened


def test_help_and_the_man_page_variables_follow(acme: ProviderInfo) -> None:
    assert "acme:acme-small" in provider_help.spec_help()
    assert "acme: Acme's chat API (key $ACME_API_KEY)" in provider_help.providers_paragraph()
    assert "ACME_API_KEY" in provider_help.key_env_help()
    assert ("ACME_API_KEY", acme.key_doc) in registry.environment()


@pytest.mark.parametrize("info", [i for i in registry.PROVIDERS if i.host_env], ids=lambda i: i.name)
def test_a_host_variable_moves_only_the_default_endpoint(info: ProviderInfo,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert info.host_env is not None
    monkeypatch.setenv(info.host_env, "127.0.0.1:1234")
    assert registry.parse_spec(f"{info.name}:m").url() == "http://127.0.0.1:1234"
    assert registry.parse_spec(f"{info.name}:m", "http://127.0.0.1:9/").url() == "http://127.0.0.1:9"
    monkeypatch.setenv(info.host_env, "")
    assert registry.parse_spec(f"{info.name}:m").url() == info.base_url


@pytest.mark.parametrize("info", [i for i in registry.PROVIDERS if i.key_required], ids=lambda i: i.name)
def test_a_required_key_is_asked_for_by_its_variable(info: ProviderInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    assert info.key_env is not None
    monkeypatch.delenv(info.key_env, raising=False)
    with pytest.raises(errors.ProviderError) as caught:
        registry.parse_spec(f"{info.name}:m").api_key()
    assert f"${info.key_env} is not set" in caught.value.message
    assert registry.parse_spec(f"{info.name}:m", "http://127.0.0.1:9").api_key() is None  # a proxy may not need one


@pytest.fixture
def harness(acme: ProviderInfo, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("ACME_API_KEY", SECRET)
    monkeypatch.setattr(_http, "BACKOFF_BASE", 0.02)
    assert acme.protocol is not None
    with FakeServer(acme.protocol) as server:
        made = Harness(acme, server, [])
        yield made
        for provider in made.providers:
            provider.close()


def test_the_contract_holds_for_the_example(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sample of tests/test_provider_contract.py, run on the example as it is run on every entry."""
    contract = contract_tests.TestProviderContract()  # by module: collected there, not again here
    contract.test_plain_completion(harness)
    assert harness.server.requests[0].headers["x-acme-key"] == SECRET  # the adapter's own header
    harness.server.requests.clear()
    contract.test_streaming_pieces_arrive_in_order_and_join_to_the_text(harness)
    harness.server.requests.clear()
    contract.test_refused_key_names_the_variable_not_the_key(harness, "401")
    harness.server.requests.clear()
    contract.test_planted_key_never_appears_in_errors(harness, monkeypatch)
    exc = harness.fails(lambda: harness.provider(model="no-such-model").info())
    assert exc.hint == "Acme lists its models at https://api.acme.example/v1/models"



def test_the_guide_names_only_files_and_names_that_exist() -> None:
    """The layout walk-through points at real modules: a rename that forgets the guide fails here."""
    text = GUIDE.read_text()
    root = GUIDE.parent.parent
    paths = set(re.findall(r"`((?:pmm|tests|scripts|docs)/[\w/.-]+\.(?:py|md|sh))`", text))
    assert len(paths) > 15
    missing = {p for p in paths if not (root / p).exists() and p != "pmm/providers/acme.py"}
    assert not missing, f"docs/development.md names missing files: {sorted(missing)}"
    dotted = set(re.findall(r"`(pmm(?:\.\w+)+)`", text))
    assert len(dotted) >= 5
    for name in sorted(dotted):
        module, attrs = name, []
        while module not in sys.modules:
            try:
                __import__(module)
            except ModuleNotFoundError:
                module, _, attr = module.rpartition(".")
                attrs.insert(0, attr)
        value: object = sys.modules[module]
        for attr in attrs:
            value = getattr(value, attr)  # an AttributeError names what the guide got wrong
    import provider_servers

    from pmm.providers import _http
    for hook in ("_complete", "_info", "_headers", "_call", "_not_found_hint"):
        assert hook in text and hasattr(_http.HttpProvider, hook), hook
    for reader in ("read_json", "iter_sse", "iter_ndjson"):
        assert f"`{reader}`" in text and hasattr(_http, reader), reader
    for part in ("PROTOCOLS", "CHAT_PATH", "_ollama", "_Handler._answer", "_Handler._error",
                 "_Handler._listing", "_Handler._malformed", "_Handler._unending"):
        owner, _, attr = part.rpartition(".")
        assert f"`{part}`" in text and hasattr(getattr(provider_servers, owner or "_Handler") if owner
                                               else provider_servers, attr), part
