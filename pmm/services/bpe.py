"""WordLlama's Llama-2 tokenizer in plain Python: the ids ``tokenizers`` gives for its file
(``add_special_tokens=False``), without importing ``tokenizers`` or parsing the 1.8 MB JSON.

``tokenizers.Tokenizer.from_file`` takes 70-90 ms (and holds the GIL); ``json.load`` alone of
that file takes ~36 ms. So the file is read once into a small derived form kept in pmm's cache
dir (``Tables``: the single-character tokens, the byte tokens, the merges as sorted arrays of
pair keys and ranks, about 0.5 MB), loaded in about a millisecond. Its name carries the source
file's path, size, mtime and wordllama's version, its header the source's SHA-256 too, its
tail a CRC-32 of itself: a missing, stale or damaged cache is built again, written whole or
not at all (a temporary file, then a rename). A file this module does not reproduce exactly
(another model type, normalizer, pre-tokenizer, added tokens, a missing byte token) is
refused (``Unsupported``): the caller then uses ``tokenizers`` itself.

The algorithm is the one of ``tokenizers``' BPE model (``merge_word`` and ``Word.merge_all``):
special tokens are split out of the raw text first; each other piece is normalised (``▁``
prepended, spaces replaced by ``▁``) and is one word (no pre-tokenizer); a character not in
the vocabulary becomes its UTF-8 bytes' tokens; then the pair of lowest merge rank is merged,
leftmost first, until none is left. tests/test_semantic_plain_path_equals_numpy.py holds it
to ``tokenizers`` on every dev-conversation turn and on generated text.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import sys
import zlib
from array import array
from bisect import bisect_left
from pathlib import Path
from typing import TypeGuard

FORMAT = 3
MAGIC = b"PMM-BPE\n"
DIGEST = 4  # the CRC-32 that ends a cache file: damage, not forgery, is what it is for (a SHA-256
# of the 0.5 MB cost 1.6 ms a turn; whoever can write pmm's cache dir can write anything there,
# and a forged table can only skew the ids of a text, which the gather clips to the matrix)
WORD_SPACE = "\u2581"  # "▁": SentencePiece's space
PAIR_BITS = 16  # a merge's key is (left << 16) | right, its value (rank << 16) | merged id
LIMIT = 1 << PAIR_BITS
# When no token holds a "▁" after another character (true of Llama-2's vocabulary), no merge
# joins a character to the "▁" after it: a word is then the concatenation of its segments
# ("▁" runs and what follows each up to the next one), each merged on its own and memoised,
# as ``tokenizers`` memoises words (``Tables.segments`` says whether this holds).
SEGMENT = re.compile(f"{WORD_SPACE}+[^{WORD_SPACE}]*|[^{WORD_SPACE}]+")
JOINS_SPACE = re.compile(f"[^{WORD_SPACE}]{WORD_SPACE}")
WORDS_KEPT = 50_000
WORD_MEMO_CHARS = 256  # only shorter segments are memoised, as ``tokenizers`` (MAX_LENGTH): a
# long one (unspaced CJK, base64, digits) is rarely seen twice and costs ~10 bytes a character
PAIRS_KEPT = 100_000  # lookups memoised (~100 bytes each); the memo starts again past it


class Unsupported(ValueError):
    """The tokenizer file is not one this module reproduces exactly (use ``tokenizers``)."""


class Tables:
    """What encoding needs of a tokenizer file: the single-character tokens (the only ones a
    word starts as), the 256 byte tokens, the special tokens, and the merges as two sorted
    arrays (pair key -> rank and merged id), looked up by bisection: building a dict of the
    61,249 merges would cost more than the whole turn."""

    def __init__(self, chars: dict[str, int], byte_ids: list[int], special: dict[str, int],
                 keys: array[int], values: array[int], vocab_size: int, segments: bool) -> None:
        self.chars = chars
        self.byte_ids = byte_ids
        self.special = special
        self.keys = keys
        self.values = values
        self.vocab_size = vocab_size
        self.segments = segments
        self._pairs: dict[int, int] = {}  # memo of lookups (-1: no such merge)
        self._words: dict[str, list[int]] = {}  # memo of segments' ids
        self._split = re.compile("|".join(re.escape(t) for t in sorted(special, key=len, reverse=True))) \
            if special else None

    def _merge(self, left: int, right: int) -> int:
        """(rank << 16) | merged id of the pair, or -1 when it does not merge."""
        key = (left << PAIR_BITS) | right
        found = self._pairs.get(key)
        if found is None:
            at = bisect_left(self.keys, key)
            found = self.values[at] if at < len(self.keys) and self.keys[at] == key else -1
            if len(self._pairs) >= PAIRS_KEPT:
                self._pairs.clear()
            self._pairs[key] = found
        return found

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` (no special tokens added). TypeError for text that is not
        valid Unicode (a lone surrogate), as ``tokenizers`` refuses it."""
        ids: list[int] = []
        if self._split is None:
            self._word(text, ids)
            return ids
        start = 0
        for match in self._split.finditer(text):
            self._word(text[start:match.start()], ids)
            ids.append(self.special[match.group()])
            start = match.end()
        self._word(text[start:], ids)
        return ids

    def _word(self, piece: str, out: list[int]) -> None:
        if not piece:
            return  # Prepend leaves an empty piece empty: no token
        word = WORD_SPACE + piece.replace(" ", WORD_SPACE)
        if not self.segments:
            out.extend(self._bpe(word))
            return
        words = self._words
        for segment in SEGMENT.findall(word):
            if len(segment) >= WORD_MEMO_CHARS:
                out.extend(self._bpe(segment))
                continue
            found = words.get(segment)
            if found is None:
                if len(words) >= WORDS_KEPT:
                    words.clear()
                found = words[segment] = self._bpe(segment)
            out.extend(found)

    def _bpe(self, word: str) -> list[int]:
        symbols: list[int] = []
        chars = self.chars
        for char in word:
            found = chars.get(char)
            if found is not None:
                symbols.append(found)
                continue
            try:
                encoded = char.encode("utf-8")
            except UnicodeEncodeError:
                raise TypeError("text is not valid Unicode") from None
            symbols.extend(self.byte_ids[b] for b in encoded)
        return self._merge_all(symbols)

    def _merge_all(self, symbols: list[int]) -> list[int]:
        """``Word.merge_all`` of tokenizers: a heap of (rank, position, merged id); an entry
        whose pair has changed since it was pushed is skipped."""
        count = len(symbols)
        if count < 2:
            return symbols
        merge = self._merge
        nxt = list(range(1, count + 1))
        nxt[-1] = -1
        prev = list(range(-1, count - 1))
        alive = [True] * count
        queue = []
        for pos in range(count - 1):
            found = merge(symbols[pos], symbols[pos + 1])
            if found >= 0:
                queue.append((found >> PAIR_BITS, pos, found & (LIMIT - 1)))
        heapq.heapify(queue)
        while queue:
            _, pos, new = heapq.heappop(queue)
            if not alive[pos]:
                continue
            right = nxt[pos]
            if right < 0:
                continue
            found = merge(symbols[pos], symbols[right])
            if found < 0 or found & (LIMIT - 1) != new:
                continue  # stale: this pair is no longer there
            symbols[pos] = new
            alive[right] = False
            after = nxt[right]
            nxt[pos] = after
            if after >= 0:
                prev[after] = pos
            before = prev[pos]
            if before >= 0:
                found = merge(symbols[before], new)
                if found >= 0:
                    heapq.heappush(queue, (found >> PAIR_BITS, before, found & (LIMIT - 1)))
            if after >= 0:
                found = merge(new, symbols[after])
                if found >= 0:
                    heapq.heappush(queue, (found >> PAIR_BITS, pos, found & (LIMIT - 1)))
        return [symbols[n] for n in range(count) if alive[n]]


