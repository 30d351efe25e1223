"""`pmm import` and `pmm verify --deep` agree on what a meta may hold: an event whose meta is not
the canonical text of its value (``-0.0``, a space, keys out of order), though its hash is valid,
is refused by both with the same reason. The hash commits to the meta's bytes, so import cannot
write it canonically instead: it refuses the export (exit 6, one line naming the line and the
event), and writes nothing, on the small path (read in this process) and on the batched one
(an export large enough to be read by a second process, pmm.services.import_reader).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import run_in, run_pmm
from test_import_rejects_bad_input import assert_rejected, rehash

from pmm.services import import_reader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_ledger import synthetic_export  # noqa: E402

REASON = "meta is not canonical JSON"
NOT_CANONICAL = {  # (kind, meta) put in place of an event's; None keeps its kind
    "negative zero": ("a_later_kind", '{"x":-0.0}'),  # a kind a newer pmm wrote: any meta object
    "a space": (None, '{"session": "s1"}'),
    "keys out of order": ("a_later_kind", '{"b":1,"a":2}'),
    "an integral float": ("a_later_kind", '{"x":1.0}'),
    "an escaped letter": (None, '{"session":"\\u0073"}'),
}


def _forged(source: Path, out: Path, event_id: int, kind: str | None, meta: str) -> int:
    """``source`` with event ``event_id``'s meta (and kind) replaced and the chain re-hashed
    from it on, so the meta is the only thing wrong; returns the line it is on."""
    lines = source.read_bytes().splitlines(keepends=True)
    header, end = json.loads(lines[0]), json.loads(lines[-1])
    events = [json.loads(line) for line in lines[1:-1]]
    at = event_id - header["since"]
    if kind is not None:
        events[at]["kind"] = kind
    events[at]["meta"] = meta
    rehash(header, events, at)
    end["head"] = events[-1]["hash"]
    out.write_bytes(b"".join(lines[:at + 1]) + b"".join(
        json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        for o in (*events[at:], end)))
    return at + 2  # line 1 is the header


def _verify_deep_says(path: Path, event_id: int) -> None:
    proc = run_in("verify", str(path), "--deep")
    assert proc.returncode == 3, proc.stderr.decode()
    assert f"event {event_id}: {REASON}" in proc.stderr.decode()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "export.jsonl"
    synthetic_export(path, 60)
    return path


@pytest.mark.parametrize("what", NOT_CANONICAL)
def test_a_small_export_is_refused_as_verify_deep_refuses_it(small: Path, tmp_path: Path, what: str) -> None:
    bad = tmp_path / "bad.jsonl"
    line = _forged(small, bad, 42, *NOT_CANONICAL[what])
    _verify_deep_says(bad, 42)
    target = tmp_path / "new" / "mind.db"
    error = assert_rejected(run_in("--mind", str(target), "import", str(bad)), line)
    assert f"event 42: {REASON}" in error
    assert not target.parent.exists()  # nothing written, not even the directory


def test_a_tail_is_refused_and_the_mind_it_would_extend_is_untouched(small: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.jsonl"
    synthetic_export(first, 30)  # the same seed: the first 30 events of ``small``
    mind = tmp_path / "mind.db"
    run_in("--mind", str(mind), "import", str(first), check=True)
    before = mind.read_bytes()
    bad = tmp_path / "bad.jsonl"
    line = _forged(small, bad, 50, *NOT_CANONICAL["negative zero"])
    error = assert_rejected(run_in("--mind", str(mind), "import", str(bad)), line)
    assert f"event 50: {REASON}" in error
    assert mind.read_bytes() == before
    assert run_in("verify", str(mind), "--deep").returncode == 0


def test_a_broken_link_before_the_meta_is_named_first(small: Path, tmp_path: Path) -> None:
    """The first bad event is the one named, whichever check it fails."""
    bad, worse = tmp_path / "bad.jsonl", tmp_path / "worse.jsonl"
    _forged(small, bad, 42, *NOT_CANONICAL["a space"])
    lines = bad.read_bytes().splitlines(keepends=True)
    lines[20] = lines[20].replace(b'"content":"', b'"content":"!', 1)  # event 20: stale hash
    worse.write_bytes(b"".join(lines))
    error = assert_rejected(run_in("--mind", str(tmp_path / "m.db"), "import", str(worse)), 21)
    assert "event 20:" in error and REASON not in error


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "export.jsonl"
    synthetic_export(path, 4000)  # about 1.5 MB: over import_reader.PARALLEL_FROM
    assert path.stat().st_size > import_reader.PARALLEL_FROM
    return path


@pytest.mark.parametrize("what", ["negative zero", "a space"])
def test_a_large_export_is_refused_by_the_reading_process_as_verify_deep_refuses_it(
        large: Path, tmp_path: Path, what: str) -> None:
    bad = tmp_path / "bad.jsonl"
    line = _forged(large, bad, 3990, *NOT_CANONICAL[what])
    assert bad.stat().st_size > import_reader.PARALLEL_FROM
    _verify_deep_says(bad, 3990)
    target = tmp_path / "new" / "mind.db"
    error = assert_rejected(run_pmm("--mind", str(target), "import", str(bad)), line)  # a real process
    assert f"event 3990: {REASON}" in error
    assert not target.parent.exists()


def test_the_same_export_made_canonical_imports_and_verifies(small: Path, tmp_path: Path) -> None:
    """The refusal is about the bytes only: the same change written canonically is accepted."""
    good = tmp_path / "good.jsonl"
    _forged(small, good, 42, "a_later_kind", '{"x":0}')
    mind = tmp_path / "mind.db"
    run_in("--mind", str(mind), "import", str(good), check=True)
    assert run_in("verify", str(mind), "--deep").returncode == 0
