"""On a small span semantic recall runs in plain Python (pmm.services.bpe, plain_vectors):
no numpy, no ``tokenizers``. It must be the numpy path's recall exactly: the tokenizer's ids
are ``tokenizers``' own, the vectors it stores the numpy path's (within one float16 step; in
fact the same bytes), its ranking the numpy path's (ids, order, ties newest first, only
scores above 0). Its tokenizer tables live in pmm's cache dir: a missing, damaged or stale
cache is built again, whole or not at all, and a tokenizer file it cannot reproduce leaves
recall to the numpy path.

The dev conversations (LoCoMo, not shipped: ../shared/data/locomo-dev or $PMM_LOCOMO_DEV)
are read where they are; without them those tests are skipped and the generated and bundled
texts still hold the tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmm.domain import events as ev
from pmm.domain.events import Draft
from pmm.ledger import lookup, vectors
from pmm.ledger.store import Ledger
from pmm.services import bpe, opening, plain_vectors, ranking, semantic

ROOT = Path(__file__).resolve().parent.parent
DEV = [Path(p) for p in (os.environ.get("PMM_LOCOMO_DEV", ""),) if p] + [
    ROOT.parent / "shared" / "data" / "locomo-dev", ROOT.parent.parent / "shared" / "data" / "locomo-dev"]
SPECIAL = ["", " ", "   ", "\t", "\n", "\r\n", " \t \n ", "<s>", "</s>", "<unk>", "a<s>b", "<s><s>",
           " <s> hello </s> ", "<unk>x<unk>", "<<s>>", "</s", "▁", "▁▁the", "a▁b", "hello", "Hello, world!",
           "I adopted a puppy last week", "x" * 4000, "word " * 800, "🐶" * 300, "👍🏽❤️🇫🇷",
           "\x00\x01\x02", "\u200b\u00a0\u0301\ufeff", "中文日本語한국어", "e\u0301", "  two  spaces  "]


def _folder() -> Path:
    folder = semantic._folder()
    assert folder is not None, "the test extra installs wordllama"
    return folder


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(_folder() / semantic.TOKENIZER))


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> bpe.Tables:
    folder = _folder()
    return bpe.load(folder / semantic.TOKENIZER, "test", tmp_path_factory.mktemp("cache"))


def _dev_files() -> list[Path]:
    for folder in DEV:
        if folder.is_dir() and (found := sorted(folder.glob("conv-*.json"))):
            return found
    pytest.skip("the LoCoMo dev conversations are not here (set PMM_LOCOMO_DEV)")


def _dev_texts() -> Iterator[str]:
    for path in _dev_files():
        data = json.loads(path.read_text(encoding="utf-8"))
        for key, turns in data.items():
            if key.startswith("session_") and isinstance(turns, list):
                for turn in turns:
                    yield turn["text"]
                    if turn.get("blip_caption"):
                        yield f"{turn['text']} [shares a photo: {turn['blip_caption']}]"
        for question in data["qa"]:
            yield question["question"]


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def test_the_ids_of_every_dev_turn_are_tokenizers_own(tokenizer: Any, tables: bpe.Tables) -> None:
    texts = list(_dev_texts())
    assert len(texts) > 4000
    assert [tables.encode(t) for t in texts] == _ids(tokenizer, texts)


def test_the_ids_of_bundled_and_awkward_texts_are_tokenizers_own(tokenizer: Any,
                                                                 tables: bpe.Tables) -> None:
    bundled = (ROOT / "tests" / "data" / "chatgpt_conversations.json").read_text(encoding="utf-8")
    texts = SPECIAL + bundled.splitlines()
    assert [tables.encode(t) for t in texts] == _ids(tokenizer, texts)
    assert tables.segments  # Llama-2's vocabulary: words are merged by segments (bpe.SEGMENT)


UNICODE = st.characters(blacklist_categories=("Cs",))  # a lone surrogate is not text
PIECES = st.sampled_from([" ", "  ", "    ", "\t", "\n", "\n\n", "<s>", "</s>", "<unk>", "▁", "🐶", "👍🏽",
                          "é", "e\u0301", "中", "the", "The", " the", "ing", "'s", "...", "0", "2023"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(UNICODE, max_size=60), st.lists(st.one_of(PIECES, st.text(UNICODE, max_size=8)),
                                                          max_size=40).map("".join)))
def test_the_ids_of_generated_text_are_tokenizers_own(tokenizer: Any, tables: bpe.Tables, text: str) -> None:
    assert tables.encode(text) == tokenizer.encode(text, add_special_tokens=False).ids


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(PIECES, st.text(UNICODE, min_size=1, max_size=20)), min_size=200, max_size=400)
       .map(lambda parts: "".join(parts)[:4000]))
def test_the_ids_of_long_generated_text_are_tokenizers_own(tokenizer: Any, tables: bpe.Tables,
                                                           text: str) -> None:
    assert tables.encode(text) == tokenizer.encode(text, add_special_tokens=False).ids


def test_text_that_is_not_unicode_is_refused_as_tokenizers_refuses_it(tokenizer: Any,
                                                                      tables: bpe.Tables) -> None:
    with pytest.raises(TypeError):
        tokenizer.encode("a\ud800b", add_special_tokens=False)
    with pytest.raises(TypeError):
        tables.encode("a\ud800b")


# -- the cache of tables ----------------------------------------------------------------------------

def _source(tmp_path: Path) -> Path:
    copy = tmp_path / "tokenizer.json"
    shutil.copyfile(_folder() / semantic.TOKENIZER, copy)
    return copy


def test_the_tables_are_cached_and_a_damaged_or_stale_cache_is_built_again(tmp_path: Path,
                                                                           tables: bpe.Tables) -> None:
    source, cache = _source(tmp_path), tmp_path / "cache"
    text = "I adopted a puppy last week 🐶"
    want = tables.encode(text)
    assert bpe.load(source, "1", cache).encode(text) == want
    made = bpe.cache_path(cache, source, "1")
    assert [p.name for p in cache.iterdir()] == [made.name]  # no temporary file left
    assert bpe.load(source, "1", cache).encode(text) == want  # from the cache
    # damaged: a flipped byte in the merges, and a file cut short, are both noticed and replaced
    for damage in (lambda b: b[:-5000] + bytes([b[-5000] ^ 1]) + b[-4999:], lambda b: b[:1000]):
        made.write_bytes(damage(made.read_bytes()))
        assert bpe.load(source, "1", cache).encode(text) == want
        with pytest.raises(ValueError):
            bpe._parse(damage(made.read_bytes()), bpe._key(source, "1"))
    # stale: another wordllama version, or the file changed, is another cache file
    assert bpe.cache_path(cache, source, "2") != made
    os.utime(source, ns=(1, 1))
    assert bpe.cache_path(cache, source, "1") != made
    with pytest.raises(ValueError):
        bpe._parse(made.read_bytes(), bpe._key(source, "1"))  # the old file, for the new key
    assert bpe.load(source, "1", cache).encode(text) == want


def test_a_cache_dir_that_cannot_be_written_still_tokenizes(tmp_path: Path, tables: bpe.Tables) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    assert bpe.load(_source(tmp_path), "1", blocker / "cache").encode("a dog") == tables.encode("a dog")


def test_a_tokenizer_file_it_cannot_reproduce_is_refused(tmp_path: Path) -> None:
    config = json.loads((_folder() / semantic.TOKENIZER).read_text(encoding="utf-8"))
    changes = [("pre_tokenizer", {"type": "Whitespace"}), ("normalizer", None)]
    for key, value in changes:
        with pytest.raises(bpe.Unsupported):
            bpe.build({**config, key: value})
    for key, value in [("type", "WordPiece"), ("byte_fallback", False), ("dropout", 0.1),
                       ("continuing_subword_prefix", "##")]:
        with pytest.raises(bpe.Unsupported):
            bpe.build({**config, "model": {**config["model"], key: value}})
    vocab = {k: v for k, v in config["model"]["vocab"].items() if k != "<0x41>"}
    with pytest.raises(bpe.Unsupported):
        bpe.build({**config, "model": {**config["model"], "vocab": vocab}})


def test_without_its_tables_recall_uses_the_numpy_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tokenizer the plain path cannot reproduce: ``_load_plain`` is None and ``nearest``
    ranks as ever, through numpy and ``tokenizers``."""
    monkeypatch.setenv("PMM_SEMANTIC", "1")
    path = tmp_path / "mind.db"
    with opening.init(path, None) as mind:
        mind.append([Draft(ev.OBSERVATION_RECORDED.name, t, {"source": "user"})
                     for t in ("I adopted a puppy last week", "the stock market fell")])
    monkeypatch.setattr(semantic, "_load_plain", lambda: None)
    with Ledger.open(path) as mind:
        found = semantic.nearest(mind, "do I have a dog", (ev.OBSERVATION_RECORDED.name,), 5)
    assert found is not None and found[0][0].content == "I adopted a puppy last week"
    monkeypatch.undo()
    semantic._load_plain.cache_clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(bpe, "build", lambda config: (_ for _ in ()).throw(bpe.Unsupported("x")))
    assert semantic._load_plain() is None
    semantic._load_plain.cache_clear()


