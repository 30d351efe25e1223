"""Optional offline semantic recall: the events nearest in meaning to a message, by WordLlama
word embeddings (``pip install 'pmm[semantic]'``; install.sh installs it by default).

BM25 finds the events that share a message's words; this finds the ones that say the same in
other words ("I adopted a puppy" for "do I have a dog"). Recall compares events with the
message's content words, each weighted by its rarity in the mind (``ranking.rarity``), not
with the message as a whole: averaged, a question's common words ("my friend", "talk") outweigh
the one it is about. On the dev conversations the blend moves evidence recall at 8,192 tokens
from 86.1% (BM25 alone) to 88.5%, at 2,048 from 72.2% to 73.2% (bench/RESULTS.md); with the
whole message compared instead, it was 86.9% and 70.5%.

The model is the 256-dimensional one the ``wordllama`` wheel ships inside its package, loaded
from there with downloads disabled: when it is not installed, or its weights are missing, or
it fails to load, semantic recall is unavailable (``nearest`` returns None) and recall is BM25
alone. Nothing here ever opens a socket. numpy and wordllama are imported on first use only,
so commands that do not recall never pay for them.

Vectors live in a derived table (``pmm.ledger.vectors``): a writer stores the ones it had to
compute, a reader computes them in memory and stores nothing. Stored vectors are checked
before use (length, finite, unit length, same model): a bad one is computed again (and
replaced by a writer), so a hostile file can skew the ranking but not crash it, and the text
a caller gets is always the event's own, read from ``events`` by id.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmm import settings
from pmm.domain.events import Event
from pmm.ledger import lookup, vectors
from pmm.ledger.store import Ledger
from pmm.services import ranking

if TYPE_CHECKING:
    import numpy as np

KINDS = ranking.RECALL_KINDS  # what recall ranks, so what `pmm health --repair` makes vectors for
SPAN = 20_000  # newest events searched: bounds a turn's cost however big the mind grows
DIM = 256
VECTOR_BYTES = DIM * 2  # float16: half the size; cosines move < 1e-4, the top 50 of a span stay
WEIGHTS = "weights/l2_supercat_256.safetensors"
NORM_SLACK = 0.02  # a stored unit vector's norm after float16 rounding is within 1e-3 of 1
MAX_CHARS = 4_000  # of an event embedded: the tokenizer pads a batch to its longest text
BATCH = 32


def installed() -> bool:
    """Whether wordllama and its bundled weights are on disk (imports nothing: health asks)."""
    try:
        spec = importlib.util.find_spec("wordllama")
    except (ImportError, ValueError):  # ValueError: a module put in sys.modules without a spec
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(folder) / WEIGHTS).is_file() for folder in spec.submodule_search_locations)


@functools.cache
def _load() -> tuple[Any, str] | None:
    """The model and the tag its vectors are stored under, loaded once per process; None when
    it cannot be loaded (not installed, weights missing, a broken install)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stubbed = "requests" not in sys.modules
    if stubbed:  # wordllama imports requests for downloads, and urllib3 opens a socket on import
        sys.modules["requests"] = _no_downloads()
    try:
        import wordllama
        from wordllama import WordLlama

        folder = Path(wordllama.__file__).parent
        model = WordLlama.load(cache_dir=folder, disable_download=True)  # never fetches
    except Exception:  # any failure to load is "unavailable": recall falls back to BM25
        return None
    finally:  # wordllama calls logging.basicConfig(INFO) on import: httpx would log to stderr
        root.handlers[:] = handlers
        root.setLevel(level)
        if stubbed:
            sys.modules.pop("requests", None)
    return model, expected_tag()


def _no_downloads() -> types.ModuleType:
    """What wordllama sees as ``requests``: any use fails, so it can never fetch anything."""
    stub = types.ModuleType("requests")

    class RequestException(OSError):
        pass

    def refuse(*args: object, **kwargs: object) -> None:
        raise RequestException("pmm's semantic recall never downloads")

    stub.RequestException = RequestException  # type: ignore[attr-defined]
    stub.get = refuse  # type: ignore[attr-defined]
    return stub


