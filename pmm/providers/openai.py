"""OpenAI chat completions: OpenAI itself and compatible servers (llama.cpp, llama-cpp-python, vLLM).

The two differ in two request fields: OpenAI wants ``max_completion_tokens`` (its reasoning models
refuse ``max_tokens``) and a ``json_schema`` response format; local servers know ``max_tokens`` and
llama-cpp-python reads a schema only from ``{"type": "json_object", "schema": ...}``.
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
    cut_off,
    error_detail,
    iter_sse,
    read_json,
    token_count,
)
from pmm.providers.base import Completion, ModelInfo, OnText, Request


class OpenAIProvider(HttpProvider):
    """OpenAI's own API: ``max_completion_tokens`` and a ``json_schema`` response format."""

    native = True

    def _body(self, request: Request, stream: bool) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.content} for m in request.sent())
        native = self.native
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": messages,
            "max_completion_tokens" if native else "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": stream,
        }
        body.update(options.fields(request.options, "openai"))
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.json_schema is not None:
            if native:
                body["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": "pmm", "schema": request.json_schema, "strict": False}}
            else:
                body["response_format"] = {"type": "json_object", "schema": request.json_schema}
        return body

    def _complete(self, request: Request, on_text: OnText | None) -> Completion:
        body = self._body(request, stream=on_text is not None)
        handle = self._read_stream if on_text is not None else self._read_whole
        return self._call("POST", "/chat/completions", handle, body=body, on_text=on_text)

    def _read_whole(self, response: httpx.Response, progress: Progress) -> Completion:
        data = read_json(response, progress)
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content")
        if text is None:
            if message.get("refusal"):
                raise errors.ProviderError(f"the model refused: {message['refusal']}")
            text = ""
        if not isinstance(text, str):
            raise ValueError("message.content is not text")
        completion = Completion(text=text, model=data.get("model") or self.spec.model,
                                finish_reason=choice.get("finish_reason"), latency_ms=progress.elapsed_ms())
        _usage(completion, data.get("usage"), data.get("timings"))
        _fingerprint(completion, data)
        return completion

    def _read_stream(self, response: httpx.Response, progress: Progress) -> Completion:
        pieces: list[str] = []
        model, finish, usage, fingerprint, timings = None, None, None, None, None
        for _event, data in iter_sse(response, progress):
            if data.strip() == "[DONE]":
                completion = Completion(text="".join(pieces), model=model or self.spec.model,
                                        finish_reason=finish, latency_ms=progress.elapsed_ms())
                _usage(completion, usage, timings)
                _fingerprint(completion, {"system_fingerprint": fingerprint})
                return completion
            chunk = json.loads(data)
            if "error" in chunk:
                raise errors.ProviderError(f"{self.where} failed mid-answer: {error_detail(chunk)}",
                                           hint="nothing was saved; try again")
            model = chunk.get("model") or model
            fingerprint = chunk.get("system_fingerprint") or fingerprint
            usage = chunk.get("usage") or usage  # with include_usage: a last chunk with no choices
            timings = chunk.get("timings") or timings  # llama.cpp's server: on the last chunk
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    pieces.append(piece)
                    progress.emit(piece)
                finish = choice.get("finish_reason") or finish
        raise cut_off(self.where)

    def _info(self) -> ModelInfo:
        def read(response: httpx.Response, progress: Progress) -> ModelInfo:
            listed = read_json(response, progress)["data"]
            entry = _serving(listed, self.spec.model)
            if entry is None:
                offered = ", ".join(str(e.get("id")) for e in listed[:10]) or "none"
                raise errors.ProviderError(
                    f"model {self.spec.model!r} is not served by {self.where} (it offers: {offered})",
                    hint=self._not_found_hint())
            version = entry.get("created") or entry.get("owned_by")
            meta: dict[str, Any] = entry["meta"] if isinstance(entry.get("meta"), dict) else {}
            context = meta.get("n_ctx_train")  # llama.cpp's server reports the trained context
            details = {k: v for k, v in entry.items() if k not in ("id", "object")}
            if entry["id"] != self.spec.model:
                details["served_as"] = entry["id"]
            return ModelInfo(provider=self.spec.provider, model=self.spec.model,
                             version=str(version) if version is not None else None,
                             context_length=context if isinstance(context, int) else None,
                             details=details)

        return self._call("GET", "/models", read)


class OpenAICompatibleProvider(OpenAIProvider):
    """Servers that copy OpenAI's chat API: ``max_tokens``, and a schema inside ``json_object``."""

    native = False


def _serving(listed: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """The entry of ``/models`` that serves ``model``: the one with its id; else one whose id is
    a file path named ``model`` (llama.cpp's servers list the GGUF path they were started
    with), with or without ``.gguf``; else the only model a server offers (a llama.cpp server
    answers whatever model a request names)."""
    for entry in listed:
        if entry["id"] == model:
            return entry
    for entry in listed:
        _, slash, file_name = str(entry["id"]).replace("\\", "/").rpartition("/")
        if slash and model in (file_name, file_name.removesuffix(".gguf")):
            return entry
    return listed[0] if len(listed) == 1 else None


def _usage(completion: Completion, usage: Any, timings: Any = None) -> None:
    """``prompt_tokens`` is the whole prompt; OpenAI says how much of it came from its cache in
    ``prompt_tokens_details.cached_tokens``, llama.cpp's server (without those details) in
    ``timings.cache_n``."""
    if not isinstance(usage, dict):
        return  # servers that never report usage leave the counts unknown, not zero
    completion.tokens_in = token_count(usage, "prompt_tokens")
    completion.tokens_out = token_count(usage, "completion_tokens")
    details = usage.get("prompt_tokens_details")
    cached = token_count(details, "cached_tokens") if isinstance(details, dict) else None
    if cached is None and isinstance(timings, dict):
        cached = token_count(timings, "cache_n")
    if cached is not None and completion.tokens_in is not None and cached > completion.tokens_in:
        raise ValueError(f"usage says {cached} cached tokens of a {completion.tokens_in}-token prompt")
    completion.cache_read = cached


def _fingerprint(completion: Completion, data: dict[str, Any]) -> None:
    if data.get("system_fingerprint"):
        completion.extra["system_fingerprint"] = data["system_fingerprint"]
