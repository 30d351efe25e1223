"""Anthropic's Messages API, with the stable prefix of the prompt marked for prompt caching.

The request is ordered stable-first (``pmm.providers.base.Request``): a cache breakpoint ends the
system prompt (identity and standing memory) and another the older conversation, each only where
the prefix up to it is long enough for the model to cache (``cache_minimum``); the turn's own
context opens the last user message, after both, so a turn's prefix is read from the cache the
next turn wrote.

Structured output goes through a forced tool call (``respond``): the tool's input is the JSON
document. When streaming, the tool input arrives as partial JSON; it is not handed to ``on_text``
piece by piece (half a JSON document is useless to show) but once, whole, at the end of the
message, so the streamed pieces still join to the completion's text.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from pmm import errors
from pmm.providers import options
from pmm.providers._http import (
    HttpProvider,
    Progress,
    Retryable,
    cut_off,
    error_detail,
    iter_sse,
    read_json,
    token_count,
)
from pmm.providers.base import Completion, ModelInfo, OnText, Request

API_VERSION = "2023-06-01"
TOOL = "respond"
EPHEMERAL = {"type": "ephemeral"}


def cache_minimum(model: str) -> int:
    """The shortest prefix Anthropic caches for ``model``, in tokens, as its prompt caching
    documentation gives them (2026): 4,096 for Opus 4.5 and 4.6 and Haiku 4.5, 2,048 for
    Sonnet 4.6 and older Haiku models, 1,024 for the rest. A shorter prefix marked for caching
    is simply not cached (and not charged as a cache write)."""
    name = model.lower()
    if any(m in name for m in ("opus-4-5", "opus-4-6", "haiku-4-5")):
        return 4096
    if "haiku" in name or "sonnet-4-6" in name:
        return 2048
    return 1024


def estimated_tokens(text: str) -> int:
    """Tokens of ``text`` counted high (Claude's tokenizer averages about 3.5 characters of
    English a token): a breakpoint put on a prefix that is really too short costs nothing,
    one left out would lose the saving."""
    return len(text.encode()) // 3 + 1


def breakpoints(request: Request) -> list[int]:
    """Where the stable parts end, in order: the system prompt (-1) and the last message before
    the new user message (the older conversation, unless ``request.repeats`` says its oldest
    turns are giving way). Everything up to a breakpoint is the same in the next turn's
    request, which reads it from the cache; the new message and the turn's context come after
    the last one. Two of Anthropic's four: its cache also finds an earlier
    turn's prefix at any of the 20 blocks before a breakpoint, and one conversation turn adds
    two (the message and the answer), so the previous turn's breakpoint is always in reach."""
    points = [-1] if request.system else []
    if len(request.messages) >= 2 and request.repeats:
        points.append(len(request.messages) - 2)
    return points