def expected_tag() -> str:
    """The tag of the vectors this install makes (a new wordllama may embed differently)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"wordllama {version('wordllama')} l2_supercat {DIM} float16"
    except PackageNotFoundError:
        return f"wordllama unknown l2_supercat {DIM} float16"


def available() -> bool:
    """Whether semantic recall works here (loads the model the first time: about 0.5 s)."""
    return _load() is not None


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit vectors (float32, one row per text; zeros for a text with no known word).
    Raises ``LookupError`` when semantic recall is unavailable."""
    loaded = _load()
    if loaded is None:
        raise LookupError("semantic recall is unavailable")
    return _embed(loaded[0], texts)


def _embed(model: Any, texts: Sequence[str]) -> np.ndarray:
    import numpy as np

    out = np.zeros((len(texts), DIM), dtype=np.float32)
    if not texts:
        return out
    # Shortest first, so a batch is padded to a length near its own texts'.
    order = sorted(range(len(texts)), key=lambda n: len(texts[n]))
    clipped = [texts[n][:MAX_CHARS] for n in order]
    with np.errstate(invalid="ignore", divide="ignore"):  # no known word: 0 / 0, made 0 below
        made = model.embed(clipped, norm=True, batch_size=BATCH)
    out[order] = np.nan_to_num(np.asarray(made, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return out


def nearest(mind: Ledger, text: str, kinds: Iterable[str], limit: int,
            span: int = SPAN, *, weights: Mapping[str, float] | None = None
            ) -> list[tuple[Event, float]] | None:
    """The events of ``kinds`` among the newest ``span`` events most similar to ``text``, best
    first (ties: newest first), each with its cosine similarity (only those above 0); None
    when semantic recall is unavailable, so the caller ranks by BM25 alone. With ``weights``
    (word -> weight), the query is those words' vectors so weighted, not ``text`` whole.

    Vectors missing (or unusable) for events in the span are computed; a writable ``mind``
    stores them (in the caller's transaction if one is open, else in one of its own), a
    read-only one keeps them in memory. ``PMM_SEMANTIC=0`` turns it off."""
    if not settings.SEMANTIC.get():
        return None
    loaded = _load()
    if loaded is None:
        return None
    model, tag = loaded
    try:
        ids, matrix = _matrix(mind, model, tag, tuple(kinds), span)
        query = _query(model, text, weights)
    except (ValueError, TypeError, MemoryError):  # the model refusing a text: rank by BM25
        return None
    if limit <= 0 or not ids.size or not query.any():
        return []
    import numpy as np

    scores = (matrix @ query)[::-1]  # newest first, so that a stable sort breaks ties so
    newest = ids[::-1]
    best = np.argsort(-scores, kind="stable")[:limit]
    best = best[scores[best] > 0.0]  # orthogonal or opposite: nothing in common to recall
    by_id = {e.id: e for e in lookup.get(mind, newest[best].tolist())}
    return [(by_id[i], float(scores[n])) for n, i in zip(best, newest[best].tolist(), strict=True)
            if i in by_id]


def _query(model: Any, text: str, weights: Mapping[str, float] | None) -> np.ndarray:
    """The unit vector to compare events with: ``text``'s, or the weighted sum of the unit
    vectors of ``weights``' words (zeros when the model knows none of them)."""
    import numpy as np

    if not weights:
        whole: np.ndarray = _embed(model, [text])[0]
        return whole
    words = list(weights)
    summed = np.asarray([weights[w] for w in words], dtype=np.float32) @ _embed(model, words)
    norm = float(np.linalg.norm(summed))
    return summed / norm if norm > 0.0 and np.isfinite(norm) else np.zeros(DIM, dtype=np.float32)


@dataclass
class _Memo:
    """The last span's vectors, for the next turn on the same open mind (a REPL, ``pmm run``):
    valid while no other connection has committed to the file since (``data_version``); this
    connection's own writes only append events, whose vectors it computes itself."""

    conn: Any  # the connection itself, not its id: held, so no other one can take its place
    data_version: int
    key: tuple[str, tuple[str, ...]]  # model tag, kinds
    ids: np.ndarray  # ascending
    matrix: np.ndarray  # rows in ``ids`` order (never written once memoised: it may be a
    # stored block that a later call returns as it is)


_memo: list[_Memo] = []  # at most one: a process recalls from one mind at a time


def _matrix(mind: Ledger, model: Any, tag: str, kinds: tuple[str, ...],
            span: int) -> tuple[np.ndarray, np.ndarray]:
    """The span's ids (ascending) and their vectors, one row each, the missing ones computed.
    Ascending, so that the common case (every vector stored) is the stored block itself: the
    span is 10 MB of vectors, and each copy of it costs milliseconds."""
    import numpy as np

    ids = np.array(vectors.span(mind, kinds, span)[::-1], dtype=np.int64)
    matrix: np.ndarray | None = None
    good = np.zeros(len(ids), dtype=bool)
    memo = _memo[0] if _memo else None
    if memo is not None and (memo.conn is mind.conn and memo.key == (tag, kinds)
                             and memo.data_version == vectors.data_version(mind)):
        matrix = _take(memo.ids, memo.matrix, ids, matrix, good)
    if ids.size and not good.all() and vectors.model(mind) == tag:
        rows = vectors.stored(mind, int(ids[~good].min()), int(ids[-1]), VECTOR_BYTES)
        if rows:
            found = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            block = np.frombuffer(b"".join([row[1] for row in rows]), dtype="<f2")
            block = block.reshape(-1, DIM).astype(np.float32)
            with np.errstate(invalid="ignore", over="ignore"):
                norms = np.linalg.norm(block, axis=1)
                sound = np.isfinite(block).all(axis=1) & (
                    (np.abs(norms - 1.0) <= NORM_SLACK) | (norms == 0.0))
            if not sound.all():
                found, block = found[sound], block[sound]
            matrix = _take(found, block, ids, matrix, good)
    if matrix is None:
        matrix = np.zeros((len(ids), DIM), dtype=np.float32)
    todo = np.flatnonzero(~good)
    if todo.size:
        texts = vectors.texts(mind, ids[todo].tolist())
        half = _embed(model, [texts.get(int(ids[n]), "") for n in todo]).astype("<f2")
        matrix[todo] = half.astype(np.float32)  # as stored: the same ranking cached or not
        rows = [(int(ids[n]), half[k].tobytes()) for k, n in enumerate(todo)]
        if mind.writable and not vectors.store(mind, tag, rows, keep_from=int(ids[0])):
            _memo.clear()  # not stored (the lock was busy): the next turn tries again
            return ids, matrix
    _memo[:] = [_Memo(mind.conn, vectors.data_version(mind), (tag, kinds), ids, matrix)]
    return ids, matrix


def _take(source_ids: np.ndarray, source: np.ndarray, ids: np.ndarray,
          matrix: np.ndarray | None, good: np.ndarray) -> np.ndarray:
    """``matrix`` (made when None) with the rows not yet ``good`` whose id is in
    ``source_ids`` (ascending, as ``ids`` is) filled from ``source``."""
    import numpy as np

    if source_ids.size == ids.size and not good.any() and np.array_equal(source_ids, ids):
        good[:] = True
        return source  # the whole span: no copy
    if matrix is None:
        matrix = np.zeros((len(ids), DIM), dtype=np.float32)
    if source_ids.size and ids.size:
        at = np.minimum(np.searchsorted(source_ids, ids), source_ids.size - 1)
        hit = (source_ids[at] == ids) & ~good
        matrix[hit] = source[at[hit]]
        good |= hit
    return matrix


def fill(mind: Ledger, kinds: Iterable[str] = KINDS, span: int = SPAN) -> int:
    """Compute and store the vectors a writer's span lacks (``pmm health --repair``); how
    many events the span holds, or -1 when semantic recall is unavailable."""
    loaded = _load()
    if loaded is None:
        return -1
    ids, _ = _matrix(mind, loaded[0], loaded[1], tuple(kinds), span)
    return int(ids.size)

