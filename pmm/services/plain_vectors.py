"""Semantic recall's arithmetic in plain Python, for a small span: the embedding (WordLlama's
float16 rows read from the memory-mapped weights by ``struct``, mean-pooled, normalised) and
the cosine ranking, without importing numpy (45-90 ms, more than a small mind's whole turn).

An event's vector is numpy's float32 one bit for bit (its arithmetic emulated: ``Model.embed``),
so what either path stores is the same bytes. The query and the cosines are computed in
doubles, not in numpy's float32 through BLAS (whose order of additions is its own): scores
differ by about 1e-7, and the ranking is numpy's (tests/test_semantic_plain_path_equals_numpy.py
holds both on the dev conversations). ``pmm.services.semantic`` chooses the path by span size.
"""

from __future__ import annotations

import functools
import heapq
import math
import mmap
import struct
from array import array
from collections.abc import Iterable, Mapping, Sequence
from operator import add, mul
from pathlib import Path

from pmm.services import bpe

DIM = 256
MAX_CHARS = 4_000  # of a text embedded, as pmm.services.semantic clips it (a test holds them equal)
NORM_SLACK = 0.02  # as pmm.services.semantic checks a stored vector
HALF = struct.Struct(f"<{DIM}e")  # one stored vector: DIM float16, little-endian
ZERO = (0.0,) * DIM
# A first pass's cosine (float32 through BLAS, or plain sums of doubles) is within ~1e-5 of
# the exact one for unit vectors of 256 values (256 roundings of 2**-24 at most, 1e-7 as a
# rule): what is within MARGIN of the cut is computed again exactly
MARGIN = 1e-4

Vector = Sequence[float]


