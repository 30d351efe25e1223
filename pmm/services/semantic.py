"""Optional offline semantic recall: the events nearest in meaning to a message, by WordLlama
word embeddings (``pip install 'pmm[semantic]'``; install.sh installs it by default).

BM25 finds the events that share a message's words; this finds the ones that say the same in
other words ("I adopted a puppy" for "do I have a dog"). Recall compares events with the
message's content words, each weighted by its rarity in the mind (``ranking.rarity``), not
with the message as a whole: averaged, a question's common words ("my friend", "talk") outweigh
the one it is about. On the dev conversations the blend moves evidence recall at 8,192 tokens
from 86.1% (BM25 alone) to 88.5%, at 2,048 from 72.2% to 73.2% (bench/RESULTS.md); with the
whole message compared instead, it was 86.9% and 70.5%.

The model is the 256-dimensional one the ``wordllama`` wheel ships inside its package, read
from there (its weights memory-mapped, its tokenizer by ``tokenizers``) without importing the
package (``_Model``: the same vectors, a fraction of the start-up): when it is not installed,
or its weights are missing, or they fail to load, semantic recall is unavailable (``nearest``
returns None) and recall is BM25 alone. Nothing here ever opens a socket. numpy and
tokenizers are imported on first use only, so commands that do not recall never pay for them.

Two paths compute the same recall. A small span (a small mind: ``PLAIN_BUDGET_US``) is done in
plain Python (``pmm.services.bpe`` tokenizes, ``pmm.services.plain_vectors`` embeds and ranks),
since importing numpy and loading ``tokenizers``' file cost ~150 ms, more than the whole turn;
a larger one by numpy, whose start then pays for itself. Both store the same bytes and rank
alike: each scores the span roughly, then computes the cosines of the candidates near the
cut again in float64, in the same order of operations, and sorts by those.

Vectors live in a derived table (``pmm.ledger.vectors``): a writer stores the ones it had to
compute, a reader computes them in memory and stores nothing. Stored vectors are checked
before use (length, finite, unit length, same model): a bad one is computed again (and
replaced by a writer), so a hostile file can skew the ranking but not crash it, and the text
a caller gets is always the event's own, read from ``events`` by id.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmm import paths, settings
from pmm.domain.events import Event
from pmm.ledger import lookup, vectors
from pmm.ledger.store import Ledger
from pmm.services import ranking

if TYPE_CHECKING:
    import numpy as np

    from pmm.services import plain_vectors

KINDS = ranking.RECALL_KINDS  # what recall ranks, so what `pmm health --repair` makes vectors for
SPAN = 20_000  # newest events searched: bounds a turn's cost however big the mind grows
DIM = 256  # plain_vectors.DIM (a test holds them equal)
VECTOR_BYTES = DIM * 2  # float16: half the size; cosines move < 1e-4, the top 50 of a span stay
WEIGHTS = "weights/l2_supercat_256.safetensors"
NORM_SLACK = 0.02  # a stored unit vector's norm after float16 rounding is within 1e-3 of 1
MAX_CHARS = 4_000  # of an event embedded: the tokenizer pads a batch to its longest text
BATCH = 32
# The plain-Python path (pmm.services.plain_vectors) serves a span while its estimated CPU cost
# is under what the numpy path's start costs (importing numpy, loading ``tokenizers``' file:
# ~150 ms on the 2-core machine): ~35 us per stored vector (read, checked, scored) and ~40 us
# per token of text it must embed, the query's too (measured there:
# bench/bench_semantic_paths.py; by tokens, not characters: a character of CJK or emoji is
# several tokens, of English a quarter of one). The texts are tokenized first (under a
# microsecond a token) to know that cost.
PLAIN_BUDGET_US = 140_000
PLAIN_VECTOR_US = 35
PLAIN_TOKEN_US = 40
PLAIN_SPAN = PLAIN_BUDGET_US // PLAIN_VECTOR_US  # 4,000 events
# A long-lived process (the REPL, ``pmm run``) pays the plain path's cost every turn, numpy's
# start once (its memo then makes a turn a few ms): once the plain path's estimated cost in
# this process passes numpy's start, numpy serves it from then on.
PLAIN_PROCESS_US = 150_000
_plain_spent = [0]  # estimated microseconds spent on the plain path in this process


TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
TENSOR = "embedding.weight"
MAX_HEADER = 1 << 20  # a safetensors header this size is not WordLlama's (it is 88 bytes)


def _folder() -> Path | None:
    """The installed ``wordllama`` package's folder that holds the weights, found without
    importing it; None when it is not installed (or its weights are missing)."""
    try:
        spec = importlib.util.find_spec("wordllama")
    except (ImportError, ValueError):  # ValueError: a module put in sys.modules without a spec
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return next((Path(folder) for folder in spec.submodule_search_locations
                 if (Path(folder) / WEIGHTS).is_file()), None)


def installed() -> bool:
    """Whether wordllama and its bundled weights are on disk (imports nothing: health asks)."""
    return _folder() is not None


class _Model:
    """WordLlama's ``l2_supercat`` 256-d model, embedding exactly as ``WordLlamaInference.embed``
    (dense, average-pooled over the attention mask, then normalised) from the wheel's own files,
    without importing the package: its import (pydantic, toml, requests, its algorithms) and its
    load (the whole matrix read and widened to float32: 32 MB) cost more than the embedding.
    The matrix is the weights file's float16 block, memory-mapped (only the rows a text uses are
    read) and widened row by row as gathered: float16 to float32 is exact, so every vector equals
    the package's bit for bit (tests/test_semantic_embeddings_equal_the_package.py)."""

    def __init__(self, matrix: np.ndarray, tokenizer: Any) -> None:
        self.matrix = matrix
        self.tokenizer = tokenizer
        tokenizer.enable_padding()  # as WordLlamaInference sets its tokenizer up
        tokenizer.no_truncation()

    def embed(self, texts: list[str], norm: bool = True, batch_size: int = BATCH) -> np.ndarray:
        import numpy as np

        if texts and not isinstance(texts[0], str):
            raise TypeError("All elements in 'texts' must be strings")
        pooled = np.empty((len(texts), self.matrix.shape[1]), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            encoded = self.tokenizer.encode_batch(texts[i:i + batch_size], is_pretokenized=False,
                                                  add_special_tokens=False)
            ids = np.array([e.ids for e in encoded], dtype=np.int32)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.float32)
            np.clip(ids, 0, self.matrix.shape[0] - 1, out=ids)
            rows = self.matrix[ids].astype(np.float32)
            counts = np.maximum(mask.sum(axis=1, keepdims=True), 1.0).astype(np.float32)
            batch = np.sum(rows * mask[..., np.newaxis], axis=1, dtype=np.float32) / counts
            if norm:
                batch /= np.linalg.norm(batch, axis=1, keepdims=True)
            pooled[i:i + batch.shape[0]] = batch
        return pooled


