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