# -- the same vectors and the same ranking ------------------------------------------------------------

def _ulps(a: bytes, b: bytes) -> list[int]:
    def ordered(blob: bytes) -> list[int]:  # float16 bits as integers in the order of the values
        return [h if h < 0x8000 else 0x8000 - h for h in struct.unpack(f"<{len(blob) // 2}H", blob)]

    return [abs(x - y) for x, y in zip(ordered(a), ordered(b), strict=True)]


def test_plain_vectors_and_rankings_are_the_numpy_paths_on_the_dev_conversations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each dev conversation in a mind of its own, read (vectors computed in memory, by each
    path on its own), every question asked both ways, weighted by rarity as chat asks it and
    whole: the same events in the same order with the same cosines, and the vectors within one
    float16 step of each other (they are equal)."""
    monkeypatch.setenv("PMM_SEMANTIC", "1")
    monkeypatch.setattr(semantic, "PLAIN_BUDGET_US", 10**12)  # plain however many texts it embeds
    numpy_model, tag = semantic._load() or pytest.fail("wordllama is installed")
    plain = semantic._load_plain()
    assert plain is not None and plain[1] == tag
    compared = differing = asked = 0
    for path in _dev_files():
        data = json.loads(path.read_text(encoding="utf-8"))
        turns = [t["text"] for key, v in data.items() if key.startswith("session_") and isinstance(v, list)
                 for t in v]
        mind_path = tmp_path / f"{path.stem}.db"
        with opening.init(mind_path, None) as mind:
            mind.append([Draft(ev.MESSAGE_RECEIVED.name if n % 2 else ev.RESPONSE_SENT.name, text, {})
                         for n, text in enumerate(turns)])
        with Ledger.open(mind_path) as mind:
            kinds = ranking.RECALL_KINDS
            in_span = vectors.span(mind, kinds, semantic.SPAN)
            ids, matrix = semantic._matrix(mind, numpy_model, tag, kinds, semantic.SPAN)
            made = semantic._plain_matrix(mind, plain[0], tag, kinds, in_span)
            assert made is not None and made[0] == ids.tolist()
            for ours, theirs in zip(made[1], matrix.astype("<f2"), strict=True):
                steps = _ulps(plain_vectors.half(ours), theirs.tobytes())
                assert max(steps) <= 1
                compared += len(steps)
                differing += sum(1 for s in steps if s)
            for question in data["qa"]:
                words = ranking.query(question["question"], None)
                weights = ranking.rarity(lookup.word_counts(mind, words), mind.head()[0]) if words else {}
                for weighted in (weights, None):
                    ranked = {}
                    for limit in (semantic.PLAIN_SPAN, -1):
                        monkeypatch.setattr(semantic, "PLAIN_SPAN", limit)
                        found = semantic.nearest(mind, question["question"], kinds, ranking.CANDIDATES,
                                                 weights=weighted)
                        assert found is not None
                        ranked[limit] = [(e.id, score) for e, score in found]
                    assert ranked[semantic.PLAIN_SPAN] == ranked[-1], question["question"]
                    asked += 1
    assert asked > 1000 and compared > 500_000
    assert differing == 0  # equal, not merely within a step: both stores write the same bytes


def test_ties_rank_newest_first_and_only_similar_events_count(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_SEMANTIC", "1")
    path = tmp_path / "mind.db"
    notes = ["I adopted a puppy", "the stock market fell", "I adopted a puppy", "I adopted a puppy"]
    with opening.init(path, None) as mind:
        mind.append([Draft(ev.OBSERVATION_RECORDED.name, t, {"source": "user"}) for t in notes])
    ranked = {}
    for limit in (semantic.PLAIN_SPAN, -1):
        monkeypatch.setattr(semantic, "PLAIN_SPAN", limit)
        with Ledger.open(path) as mind:
            found = semantic.nearest(mind, "do I have a dog", (ev.OBSERVATION_RECORDED.name,), 10)
        assert found is not None
        ranked[limit] = [(e.id, s) for e, s in found]
    assert ranked[semantic.PLAIN_SPAN] == ranked[-1]
    assert [i for i, _ in ranked[-1][:3]] == [5, 4, 2]  # the same note thrice: newest first
    assert all(score > 0 for _, score in ranked[-1])


def test_both_paths_share_the_vector_layout_and_checks() -> None:
    """plain_vectors is imported only when a span is ranked (semantic itself imports it
    lazily, so a turn with PMM_SEMANTIC=0 pays nothing), so each names the layout itself."""
    assert (semantic.DIM, semantic.NORM_SLACK) == (plain_vectors.DIM, plain_vectors.NORM_SLACK)
    assert plain_vectors.HALF.size == semantic.VECTOR_BYTES


# -- bounds: what is embedded, what it costs, what is kept ---------------------------------------------

def _mind(tmp_path: Path, notes: list[str]) -> Path:
    path = tmp_path / "mind.db"
    with opening.init(path, None) as mind:
        mind.append([Draft(ev.OBSERVATION_RECORDED.name, t, {"source": "user"}) for t in notes])
    return path


def _plain_model() -> tuple[plain_vectors.Model, str]:
    plain = semantic._load_plain()
    assert plain is not None, "the plain path's tables load"
    return plain


def test_a_long_query_or_word_is_clipped_as_the_numpy_path_clips_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Chat passes a whole message (up to 200,000 characters) when it has no content words:
    the plain path embeds its first MAX_CHARS, as the numpy path does, so both rank alike
    (unclipped, "shares bonds crash" outweighed the dog here) and its cost is bounded."""
    monkeypatch.setenv("PMM_SEMANTIC", "1")
    path = _mind(tmp_path, ["I adopted a puppy last week", "the stock market fell sharply today"])
    text = "my dog barks " * 320 + "shares bonds crash " * 1000
    kinds = (ev.OBSERVATION_RECORDED.name,)
    model, tag = _plain_model()
    for weights in (None, {"dog": 1.0, text: 2.0}):
        with Ledger.open(path) as mind:
            plain = semantic._plain_nearest(mind, model, tag, text, kinds, vectors.span(mind, kinds, 100),
                                            5, weights)
            monkeypatch.setattr(semantic, "PLAIN_SPAN", -1)
            numpy = semantic.nearest(mind, text, kinds, 5, weights=weights)
            monkeypatch.undo()
            monkeypatch.setenv("PMM_SEMANTIC", "1")
        assert plain is not None and numpy is not None
        assert [(e.id, s) for e, s in plain] == [(e.id, s) for e, s in numpy]
        assert plain[0][0].content == "I adopted a puppy last week"
    assert plain_vectors.MAX_CHARS == semantic.MAX_CHARS
    assert model.tokens("a" * 200_000) == model.tokens("a" * semantic.MAX_CHARS)