class Model:
    """WordLlama's ``l2_supercat`` rows (float16, memory-mapped: only the rows a text uses are
    read) and its tokenizer (``bpe.Tables``): ``embed`` is ``WordLlamaInference.embed``'s
    average of a text's token rows, normalised."""

    def __init__(self, weights: Path, offset: int, rows: int, tables: bpe.Tables) -> None:
        with open(weights, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if offset + rows * HALF.size > len(self._map):
            raise ValueError("weights cut short")
        self._offset = offset
        self._rows = rows
        self.tables = tables

    def _row(self, token: int) -> tuple[float, ...]:
        token = min(max(token, 0), self._rows - 1)  # as the numpy path clips ids
        return HALF.unpack_from(self._map, self._offset + token * HALF.size)

    def tokens(self, text: str) -> list[int]:
        """The ids of ``text`` as embedded: its first ``MAX_CHARS`` characters, as the numpy
        path clips it (so both rank alike, and a text's cost is bounded). TypeError for text
        that is not valid Unicode, as ``tokenizers`` refuses it."""
        return self.tables.encode(text[:MAX_CHARS])

    def pool(self, ids: Sequence[int]) -> Vector:
        """The unit vector of a text's ids (zeros for a text with no token), the numpy path's
        bit for bit: its float32 arithmetic done in doubles, each result rounded to float32
        (exact: a double holds any sum, product, quotient or root of two float32 values
        correctly rounded to float32), in its order (tokens summed one after another, the
        squares of the norm pairwise as numpy sums them)."""
        if not ids:
            return ZERO
        summed = _f32(self._row(ids[0]))
        for token in ids[1:]:
            summed = _f32(map(add, summed, self._row(token)))
        count = len(ids)
        return _unit32(_f32([value / count for value in summed]))

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit vector per whole text (not clipped: the package's ``embed``, and
        ``semantic._Model.embed``'s, bit for bit); recall embeds ``pool(tokens(text))``."""
        return [self.pool(self.tables.encode(text)) for text in texts]


def _f32(values: Iterable[float]) -> array[float]:
    """``values`` rounded to float32."""
    return array("f", values)


def _round32(value: float) -> float:
    return _f32((value,))[0]


def _pairwise32(values: Sequence[float], start: int, count: int) -> float:
    """numpy's float32 sum of ``values[start:start + count]`` (``_pairwise``, each sum
    rounded to float32)."""
    return _pairwise(values, start, count, True)


def _pairwise(values: Sequence[float], start: int, count: int, single: bool) -> float:
    """numpy's sum of ``values[start:start + count]`` (``pairwise_sum`` of its loops_utils.h:
    under 8 values one after another; up to 128, eight running sums (of every eighth value)
    added as a tree, then the rest; more, the two halves each so, split at a multiple of 8),
    in float32 when ``single`` (each sum rounded), else in doubles. Never ``sum()``: since
    Python 3.12 it compensates its rounding, which numpy does not."""
    one = _round32 if single else float
    if count < 8:
        total = 0.0
        for n in range(start, start + count):
            total = one(total + values[n])
        return total
    if count <= 128:
        end = start + count - count % 8
        if single:
            sums: Sequence[float] = _f32(values[start:start + 8])
            for at in range(start + 8, end, 8):
                sums = _f32(map(add, sums, values[at:at + 8]))
        else:
            sums = [functools.reduce(add, values[start + j:end:8]) for j in range(8)]
        total = one(one(one(sums[0] + sums[1]) + one(sums[2] + sums[3]))
                    + one(one(sums[4] + sums[5]) + one(sums[6] + sums[7])))
        for n in range(end, start + count):
            total = one(total + values[n])
        return total
    half = count // 2
    half -= half % 8
    return one(_pairwise(values, start, half, single) + _pairwise(values, start + half, count - half, single))


def _unit32(vector: Sequence[float]) -> Vector:
    """``vector / np.linalg.norm(vector)`` in float32; zeros where that is not finite (a
    zero vector: 0 / 0), as the numpy path's ``nan_to_num`` makes them."""
    norm = _round32(math.sqrt(_pairwise32(_f32(map(mul, vector, vector)), 0, len(vector))))
    if norm == 0.0 or not math.isfinite(norm):
        return ZERO
    return _f32([value / norm for value in vector])


def half(vector: Vector) -> bytes:
    """As stored: float16, little-endian (each value correctly rounded)."""
    return HALF.pack(*vector)


def sound(blob: bytes) -> tuple[float, ...] | None:
    """A stored vector's values when it is one recall can use: finite and of unit length
    within ``NORM_SLACK`` (or all zeros: a text with no known word); None otherwise. The numpy
    path's check (``semantic._sound``) to the last bit: the squares (exact) summed as numpy
    sums them in float64; a NaN or an infinity makes the squared norm fail it."""
    row = HALF.unpack(blob)
    squared = pairwise(list(map(mul, row, row)))
    if squared == 0.0 or abs(math.sqrt(squared) - 1.0) <= NORM_SLACK:
        return row
    return None


def query_tokens(model: Model, text: str, weights: Mapping[str, float] | None) -> list[list[int]]:
    """The ids ``query`` embeds: ``text``'s, or those of each of ``weights``' words (each
    clipped to ``MAX_CHARS``, as the numpy path clips them): known before the cost is."""
    if not weights:
        return [model.tokens(text)]
    return [model.tokens(word) for word in weights]


def query(model: Model, text: str, weights: Mapping[str, float] | None,
          tokens: Sequence[Sequence[int]] | None = None) -> Vector:
    """The unit vector to compare events with: ``text``'s, or the weighted sum of the unit
    vectors of ``weights``' words (zeros when the model knows none of them), in doubles, in
    the order the numpy path's ``_query`` sums and normalises them (the same bits).
    ``tokens``: ``query_tokens``' answer, when the caller has it."""
    if tokens is None:
        tokens = query_tokens(model, text, weights)
    if not weights:
        return model.pool(tokens[0])
    summed: Vector = [0.0] * DIM
    for word, ids in zip(weights, tokens, strict=True):
        weight = weights[word]
        summed = [total + weight * value for total, value in zip(summed, model.pool(ids), strict=True)]
    norm = math.sqrt(pairwise(list(map(mul, summed, summed))))
    if norm == 0.0 or not math.isfinite(norm):
        return ZERO
    return [value / norm for value in summed]


def pairwise(values: Sequence[float]) -> float:
    """numpy's float64 sum of ``values`` (the algorithm of ``_pairwise32``, without rounding)."""
    return _pairwise(values, 0, len(values), False)


def exact(wanted: Vector, row: Vector) -> float:
    """The cosine both paths rank by: products in doubles, summed as numpy sums them."""
    return pairwise(list(map(mul, row, wanted)))


def rank(ids: Sequence[int], matrix: Sequence[Vector], wanted: Vector, limit: int
         ) -> list[tuple[int, float]]:
    """The ``limit`` ids (ascending in ``ids``, one row of ``matrix`` each) most similar to
    ``wanted``, best first, ties newest first, only those above 0, with their cosines. A
    first pass (plain sums) keeps the candidates within ``MARGIN`` of the ``limit``-th, whose
    cosines ``exact`` computes as the numpy path does: both rank alike, to the last bit."""
    if limit <= 0 or not ids:
        return []
    rough = [sum(map(mul, wanted, row)) for row in matrix]
    cutoff = heapq.nlargest(min(limit, len(rough)), rough)[-1] - MARGIN
    near = {n: exact(wanted, matrix[n]) for n, score in enumerate(rough) if score >= cutoff}
    best = sorted(near, key=lambda n: (-near[n], -ids[n]))[:limit]
    return [(ids[n], near[n]) for n in best if near[n] > 0.0]
