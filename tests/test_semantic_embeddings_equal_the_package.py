"""Semantic recall reads WordLlama's files itself (pmm.services.semantic._Model: the weights
memory-mapped, the tokenizer by ``tokenizers``) instead of importing the ``wordllama`` package,
to start fast; its vectors must be the package's own, bit for bit, or the stored vectors of
every mind would silently mean something else.

The package runs in a child process (it configures logging and imports requests on import).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pmm.services import semantic

ROOT = Path(__file__).resolve().parent.parent
ALPHABET = ("abcdefghijklmnopqrstuvwxyz     ABCXYZ0123456789.,;:!?'\"-_()[]{}<>/\\@#$%^&*+=~`|\n\t"
            "éèàüößçñøåæœ€£¥©®™°±§¶…—–“”‘’«»¿¡ÀÉÎÕÜ中文日本語한국어Ελληνικάрусский עברית العربية"
            "😀🐶🚀👍🏽❤️\u200b\u00a0\u0301\x00\x7f\ufeff")
SPECIAL = ["", " ", "   ", "\n", "<s>", "</s>", "<unk>", "a<s>b", " <s> hello </s> ", "▁", "▁▁the",
           "hello", "Hello, world!", "I adopted a puppy last week", "do I have a dog",
           "the garden needs water in the morning", "x" * 5000, "word " * 900, "🐶" * 300,
           "\x00\x01\x02", "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace")]


def _texts() -> list[str]:
    rng = random.Random(15)
    made = list(SPECIAL)
    for _ in range(300):
        length = rng.choice([1, 2, 3, 5, 8, 13, 40, 120, 600])
        made.append("".join(rng.choice(ALPHABET) for _ in range(length)))
    dev = ROOT / "tests" / "data" / "chatgpt_conversations.json"
    made.extend(line.strip() for line in dev.read_text(encoding="utf-8").splitlines()[:200])
    return made


PACKAGE = """
import json, sys
import numpy as np
from pathlib import Path
import wordllama
from wordllama import WordLlama
model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
texts = json.loads(sys.stdin.read())
out = {}
for batch in (32, 7, 64):
    with np.errstate(invalid="ignore", divide="ignore"):
        out[str(batch)] = model.embed(texts, norm=True, batch_size=batch).tobytes().hex()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def package_vectors() -> dict[str, bytes]:
    proc = subprocess.run([sys.executable, "-c", PACKAGE], input=json.dumps(_texts()),
                          capture_output=True, text=True, check=True)
    return {batch: bytes.fromhex(made) for batch, made in json.loads(proc.stdout.splitlines()[-1]).items()}


@pytest.mark.parametrize("batch", [32, 7, 64])
def test_every_vector_equals_the_packages_bit_for_bit(package_vectors: dict[str, bytes],
                                                      batch: int) -> None:
    import numpy as np

    loaded = semantic._load()
    assert loaded is not None, "the test extra installs wordllama"
    texts = _texts()
    with np.errstate(invalid="ignore", divide="ignore"):
        ours = loaded[0].embed(texts, norm=True, batch_size=batch)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), semantic.DIM)
    assert ours.tobytes() == package_vectors[str(batch)]


def test_the_tag_names_the_installed_version_as_importlib_metadata_does() -> None:
    from importlib.metadata import version

    assert semantic.expected_tag() == f"wordllama {version('wordllama')} l2_supercat 256 float16"


def test_loading_imports_neither_the_package_nor_its_dependencies() -> None:
    """What made recall's first turn slow: wordllama's own import brings pydantic, toml,
    requests (whose urllib3 imports socket code) and compiled algorithms; its load read the
    whole 16 MB matrix and widened it to 32 MB of float32."""
    code = ("import sys\nfrom pmm.services import semantic\n"
            "model, tag = semantic._load()\n"
            "assert model.embed(['a dog'], norm=True).shape == (1, 256)\n"
            "print(type(model.matrix).__name__, model.matrix.dtype)\n"
            "print(sorted(m for m in ('wordllama', 'pydantic', 'toml', 'requests', 'urllib3',"
            " 'safetensors', 'importlib.metadata') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=ROOT)
    kind, loaded = proc.stdout.splitlines()[-2:]
    assert kind == "memmap float16"
    assert loaded == "[]"


def test_weights_of_another_shape_are_not_loaded(tmp_path: Path) -> None:
    """A file that is not WordLlama's 256-d float16 matrix is refused (recall is then BM25)."""
    header = json.dumps({"embedding.weight": {"dtype": "F32", "shape": [4, 256],
                                              "data_offsets": [0, 4 * 256 * 4]}}).encode()
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4 * 256 * 4))
    with pytest.raises(ValueError):
        semantic._weights(bad)
    short = json.dumps({"embedding.weight": {"dtype": "F16", "shape": [4, 256],
                                             "data_offsets": [0, 4 * 256 * 2]}}).encode()
    bad.write_bytes(len(short).to_bytes(8, "little") + short + bytes(100))  # data cut short
    with pytest.raises(ValueError):
        semantic._weights(bad)
    bad.write_bytes((1 << 40).to_bytes(8, "little"))
    with pytest.raises(ValueError):
        semantic._weights(bad)


def test_the_plain_path_makes_the_packages_vectors_bit_for_bit(package_vectors: dict[str, bytes]) -> None:
    """pmm.services.plain_vectors (no numpy, pmm's own tokenizer) emulates the float32
    arithmetic in its order: the same vectors as the package's, not merely close ones."""
    from array import array

    import numpy as np

    loaded = semantic._load_plain()
    assert loaded is not None, "the tokenizer file is one pmm.services.bpe reproduces"
    made = loaded[0].embed(_texts())
    ours = b"".join(array("f", vector).tobytes() for vector in made)
    # a text with no token is 0 / 0 in the package: zeros in pmm (semantic._embed's nan_to_num)
    theirs = np.nan_to_num(np.frombuffer(package_vectors["32"], dtype=np.float32), nan=0.0)
    assert np.isnan(np.frombuffer(package_vectors["32"], dtype=np.float32)).any()  # "" is one
    assert ours == theirs.tobytes()