def test_the_plain_paths_cost_is_counted_in_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A character of CJK is a token or more, of English about a quarter of one: 8,000
    characters of CJK to embed cost more than numpy's start (numpy serves them), 8,000 of
    English less (the plain path does)."""
    monkeypatch.setenv("PMM_SEMANTIC", "1")
    model, tag = _plain_model()
    kinds = (ev.OBSERVATION_RECORDED.name,)
    cjk = "我昨天在公园里遇到了一只可爱的小狗它很开心地跑来跑去" * 200
    english = "I adopted a puppy last week and we walk in the park every day. " * 70
    for long, plain_serves in ((cjk, False), (english, True)):
        path = _mind(tmp_path / str(plain_serves), [long[:4000], long[1:4001], "the stock market fell"])
        monkeypatch.setattr(semantic, "_plain_spent", [0])  # as a fresh process
        with Ledger.open(path) as mind:
            made = semantic._plain_matrix(mind, model, tag, kinds, vectors.span(mind, kinds, 100))
            assert (made is not None) is plain_serves
            monkeypatch.setattr(semantic, "_memo", [])
            monkeypatch.setattr(semantic, "_plain_memo", [])
            monkeypatch.setattr(semantic, "_plain_spent", [0])
            assert semantic.nearest(mind, "do I have a dog", kinds, 5) is not None
            assert bool(semantic._memo) is not plain_serves  # the numpy path's memo
            assert bool(semantic._plain_memo) is plain_serves
            # declined, the plain path leaves later turns to numpy, whose start is now paid
            assert (semantic._plain_spent[0] >= semantic.PLAIN_PROCESS_US) is not plain_serves


def test_a_long_lived_process_turns_to_numpy_once_the_plain_path_has_cost_its_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The REPL and ``pmm run`` recall every turn: the plain path's cost adds up, numpy's
    start is paid once (then its memo makes a turn a few ms). Past PLAIN_PROCESS_US of plain
    cost in the process, numpy serves every later turn."""
    monkeypatch.setenv("PMM_SEMANTIC", "1")
    path = _mind(tmp_path, [f"note {n}: I adopted a puppy and walked it {n} times" for n in range(100)])
    kinds = (ev.OBSERVATION_RECORDED.name,)
    monkeypatch.setattr(semantic, "_memo", [])
    turns = []
    with Ledger.open(path, write=True) as mind:
        for _ in range(200):
            found = semantic.nearest(mind, "do I have a dog", kinds, ranking.CANDIDATES)
            assert found
            turns.append(bool(semantic._memo))
            if semantic._memo:
                break
    assert turns[0] is False  # the plain path served the first turns
    assert turns[-1] is True, "numpy never took over"
    assert semantic._plain_spent[0] >= semantic.PLAIN_PROCESS_US
    assert 10 < len(turns) < 100


