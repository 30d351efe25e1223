"""`pmm sessions -n N`, `pmm chat -c` and `--session PREFIX` read the sessions table that every
append keeps (schema 7), not every turn: the work they do is the same in a mind ten times the
size. The table always says what the events say (the grouped query pmm used before is the
oracle), is back-filled by its migration, and is never trusted blindly: a row altered behind
pmm's back, or a table sealed on another machine, is not read, and the next write rebuilds it;
`pmm verify --deep` compares it whole with the events.

Real mind files, written through the ledger as pmm's commands write them."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from pathlib import Path

import pytest
from conftest import cli_json, invoke

from pmm.domain import events as ev
from pmm.domain.events import Draft
from pmm.ledger import lookup, schema, seal, session_table
from pmm.ledger import sessions as session_rows
from pmm.ledger.store import Ledger
from pmm.services import opening, sessions


def _populate(path: Path, seed: int, count: int) -> None:
    """``count`` sessions, interleaved, appended a few events at a time: pmm's chats (a start,
    messages and answers, /retry withdrawals), imported ones (their own ids and original times,
    out of order), turns without a start, and events of other kinds between. At most three are
    open at once, as people talk: a session spans a stretch of the ledger, not all of it."""
    rng = random.Random(seed)
    if not path.exists():
        assert invoke("--mind", str(path), "init", "--name", "Ada").exit_code == 0
    with Ledger.open(path, write=True) as mind:
        open_sessions: list[str] = []
        answers: dict[str, list[int]] = {}
        made = 0
        while made < count or open_sessions:
            drafts: list[Draft] = []
            if made < count and (not open_sessions or len(open_sessions) < 3 and rng.random() < 0.3):
                made += 1
                sid = f"{rng.choice('abc')}{seed}x{made:04d}"
                open_sessions.append(sid)
                style = rng.choice(["chat", "titled", "imported", "bare"])
                if style == "imported":
                    day = f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00.000000Z"
                    drafts.append(Draft(ev.SESSION_STARTED.name, f"Imported {made}",
                                        {"source": "chatgpt", "source_id": sid, "original_ts": day}))
                elif style != "bare":
                    drafts.append(Draft(ev.SESSION_STARTED.name, f"Title {made}" if style == "titled" else "",
                                        {"session": sid}))
            sid = rng.choice(open_sessions)
            meta: dict[str, object] = {"session": sid}
            if rng.random() < 0.2:
                meta["original_ts"] = f"2023-1{rng.randint(0, 2)}-2{rng.randint(0, 8)}T0{rng.randint(0, 9)}:00:00.000000Z"
            drafts.append(Draft(ev.MESSAGE_RECEIVED.name, f"  Question\n {rng.random():.6f} of {sid}", meta))
            drafts.append(Draft(ev.RESPONSE_SENT.name, "An answer.", dict(meta)))
            if rng.random() < 0.2:
                drafts.append(Draft(ev.OBSERVATION_RECORDED.name, "a note", {}))
            events = mind.append(drafts)
            answers.setdefault(sid, []).append(events[-1 if drafts[-1].kind == ev.RESPONSE_SENT.name else -2].id)
            if rng.random() < 0.15 and answers[sid]:
                target = answers[sid].pop()
                mind.append([Draft(ev.RESPONSE_WITHDRAWN.name, f"answer {target} withdrawn",
                                   {"response": target, "session": sid})])
            if rng.random() < 0.25:
                open_sessions.remove(sid)


def _oracle(mind: Ledger) -> list[dict[str, object]]:
    """What pmm listed before the table: one grouped query over every turn, then the starts and
    the withdrawn answers (the code this table replaced, kept here as the reference)."""
    turns = (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)
    sql = (
        "SELECT sid, min(id), max(id), sum(kind IN (?, ?)), min(said), max(said),"
        " min(CASE WHEN kind = ? THEN id END) FROM ("
        "  SELECT id, kind, coalesce(json_extract(meta, '$.session'),"
        "   CASE WHEN kind = ? THEN json_extract(meta, '$.source_id') END) AS sid,"
        "   coalesce(json_extract(meta, '$.original_ts'), ts) AS said"
        "  FROM events WHERE kind IN (?, ?, ?))"
        " WHERE sid IS NOT NULL AND typeof(sid) = 'text' GROUP BY sid ORDER BY max(said), max(id)")
    rows = mind.conn.execute(sql, (*turns, ev.MESSAGE_RECEIVED.name, ev.SESSION_STARTED.name, *turns,
                                   ev.SESSION_STARTED.name)).fetchall()
    started: dict[str, object] = {}
    for event in mind.events(kind=ev.SESSION_STARTED.name):
        meta = event.meta
        started.setdefault(meta.get("session") or meta.get("source_id"), event)
    minus: dict[str, int] = {}
    for event in lookup.get(mind, sessions.hidden(mind)):
        minus[event.meta["session"]] = minus.get(event.meta["session"], 0) + 1
    found = []
    for sid, first_id, last_id, count, first_said, last_said, first_message in rows:
        start = started.get(sid)
        title = " ".join(start.content.split()) if start is not None else ""  # type: ignore[attr-defined]
        titled = bool(title)
        if not title:
            title = " ".join(lookup.get(mind, [first_message])[0].content.split())
        found.append({"session": sid, "title": title[:60], "titled": titled, "first_said": first_said,
                      "last_said": last_said, "messages": max(0, count - minus.get(sid, 0)),
                      "first_id": first_id, "last_id": last_id,
                      "source": start.meta.get("source") if start is not None else None})  # type: ignore[attr-defined]
    return found


def _listed(mind: Ledger) -> list[dict[str, object]]:
    return [dict(s.as_json()) for s in sessions.of_mind(mind)]


def _table_is_current(path: Path) -> bool:
    with Ledger.open(path) as mind:
        return session_table.read(mind.conn, mind.mind_id, mind.head()) is not None


def _rows(path: Path, statement: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(statement).fetchall()
    finally:
        conn.close()


def _sql(path: Path, statement: str, args: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(statement, args)
    finally:
        conn.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_kept_table_lists_what_the_grouped_query_did(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "mind.db"
    _populate(path, seed, 40)
    assert _table_is_current(path)
    with Ledger.open(path) as mind:
        want = _oracle(mind)
        assert len(want) == 40 and any(s["messages"] != 2 * 0 for s in want)
        assert _listed(mind) == want
        for n in (1, 5, 39, 40, 41):
            assert [dict(s.as_json()) for s in sessions.newest(mind, n)] == want[-n:]
        assert sessions.latest(mind).as_json() == want[-1]  # type: ignore[union-attr]
        ids = [str(entry["session"]) for entry in want]
        for entry in want:
            sid = str(entry["session"])
            assert sessions.resolve(mind, sid).as_json() == entry
            short = next(sid[:n] for n in range(1, len(sid) + 1)
                         if sum(other.startswith(sid[:n]) for other in ids) == 1)
            assert sessions.resolve(mind, short).as_json() == entry
        ambiguous = sum(str(e["session"]).startswith("a") for e in want)
        if ambiguous > 1:
            with pytest.raises(Exception, match=f"is the start of {ambiguous} session ids"):
                sessions.resolve(mind, "a")
        with pytest.raises(Exception, match="there is no session 'zz'"):
            sessions.resolve(mind, "zz")
    # the table rebuilt from nothing (a fold of the events) is the one kept write by write
    with Ledger.open(path) as mind:
        kept = session_table.read(mind.conn, mind.mind_id, mind.head())
    with Ledger.open(path, write=True) as mind, mind.transaction():
        session_table.rebuild(mind.conn, mind.mind_id)
    with Ledger.open(path) as mind:
        assert session_table.read(mind.conn, mind.mind_id, mind.head()) == kept


def _work(path: Path, run: object) -> int:
    """SQLite virtual-machine steps (in hundreds of instructions) one service call costs."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    with opening.open_read(path) as mind:
        mind.conn.set_progress_handler(count, 100)
        run(mind)  # type: ignore[operator]
        mind.conn.set_progress_handler(None, 0)
    return steps[0]