def _layout(path: Path) -> tuple[int, int]:
    """Where the embedding matrix of a safetensors file starts and how many rows (of ``DIM``
    float16) it has; ValueError when the file is not the shape WordLlama's is."""
    import json

    size = path.stat().st_size
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if not 0 < length <= MAX_HEADER:
            raise ValueError("not a safetensors file")
        header = json.loads(handle.read(length))
    tensor = header[TENSOR]
    rows, dim = tensor["shape"]
    start, end = tensor["data_offsets"]
    if tensor["dtype"] != "F16" or dim != DIM or rows < 1 or end - start != rows * dim * 2 \
            or 8 + length + end > size:
        raise ValueError("not WordLlama's 256-d float16 weights")
    return 8 + length + start, rows


def _weights(path: Path) -> np.ndarray:
    """The embedding matrix of a safetensors file, memory-mapped (float16, rows of ``DIM``);
    ValueError when the file is not the shape WordLlama's is."""
    import numpy as np

    offset, rows = _layout(path)
    return np.memmap(path, dtype="<f2", mode="r", offset=offset, shape=(rows, DIM))


@functools.cache
def _load() -> tuple[Any, str] | None:
    """The model and the tag its vectors are stored under, loaded once per process; None when
    it cannot be loaded (not installed, weights missing or not WordLlama's, a broken install).
    Reads the wheel's own files: nothing here can download or open a socket."""
    folder = _folder()
    if folder is None:
        return None
    try:
        # numpy's OpenBLAS starts a thread per core when it is imported (tens of ms); recall's
        # one matrix-vector product a turn is bound by memory, not by cores
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        matrix = _weights(folder / WEIGHTS)
        from tokenizers import Tokenizer

        model = _Model(matrix, Tokenizer.from_file(str(folder / TOKENIZER)))
    except Exception:  # any failure to load is "unavailable": recall falls back to BM25
        return None
    return model, expected_tag(folder)


@functools.cache
def _load_plain() -> tuple[plain_vectors.Model, str] | None:
    """The model for the plain-Python path and its tag, loaded once per process (about a
    millisecond: the weights memory-mapped, the tokenizer's tables from pmm's cache dir, built
    there from the wheel's file the first time); None when it cannot be, and the numpy path
    (with ``tokenizers``) is used instead."""
    from pmm.services import bpe, plain_vectors

    folder = _folder()
    if folder is None:
        return None
    version = _version(folder)
    try:
        tables = bpe.load(folder / TOKENIZER, version or "unknown", paths.cache_dir())
        model = plain_vectors.Model(folder / WEIGHTS, *_layout(folder / WEIGHTS), tables)
    except Exception:  # unsupported, unreadable, damaged: the numpy path decides what works
        return None
    return model, _tag(version)


