"""Shared plumbing of the network adapters: one place where httpx errors become ``ProviderError``.

``HttpProvider`` owns the client, the retry loop (429/5xx/early resets, ``Retry-After``), the
translation of every httpx failure into a one-line error with a hint, and the scrubbing of the API
key out of anything it raises. Every call runs within one ``Budget`` (a total deadline and a byte
cap, see ``_limits``); ``read_json``, ``iter_sse`` and ``iter_ndjson`` read answers within it.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import random
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import httpx

from pmm import __version__, errors, settings
from pmm.providers import _limits
from pmm.providers._limits import Budget
from pmm.providers._scrub import scrub
from pmm.providers.base import Completion, ModelInfo, OnText, Request
from pmm.providers.registry import ModelSpec

ENV_TIMEOUT = settings.PROVIDER_TIMEOUT.name
ENV_RETRIES = settings.PROVIDER_RETRIES.name
CONNECT_TIMEOUT = 10.0
ERROR_BODY_BYTES = 64 * 1024  # enough of an error page to quote its message
# Past this a retry would leave the user staring at a frozen prompt; better to say when to come back.
MAX_RETRY_AFTER = 60.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0

T = TypeVar("T")


def read_timeout() -> float:
    """Seconds to wait for the next byte of an answer (``$PMM_PROVIDER_TIMEOUT``)."""
    return settings.PROVIDER_TIMEOUT.get()


def max_retries() -> int:
    """How many times a failed request is tried again (``$PMM_PROVIDER_RETRIES``)."""
    return settings.PROVIDER_RETRIES.get()


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter, so many clients hitting one limit do not retry in step."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms`` (OpenAI), ``Retry-After`` as seconds
    or as an HTTP date. None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000
            if math.isfinite(value):
                return max(0.0, value)
        except ValueError:
            pass
    raw = (headers.get("retry-after") or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    if math.isnan(value):
        return None
    return max(0.0, value)


class Progress:
    """What happened so far in one call: whether text reached the caller (then no retry may
    repeat it) and when the current attempt started (for latency)."""

    def __init__(self, on_text: OnText | None, budget: Budget) -> None:
        self.on_text = on_text
        self.delivered = False
        self.started = time.monotonic()
        self.budget = budget

    @property
    def streaming(self) -> bool:
        return self.on_text is not None

    def emit(self, piece: str) -> None:
        if not piece or self.on_text is None:
            return
        self.delivered = True
        try:
            self.on_text(piece)
        except Exception as exc:
            # Carried past the "malformed answer" net: the caller's bug is not the server's.
            raise _CallbackFailed(exc) from exc

    def elapsed_ms(self) -> int:
        return max(1, round((time.monotonic() - self.started) * 1000))


class _CallbackFailed(Exception):
    def __init__(self, original: Exception) -> None:
        super().__init__(repr(original))
        self.original = original


class Retryable(Exception):
    """Raised by an answer handler (or the status check) for a failure worth another try."""

    def __init__(self, message: str, hint: str | None = None, wait: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.wait = wait


def malformed(where: str, why: str) -> errors.ProviderError:
    return errors.ProviderError(f"malformed answer from {where}: {why}",
                                hint="the server does not speak the expected API; check the address (`pmm model info`; fix it with `pmm model set NAME --base-url URL`)")


def cut_off(where: str) -> errors.ProviderError:
    return errors.ProviderError(f"the answer was cut off: {where} closed the stream before it ended",
                                hint="nothing was saved; try again")


def read_json(response: httpx.Response, progress: Progress) -> dict[str, Any]:
    """The whole body as a JSON object (ValueError otherwise, reported as a malformed answer)."""
    data = json.loads(_limits.body(response, progress.budget))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def iter_sse(response: httpx.Response, progress: Progress) -> Iterator[tuple[str, str]]:
    """Server-sent events as ``(event, data)``; ``event`` is "message" when the server names none.

    An event still open when the stream ends is dropped, as the SSE spec says: a half-received
    event is a cut, which the caller notices by the missing terminal event.
    """
    event = ""
    data: list[str] = []
    for line in _limits.lines(response, progress.budget):
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


def iter_ndjson(response: httpx.Response, progress: Progress) -> Iterator[dict[str, Any]]:
    """One JSON object per line (ValueError on a line that is not one)."""
    for line in _limits.lines(response, progress.budget):
        if not line.strip():
            continue
        item = json.loads(line)
        if not isinstance(item, dict):
            raise ValueError(f"expected a JSON object per line, got {type(item).__name__}")
        yield item


# More tokens than any model's context holds: a count past this is a server bug, not usage.
MAX_TOKEN_COUNT = 10_000_000


def token_count(usage: dict[str, Any], key: str) -> int | None:
    """``usage[key]`` as a token count; None when the server does not say. Anything else (text, a
    fraction, a negative or absurd number) is a malformed answer: pmm stores no nonsense counts."""
    value = usage.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_COUNT:
        shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
        raise ValueError(f"usage field {key} is {shown}, not a token count (0 to {MAX_TOKEN_COUNT:,})")
    return value


def error_detail(data: Any) -> str:
    """The server's own words about an error, from the usual envelopes, as one short line."""
    message: Any = data
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict):
            message = inner.get("message") or inner.get("type") or inner
        else:
            message = inner
        if message is data and isinstance(data.get("message"), str):
            message = data["message"]
    if not isinstance(message, str):
        message = json.dumps(message)
    return " ".join(message.split())[:200]