def _some_session(path: Path) -> tuple[str, str]:
    """A session of the mind's middle, and the shortest start of its id no other id shares."""
    with Ledger.open(path) as mind:
        ids = [row[0] for row in mind.conn.execute("SELECT session FROM session_summary ORDER BY session")]
    sid = ids[len(ids) // 2]
    return sid, next(sid[:n] for n in range(1, len(sid) + 1) if sum(i.startswith(sid[:n]) for i in ids) == 1)


def test_listing_continuing_and_naming_a_session_do_not_grow_with_the_mind(tmp_path: Path) -> None:
    small, large = tmp_path / "small.db", tmp_path / "large.db"
    _populate(small, 7, 30)
    _populate(large, 7, 300)
    calls = {
        "sessions -n 5": lambda mind, sid, prefix: sessions.newest(mind, 5),
        "chat -c": lambda mind, sid, prefix: sessions.latest(mind),
        "--session PREFIX": lambda mind, sid, prefix: sessions.resolve(mind, prefix),
        "its recent turns": lambda mind, sid, prefix: session_rows.turns_of(mind, sid, 20),
    }
    named = {path: _some_session(path) for path in (small, large)}
    for what, call in calls.items():
        few, many = (_work(path, lambda mind, p=path: call(mind, *named[p]))  # noqa: B023
                     for path in (small, large))
        assert many <= few * 1.5 + 5, (what, few, many)
    # the fold it replaces does grow: the measure can tell
    fold = (_work(small, lambda mind: session_table.fold(mind.conn)),
            _work(large, lambda mind: session_table.fold(mind.conn)))
    assert fold[1] > fold[0] * 5, fold


def test_an_altered_row_is_not_read_and_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "mind.db"
    _populate(path, 4, 30)
    with Ledger.open(path) as mind:
        want = _oracle(mind)
    # the newest session's row: what `chat -c` reads; the next write checks it and rebuilds
    _sql(path, "UPDATE session_summary SET turns = turns + 40 WHERE session = ?", (want[-1]["session"],))
    assert not _table_is_current(path)
    assert cli_json(path, "sessions") == want  # folded from the events instead
    assert cli_json(path, "sessions", "-n", "2") == want[-2:]
    deep = cli_json(path, "verify", "--deep")
    assert deep["deep"]["sessions_match_events"] is True and "ignored" in deep["deep"]["sessions_table"]
    assert invoke("--mind", str(path), "remember", "a write").exit_code == 0
    assert _table_is_current(path)
    # an old session's row: read correctly all the same, rebuilt by `pmm health --repair`
    _sql(path, "UPDATE session_summary SET first_said = '1999' WHERE session = ?", (want[0]["session"],))
    assert cli_json(path, "sessions", "-n", "3") == want[-3:]  # the newest rows still hold
    assert cli_json(path, "sessions") == want
    assert invoke("--mind", str(path), "health", "--repair").exit_code == 0
    assert _table_is_current(path)
    with Ledger.open(path) as mind:
        assert _listed(mind) == _oracle(mind) == want
    # a row deleted (every other row still sealed) is what --deep finds
    _sql(path, "DELETE FROM session_summary WHERE session = ?", (want[0]["session"],))
    result = invoke("--mind", str(path), "verify", "--deep", "--json")
    assert result.exit_code == 3, result.output
    assert "sessions table does not equal" in result.stdout


def test_a_table_sealed_on_another_machine_is_not_trusted_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mind.db"
    _populate(path, 5, 10)
    with Ledger.open(path) as mind:
        want = _oracle(mind)
    # a forger's table with valid-looking rows: sealed under another machine's key
    _sql(path, "UPDATE session_summary SET turns = 0")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "elsewhere"))
    seal._cached_key.cache_clear()
    with Ledger.open(path) as mind:
        assert session_table.current(mind.conn, mind.mind_id, mind.head()) is None
    assert cli_json(path, "sessions", "-n", "3") == want[-3:]
    assert invoke("--mind", str(path), "remember", "here now").exit_code == 0
    assert _table_is_current(path)
    assert cli_json(path, "sessions") == want
    assert cli_json(path, "verify", "--deep")["deep"]["sessions_match_events"] is True