# -- from the tokenizer file --------------------------------------------------------------------

NORMALIZER = {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": WORD_SPACE},
    {"type": "Replace", "pattern": {"String": " "}, "content": WORD_SPACE}]}


def build(config: dict[str, object]) -> Tables:
    """The tables of a parsed tokenizer file; ``Unsupported`` unless it is the kind of file
    this module encodes exactly as ``tokenizers`` does."""
    model = config.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise Unsupported("not a BPE model")
    expected = {"dropout": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                "byte_fallback": True, "fuse_unk": True, "ignore_merges": False}
    if any(model.get(k, None if k != "ignore_merges" else False) != v for k, v in expected.items()):
        raise Unsupported("BPE options")
    if config.get("normalizer") != NORMALIZER or config.get("pre_tokenizer") is not None:
        raise Unsupported("normalizer or pre-tokenizer")
    vocab = model.get("vocab")
    merges = model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(merges, list) or not vocab \
            or len(vocab) > LIMIT or len(merges) >= LIMIT:
        raise Unsupported("vocabulary or merges")
    if any(not isinstance(i, int) or not 0 <= i < LIMIT for i in vocab.values()):
        raise Unsupported("token ids")
    special: dict[str, int] = {}
    added = config.get("added_tokens") or []
    if not isinstance(added, list):
        raise Unsupported("added tokens")
    for token in added:
        if not isinstance(token, dict) or not token.get("special") or token.get("normalized") \
                or token.get("single_word") or token.get("lstrip") or token.get("rstrip") \
                or not isinstance(token.get("content"), str) or not token["content"] \
                or not isinstance(token.get("id"), int):
            raise Unsupported("added tokens")
        special[token["content"]] = token["id"]
    if any(a != b and a.startswith(b) for a in special for b in special):
        raise Unsupported("overlapping special tokens")  # leftmost-longest would matter
    try:
        byte_ids = [vocab[f"<0x{b:02X}>"] for b in range(256)]
    except KeyError:
        raise Unsupported("a byte token is missing (unk would be reachable)") from None
    pairs: dict[int, int] = {}
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        merged = vocab.get(left + right)
        if left not in vocab or right not in vocab or merged is None:
            raise Unsupported("a merge of unknown tokens")
        pairs[(vocab[left] << PAIR_BITS) | vocab[right]] = (rank << PAIR_BITS) | merged  # last wins
    keys = array("I", sorted(pairs))
    values = array("I", (pairs[k] for k in keys))
    chars = {token: i for token, i in vocab.items() if len(token) == 1}
    segments = not any(JOINS_SPACE.search(token) for token in vocab)
    return Tables(chars, byte_ids, special, keys, values, len(vocab), segments)


