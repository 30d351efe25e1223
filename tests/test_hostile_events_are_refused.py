"""Hash-valid events of the wrong shape never get into a mind: verify (exit 3, naming the event),
import (exit 6, naming the line, nothing written) and restore refuse them, and whatever passes
the per-kind schema replays without an exception. One size limit holds for every event."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from eventgen import DRAFTS, timestamps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmm.crypto.age import encrypt
from pmm.domain import dynamics, projections
from pmm.domain.canonical import canonical_json
from pmm.domain.checks import _fast_patterns, check_draft, check_row
from pmm.domain.events import KINDS, MAX_EVENT_BYTES, META_CHECKS, Draft, Event
from pmm.domain.shapes import parse_meta
from pmm.ledger import jsonl
from pmm.ledger.chain import (
    FORMAT_VERSION,
    GENESIS_PREV,
    ChainState,
    chain_prefix,
    check_chain,
    event_hash,
)
from pmm.ledger.store import Ledger

TS = "2026-03-04T05:06:07.000008Z"
GENESIS = ("mind_created", "Mind created", '{"pmm_version":"0.1.0"}')

# (what it is, ts, kind, meta text): each hash-valid, each a mind-bricker before the schema.
HOSTILE = [
    ("a trait that is a list", TS, "trait_adjusted", '{"delta":0.05,"trait":["openness"]}'),
    ("a trait pmm does not know", TS, "trait_adjusted", '{"delta":0.05,"trait":"charm"}'),
    ("a delta that is text", TS, "trait_adjusted", '{"delta":"lots","trait":"openness"}'),
    ("a ts of yesterday", "yesterday", "message_received", "{}"),
    ("a ts of 30 February", "2026-02-30T10:00:00.000000Z", "message_received", "{}"),
    ("a due that is a number", TS, "commitment_opened", '{"due":12345,"source":"user"}'),
    ("a due that is not a time", TS, "commitment_opened", '{"due":"soon","source":"user"}'),
    ("token counts of text", TS, "response_sent", '{"latency_ms":5,"provider":"x","tokens_in":"many"}'),
    ("a context that is text", TS, "response_sent", '{"context":"1,2"}'),
    ("a context id of text", TS, "response_sent", '{"context":[1,"2"]}'),
    ("a reply_to of zero", TS, "response_sent", '{"reply_to":0}'),
    ("a name that is a number", TS, "mind_named", '{"name":5}'),
    ("a missing required field", TS, "mind_named", "{}"),
    ("a role pmm has not", TS, "model_switched", '{"model":"m","name":"n","provider":"p","role":"boss"}'),
    ("evidence that is text", TS, "commitment_closed", '{"commitment":1,"evidence":"1"}'),
    ("an undeclared field", TS, "observation_recorded", '{"source":"user","sudo":true}'),
    ("a newer version", TS, "observation_recorded", '{"source":"user","v":2}'),
    ("meta that is a list", TS, "observation_recorded", "[1]"),
    ("meta with NaN", TS, "trait_adjusted", '{"delta":NaN,"trait":"openness"}'),
    ("meta nested 100 deep", TS, "newer_kind", '{"a":' + "[" * 100 + "]" * 100 + "}"),
    ("a lone surrogate in meta", TS, "newer_kind", '{"a":"\\ud800"}'),
    ("a kind that is no name", TS, "Bad Kind!", "{}"),
]
# The repros go through the real commands; every case goes through the chain checker.
THROUGH_CLI = [h for h in HOSTILE if h[0] in (
    "a trait that is a list", "a ts of yesterday", "a due that is a number", "token counts of text",
    "a context id of text", "meta nested 100 deep")]


def _rows(events: list[tuple[str, str, str, str]], mind_id: str) -> list[Event]:
    prefix = chain_prefix(FORMAT_VERSION, mind_id)
    out, prev = [], GENESIS_PREV
    for i, (ts, kind, content, meta) in enumerate(events, 1):
        digest = event_hash(prefix, i, ts, kind, content, meta, prev)
        out.append(Event(i, ts, kind, content, meta, prev, digest))
        prev = digest
    return out


def _export(path: Path, events: list[Event], mind_id: str) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        out.write(jsonl.header_line(mind_id, FORMAT_VERSION, 1))
        out.writelines(jsonl.event_lines(events))
        out.write(jsonl.end_line(len(events), events[-1].id, events[-1].hash))
    return path


def _mind_file(path: Path, mind_id: str, events: list[Event]) -> Path:
    """A mind file holding ``events`` as a crafted file would: written behind pmm's back (a
    real import checks every event first, so it cannot make one)."""
    import sqlite3

    Ledger.build(path, mind_id, events[:1])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", events[1:])
    conn.close()
    return path


def _hostile_chain(ts: str, kind: str, meta: str) -> tuple[str, list[Event]]:
    mind_id = uuid.uuid4().hex
    return mind_id, _rows([(TS, *GENESIS), (ts, kind, "hostile", meta),
                           (TS, "observation_recorded", "after", '{"source":"user"}')], mind_id)


@pytest.mark.parametrize(("what", "ts", "kind", "meta"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_the_chain_checker_names_each_hostile_event(what: str, ts: str, kind: str, meta: str) -> None:
    mind_id, events = _hostile_chain(ts, kind, meta)
    rows = [(e.id, e.ts.encode(), e.kind.encode(), e.content.encode(), e.meta_json.encode(),
             e.prev_hash.encode(), e.hash.encode()) for e in events]
    state = check_chain(chain_prefix(FORMAT_VERSION, mind_id), rows, ChainState())
    assert state.problem is not None and state.problem.event_id == 2, what
    assert state.count == 1


@pytest.mark.parametrize(("what", "ts", "kind", "meta"), THROUGH_CLI, ids=[h[0] for h in THROUGH_CLI])
def test_verify_refuses_a_hostile_event_in_an_export_and_a_mind_file(
        what: str, ts: str, kind: str, meta: str, tmp_path: Path, cli) -> None:
    mind_id, events = _hostile_chain(ts, kind, meta)
    exported = _export(tmp_path / "hostile.jsonl", events, mind_id)
    done = cli("verify", str(exported), "--no-witness")
    assert done.exit_code == 3, done.output
    assert "event 2" in done.stderr
    _mind_file(tmp_path / "hostile.db", mind_id, events)
    for deep in ((), ("--deep",)):
        done = cli("verify", str(tmp_path / "hostile.db"), "--no-witness", *deep)
        assert done.exit_code == 3, done.output
        assert "event 2" in done.stderr


@pytest.mark.parametrize(("what", "ts", "kind", "meta"), THROUGH_CLI, ids=[h[0] for h in THROUGH_CLI])
def test_import_refuses_a_hostile_event_and_writes_nothing(
        what: str, ts: str, kind: str, meta: str, tmp_path: Path, cli) -> None:
    mind_id, events = _hostile_chain(ts, kind, meta)
    exported = _export(tmp_path / "hostile.jsonl", events, mind_id)
    target = tmp_path / "new.db"
    done = cli("--mind", str(target), "import", str(exported))
    assert done.exit_code == 6, done.output
    assert "line 3" in done.stderr
    assert not target.exists()
    # into a mind that holds the genesis: the tail is refused, the file left as it was
    Ledger.build(target, mind_id, events[:1])
    before = target.read_bytes()
    done = cli("--mind", str(target), "import", str(exported))
    assert done.exit_code == 6, done.output
    assert target.read_bytes() == before


def test_restore_refuses_a_backup_of_a_hostile_mind(tmp_path: Path, cli) -> None:
    mind_id, events = _hostile_chain(TS, "trait_adjusted", '{"delta":0.05,"trait":["openness"]}')
    _mind_file(tmp_path / "hostile.db", mind_id, events)
    sealed = tmp_path / "hostile.age"
    sealed.write_bytes(encrypt((tmp_path / "hostile.db").read_bytes(), "a passphrase", 10))
    target = tmp_path / "out" / "m.db"
    done = cli("--mind", str(target), "restore", str(sealed), env={"PMM_BACKUP_PASSPHRASE": "a passphrase"})
    assert done.exit_code in (3, 6), done.output
    assert "event 2" in done.stderr
    assert not target.exists()


def test_a_newer_pmms_kind_verifies_imports_and_is_ignored_by_projections(tmp_path: Path, cli) -> None:
    mind_id = uuid.uuid4().hex
    events = _rows([(TS, *GENESIS), (TS, "dream_recorded", "a dream", '{"vivid":{"colours":[1,2]}}'),
                    (TS, "observation_recorded", "a note", '{"source":"user"}')], mind_id)
    exported = _export(tmp_path / "newer.jsonl", events, mind_id)
    assert cli("verify", str(exported), "--no-witness").exit_code == 0
    target = tmp_path / "m.db"
    assert cli("--mind", str(target), "import", str(exported)).exit_code == 0
    assert cli("--mind", str(target), "verify").exit_code == 0
    done = cli("--mind", str(target), "stats", "--json")
    assert done.exit_code == 0, done.output
    states = projections.replay(events)
    assert states["activity"]["by_kind"]["dream_recorded"] == 1


def test_a_lone_surrogate_in_an_import_is_refused_with_its_line(tmp_path: Path, cli) -> None:
    mind_id = uuid.uuid4().hex
    good = _export(tmp_path / "good.jsonl", _rows([(TS, *GENESIS)], mind_id), mind_id)
    lines = good.read_text().splitlines(keepends=True)
    event = json.loads(lines[1])
    event["content"] = "\ud800"  # json.dumps writes it as the escape "\ud800"
    lines[1] = json.dumps(event) + "\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(lines))
    target = tmp_path / "m.db"
    done = cli("--mind", str(target), "import", str(bad))
    assert done.exit_code == 6, done.output
    assert "line 2" in done.stderr and "surrogate" in done.stderr
    assert not target.exists()
    done = cli("verify", str(bad), "--no-witness")
    assert done.exit_code == 3, done.output
    assert "event 1" in done.stderr and "surrogate" in done.stderr


def test_one_size_limit_for_every_event_and_pmm_imports_what_it_writes(tmp_path: Path, cli) -> None:
    assert 6 * MAX_EVENT_BYTES + 4096 < jsonl.MAX_LINE  # worst-case JSON escaping still fits a line
    mind = tmp_path / "m.db"
    assert cli("--mind", str(mind), "init").exit_code == 0
    done = cli("--mind", str(mind), "remember", "-", input="x" * (MAX_EVENT_BYTES + 1))
    assert done.exit_code == 6, done.output
    assert "8 MiB" in done.stderr
    # the worst case that fits: control characters, each escaped to six bytes in the export
    worst = "a" + "\x01" * (MAX_EVENT_BYTES - 64) + "z"
    done = cli("--mind", str(mind), "remember", "-", input=worst)
    assert done.exit_code == 0, done.output
    exported = tmp_path / "m.jsonl"
    assert cli("--mind", str(mind), "export", "-o", str(exported)).exit_code == 0
    copy = tmp_path / "copy.db"
    done = cli("--mind", str(copy), "import", str(exported))
    assert done.exit_code == 0, done.output
    with Ledger.open(copy) as opened:
        assert opened.head() == Ledger.open(mind).head()


def test_check_draft_and_the_chain_checker_agree_on_the_limit() -> None:
    big = Draft("observation_recorded", "é" * (MAX_EVENT_BYTES // 2), {"source": "user"})
    with pytest.raises(Exception, match="at most 8 MiB"):
        check_draft(big)
    content = ("é" * (MAX_EVENT_BYTES // 2)).encode()
    assert "over the limit" in (check_row(TS.encode(), b"observation_recorded", content, b"{}") or "")


def test_hostile_meta_cannot_crash_canonicalisation() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError):
        canonical_json({"a": deep})
    with pytest.raises(ValueError):
        canonical_json({"a": 10**400})  # beyond any double
    assert canonical_json({"a": 10**20}) == '{"a":100000000000000000000}'
    assert parse_meta('{"a":' + "[" * 100_000 + "]" * 100_000 + "}")[0] is None
    assert parse_meta('{"a":1' + "0" * 5000 + "}")[0] is None


NEAR_MISSES = [b'{"session":"a""source":"b"}', b'{,"session":"a"}', b'{"session":"a",}',
               b'{"session":"\\ud800"}', b'{"session":"a\nb"}', b'{"reply_to":0}', b'{"context":[1,]}',
               b'{"context":[01]}', b'{"v":2}', b'{"v":0}', b'{"source":"martian"}', b'{"role":"chat"}',
               b'{"due":"2026-02-30T00:00:00.000000Z","source":"user"}', b'{"commitment":1}',
               b'{"evidence":[],"commitment":1}', b'{"name":"a","name":5}', b'{"price_in":1000001}',
               b'{"price_in":-1}', b'{"price_out":1e400}', b'{"usage_estimated":1}', b'{"price_in":01}']


def _shortcut(kind: str, meta: bytes) -> bool:
    fast = _fast_patterns().get(kind.encode())
    return bool(fast and fast[0].fullmatch(meta) and all(name in meta for name in fast[1]))


def _full(kind: str, meta: bytes) -> bool:
    value, _ = parse_meta(meta.decode())
    return value is not None and META_CHECKS[kind](value) is None


@pytest.mark.parametrize("meta", NEAR_MISSES)
def test_the_shortcut_never_accepts_what_the_full_check_refuses(meta: bytes) -> None:
    """verify tries a pattern on the canonical text first; it is only ever a shortcut."""
    for kind in KINDS:
        assert not _shortcut(kind, meta) or _full(kind, meta), (kind, meta)


def test_what_pmm_writes_takes_the_shortcut() -> None:
    response = canonical_json({"session": "s", "provider": "local", "model": "m", "model_name": "x",
                               "reply_to": 2, "latency_ms": 5, "context": [1, 2], "prompt_xxh3": "ab",
                               "tokens_in": 3, "tokens_out": 4, "finish": "stop"})
    assert _shortcut("response_sent", response.encode())
    priced = canonical_json({"provider": "anthropic", "model": "m", "latency_ms": 5, "tokens_in": 1200,
                             "tokens_cache_read": 1000, "tokens_cache_write": 0, "usage_estimated": True,
                             "price_in": 0.8, "price_out": 4, "price_cache_read": 0.08,
                             "price_cache_write": 1, "currency": "USD"})
    assert _shortcut("response_sent", priced.encode())
    assert _shortcut("response_sent", b'{"price_in":999999.5,"price_out":0}')
    assert _shortcut("message_received", b'{"session":"s"}')
    assert _shortcut("commitment_opened", b'{"due":"2026-12-01T09:30:00.000000Z","source":"user"}')
    assert not _shortcut("commitment_opened", b'{"due":"2026-12-01T09:30:00.000000Z"}')  # source required


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def valid_events(draw: st.DrawFn) -> list[Event]:
    drafts = draw(st.lists(DRAFTS, max_size=40))
    events = []
    for i, d in enumerate(drafts, 1):
        ts = draw(timestamps())
        events.append(Event(i, ts, d.kind, d.content, canonical_json(d.meta), "", ""))
    return events


@SETTINGS
@given(valid_events(), timestamps())
def test_any_schema_valid_events_replay_without_an_exception(events: list[Event], now: str) -> None:
    """Projections are total over what the schema lets through: every kind, every field in its
    declared range, in any order and with ids that name nothing."""
    for e in events:
        assert check_row(e.ts.encode(), e.kind.encode(), e.content.encode(), e.meta_json.encode()) is None
    states = projections.replay(events)
    dynamics.metrics(states)
    dynamics.overdue(states, now)
    dynamics.reflection_due(states, 100.0)
    assert json.loads(json.dumps(states)) == states  # still a plain JSON value, as the cache needs


@SETTINGS
@given(DRAFTS)
def test_shortcut_and_full_check_agree_on_generated_metas(draft: Draft) -> None:
    """Every meta the declarations allow passes, and where the shortcut matches, so does the full check."""
    check_draft(draft)
    meta = canonical_json(draft.meta).encode()
    assert check_row(TS.encode(), draft.kind.encode(), b"", meta) is None
    assert _full(draft.kind, meta)


@pytest.mark.parametrize(("what", "ts", "kind", "meta"), THROUGH_CLI, ids=[h[0] for h in THROUGH_CLI])
def test_a_crafted_mind_file_is_refused_by_name_not_crashed_on(
        what: str, ts: str, kind: str, meta: str, tmp_path: Path, cli) -> None:
    """A file never verified (handed over, or altered behind pmm's back) still cannot crash a
    read: an event the projections cannot read is refused as an integrity failure."""
    mind_id, events = _hostile_chain(ts, kind, meta)
    path = _mind_file(tmp_path / "crafted.db", mind_id, events)
    for command in (["stats", "--json"], ["health"]):
        done = cli("--mind", str(path), *command)
        assert done.exit_code in (0, 3), (command, done.output)
        assert "unexpected" not in done.stderr


def _verdicts_with_the_memo_primed(cases: list[tuple[bytes, bytes, bytes]]) -> list[tuple[str | None, str | None]]:
    """check_row's verdict on each (ts, kind, meta) right after events that passed with the same
    meta (under this kind and another) and the same hour, where they can, beside the full check's."""
    from pmm.domain.checks import _row_problem

    found = []
    for ts, kind, meta in cases:
        for primer in (b"response_sent", kind):  # the memo keeps a few kinds a meta fitted
            check_row(ts[:13] + b":00:00.000000Z", primer, b"", meta)
        found.append((check_row(ts, kind, b"", meta), _row_problem(ts, kind, b"", meta)))
    return found


def test_the_memo_of_what_passed_answers_as_the_full_check() -> None:
    """verify remembers the metas and the hours that passed (a mind repeats them): a timestamp
    one byte off at any place, on any date or hour, and a meta met before under another kind,
    get the full check's verdict."""
    kind, meta = b"message_received", b'{"session":"s"}'
    base = b"2024-02-29T23:59:59.999999Z"
    cases = [(base[:i] + bytes([b]) + base[i + 1:], kind, meta)
             for i in range(len(base)) for b in b"0123456789:-.TZ /a\x00\xff"]
    cases += [(b"%04d-%02d-%02dT%02d:%02d:59.000000Z" % (y, m, d, h, mi), kind, meta)
              for y in (0, 1900, 2000, 2023, 2024) for m in (0, 2, 4, 12, 13) for d in (0, 28, 29, 30, 31, 32)
              for h in (0, 19, 23, 24, 29) for mi in (0, 59, 60)]
    cases += [(base[:-1], kind, meta), (base + b"Z", kind, meta), (base, b"session_started", meta),
              (base, b"trait_adjusted", meta), (base, b"no_such_kind", meta), (base, kind, meta + b" ")]
    verdicts = _verdicts_with_the_memo_primed(cases)
    assert all(memo == full for memo, full in verdicts), [c for c, v in zip(cases, verdicts, strict=True) if v[0] != v[1]][:5]
    assert sum(full is None for _, full in verdicts) > 100 and sum(full is not None for _, full in verdicts) > 100