def _plain_nearest(mind: Ledger, model: plain_vectors.Model, tag: str, text: str,
                   kinds: tuple[str, ...], in_span: list[int], limit: int,
                   weights: Mapping[str, float] | None) -> list[tuple[Event, float]] | None:
    """``nearest`` in plain Python; None when the span lacks too many vectors for it to pay
    (``PLAIN_BUDGET_US``): the numpy path then does it all."""
    from pmm.services import plain_vectors

    asked = plain_vectors.query_tokens(model, text, weights)
    made = _plain_matrix(mind, model, tag, kinds, in_span, sum(map(len, asked)))
    if made is None:
        return None
    ids, matrix = made
    query = plain_vectors.query(model, text, weights, asked)
    if limit <= 0 or not ids or not any(query):
        return []
    best = plain_vectors.rank(ids, matrix, query, limit)
    by_id = {e.id: e for e in lookup.get(mind, [i for i, _ in best])}
    return [(by_id[i], score) for i, score in best if i in by_id]


def _plain_matrix(mind: Ledger, model: plain_vectors.Model, tag: str, kinds: tuple[str, ...],
                  in_span: list[int], asked: int = 0
                  ) -> tuple[list[int], list[plain_vectors.Vector]] | None:
    """``_matrix`` in plain Python: the span's ids (ascending) and their vectors (as stored:
    float16 values), the missing ones computed and, by a writer, stored; None when that and
    embedding the query's ``asked`` tokens would cost more than ``PLAIN_BUDGET_US`` (the
    estimate is added to ``_plain_spent`` otherwise)."""
    from pmm.services import plain_vectors
    ids = in_span[::-1]
    rows: dict[int, plain_vectors.Vector] = {}
    memo = _plain_memo[0] if _plain_memo else None
    if memo is not None and (memo.conn is mind.conn and memo.key == (tag, kinds)
                             and memo.data_version == vectors.data_version(mind)):
        rows = {i: memo.rows[i] for i in ids if i in memo.rows}
    missing = [i for i in ids if i not in rows]
    if missing and vectors.model(mind) == tag:
        wanted = set(missing)
        for found, blob in vectors.stored(mind, missing[0], ids[-1], VECTOR_BYTES):
            if found in wanted and (row := plain_vectors.sound(blob)) is not None:
                rows[found] = row
    todo = [i for i in ids if i not in rows]
    cost = len(ids) * PLAIN_VECTOR_US + asked * PLAIN_TOKEN_US
    if cost > PLAIN_BUDGET_US:
        return None
    texts = vectors.texts(mind, todo) if todo else {}
    tokens = []
    for i in todo:  # tokenized one by one: a span that will not pay is given up early
        tokens.append(model.tokens(texts.get(i, "")))
        cost += len(tokens[-1]) * PLAIN_TOKEN_US
        if cost > PLAIN_BUDGET_US:
            return None
    _plain_spent[0] += cost
    if todo:
        blobs = [plain_vectors.half(model.pool(t)) for t in tokens]
        for i, blob in zip(todo, blobs, strict=True):
            rows[i] = plain_vectors.HALF.unpack(blob)  # as stored: the same ranking cached or not
        if mind.writable and not vectors.store(mind, tag, list(zip(todo, blobs, strict=True)),
                                               keep_from=ids[0]):
            _plain_memo.clear()  # not stored (the lock was busy): the next turn tries again
            return ids, [rows[i] for i in ids]
    _plain_memo[:] = [_PlainMemo(mind.conn, vectors.data_version(mind), (tag, kinds), rows)]
    return ids, [rows[i] for i in ids]


@dataclass
class _PlainMemo:
    """``_Memo`` for the plain path: the last span's vectors by id."""

    conn: Any
    data_version: int
    key: tuple[str, tuple[str, ...]]
    rows: dict[int, plain_vectors.Vector]


_plain_memo: list[_PlainMemo] = []


def expected_tag(folder: Path | None = None) -> str:
    """The tag of the vectors this install makes (a new wordllama may embed differently)."""
    return _tag(_version(folder or _folder()))


def _tag(version: str | None) -> str:
    return f"wordllama {version or 'unknown'} l2_supercat {DIM} float16"


