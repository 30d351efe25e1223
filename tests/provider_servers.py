"""Loopback servers that speak the OpenAI, Ollama and Anthropic protocols, with scripted faults.

    with FakeServer("ollama", text="Hello there.") as server:
        server.push("429", retry_after="1")     # the next request is rate limited, then normal
        ... OllamaProvider(ModelSpec("ollama", server.model, server.url)) ...
        server.requests[-1].body                 # what the adapter sent

Faults (each used by one request, in order; afterwards requests get normal answers):
``"cut"`` (half the answer, then the socket closes with no terminal event), ``"truncate"`` (half
the answer in a well-formed HTTP body that just lacks the protocol's terminal event), ``"malformed"`` (not
JSON), ``"shape"`` (JSON of the wrong shape), an HTTP status such as ``"401"``/``"429"``/``"500"``
(with a protocol-shaped error body; ``retry_after=`` adds the header), ``"hang"`` (``seconds=``
of silence before answering), ``"reset"`` (close without a response), ``"error_event"``
(Anthropic only: an ``overloaded_error`` event, after ``pieces=`` text pieces), ``"trickle"`` (a
200 whose body is one whitespace byte every ``every=`` seconds, forever: each read is quick, the
answer never completes; valid filler for all three protocols, streamed or not), ``"endless"`` (a 200
whose body never ends and arrives as fast as the client reads: for a stream, the protocol's text
frame over and over; otherwise a JSON string that never closes), ``"usage"`` (a normal answer whose
output token count is ``value=``, e.g. ``-5`` or ``"12"``; ``input=`` sets the prompt count,
``cache_read=`` and ``cache_write=`` Anthropic's cache counts, OpenAI's cached prompt tokens
(``cache_read=``, in ``prompt_tokens_details``, part of ``input=``) or llama.cpp's ``timings.cache_n``
(``cache_n=``)), ``"no_usage"`` (a normal answer with no usage at all, as from a server that ignores
``stream_options.include_usage``), ``"slow"`` (a normal answer held back
until the test sets the ``threading.Event`` given as ``release=``: streamed, the first ``pieces=``
(1) text pieces arrive first, then the rest waits; otherwise the whole answer waits).

``FakeServer("anthropic", caching=True)`` honours ``cache_control`` as Anthropic's API does
(``PromptCache``): instead of the fixed ``PROMPT_TOKENS`` it counts the prompt's tokens (a word
a token, as the answer's are counted) and reports the prefix up to a breakpoint as a cache write
the first time and a cache read afterwards; each request's ``Recorded.usage`` is what it billed.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROTOCOLS = ("openai", "ollama", "anthropic")  # the wire protocols of pmm.providers.registry's entries
CHAT_PATH = {"openai": "/v1/chat/completions", "ollama": "/api/chat", "anthropic": "/v1/messages"}
PROMPT_TOKENS = 12  # every protocol reports this many prompt tokens (Anthropic: 3 new + 9 cached)
PIECE_DELAY = 0.003


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    usage: dict[str, int] | None = None  # the prompt tokens billed, by a caching Anthropic fake


@dataclass
class Fault:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


def split_pieces(text: str) -> list[str]:
    """Words with their trailing space: several pieces that join back to ``text``."""
    return re.findall(r"\S+\s*|\s+", text) or [text]


class FakeServer:
    def __init__(self, protocol: str, text: str = "Hello there, I am a small test model.",
                 model: str = "test-model", caching: bool = False,
                 tls: ssl.SSLContext | None = None) -> None:
        assert protocol in PROTOCOLS, f"no fake server speaks {protocol!r}"
        assert not caching or protocol == "anthropic", "only the Anthropic fake keeps a prompt cache"
        self.protocol = protocol
        self.tls = tls  # a server-side context: the server speaks HTTPS
        self.cache = PromptCache(model) if caching else None
        self.text = text
        self.model = model
        self.listed: list[str] | None = None  # OpenAI's /models ids, instead of other-model and model
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "use the server as a context manager"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL an adapter for this protocol is configured with."""
        root = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        return root + "/v1" if self.protocol == "openai" else root

    def push(self, kind: str, **options: Any) -> None:
        with self._lock:
            self.faults.append(Fault(kind, options))

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else None

    def record(self, entry: Recorded) -> None:
        with self._lock:
            self.requests.append(entry)

    def __enter__(self) -> FakeServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeServer
    recorded: Recorded  # the request being answered
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._serve(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self._serve(body)

    # -- dispatch ------------------------------------------------------------------------------

    def _serve(self, body: Any) -> None:
        fake = self.fake
        self.recorded = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        fake.record(self.recorded)
        fault = fake.next_fault() or Fault("ok")
        try:
            self._answer(fault, body if isinstance(body, dict) else {})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeouts): nothing left to say

    def _answer(self, fault: Fault, body: dict[str, Any]) -> None:
        kind, opts = fault.kind, fault.options
        if kind == "hang":
            self.fake.stopping.wait(opts.get("seconds", 5))
            kind = "ok"
        if kind == "reset":
            self.close_connection = True
            return
        if kind.isdigit():
            self._error(int(kind), opts.get("retry_after"))
            return
        if kind in ("trickle", "endless"):
            self._unending(kind, bool(body.get("stream")), opts)
            return
        if kind == "malformed":
            self._malformed(bool(body.get("stream")))
            return
        if kind == "shape":
            self._json(200, {"unexpected": ["nothing", "here"]})
            return
        if self.command == "GET":
            self._listing()
            return
        stream = bool(body.get("stream"))
        if kind == "slow" and not stream:
            self._hold(opts)
        structured = any(k in body for k in ("response_format", "format", "tools"))
        counted = opts.get("value") if kind == "usage" else None
        if self.fake.protocol == "openai":
            frames = _openai(self.fake, body, stream, counted, fault)
        elif self.fake.protocol == "ollama":
            frames = _ollama(self.fake, stream, counted, fault)
        else:
            cached = None
            if self.fake.cache is not None:
                with self.fake._lock:
                    cached = self.recorded.usage = self.fake.cache.bill(body)
            frames = _anthropic(self.fake, stream, structured, fault, counted, cached)
        if not stream:
            payload = frames[0]
            if kind == "cut":  # promise the whole body, deliver half
                self._send(200, payload[: len(payload) // 2], "application/json", length=len(payload))
                self.close_connection = True
                return
            self._send(200, payload, "application/json")
            return
        if kind in ("cut", "truncate"):
            frames = frames[: max(2, len(frames) // 2)]
        # the frames before the first text piece: OpenAI's role delta; Anthropic's start, block, ping
        held = {"openai": 1, "ollama": 0, "anthropic": 3}[self.fake.protocol] + opts.get("pieces", 1) \
            if kind == "slow" else None
        self._stream(frames, "application/x-ndjson" if self.fake.protocol == "ollama" else "text/event-stream",
                     finish=kind != "cut", held=held, opts=opts)

    # -- framing -------------------------------------------------------------------------------

    def _send(self, status: int, payload: bytes, ctype: str, length: int | None = None,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload) if length is None else length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers=headers)

    def _hold(self, opts: dict[str, Any]) -> None:
        """Wait for the test's ``release`` (or the server's shutdown)."""
        release: threading.Event = opts["release"]
        while not release.wait(0.02) and not self.fake.stopping.is_set():
            pass

    def _stream(self, frames: list[bytes], ctype: str, finish: bool, held: int | None = None,
                opts: dict[str, Any] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for n, frame in enumerate(frames):
            if n == held:
                self._hold(opts or {})
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
            time.sleep(PIECE_DELAY)
        if finish:
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.close_connection = True  # no last chunk: the client sees the stream break off
        self.wfile.flush()

    def _unending(self, kind: str, stream: bool, opts: dict[str, Any]) -> None:
        """Chunked, with no last chunk: only the client (or the server's shutdown) ends it."""
        ctype = "application/json" if not stream else \
            "application/x-ndjson" if self.fake.protocol == "ollama" else "text/event-stream"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        if kind == "trickle":
            every = float(opts.get("every", 0.05))
            while not self.fake.stopping.wait(every):
                self.wfile.write(b"1\r\n\n\r\n")
                self.wfile.flush()
            return
        if stream:
            frame = {"openai": _sse({"choices": [{"index": 0, "delta": {"content": "more "}}]}),
                     "ollama": b'{"message": {"role": "assistant", "content": "more "}, "done": false}\n',
                     "anthropic": _sse({"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": "more "}}, "content_block_delta"),
                     }[self.fake.protocol]
            opening = b""
        else:
            frame, opening = b"more " * 64, b'{"choices": [{"message": {"content": "'
        batch = frame * max(1, 16384 // len(frame))
        self.wfile.write(b"%x\r\n%s\r\n" % (len(opening), opening) if opening else b"")
        while not self.fake.stopping.is_set():
            self.wfile.write(b"%x\r\n%s\r\n" % (len(batch), batch))
            self.wfile.flush()

    def _malformed(self, stream: bool) -> None:
        broken = '{"choices": [{"message": {"content": "Hel'
        if not stream:
            self._send(200, broken.encode(), "application/json")
        elif self.fake.protocol == "openai":
            self._stream([f"data: {broken}\n\n".encode(), b"data: [DONE]\n\n"], "text/event-stream", True)
        elif self.fake.protocol == "ollama":
            self._stream([f"{broken}\n".encode()], "application/x-ndjson", True)
        else:
            self._stream([f"event: message_start\ndata: {broken}\n\n".encode(),
                          _sse({"type": "message_stop"}, "message_stop")], "text/event-stream", True)

    def _credential(self) -> str:
        auth = self.headers.get("Authorization") or ""
        return self.headers.get("x-api-key") or auth.removeprefix("Bearer ")

    def _error(self, status: int, retry_after: str | None) -> None:
        # Like real servers, the 401 names the key it saw: the adapter must scrub it.
        message = {401: f"Incorrect API key provided: {self._credential()}", 404: "model not found",
                   429: "Rate limit reached", 403: "forbidden"}.get(status, "internal server error")
        kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 429: "rate_limit_error", 529: "overloaded_error"}
        if self.fake.protocol == "openai":
            data: Any = {"error": {"message": message, "type": kinds.get(status, "api_error"), "code": None}}
        elif self.fake.protocol == "ollama":
            data = {"error": message}
        else:
            data = {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}
        self._json(status, data, headers={"Retry-After": str(retry_after)} if retry_after else None)

    def _listing(self) -> None:
        fake = self.fake
        if fake.protocol == "openai" and self.path.rstrip("/").endswith("/models"):
            ids = ["other-model", fake.model] if fake.listed is None else fake.listed
            self._json(200, {"object": "list", "data": [
                {"id": name, "object": "model", "created": 1600000000 + 100000000 * (name == fake.model),
                 "owned_by": "test"} for name in ids]})
        elif fake.protocol == "ollama" and self.path == "/api/tags":
            self._json(200, {"models": [{
                "name": f"{fake.model}:latest", "model": f"{fake.model}:latest",
                "modified_at": "2025-01-02T03:04:05.000000Z", "size": 101_000_000,
                "digest": "a" * 64,
                "details": {"format": "gguf", "family": "llama", "parameter_size": "135M",
                            "quantization_level": "Q4_1"}}]})
        elif fake.protocol == "anthropic" and self.path == f"/v1/models/{fake.model}":
            self._json(200, {"type": "model", "id": fake.model, "display_name": "Test Model",
                             "created_at": "2025-02-19T00:00:00Z"})
        else:
            self._error(404, None)


# -- the three protocols' answers: a list of frames (one whole body when not streaming) ----------

def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    text = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {text}\n\n".encode()


def _usage_fault(fault: Fault | None) -> dict[str, Any]:
    """The ``"usage"`` fault's options (``no_usage``: True when the answer carries no usage)."""
    if fault is None or fault.kind not in ("usage", "no_usage"):
        return {}
    return {"no_usage": True} if fault.kind == "no_usage" else fault.options


def _openai(fake: FakeServer, body: dict[str, Any], stream: bool, counted: Any = None,
            fault: Fault | None = None) -> list[bytes]:
    pieces = split_pieces(fake.text)
    opts = _usage_fault(fault)
    prompt = opts.get("input", PROMPT_TOKENS)
    usage: dict[str, Any] = {"prompt_tokens": prompt,
                             "completion_tokens": len(pieces) if counted is None else counted,
                             "total_tokens": prompt + len(pieces)}
    if "cache_read" in opts:  # OpenAI: the cached part of prompt_tokens
        usage["prompt_tokens_details"] = {"cached_tokens": opts["cache_read"], "audio_tokens": 0}
    base: dict[str, Any] = {"id": "chatcmpl-1", "created": 1700000000, "model": fake.model,
                            "system_fingerprint": "fp_test"}
    if "cache_n" in opts:  # llama.cpp's server: what its KV cache held, beside the usage
        base["timings"] = {"cache_n": opts["cache_n"], "prompt_n": prompt - opts["cache_n"],
                           "predicted_n": usage["completion_tokens"]}
    if opts.get("no_usage"):
        usage = {}
    if not stream:
        return [json.dumps({**base, "object": "chat.completion", **({"usage": usage} if usage else {}), "choices": [
            {"index": 0, "message": {"role": "assistant", "content": fake.text},
             "finish_reason": "stop"}]}).encode()]
    chunk = {**base, "object": "chat.completion.chunk"}

    def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]})

    frames = [delta({"role": "assistant", "content": ""})]
    frames += [delta({"content": p}) for p in pieces]
    frames.append(delta({}, "stop"))
    if usage and (body.get("stream_options") or {}).get("include_usage"):
        frames.append(_sse({**chunk, "choices": [], "usage": usage}))
    frames.append(_sse("[DONE]"))
    return frames