class AnthropicProvider(HttpProvider):
    def _headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    def _body(self, request: Request, stream: bool) -> dict[str, Any]:
        system: list[dict[str, Any]] = [{"type": "text", "text": request.system}] if request.system else []
        messages: list[dict[str, Any]] = [{"role": m.role, "content": m.content} for m in request.messages]
        if request.context:  # the turn's own material opens the last user message: never cached
            first: dict[str, Any] = {"type": "text", "text": request.context}
            if messages and messages[-1]["role"] == "user":
                messages[-1]["content"] = [first, {"type": "text", "text": messages[-1]["content"]}]
            else:
                messages.append({"role": "user", "content": [first]})
        minimum = cache_minimum(self.spec.model)
        for block in breakpoints(request):
            prefix = [request.system, *(m.content for m in request.messages[:block + 1])]
            if sum(estimated_tokens(text) for text in prefix if text) < minimum:
                continue  # too short to be cached: the next breakpoint's longer prefix may be
            if block < 0:
                system[0]["cache_control"] = dict(EPHEMERAL)
            else:
                messages[block]["content"] = [{"type": "text", "text": request.messages[block].content,
                                               "cache_control": dict(EPHEMERAL)}]
        body: dict[str, Any] = {
            "model": self.spec.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "messages": messages,
            "stream": stream,
            **options.fields(request.options, "anthropic"),
        }
        if system:
            body["system"] = system
        if request.json_schema is not None:
            body["tools"] = [{"name": TOOL, "description": "Give the answer as structured data.",
                              "input_schema": request.json_schema}]
            body["tool_choice"] = {"type": "tool", "name": TOOL}
        return body

    def _complete(self, request: Request, on_text: OnText | None) -> Completion:
        body = self._body(request, stream=on_text is not None)
        structured = request.json_schema is not None

        def whole(response: httpx.Response, progress: Progress) -> Completion:
            return self._read_whole(response, progress, structured)

        def streamed(response: httpx.Response, progress: Progress) -> Completion:
            return self._read_stream(response, progress, structured)

        return self._call("POST", "/v1/messages", streamed if on_text is not None else whole, body=body, on_text=on_text)

    def _finish(self, text: str, model: str | None, usage: dict[str, Any], stop: str | None,
                progress: Progress) -> Completion:
        completion = Completion(text=text, model=model or self.spec.model, finish_reason=stop,
                                tokens_out=token_count(usage, "output_tokens"), latency_ms=progress.elapsed_ms())
        fresh = token_count(usage, "input_tokens")  # the prompt neither read from nor written to the cache
        completion.cache_read = token_count(usage, "cache_read_input_tokens")
        completion.cache_write = token_count(usage, "cache_creation_input_tokens")
        if fresh is not None:
            completion.tokens_in = fresh + (completion.cache_read or 0) + (completion.cache_write or 0)
        return completion

    def _read_whole(self, response: httpx.Response, progress: Progress, structured: bool) -> Completion:
        data = read_json(response, progress)
        blocks = data["content"]
        if structured:
            inputs = [b["input"] for b in blocks if b.get("type") == "tool_use" and b.get("name") == TOOL]
            if not inputs:
                raise ValueError(f"no {TOOL!r} tool call in the answer")
            text = json.dumps(inputs[0])
        else:
            text = "".join(b["text"] for b in blocks if b.get("type") == "text")
        return self._finish(text, data.get("model"), data.get("usage") or {}, data.get("stop_reason"), progress)

    def _read_stream(self, response: httpx.Response, progress: Progress, structured: bool) -> Completion:
        pieces: list[str] = []
        partial_json: list[str] = []
        model: str | None = None
        usage: dict[str, Any] = {}
        stop: str | None = None
        for event, data in iter_sse(response, progress):
            payload = json.loads(data)
            kind = payload.get("type") or event
            if kind == "message_start":
                message = payload["message"]
                model = message.get("model")
                usage.update(message.get("usage") or {})
            elif kind == "content_block_delta":
                delta = payload["delta"]
                if delta.get("type") == "text_delta" and not structured:
                    pieces.append(delta["text"])
                    progress.emit(delta["text"])
                elif delta.get("type") == "input_json_delta":
                    partial_json.append(delta.get("partial_json") or "")
            elif kind == "message_delta":
                stop = (payload.get("delta") or {}).get("stop_reason") or stop
                usage.update(payload.get("usage") or {})
            elif kind == "message_stop":
                if structured:
                    if not partial_json:
                        raise ValueError(f"no {TOOL!r} tool call in the answer")
                    joined = "".join(partial_json)
                    text = json.dumps(json.loads(joined) if joined.strip() else {})
                    progress.emit(text)
                else:
                    text = "".join(pieces)
                return self._finish(text, model, usage, stop, progress)
            elif kind == "error":
                error = payload.get("error") or {}
                message = f"{self.where} failed mid-answer: {error_detail(payload)}"
                if error.get("type") == "overloaded_error":
                    # Retried by _call only while nothing has reached on_text.
                    raise Retryable(message, hint="Anthropic is overloaded; try again in a moment")
                raise errors.ProviderError(message, hint="nothing was saved; try again")
        raise cut_off(self.where)

    def _info(self) -> ModelInfo:
        def read(response: httpx.Response, progress: Progress) -> ModelInfo:
            data = read_json(response, progress)
            details = {"display_name": data["display_name"]} if data.get("display_name") else {}
            return ModelInfo(provider="anthropic", model=self.spec.model, version=data.get("created_at"),
                             details=details)

        return self._call("GET", f"/v1/models/{self.spec.model}", read)
