"""Optional offline semantic recall: the events nearest in meaning to a message, by WordLlama
word embeddings (``pip install 'pmm[semantic]'``; install.sh installs it by default).

BM25 finds the events that share a message's words; this finds the ones that say the same in
other words ("I adopted a puppy" for "do I have a dog"). On the dev conversations fusing the two
lifts evidence recall at 8,192 tokens from 84.0% to 85.9%, at 2,048 from 63.7% to 65.1%.

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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmm.domain.events import Event
from pmm.ledger import lookup, vectors
from pmm.ledger.store import Mind

if TYPE_CHECKING:
    import numpy as np

SPAN = 20_000  # newest events searched: bounds a turn's cost however big the mind grows
DIM = 256
VECTOR_BYTES = DIM * 2  # float16: half of float32's size, and ranking does not notice
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
    try:
        import wordllama
        from wordllama import WordLlama

        folder = Path(wordllama.__file__).parent
        model = WordLlama.load(cache_dir=folder, disable_download=True)  # never fetches
    except Exception:  # any failure to load is "unavailable": recall falls back to BM25
        return None
    return model, expected_tag()


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


def nearest(mind: Mind, text: str, kinds: Iterable[str], limit: int,
            span: int = SPAN) -> list[tuple[Event, float]] | None:
    """The events of ``kinds`` among the newest ``span`` events most similar to ``text``, best
    first (ties: newest first), each with its cosine similarity (only those above 0); None
    when semantic recall is unavailable, so the caller ranks by BM25 alone.

    Vectors missing (or unusable) for events in the span are computed; a writable ``mind``
    stores them (in the caller's transaction if one is open, else in one of its own), a
    read-only one keeps them in memory."""
    loaded = _load()
    if loaded is None:
        return None
    model, tag = loaded
    try:
        matrix, ids = _matrix(mind, model, tag, tuple(kinds), span)
        query = _embed(model, [text])[0]
    except (ValueError, TypeError, MemoryError):  # the model refusing a text: rank by BM25
        return None
    if limit <= 0 or not ids or not query.any():
        return []
    import numpy as np

    scores = matrix @ query
    best = np.argsort(-scores, kind="stable")[:limit]  # stable: rows are newest first
    best = best[scores[best] > 0.0]  # orthogonal or opposite: nothing in common to recall
    by_id = {e.id: e for e in lookup.get(mind, (ids[n] for n in best))}
    return [(by_id[ids[n]], float(scores[n])) for n in best if ids[n] in by_id]


def _matrix(mind: Mind, model: Any, tag: str, kinds: tuple[str, ...],
            span: int) -> tuple[np.ndarray, list[int]]:
    """The span's vectors (rows in ``ids`` order, newest first), the missing ones computed."""
    import numpy as np

    rows = vectors.span(mind, kinds, span)
    ids = [event_id for event_id, _ in rows]
    matrix = np.zeros((len(rows), DIM), dtype=np.float32)
    good = np.zeros(len(rows), dtype=bool)
    if rows and vectors.model(mind) == tag:
        at = np.array([n for n, (_, blob) in enumerate(rows)
                       if blob is not None and len(blob) == VECTOR_BYTES], dtype=np.intp)
        if at.size:
            block = np.frombuffer(b"".join(rows[n][1] or b"" for n in at), dtype="<f2")
            block = block.reshape(-1, DIM).astype(np.float32)
            with np.errstate(invalid="ignore", over="ignore"):
                norms = np.linalg.norm(block, axis=1)
                sound = np.isfinite(block).all(axis=1) & (
                    (np.abs(norms - 1.0) <= NORM_SLACK) | (norms == 0.0))
            matrix[at[sound]] = block[sound]
            good[at[sound]] = True
    todo = [n for n in range(len(rows)) if not good[n]]
    if todo:
        texts = vectors.texts(mind, (ids[n] for n in todo))
        fresh = _embed(model, [texts.get(ids[n], "") for n in todo])
        matrix[todo] = fresh
        if mind.writable:
            half = fresh.astype("<f2")
            vectors.store(mind, tag, [(ids[n], half[k].tobytes()) for k, n in enumerate(todo)],
                          keep_from=ids[-1])
    return matrix, ids


def fill(mind: Mind, kinds: Iterable[str], span: int = SPAN) -> int:
    """Compute and store the vectors a writer's span lacks (``pmm health --repair``); how
    many events the span holds, or -1 when semantic recall is unavailable."""
    loaded = _load()
    if loaded is None:
        return -1
    _, ids = _matrix(mind, loaded[0], loaded[1], tuple(kinds), span)
    return len(ids)