def _version(folder: Path | None) -> str | None:
    """wordllama's installed version: from the one ``.dist-info`` beside its package (what
    importlib.metadata would find, without importing it: ~10 ms), else importlib.metadata's."""
    if folder is not None:
        infos = list(folder.parent.glob("wordllama-*.dist-info"))
        if len(infos) == 1:
            try:
                with open(infos[0] / "METADATA", encoding="utf-8") as handle:
                    for line in handle:
                        if line.startswith("Version:"):
                            return line.partition(":")[2].strip()
                        if not line.strip():
                            break
            except OSError:
                pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wordllama")
    except PackageNotFoundError:
        return None


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
    if not settings.SEMANTIC.get() or not installed():
        return None
    kinds = tuple(kinds)
    in_span = vectors.span(mind, kinds, span)
    if len(in_span) <= PLAIN_SPAN and _plain_spent[0] < PLAIN_PROCESS_US \
            and (plain := _load_plain()) is not None:
        try:
            found = _plain_nearest(mind, plain[0], plain[1], text, kinds, in_span, limit, weights)
        except (ValueError, TypeError, MemoryError):  # the model refusing a text: rank by BM25
            return None
        if found is not None:
            return found
        _plain_spent[0] = max(_plain_spent[0], PLAIN_PROCESS_US)  # numpy's start is paid now
    loaded = _load()
    if loaded is None:
        return None
    model, tag = loaded
    try:
        ids, matrix = _matrix(mind, model, tag, kinds, span, in_span)
        query = _query(model, text, weights)
    except (ValueError, TypeError, MemoryError):  # the model refusing a text: rank by BM25
        return None
    if limit <= 0 or not ids.size or not query.any():
        return []
    import numpy as np

    scores = matrix @ query.astype(np.float32)  # float32 through BLAS: a first pass
    best = _refine(ids, matrix, query, scores, limit)
    by_id = {e.id: e for e in lookup.get(mind, [i for i, _ in best])}
    return [(by_id[i], score) for i, score in best if i in by_id]


def _refine(ids: np.ndarray, matrix: np.ndarray, query: np.ndarray, rough: np.ndarray,
            limit: int) -> list[tuple[int, float]]:
    """The ``limit`` best (id, cosine), best first, ties newest first, only those above 0: the
    cosines of the candidates within ``plain_vectors.MARGIN`` of the ``limit``-th ``rough``
    score computed again in float64, as the plain path computes them (``plain_vectors.exact``:
    products, then numpy's pairwise sum), so that both paths rank alike."""
    import numpy as np

    from pmm.services import plain_vectors

    count = min(limit, rough.size)
    cutoff = float(np.partition(rough, rough.size - count)[rough.size - count]) - plain_vectors.MARGIN
    near = np.flatnonzero(rough >= cutoff)
    exact = (matrix[near].astype(np.float64) * query).sum(axis=1)
    order = np.lexsort((-ids[near], -exact))[:limit]  # by cosine, then newest first
    return [(int(ids[near[n]]), float(exact[n])) for n in order if exact[n] > 0.0]


def _query(model: Any, text: str, weights: Mapping[str, float] | None) -> np.ndarray:
    """The unit vector (float64) to compare events with: ``text``'s, or the weighted sum of
    the unit vectors of ``weights``' words (zeros when the model knows none of them), summed
    word after word and normalised as ``plain_vectors.query`` does, to the last bit."""
    import numpy as np

    if not weights:
        whole: np.ndarray = _embed(model, [text])[0].astype(np.float64)
        return whole
    words = list(weights)
    summed = np.zeros(DIM, dtype=np.float64)
    for word, vector in zip(words, _embed(model, words).astype(np.float64), strict=True):
        summed = summed + weights[word] * vector
    norm = math.sqrt(float((summed * summed).sum()))
    return summed / norm if norm > 0.0 and math.isfinite(norm) else np.zeros(DIM, dtype=np.float64)


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
            span: int, in_span: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The span's ids (ascending) and their vectors, one row each, the missing ones computed.
    Ascending, so that the common case (every vector stored) is the stored block itself: the
    span is 10 MB of vectors, and each copy of it costs milliseconds. ``in_span``: the span's
    ids (newest first) when the caller has read them."""
    import numpy as np

    if in_span is None:
        in_span = vectors.span(mind, kinds, span)
    ids = np.array(in_span[::-1], dtype=np.int64)
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
            sound = _sound(block)
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


def _sound(block: np.ndarray) -> np.ndarray:
    """Which rows of stored vectors (float16 values, widened) recall can use, as
    ``plain_vectors.sound`` decides it, to the last bit: finite and of unit length within
    ``NORM_SLACK`` (or all zeros), the squared norm summed in float64 (each square of a
    float16 exact), pairwise (numpy's sum along a row, which ``plain_vectors.pairwise``
    emulates); a NaN or an infinity fails it."""
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):
        squared = np.square(block, dtype=np.float64).sum(axis=1)
        sound: np.ndarray = np.isfinite(block).all(axis=1) & (
            (squared == 0.0) | (np.abs(np.sqrt(squared) - 1.0) <= NORM_SLACK))
    return sound


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