def _ollama(fake: FakeServer, stream: bool, counted: Any = None, fault: Fault | None = None) -> list[bytes]:
    pieces = split_pieces(fake.text)
    opts = _usage_fault(fault)
    base = {"model": fake.model, "created_at": "2025-01-02T03:04:05Z"}
    final: dict[str, Any] = {**base, "done": True, "done_reason": "stop", "total_duration": 1_000_000,
                             "prompt_eval_count": opts.get("input", PROMPT_TOKENS),
                             "eval_count": len(pieces) if counted is None else counted}
    if opts.get("no_usage"):
        del final["prompt_eval_count"], final["eval_count"]
    if not stream:
        return [json.dumps({**final, "message": {"role": "assistant", "content": fake.text}}).encode()]
    frames = [(json.dumps({**base, "message": {"role": "assistant", "content": p}, "done": False}) + "\n")
              .encode() for p in pieces]
    frames.append((json.dumps({**final, "message": {"role": "assistant", "content": ""}}) + "\n").encode())
    return frames


class PromptCache:
    """Anthropic's prompt cache, as its documentation describes it: the prompt is a sequence
    of blocks (tools, then system blocks, then each message's content blocks); a block with
    ``cache_control`` (at most 4) ends a prefix that is cached when it holds at least the
    model's minimum (2,048 tokens for a Haiku model, else 1,024). A request reads the longest
    cached prefix that ends at a breakpoint or at one of the 20 blocks before one; what lies
    between it and the last breakpoint that is long enough is written; the rest is input.
    Tokens are words (``split_pieces``), as the fake counts an answer's."""

    LOOKBACK = 20

    def __init__(self, model: str) -> None:
        self.minimum = 2048 if "haiku" in model.lower() else 1024
        self.seen: set[str] = set()

    def bill(self, body: dict[str, Any]) -> dict[str, int]:
        blocks = _blocks(body)
        points = [n for n, block in enumerate(blocks) if isinstance(block, dict) and "cache_control" in block]
        assert len(points) <= 4, "Anthropic refuses more than 4 blocks with cache_control"
        ends = [0]  # tokens of the prompt up to the end of each block
        for block in blocks:
            ends.append(ends[-1] + _tokens(block))
        keys = [_prefix_key(blocks[:n]) for n in range(len(blocks) + 1)]
        reach = {n for p in points for n in range(max(1, p + 1 - self.LOOKBACK), p + 2)}
        read = max((n for n in reach if keys[n] in self.seen), default=0)
        cached = [p + 1 for p in points if ends[p + 1] >= self.minimum]
        written = max(cached, default=0)
        for n in cached:
            self.seen.add(keys[n])
        written = max(written, read)
        return {"input_tokens": ends[-1] - ends[written], "cache_creation_input_tokens": ends[written] - ends[read],
                "cache_read_input_tokens": ends[read]}