def test_migration_7_fills_the_table_from_the_events(tmp_path: Path) -> None:
    path = tmp_path / "mind.db"
    _populate(path, 6, 15)
    with Ledger.open(path) as mind:
        want = _oracle(mind)
    # the same file as schema 6 wrote it: no table, no mark, no record of migration 7
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("""
        DROP TABLE session_summary;
        DELETE FROM projection_cache WHERE name = 'sessions';
        DELETE FROM pmm_meta WHERE key = 'migration:0007_session_summary';
        UPDATE pmm_meta SET value = '6' WHERE key = 'schema_version';
    """)
    conn.close()
    with Ledger.open(path) as mind:
        assert mind.schema_version == 6 and schema.differences(mind.conn, 6) == []
    assert cli_json(path, "sessions") == want  # read as it is: folded from the events
    upgraded = invoke("--mind", str(path), "remember", "upgraded")
    assert upgraded.exit_code == 0 and "from schema 6 to 7: filling its sessions table" in upgraded.stderr
    with Ledger.open(path) as mind:
        assert mind.schema_version == schema.SCHEMA_VERSION
        assert schema.differences(mind.conn, schema.SCHEMA_VERSION) == []
        assert "0007_session_summary" in [name for name, _, _ in schema.history(mind.conn)]
        assert session_table.read(mind.conn, mind.mind_id, mind.head()) is not None
        assert _listed(mind) == want
    assert cli_json(path, "verify", "--deep")["deep"]["sessions_match_events"] is True