def _key(source: Path, version: str) -> dict[str, object]:
    info = source.stat()
    return {"format": FORMAT, "source": str(source), "size": info.st_size,
            "mtime_ns": info.st_mtime_ns, "wordllama": version}


def cache_path(cache_dir: Path, source: Path, version: str) -> Path:
    """Where the tables of ``source`` are kept: one file per source file and version."""
    key = json.dumps(_key(source, version), sort_keys=True).encode()
    return cache_dir / f"tokenizer-{hashlib.sha256(key).hexdigest()[:20]}.bpe"


def _dump(tables: Tables, header: dict[str, object]) -> bytes:
    head = json.dumps({**header, "special": tables.special, "vocab_size": tables.vocab_size,
                       "segments": tables.segments,
                       "chars": len(tables.chars), "merges": len(tables.keys)},
                      sort_keys=True).encode()
    chars = "".join(tables.chars).encode("utf-32-le")
    arrays = [array("I", tables.chars.values()), array("I", tables.byte_ids), tables.keys, tables.values]
    if sys.byteorder != "little":
        arrays = [array("I", a) for a in arrays]
        for a in arrays:
            a.byteswap()
    body = (MAGIC + len(head).to_bytes(4, "little") + head + chars
            + b"".join(a.tobytes() for a in arrays))
    return body + zlib.crc32(body).to_bytes(DIGEST, "little")


def _parse(data: bytes, header: dict[str, object]) -> Tables:
    """The tables a cache file holds; ValueError when it is damaged or not for ``header``."""
    if array("I").itemsize != 4:
        raise Unsupported("a C unsigned int is not 4 bytes here")
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4 + DIGEST:
        raise ValueError("not a tokenizer cache")
    view = memoryview(data)
    body = view[:-DIGEST]
    if zlib.crc32(body).to_bytes(DIGEST, "little") != data[-DIGEST:]:
        raise ValueError("damaged tokenizer cache")
    at = len(MAGIC) + 4
    length = int.from_bytes(data[len(MAGIC):at], "little")
    head = json.loads(data[at:at + length])
    if not isinstance(head, dict) or any(head.get(k) != v for k, v in header.items()):
        raise ValueError("a tokenizer cache of another file")
    at += length
    vocab_size, n_chars, n_merges, special = (head.get(k) for k in ("vocab_size", "chars", "merges", "special"))
    if not (_count(vocab_size) and 0 < vocab_size <= LIMIT and _count(n_chars) and _count(n_merges)
            and isinstance(head.get("segments"), bool) and isinstance(special, dict)
            and all(isinstance(t, str) and t and _count(i) and i < vocab_size for t, i in special.items())):
        raise ValueError("tokenizer cache header")
    chars = str(view[at:at + 4 * n_chars], "utf-32-le")
    at += 4 * n_chars
    sizes = (n_chars, 256, n_merges, n_merges)
    arrays = []
    for size in sizes:
        made = array("I")
        made.frombytes(view[at:at + 4 * size])
        if len(made) != size:
            raise ValueError("short tokenizer cache")
        if sys.byteorder != "little":
            made.byteswap()
        arrays.append(made)
        at += 4 * size
    if at != len(body) or len(chars) != n_chars:
        raise ValueError("tokenizer cache of the wrong size")
    ids, byte_ids, keys, values = arrays
    if max(ids, default=0) >= vocab_size or max(byte_ids) >= vocab_size:
        raise ValueError("tokenizer cache ids")  # (a merge's id is clipped where it is used)
    return Tables(dict(zip(chars, ids, strict=True)), byte_ids.tolist(), special, keys, values,
                  vocab_size, head["segments"])


def _count(value: object) -> TypeGuard[int]:
    """Whether a header field is a count: an int (not a bool) >= 0."""
    return type(value) is int and value >= 0


def load(source: Path, version: str, cache_dir: Path | None) -> Tables:
    """The tables of tokenizer file ``source``: from the cache when it is there, sound and
    current, else built from ``source`` (and cached, when ``cache_dir`` is writable).
    ``Unsupported`` (or OSError, ValueError) when it cannot be built: use ``tokenizers``."""
    header = _key(source, version)
    path = cache_path(cache_dir, source, version) if cache_dir is not None else None
    if path is not None:
        try:
            return _parse(path.read_bytes(), header)
        except Exception:  # missing, damaged, stale, forged (any failure): built again below,
            pass  # and the rebuilt file replaces it
    raw = source.read_bytes()
    tables = build(json.loads(raw))
    if path is not None:
        try:
            _write(path, _dump(tables, {**header, "sha256": hashlib.sha256(raw).hexdigest()}))
        except OSError:
            pass  # a read-only cache dir: the tables serve this process all the same
    return tables


def _write(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: written beside it, synced, then renamed."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tokenizer-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
