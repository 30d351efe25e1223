"""Property tests: replay is deterministic, exports round-trip byte for byte, meta is canonical.

Random event sequences (every declared kind, meta that matches its declaration, arbitrary
Unicode content) are appended to real mind files in a temp dir, in random transaction batches,
so the projection cache is advanced incrementally the way `pmm` advances it.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import json_data, run_in
from eventgen import DRAFTS, FINITE, SAFE_INT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmm.domain import projections
from pmm.domain.canonical import canonical_json
from pmm.domain.checks import check_draft
from pmm.domain.events import Draft
from pmm.ledger import cache, folded
from pmm.ledger.store import Ledger
from pmm.services import portability

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JSON_LEAF = st.none() | st.booleans() | SAFE_INT | FINITE | st.text(max_size=20)
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
BATCHES = st.lists(st.lists(DRAFTS, min_size=1, max_size=5), min_size=1, max_size=6)


# These properties are about logic, not durability: on tmpfs the many small commits cost no fsync.
_SHM = Path("/dev/shm")
_TMP_ROOT = str(_SHM) if _SHM.is_dir() and os.access(_SHM, os.W_OK) else None


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pmm-prop-", dir=_TMP_ROOT) as d:
        yield Path(d)


def build(path: Path, batches: list[list[Draft]]) -> Ledger:
    mind = Ledger.create(path, None)
    for batch in batches:
        for draft in batch:
            check_draft(draft)  # the strategy itself must only make valid drafts
        mind.append(batch)
    return mind


def export_bytes(mind: Ledger, since: int = 1) -> bytes:
    out = io.StringIO()
    portability.export(mind, out, since=since)
    return out.getvalue().encode("utf-8")


def import_file(path: Path, data: bytes) -> portability.ImportResult:
    """Write ``data`` to an export file beside ``path`` and import it from there."""
    source = path.with_name(path.name + ".import.jsonl")
    source.write_bytes(data)
    with open(source, "rb") as stream:
        return portability.import_pmm(path, stream, str(source), notify=lambda _msg: None)


def full_replay(events: Any) -> dict[str, Any]:
    """A replay of every event as a mind reads them: a random mind_merged event (DRAFTS makes
    every kind) folds the events after its fork again in canonical order (docs/merge.md)."""
    events = list(events)
    return projections.replay_merged(events, [e for e in events if e.kind == "mind_merged"],
                                     lambda low, high: [e for e in events if low <= e.id <= high])


def states_of(path: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(full replay, cache-plus-fold state, cache status) of the mind at ``path``, read-only."""
    with Ledger.open(path) as mind:
        full = full_replay(mind.events())
        cached, status = folded.state(mind)
    return full, cached, status.state


# -- (a) replay determinism ---------------------------------------------------------------------


@SETTINGS
@given(BATCHES)
def test_replay_is_deterministic_and_equals_the_cache_and_an_imported_copy(batches) -> None:
    with workdir() as d:
        with build(d / "a.db", batches) as mind:
            events = list(mind.events())
            exported = export_bytes(mind)
        assert [e.id for e in events] == list(range(1, sum(map(len, batches)) + 1))

        first = full_replay(events)
        again = full_replay(iter(events))
        assert first == again
        # states are plain JSON values: what the cache stores reads back equal
        assert json.loads(json.dumps(first)) == first
        # every event but a merge's own record, which counts in no projection
        assert first["activity"]["events"] == sum(e.kind != "mind_merged" for e in events)

        full, cached, status = states_of(d / "a.db")
        assert status == "current", "every append advanced the cache in its own transaction"
        assert full == cached == first

        result = import_file(d / "copy.db", exported)
        assert result.appended == len(events)
        copy_full, copy_cached, copy_status = states_of(d / "copy.db")
        assert copy_full == copy_cached == first
        assert copy_status == "current"


@SETTINGS
@given(BATCHES, st.integers(0, 5))
def test_state_folds_events_newer_than_the_cache(batches, keep: int) -> None:
    """A cache that reflects an older event is folded forward in memory to the same state."""
    with workdir() as d:
        build(d / "a.db", batches).close()
        with Ledger.open(d / "a.db") as mind:
            expected = full_replay(mind.events())
            head_id, _ = mind.head()
        old_id = max(0, head_id - keep)
        with Ledger.open(d / "a.db") as mind:
            old_hash = mind.hash_at(old_id) if old_id else "0" * 64
            older = full_replay(e for e in mind.events() if e.id <= old_id)
        with Ledger.open(d / "a.db", write=True) as mind, mind.transaction():
            cache.store(mind.conn, mind.mind_id, older, old_id, old_hash)  # an older cache, sealed as pmm seals it
        full, cached, status = states_of(d / "a.db")
        assert full == cached == expected
        assert status == ("current" if old_id == head_id else "behind")


# -- (b) export -> import -> export -------------------------------------------------------------