class _DeferredTrust:
    """The SSL context ``httpx.Client()`` makes for itself (``httpx.create_ssl_context()``:
    certifi's roots, or $SSL_CERT_FILE / $SSL_CERT_DIR), made when a TLS connection first uses
    it. Loading the roots takes ~15 ms, and most of pmm's requests never need them: a model on
    this machine is plain HTTP to a loopback port. httpcore only calls the context's methods
    (``set_alpn_protocols``, ``wrap_socket``, ``wrap_bio``), each handed to the real one."""

    def __init__(self) -> None:
        self._context: ssl.SSLContext | None = None

    def __getattr__(self, name: str) -> Any:
        if self._context is None:
            self._context = httpx.create_ssl_context()
        return getattr(self._context, name)


class HttpProvider:
    """Base of the network adapters; subclasses implement ``_complete`` and ``_info``."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.base = spec.url()
        self.where = f"{spec.provider} at {self.base}"
        self._client: httpx.Client | None = None
        self._limits = _limits.Holder()

    # -- the Provider protocol ---------------------------------------------------------------

    def complete(self, request: Request, on_text: OnText | None = None) -> Completion:
        with self._scrubbed():
            return self._complete(request, on_text)

    def info(self) -> ModelInfo:
        with self._scrubbed():
            return self._info()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- for subclasses ----------------------------------------------------------------------

    def _complete(self, request: Request, on_text: OnText | None) -> Completion:
        raise NotImplementedError

    def _info(self) -> ModelInfo:
        raise NotImplementedError

    def _headers(self, key: str | None) -> dict[str, str]:
        """Per-request headers; the key is read fresh for each call and never kept."""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _not_found_hint(self) -> str:
        return ("check the model name and the address (`pmm model info`); fix them with"
                " `pmm model set NAME --spec PROVIDER:MODEL --base-url URL`")

    def _call(self, method: str, path: str, handle: Callable[[httpx.Response, Progress], T], *,
              body: dict[str, Any] | None = None, on_text: OnText | None = None) -> T:
        """Send one request and let ``handle`` read the answer, retrying what is worth retrying."""
        headers = {"User-Agent": f"pmm/{__version__}", **self._headers(_header_safe(self.spec))}
        retries = max_retries()
        # One budget for the whole call, retries included: the caller waits for an answer, not a try.
        progress = Progress(on_text, Budget(self.where))
        self._limits.budget = progress.budget
        attempt = 0
        try:
            while True:
                progress.started = time.monotonic()
                try:
                    return self._attempt(method, self.base + path, headers, body, handle, progress)
                except Retryable as again:
                    tries = attempt + 1
                    wait = again.wait if again.wait is not None else backoff(attempt)
                    if progress.delivered or attempt >= retries or wait >= progress.budget.left():
                        suffix = f" (gave up after {tries} tries)" if tries > 1 else ""
                        if not (progress.delivered or attempt >= retries):
                            suffix = f" (no time left for another try within {progress.budget.seconds:g} s)"
                        raise errors.ProviderError(again.message + suffix, hint=again.hint) from None
                    time.sleep(wait)
                    attempt += 1
        finally:
            self._limits.budget = None

    # -- internals ---------------------------------------------------------------------------

    def _client_now(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(verify=cast(ssl.SSLContext, _DeferredTrust()))
            _limits.bind(self._client, self._limits)
        return self._client

    def _attempt(self, method: str, url: str, headers: dict[str, str], body: dict[str, Any] | None,
                 handle: Callable[[httpx.Response, Progress], T], progress: Progress) -> T:
        timeout = httpx.Timeout(read_timeout(), connect=min(CONNECT_TIMEOUT, progress.budget.seconds))
        client = self._client_now()
        request = client.build_request(method, url, headers=headers, json=body, timeout=timeout)
        try:
            response = client.send(request, stream=True)
        except httpx.ConnectTimeout as exc:
            if progress.budget.passed():
                raise progress.budget.too_slow() from exc
            raise errors.ProviderError(
                f"cannot reach {self.where}: no connection within {CONNECT_TIMEOUT:g} s",
                hint="check the address (`pmm model set NAME --base-url URL` fixes it) and your network") from exc
        except httpx.TimeoutException as exc:
            raise self._timed_out(progress.budget) from exc
        except httpx.ConnectError as exc:
            raise errors.ProviderError(
                f"cannot reach {self.where}: is the server running?",
                hint=f"start it, or point pmm at the right address: pmm model set NAME --base-url URL ({exc})") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # Dropped before any byte of an answer: nothing was done on our behalf, safe to repeat.
            raise Retryable(f"{self.where} dropped the connection ({exc})",
                            hint="the server may be restarting or overloaded; try again") from exc
        except httpx.HTTPError as exc:
            raise errors.ProviderError(f"request to {self.where} failed: {exc}") from exc
        try:
            if response.status_code >= 400:
                self._raise_for_status(response, progress.budget)
            return handle(response, progress)
        except _CallbackFailed as failed:
            raise failed.original from None
        except httpx.TimeoutException as exc:
            raise self._timed_out(progress.budget) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.StreamError) as exc:
            raise cut_off(self.where) from exc
        except httpx.HTTPError as exc:
            raise errors.ProviderError(f"reading the answer from {self.where} failed: {exc}") from exc
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as exc:
            raise malformed(self.where, str(exc) or type(exc).__name__) from exc
        finally:
            response.close()

    def _timed_out(self, budget: Budget) -> errors.ProviderError:
        if budget.passed():  # the read was cut short by the deadline, not by its own timeout
            return budget.too_slow()
        seconds = read_timeout()
        return errors.ProviderError(
            f"{self.where} did not answer within {seconds:g} s",
            hint=f"a slow model or a busy server? raise ${ENV_TIMEOUT} (seconds)")

    def _raise_for_status(self, response: httpx.Response, budget: Budget) -> None:
        code = response.status_code
        try:
            raw = _limits.body(response, budget, limit=ERROR_BODY_BYTES)
        except (httpx.HTTPError, errors.ProviderError):
            detail = ""  # the status alone still says what went wrong
        else:
            try:
                detail = error_detail(json.loads(raw))
            except ValueError:
                detail = " ".join(raw.decode("utf-8", "replace").split())[:200]
        said = f": {detail}" if detail else ""
        if code in (401, 403):
            env = self.spec.key_env()
            what = "unauthorized" if code == 401 else "forbidden"
            raise errors.ProviderError(
                f"{self.where} refused the API key ({code} {what}){said}",
                hint=f"check ${env}" if env else "this server wants a key: pmm model set NAME --api-key-env VAR")
        if code == 404:
            raise errors.ProviderError(f"{self.where} does not know model {self.spec.model!r} (404){said}",
                                       hint=self._not_found_hint())
        if code == 429 or code >= 500:
            wait = retry_after(response.headers)
            if wait is not None and wait > MAX_RETRY_AFTER:
                at = datetime.now(UTC) + timedelta(seconds=wait)
                raise errors.ProviderError(
                    f"{self.where} answered {code} and asks to wait {wait:.0f} s before retrying",
                    hint=f"try again after {at:%Y-%m-%d %H:%M:%S} UTC")
            if code == 429:
                raise Retryable(f"{self.where} is rate limiting requests (429){said}",
                                hint="wait a little and try again; check your plan's rate limits", wait=wait)
            raise Retryable(f"{self.where} failed ({code}){said}",
                            hint="a problem on the server's side; try again later", wait=wait)
        raise errors.ProviderError(f"{self.where} rejected the request ({code}){said}",
                                   hint="the model or server may not support this request")

    @contextmanager
    def _scrubbed(self) -> Iterator[None]:
        try:
            yield
        except errors.PmmError as exc:
            name = self.spec.key_env()
            raw = os.environ.get(name, "") if name else ""
            scrub(exc, raw)
            scrub(exc, raw.strip())
            raise


def _header_safe(spec: ModelSpec) -> str | None:
    """The key, if it can go in an HTTP header: a newline or another control character in it
    (a paste gone wrong) is refused here, before any library can quote it back in an error."""
    key = spec.api_key()
    if key is not None and not all(" " <= c <= "~" for c in key):
        raise errors.ProviderError(
            f"${spec.key_env()} holds a character that cannot be sent in an HTTP header"
            " (a newline, a control character or a non-ASCII letter)",
            hint=f"set ${spec.key_env()} to the key alone, on one line")
    return key