def test_only_short_segments_are_memoised_and_the_pair_memo_is_bounded(
        tokenizer: Any, tables: bpe.Tables, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4,000-character segment (digits, unspaced CJK, base64) memoised costs ~40 KB and is
    rarely seen again: only segments under WORD_MEMO_CHARS are kept, as ``tokenizers`` keeps
    its words; the memo of pair lookups starts again past PAIRS_KEPT."""
    monkeypatch.setattr(bpe, "PAIRS_KEPT", 500)
    tables._pairs.clear()
    texts = ["1234567890" * 400, "".join(chr(0x4E00 + (n * 7919) % 20000) for n in range(4000)),
             "short words stay " * 20]
    for text in texts:
        assert tables.encode(text) == _ids(tokenizer, [text])[0]
    assert tables._words and all(len(segment) < bpe.WORD_MEMO_CHARS for segment in tables._words)
    assert "▁short" in tables._words
    assert 0 < len(tables._pairs) <= 500


def _forge(path: Path, mutate: Any) -> None:
    """The cache file at ``path`` with its header changed by ``mutate`` (the header's JSON
    -> bytes) and its CRC computed again: only the header's fields are wrong."""
    import zlib

    data = path.read_bytes()
    length = int.from_bytes(data[8:12], "little")
    head = mutate(data[12:12 + length])
    body = data[:8] + len(head).to_bytes(4, "little") + head + data[12 + length:-4]
    path.write_bytes(body + zlib.crc32(body).to_bytes(4, "little"))


def _field(key: str, value: Any) -> Any:
    def mutate(head: bytes) -> bytes:
        fields = json.loads(head)
        fields[key] = value(fields[key]) if callable(value) else value
        return json.dumps(fields, sort_keys=True).encode()
    return mutate


def test_a_cache_whose_header_is_wrong_is_built_again(tmp_path: Path, tables: bpe.Tables) -> None:
    """A header with a sound CRC but wrong fields (an empty special token matches everywhere;
    an id that is not an int, or past the vocabulary; counts that are not counts; JSON nested
    past Python's recursion limit) is a damaged cache: built again, and the file replaced."""
    source, cache = _source(tmp_path), tmp_path / "cache"
    text = "a dog <s> I adopted a puppy"
    want = tables.encode(text)
    assert bpe.load(source, "1", cache).encode(text) == want
    made = bpe.cache_path(cache, source, "1")
    good = made.read_bytes()
    forgeries = [_field("special", lambda s: {**s, "": 5}), _field("special", lambda s: {**s, "a": "x"}),
                 _field("special", lambda s: {**s, "zz": 10**9}), _field("special", lambda s: {**s, "zz": True}),
                 _field("special", []), _field("vocab_size", "32000"), _field("vocab_size", 5),
                 _field("chars", -1), _field("merges", 1.5), _field("segments", "yes"),
                 lambda head: b"[" * 100_000 + b"]" * 100_000]
    for forge in forgeries:
        made.write_bytes(good)
        _forge(made, forge)
        assert bpe.load(source, "1", cache).encode(text) == want
        assert made.read_bytes() == good  # the rebuilt file replaced the forged one


def test_both_paths_keep_and_refuse_the_same_stored_vectors() -> None:
    """A stored vector whose norm is at the edge of NORM_SLACK is kept by both paths or
    computed again by both (one check: the squared norm in float64, summed alike), as are
    NaNs, infinities and zeros."""
    import numpy as np

    rng = np.random.default_rng(15)
    blobs = [bytes(semantic.VECTOR_BYTES)]
    for edge in (1.0 + plain_vectors.NORM_SLACK, 1.0 - plain_vectors.NORM_SLACK):
        for _ in range(3000):  # within 3e-6 of the edge: a float32 norm (or float32(0.02))
            unit = rng.standard_normal(semantic.DIM)  # put 5 of these on the other side
            unit /= np.linalg.norm(unit)
            blobs.append((unit * (edge + rng.uniform(-3e-6, 3e-6))).astype("<f2").tobytes())
    for bad in (np.nan, np.inf, -np.inf):
        row = np.full(semantic.DIM, 1 / 16, dtype="<f2")
        row[7] = bad
        blobs.append(row.tobytes())
    block = np.frombuffer(b"".join(blobs), dtype="<f2").reshape(-1, semantic.DIM).astype(np.float32)
    plain = [plain_vectors.sound(blob) is not None for blob in blobs]
    assert semantic._sound(block).tolist() == plain
    assert plain[0] and not any(plain[-3:]) and 1000 < sum(plain) < len(blobs) - 1000  # both sides