@SETTINGS
@given(BATCHES, st.integers(0, 10))
def test_export_import_export_is_byte_identical(batches, split: int) -> None:
    with workdir() as d:
        with build(d / "a.db", batches[:1]) as mind:
            mind.conn.backup(sqlite3.connect(d / "prefix.db"))  # a consistent early copy
            for batch in batches[1:]:
                mind.append(batch)
            head_id, _ = mind.head()
            first = export_bytes(mind)
            since = min(head_id, split + 1)
            partial = export_bytes(mind, since=since)

        import_file(d / "b.db", first)
        with Ledger.open(d / "b.db") as copy:
            assert export_bytes(copy) == first

        # the early copy catches up from the full export, or from a --since export of its tail
        prefix_len = len(batches[0])
        result = import_file(d / "prefix.db", first if since > prefix_len + 1 else partial)
        assert result.appended == head_id - prefix_len
        with Ledger.open(d / "prefix.db") as caught_up:
            assert export_bytes(caught_up) == first


TRICKY_NOTES = (
    "plain",
    "Über Bücher — 日本語 🧠 𝄞",
    'quotes " and back\\slashes \\" and a tab\there',
    "line one\nline two\r\nline three",
    "separators \u2028 and \u2029, a BOM \ufeff and a DEL \x7f",
    "{\"looks\": \"like json\"}",
)


def test_cli_export_import_export_is_byte_identical(tmp_path: Path, pmm) -> None:
    mind, copy = tmp_path / "mind.db", tmp_path / "copy.db"
    run_in("--mind", str(mind), "init", "--name", "Ünïcode", check=True)
    for note in TRICKY_NOTES:
        run_in("--mind", str(mind), "remember", note, check=True)
    first = pmm("--mind", str(mind), "export", check=True).stdout  # a real process's stdout bytes
    assert len(first.splitlines()) == 1 + 1 + len(TRICKY_NOTES) + 1
    export_file = tmp_path / "mind.jsonl"
    export_file.write_bytes(first)
    run_in("--mind", str(copy), "import", str(export_file), check=True)
    assert pmm("--mind", str(copy), "export", check=True).stdout == first
    logged = json_data(run_in("--mind", str(copy), "log", "--json", check=True).stdout)
    assert [e["content"] for e in logged[1:]] == [n.strip() for n in TRICKY_NOTES]


# -- (c) canonical meta -------------------------------------------------------------------------


JSON_OBJECTS = st.dictionaries(st.text(max_size=12), JSON_VALUE, max_size=6)


@SETTINGS
@given(JSON_OBJECTS)
def test_canonical_json_is_idempotent_and_keeps_the_value(value: dict[str, Any]) -> None:
    text = canonical_json(value)
    assert canonical_json(json.loads(text)) == text
    assert json.loads(text) == value
    assert "\n" not in text  # control characters are escaped, and there is no whitespace


@pytest.mark.parametrize("number", [2.0**53, 1e16, 123456789012345680000.0, -1e20])
def test_integral_doubles_past_2_53_stay_canonical(number: float, tmp_path: Path, pmm) -> None:
    """pmm accepts these (a trait step's ``delta`` is any finite number), so what it writes must
    read back canonical: otherwise `pmm verify --deep` flags an event pmm itself wrote."""
    text = canonical_json({"delta": number})
    assert canonical_json(json.loads(text)) == text
    with Ledger.create(tmp_path / "mind.db", None) as mind:
        mind.append([Draft("trait_adjusted", "a big number", {"trait": "openness", "delta": number})])
    done = pmm("verify", "--deep", str(tmp_path / "mind.db"))
    assert done.returncode == 0, done.stderr.decode()


def _jcs_without_floats(value: Any) -> str:
    """RFC 8785 for values without floats, written from the RFC: UTF-16 key order, no spaces."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_jcs_without_floats(value[k])}"
                              for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(_jcs_without_floats, value)) + "]"
    return json.dumps(value, ensure_ascii=False)


NO_FLOAT_VALUE = st.recursive(st.none() | st.booleans() | SAFE_INT | st.text(max_size=12),
                              lambda inner: st.lists(inner, max_size=4)
                              | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                              max_leaves=12)


@SETTINGS
@given(st.dictionaries(st.text(max_size=6), NO_FLOAT_VALUE, max_size=6))
def test_canonical_json_matches_the_rfc_for_values_without_floats(value: dict[str, Any]) -> None:
    assert canonical_json(value) == _jcs_without_floats(value)


def test_canonical_key_order_is_by_utf16_code_units() -> None:
    # U+FF61 sorts after U+1F600 in UTF-16 (0xFF61 > 0xD83D) but before it by code point
    assert canonical_json({"\U0001F600": 1, "\uff61": 2, "a": 3}) == '{"a":3,"\U0001F600":1,"\uff61":2}'