def test_an_import_into_a_new_mind_and_into_a_used_one_keeps_the_table(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    _populate(source, 8, 20)
    exported = tmp_path / "export.jsonl"
    assert invoke("--mind", str(source), "export", "-o", str(exported)).exit_code == 0
    fresh = tmp_path / "fresh.db"
    assert invoke("--mind", str(fresh), "import", str(exported)).exit_code == 0  # built in bulk
    with Ledger.open(source) as mind:
        want = _oracle(mind)
    assert _table_is_current(fresh) and cli_json(fresh, "sessions") == want
    # conversations imported into a used mind: many sessions in one write, kept row by row
    data = Path(__file__).parent / "data"
    for name in ("chatgpt_export.json", "claude_export.json"):
        result = invoke("--mind", str(fresh), "import", str(data / name))
        assert result.exit_code == 0, result.output
    assert _table_is_current(fresh)
    with Ledger.open(fresh) as mind:
        assert _listed(mind) == _oracle(mind) and len(_oracle(mind)) > len(want)


@pytest.mark.parametrize("forgery", [
    "UPDATE session_summary SET session = CAST(session AS BLOB)",
    "UPDATE session_summary SET turns = 1e300, mac = ''",
    "UPDATE session_summary SET first_message = 9223372036854775807",
    "UPDATE session_summary SET last_said = x'00ff'",
    "INSERT INTO session_summary VALUES ('planted', 1, 1, 5, 0, 'z', 'z', NULL, NULL, 'f' || hex(randomblob(31)))",
    "UPDATE projection_cache SET last_id = last_id - 1 WHERE name = 'sessions'",
])
def test_whatever_a_file_holds_in_the_table_the_listing_is_the_events(tmp_path: Path, forgery: str) -> None:
    path = tmp_path / "mind.db"
    _populate(path, 9, 8)
    with Ledger.open(path) as mind:
        want = _oracle(mind)
    _sql(path, forgery)
    assert cli_json(path, "sessions") == want
    assert cli_json(path, "sessions", "-n", "2") == want[-2:]
    result = invoke("--mind", str(path), "chat", "--session", "planted", "-m", "hello")
    assert result.exit_code == 2 and "there is no session 'planted'" in result.stderr
    assert "Traceback" not in result.output


# -- `verify --deep` folds the events in SQL: the same fold ----------------------------------------

_SESSIONS = ["s1", "s2", "", "é漢🎉", "\x01\x1f\t\x7f", 'q"u\\o\nte', "{\"a\":1}", 7, 1.5, True, None,
             {"x": 1}, ["s1"], "MISSING"]
_SAIDS = ["2024-01-01T00:00:00.000000Z", "", "z", 3, None, "MISSING", "2023-12-31T23:59:59.999999Z"]


def _hostile_meta(rng: random.Random, kind: str, ids: list[int], sessions: list[object]) -> str:
    """A JSON object (or, now and then, text that is not one) of the shapes that decide a session."""
    if rng.random() < 0.04:
        return rng.choice(["[]", '"s1"', "not json", "", "null", '{"session": "s1"', "17"])
    meta: dict[str, object] = {}
    for key, pool in (("session", sessions), ("source_id", sessions), ("original_ts", _SAIDS)):
        value = rng.choice(pool)
        if value != "MISSING":
            meta[key] = value
    if kind == ev.RESPONSE_WITHDRAWN.name:
        meta["response"] = rng.choice([*rng.sample(ids, min(3, len(ids))), 10**6, -1, 0, True, 3.0, "5", None])
    if rng.random() < 0.1:
        meta["nested"] = {"session": "inner", "original_ts": "0"}
    if rng.random() < 0.05:  # escaped, not canonical: both decoders still read the same value
        return json.dumps(meta, sort_keys=True)
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _hostile_mind(path: Path, seed: int, nul: bool) -> sqlite3.Connection:
    """A mind of 400 events of the sessions' kinds (and one more) with ``_hostile_meta``."""
    rng = random.Random(seed)
    with opening.init(path, "Ada"):
        pass
    conn = sqlite3.connect(path, isolation_level=None)
    last_id, last_hash = conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    kinds = [*session_table.KINDS, ev.OBSERVATION_RECORDED.name]
    ids: list[int] = [last_id]
    conn.execute("BEGIN")
    for n in range(400):
        kind = rng.choice(kinds)
        meta = _hostile_meta(rng, kind, ids, [*_SESSIONS, "a\u0000b"] if nul else _SESSIONS)
        stored_kind: object = kind.encode() if rng.random() < 0.03 else kind
        ts = f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00.000000Z"
        digest = hashlib.sha256(f"{seed}-{n}".encode()).hexdigest()
        last_id += 1
        conn.execute("INSERT INTO events VALUES (?, ?, ?, '', ?, ?, ?)",
                     (last_id, ts, stored_kind, meta, last_hash, digest))
        last_hash = digest
        ids.append(last_id)
    conn.execute("COMMIT")
    return conn


@pytest.mark.parametrize(("seed", "nul"), [(0, False), (1, False), (2, False), (3, False), (4, True)])
def test_the_fold_in_sql_is_the_fold(tmp_path: Path, seed: int, nul: bool) -> None:
    """``session_table.fold_sql`` (what --deep compares the table with) equals ``fold`` (the one
    definition of a session) over metas of every shape that decides one: sessions and source
    ids of each JSON type, text that escapes and text past the BMP, null against absent,
    original times that are not text, withdrawals of turns, of starts, of later events, twice,
    by ids that are not integers; kinds stored as BLOBs, metas that are not objects; a session
    id holding NUL (which SQLite's JSON functions cut short: that mind is folded in Python)."""
    conn = _hostile_mind(tmp_path / "mind.db", seed, nul)
    folded = session_table.fold(conn)
    assert len(folded) > 5 and any(row.withdrawn for row in folded.values())
    assert any(row.first_said != row.last_said for row in folded.values())
    assert session_table.fold_sql(conn) == folded
    conn.close()


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_the_fold_of_a_replays_read_is_the_fold(tmp_path: Path, seed: int) -> None:
    """--deep folds the sessions from its replay's read of every event, each meta parsed once
    (``Folding.add_in_order``): the rows ``fold`` makes of the same events, in id order (the
    replay's) or any other."""
    conn = _hostile_mind(tmp_path / "mind.db", seed, seed == 4)
    read = conn.execute("SELECT id, CAST(ts AS TEXT), CAST(kind AS TEXT), CAST(meta AS TEXT) FROM events"
                        " WHERE kind IN (?, ?, ?, ?) ORDER BY id", session_table.KINDS).fetchall()
    metas = [(i, ts, kind, session_table._meta(meta)) for i, ts, kind, meta in read]
    events = [(i, ts, kind, meta) for i, ts, kind, meta in metas if meta is not None]
    folded = session_table.fold(conn)
    assert len(folded) > 5 and any(row.withdrawn for row in folded.values())
    for order in (events, events[::-1], random.Random(seed).sample(events, len(events))):
        folding = session_table.Folding()
        folding.add_in_order(order)
        assert folding.finish(conn) == folded
    conn.close()


@pytest.mark.parametrize("session", ["\\ud800", "a\\udfffb"])
def test_an_escaped_lone_surrogate_is_folded_in_python_and_deep_names_the_event(
        tmp_path: Path, session: str) -> None:
    """SQLite reads an escaped lone surrogate out of JSON as bytes that are not UTF-8, which
    Python's sqlite3 refuses: the SQL fold gives way to ``fold`` (a write, a rebuild and --deep
    all use it), so --deep names the event that was altered instead of refusing the file."""
    path = tmp_path / "mind.db"
    _populate(path, 6, 4)
    with Ledger.open(path) as mind:
        target = next(e.id for e in mind.events(kind=ev.MESSAGE_RECEIVED.name))
    for (trigger,) in _rows(path, "SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        _sql(path, f"DROP TRIGGER {trigger}")
    _sql(path, "UPDATE events SET meta = ? WHERE id = ?", ('{"session":"%s"}' % session, target))
    conn = sqlite3.connect(path)
    try:
        assert session_table.fold_sql(conn) == session_table.fold(conn)
    finally:
        conn.close()
    result = invoke("--mind", str(path), "verify", "--deep")
    assert result.exit_code == 3, result.output
    assert f"event {target}: stored hash does not match" in result.stderr, result.stderr


def test_a_resealed_wrong_row_is_what_verify_deep_finds(tmp_path: Path) -> None:
    """A row sealed under this machine's key that does not say what the events say (a bug, or
    someone holding the key): --deep's SQL fold tells it apart, field by field."""
    path = tmp_path / "mind.db"
    _populate(path, 5, 6)
    assert cli_json(path, "verify", "--deep")["deep"]["sessions_match_events"] is True
    for field, change in (("turns", 1), ("withdrawn", 1), ("first_id", -1), ("last_id", 1),
                          ("first_said", "0"), ("last_said", "~"), ("first_message", 1), ("start_id", 1)):
        copy = tmp_path / f"{field}.db"
        copy.write_bytes(path.read_bytes())
        with Ledger.open(copy) as mind:
            mind_id = mind.mind_id
            rows = session_table.read(mind.conn, mind_id, mind.head())
        assert rows is not None
        row = next(r for r in rows if r.start_id is not None and r.first_message is not None)
        value = getattr(row, field)
        setattr(row, field, value + change)
        secret = seal.key(create=False)
        assert secret is not None
        _sql(copy, f"UPDATE session_summary SET {field} = ?, mac = ? WHERE session = ?",
             (getattr(row, field), session_table._row_mac(secret, mind_id, row), row.session))
        with Ledger.open(copy) as mind:
            assert session_table.read(mind.conn, mind_id, mind.head()) is not None  # still sealed
        result = invoke("--mind", str(copy), "verify", "--deep", "--json")
        assert result.exit_code == 3, (field, result.output)
        assert "sessions table does not equal" in result.stdout
