"""Ollama's native API: ``/api/chat`` (NDJSON when streaming) and ``/api/tags`` for the digest."""

from __future__ import annotations

from typing import Any

import httpx

from pmm import errors
from pmm.providers import options
from pmm.providers._http import HttpProvider, Progress, cut_off, iter_ndjson, read_json, token_count
from pmm.providers.base import Completion, ModelInfo, OnText, Request


def _tagged(name: str) -> str:
    """Ollama treats ``llama3`` and ``llama3:latest`` as one model."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OllamaProvider(HttpProvider):
    def _not_found_hint(self) -> str:
        return f"ollama pull {self.spec.model}"

    def _complete(self, request: Request, on_text: OnText | None) -> Completion:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.content} for m in request.sent())
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": messages,
            "stream": on_text is not None,
            "options": {"temperature": request.temperature, "num_predict": request.max_tokens,
                        **options.fields(request.options, "ollama")},
        }
        if request.json_schema is not None:
            body["format"] = request.json_schema
        handle = self._read_stream if on_text is not None else self._read_whole
        return self._call("POST", "/api/chat", handle, body=body, on_text=on_text)

    def _finish(self, text: str, last: dict[str, Any], progress: Progress) -> Completion:
        return Completion(text=text, model=last.get("model") or self.spec.model,
                          tokens_in=token_count(last, "prompt_eval_count"),
                          tokens_out=token_count(last, "eval_count"),
                          finish_reason=last.get("done_reason"), latency_ms=progress.elapsed_ms())

    def _failed(self, data: dict[str, Any]) -> errors.ProviderError:
        return errors.ProviderError(f"{self.where} failed: {data['error']}",
                                    hint="nothing was saved; try again")

    def _read_whole(self, response: httpx.Response, progress: Progress) -> Completion:
        data = read_json(response, progress)
        if "error" in data:
            raise self._failed(data)
        text = data["message"]["content"]
        if not isinstance(text, str):
            raise ValueError("message.content is not text")
        return self._finish(text, data, progress)

    def _read_stream(self, response: httpx.Response, progress: Progress) -> Completion:
        pieces: list[str] = []
        for item in iter_ndjson(response, progress):
            if "error" in item:
                raise self._failed(item)
            piece = (item.get("message") or {}).get("content") or ""
            if piece:
                pieces.append(piece)
                progress.emit(piece)
            if item.get("done"):
                return self._finish("".join(pieces), item, progress)
        raise cut_off(self.where)

    def _info(self) -> ModelInfo:
        def read(response: httpx.Response, progress: Progress) -> ModelInfo:
            wanted = _tagged(self.spec.model)
            for entry in read_json(response, progress)["models"]:
                if wanted in (_tagged(entry.get("name") or ""), _tagged(entry.get("model") or "")):
                    break
            else:
                raise errors.ProviderError(f"model {self.spec.model!r} is not pulled on {self.where}",
                                           hint=self._not_found_hint())
            digest = entry.get("digest")
            if digest and not str(digest).startswith("sha256:"):
                digest = f"sha256:{digest}"
            details = entry.get("details")
            return ModelInfo(provider="ollama", model=self.spec.model, hash=digest or None,
                             version=entry.get("modified_at"),
                             details=details if isinstance(details, dict) else {})

        return self._call("GET", "/api/tags", read)