def _blocks(body: dict[str, Any]) -> list[Any]:
    """The prompt's blocks in cache order; a string content is one text block."""
    blocks: list[Any] = list(body.get("tools") or [])
    system = body.get("system") or []
    blocks += [{"type": "text", "text": system}] if isinstance(system, str) else system
    for message in body.get("messages") or []:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        blocks += [{**part, "role": message.get("role")} for part in parts]
    return blocks


def _tokens(block: Any) -> int:
    text = block.get("text") if isinstance(block, dict) and block.get("type") == "text" else json.dumps(block)
    return len(split_pieces(str(text))) if text else 0


def _prefix_key(blocks: list[Any]) -> str:
    """The prefix's identity: its blocks without their cache_control marks."""
    plain = [{k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, dict) else b for b in blocks]
    return json.dumps(plain, sort_keys=True)


def _anthropic(fake: FakeServer, stream: bool, structured: bool, fault: Fault, counted: Any = None,
               cached: dict[str, int] | None = None) -> list[bytes]:
    opts = _usage_fault(fault)
    usage: dict[str, Any] = {"input_tokens": opts.get("input", 3),
                             "cache_creation_input_tokens": opts.get("cache_write", 0),
                             "cache_read_input_tokens": opts.get("cache_read", 9)}
    if cached is not None:  # what the prompt cache billed this request
        usage = dict(cached)
    if opts.get("no_usage"):
        usage = {}
    pieces = split_pieces(fake.text)
    out = len(pieces) if counted is None else counted
    if structured:
        block: dict[str, Any] = {"type": "tool_use", "id": "toolu_1", "name": "respond",
                                 "input": json.loads(fake.text)}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": fake.text}
        stop = "end_turn"
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": fake.model,
               "stop_sequence": None}
    if not stream:
        return [json.dumps({**message, "content": [block], "stop_reason": stop,
                            **({"usage": {**usage, "output_tokens": out}} if usage else {})}).encode()]
    start_block = {"type": "tool_use", "id": "toolu_1", "name": "respond", "input": {}} if structured \
        else {"type": "text", "text": ""}
    frames = [
        _sse({"type": "message_start", "message": {**message, "content": [], "stop_reason": None,
                                                    **({"usage": {**usage, "output_tokens": 1}} if usage else {})}},
             "message_start"),
        _sse({"type": "content_block_start", "index": 0, "content_block": start_block}, "content_block_start"),
        _sse({"type": "ping"}, "ping"),
    ]
    for n, piece in enumerate(pieces):
        if fault.kind == "error_event" and n == fault.options.get("pieces", 0):
            break
        delta = {"type": "input_json_delta", "partial_json": piece} if structured \
            else {"type": "text_delta", "text": piece}
        frames.append(_sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta"))
    if fault.kind == "error_event":
        frames.append(_sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                           "error"))
        return frames
    frames += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
              **({"usage": {"output_tokens": out}} if usage else {})}, "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return frames
