"""A model on this machine is usually plain HTTP to a loopback port: pmm's HTTP client loads the
certificate roots (~15 ms of every `pmm chat -m`) only when a connection uses TLS, and then
verifies as httpx does by default ($SSL_CERT_FILE, else certifi's roots)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from provider_servers import FakeServer

from pmm import errors
from pmm.providers.base import Message, Request
from pmm.providers.registry import ModelSpec, create

REQUEST = Request(system="You are brief.", messages=(Message("user", "Hello?"),))


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every load of certificate roots into an SSL context, by anyone."""
    seen: list[tuple[Any, ...]] = []
    real = ssl.SSLContext.load_verify_locations

    def spy(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        seen.append(args + tuple(kwargs.values()))
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", spy)
    return seen


def _ask(url: str) -> str:
    provider = create(ModelSpec("openai-compatible", "test-model", url))
    try:
        return provider.complete(REQUEST).text
    finally:
        provider.close()


def test_a_plain_http_model_loads_no_certificate_roots(loads: list[tuple[Any, ...]]) -> None:
    with FakeServer("openai", text="Plain.") as server:
        assert _ask(server.url) == "Plain."
    assert loads == []


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ssl.SSLContext, Path]]:
    """A server context for 127.0.0.1 with a self-signed certificate, and that certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pmm test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    yield context, cert_file


def test_an_https_model_is_verified_against_the_roots_loaded_when_first_needed(
        tls: tuple[ssl.SSLContext, Path], loads: list[tuple[Any, ...]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    context, cert_file = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # trusted here, as httpx honours it
    with FakeServer("openai", text="Over TLS.", tls=context) as server:
        assert server.url.startswith("https://")
        assert _ask(server.url) == "Over TLS."
    assert loads == [(str(cert_file), None, None)]


def test_an_https_model_with_an_untrusted_certificate_is_refused(
        tls: tuple[ssl.SSLContext, Path], loads: list[tuple[Any, ...]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with FakeServer("openai", tls=tls[0]) as server, pytest.raises(errors.ProviderError) as refused:
        _ask(server.url)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value.hint)
    assert len(loads) == 1  # certifi's roots, which do not hold a self-signed certificate
