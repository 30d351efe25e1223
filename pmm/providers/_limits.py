"""The bounds of one model request: a wall-clock deadline and a cap on the bytes of the answer.

httpx's timeouts bound each read, not the answer: a server that trickles a byte a second, or
streams forever, would hold ``chat`` (and a ``reflect`` holding the mind's lock) without end.
``Budget`` is the whole request's allowance (``$PMM_PROVIDER_DEADLINE``, ``$PMM_PROVIDER_MAX_BYTES``).
The deadline is enforced under httpx, on the socket: ``bind`` wraps a client's connection pools'
network backend so that every connect, write and read waits at most until the deadline, however
the server paces its bytes (headers included). The byte cap is enforced where the body is read
(``chunks``, ``lines``), after decompression, so memory stays bounded too.
"""

from __future__ import annotations

import codecs
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

from pmm import errors, settings


class Budget:
    """What is left of one request's time and bytes; raises ``ProviderError`` once either is spent."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.seconds = settings.PROVIDER_DEADLINE.get()
        self.max_bytes = settings.PROVIDER_MAX_BYTES.get()
        self.deadline = time.monotonic() + self.seconds
        self.received = 0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0

    def check(self) -> None:
        if self.passed():
            raise self.too_slow()

    def bound(self, timeout: float | None) -> float:
        """``timeout`` cut to what is left before the deadline (raises once none is)."""
        left = self.left()
        if left <= 0:
            raise self.too_slow()
        return left if timeout is None else min(timeout, left)

    def took(self, size: int) -> None:
        self.received += size
        if self.received > self.max_bytes:
            raise errors.ProviderError(
                f"the answer from {self.where} passed {self.max_bytes:,} bytes, pmm's limit",
                hint=f"nothing was saved; if a model is meant to answer at such length, raise "
                     f"${settings.PROVIDER_MAX_BYTES.name} (bytes)")

    def too_slow(self) -> errors.ProviderError:
        return errors.ProviderError(
            f"{self.where} did not finish answering within {self.seconds:g} s",
            hint=f"nothing was saved; a slow model or a stalled server? raise "
                 f"${settings.PROVIDER_DEADLINE.name} (seconds)")


class Holder:
    """The budget of the request in flight on one client (None between requests)."""

    def __init__(self) -> None:
        self.budget: Budget | None = None

    def bound(self, timeout: float | None) -> float | None:
        return timeout if self.budget is None else self.budget.bound(timeout)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, holder: Holder) -> None:
        self._inner = inner
        self._holder = holder

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._holder.bound(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._holder.bound(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, self._holder.bound(timeout)),
                       self._holder)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, holder: Holder) -> None:
        self._inner = inner
        self._holder = holder

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, self._holder.bound(timeout), local_address, socket_options)
        return _Stream(stream, self._holder)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, self._holder.bound(timeout), socket_options),
                       self._holder)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def bind(client: httpx.Client, holder: Holder) -> bool:
    """Route every connection of ``client`` (direct and through proxies) through ``holder``'s
    deadline. httpx has no public hook for the network backend, so this reaches its pools; it
    returns False if a future httpx moves them (the per-chunk checks in ``chunks`` still hold
    then, and tests/test_provider_limits.py fails loudly)."""
    bound = False
    for transport in (client._transport, *client._mounts.values()):  # noqa: SLF001
        pool = getattr(transport, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if isinstance(inner, httpcore.NetworkBackend):
            pool._network_backend = _Backend(inner, holder)  # type: ignore[union-attr]  # noqa: SLF001
            bound = True
    return bound


def chunks(response: httpx.Response, budget: Budget) -> Iterator[bytes]:
    """The decoded body, counted against the byte cap, the deadline checked between chunks."""
    for chunk in response.iter_bytes():
        budget.took(len(chunk))
        budget.check()
        yield chunk


def body(response: httpx.Response, budget: Budget, limit: int | None = None) -> bytes:
    """The whole body (or its first ``limit`` bytes: enough of an error page to quote)."""
    out = bytearray()
    for chunk in chunks(response, budget):
        out += chunk
        if limit is not None and len(out) >= limit:
            return bytes(out[:limit])
    return bytes(out)


def lines(response: httpx.Response, budget: Budget) -> Iterator[str]:
    """The body's lines (``\\n`` or ``\\r\\n``), decoded as UTF-8, without building one huge string:
    a line only grows until the byte cap stops it."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending: list[str] = []
    for chunk in chunks(response, budget):
        text = decoder.decode(chunk)
        while (at := text.find("\n")) >= 0:
            pending.append(text[:at])
            yield "".join(pending).removesuffix("\r")
            pending, text = [], text[at + 1:]
        if text:
            pending.append(text)
    tail = "".join(pending) + decoder.decode(b"", final=True)
    if tail:
        yield tail.removesuffix("\r")
