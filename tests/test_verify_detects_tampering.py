"""`pmm verify` finds every tampering the chain alone can reveal, and names the first bad event.

SPEC section 8's tamper matrix, on a mind file altered with ``sqlite3`` the way an attacker
would (guards dropped, or the table rebuilt) and on a JSONL export edited line by line: a flipped
byte in each field of the first, a middle and the last event, a deleted, swapped, duplicated or
inserted row, and an event spliced in from another mind. Tail truncation of a mind file needs a
signed checkpoint or the witness (a later feature), so it is not here; a truncated export is, as
its end line makes it detectable.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import json_data, run_in

from pmm.domain.events import Draft
from pmm.ledger.chain import chain_prefix, event_hash
from pmm.services import opening

N = 30
FIRST, MIDDLE, LAST = 1, 15, N
FIELDS = ("ts", "kind", "content", "meta", "prev_hash", "hash")
COLS = ("id",) + FIELDS
FLIPS = (*FIELDS, "meta-inner")  # every field, and meta once more with its JSON kept valid
Row = tuple  # (id, ts, kind, content, meta, prev_hash, hash)


# -- building the minds ------------------------------------------------------------------------

def _drafts() -> Iterator[Draft]:
    for i in range(2, N + 1):
        match i % 4:
            case 0:
                yield Draft("session_started", f"Session {i}", {"title": f"Session {i}", "source": "pmm"})
            case 1:
                yield Draft("message_received", f"User message number {i}", {"source": "pmm"})
            case 2:
                yield Draft("response_sent", f"The mind answers message {i - 1}",
                            {"model": "test-model", "provider": "offline"})
            case _:
                yield Draft("observation_recorded", f"Note {i}: remember the tamper test",
                            {"source": "user"})


def _build(path: Path) -> None:
    with opening.init(path, "Tamper") as mind:
        for draft in _drafts():
            mind.append([draft])


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two minds of N events (same shapes, different ids and times) and their exports."""
    base = tmp_path_factory.mktemp("originals")
    with pytest.MonkeyPatch.context() as mp:  # keep pmm's state away from the real user dirs
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
            mp.setenv(var, str(base / "home" / var.lower()))
        paths = {}
        for name in ("a", "b"):
            mind = base / f"{name}.db"
            _build(mind)
            export = run_in("--mind", str(mind), "export", check=True).stdout
            (base / f"{name}.jsonl").write_bytes(export)
            paths[name], paths[name + "_jsonl"] = mind, base / f"{name}.jsonl"
        for name in ("a", "b"):  # inside the private dirs: verify records what it saw (the witness)
            assert run_in("verify", str(paths[name])).returncode == 0
            assert run_in("verify", str(paths[name + "_jsonl"])).returncode == 0
    return paths


def _rows(path: Path) -> list[Row]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT {', '.join(COLS)} FROM events ORDER BY id").fetchall()
    finally:
        conn.close()


def _prefix(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    try:
        meta = dict(conn.execute("SELECT key, value FROM pmm_meta"))
    finally:
        conn.close()
    return chain_prefix(int(meta["ledger_format"]), meta["mind_id"])


def _flip(value: str, inner: bool = False) -> str:
    """The value with one bit of its middle byte flipped (ASCII stays ASCII); ``inner`` flips
    the third byte from the end instead: for meta, inside its last string value, so the JSON
    stays valid and only the hash can tell."""
    raw = bytearray(value.encode())
    raw[len(raw) - 3 if inner else len(raw) // 2] ^= 0x01
    flipped = raw.decode()
    assert flipped != value
    return flipped


# -- attacks on a mind file --------------------------------------------------------------------

def _unguarded(path: Path) -> sqlite3.Connection:
    """A connection with every guard trigger and the UNIQUE prev_hash index dropped."""
    conn = sqlite3.connect(path, isolation_level=None)
    for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP INDEX events_prev_hash")
    return conn


def _rebuild(path: Path, rows: list[Row], *, primary_key: bool = True) -> None:
    """Replace the events table with ``rows`` (without a primary key, ids may repeat)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("DROP TABLE events")
        id_type = "INTEGER PRIMARY KEY" if primary_key else "INTEGER NOT NULL"
        conn.execute(f"CREATE TABLE events (id {id_type}, ts TEXT NOT NULL, kind TEXT NOT NULL,"
                     " content TEXT NOT NULL, meta TEXT NOT NULL, prev_hash TEXT NOT NULL,"
                     " hash TEXT NOT NULL)")
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    finally:
        conn.close()


def flip_field(field: str, event_id: int) -> Callable[[Path, dict[str, Path]], None]:
    column, inner = field.split("-")[0], field.endswith("-inner")

    def attack(path: Path, _: dict[str, Path]) -> None:
        conn = _unguarded(path)
        try:
            (value,) = conn.execute(f"SELECT {column} FROM events WHERE id = ?", (event_id,)).fetchone()
            conn.execute(f"UPDATE events SET {column} = ? WHERE id = ?", (_flip(value, inner), event_id))
        finally:
            conn.close()
    return attack


def delete_row(event_id: int) -> Callable[[Path, dict[str, Path]], None]:
    def attack(path: Path, _: dict[str, Path]) -> None:
        conn = _unguarded(path)
        try:
            assert conn.execute("DELETE FROM events WHERE id = ?", (event_id,)).rowcount == 1
        finally:
            conn.close()
    return attack


def swap_rows(a: int, b: int, fields: tuple[str, ...] = FIELDS) -> Callable[[Path, dict[str, Path]], None]:
    """Exchange the given fields of events a and b (ids stay where they are)."""
    def attack(path: Path, _: dict[str, Path]) -> None:
        conn = _unguarded(path)
        try:
            cols = ", ".join(fields)
            row_a = conn.execute(f"SELECT {cols} FROM events WHERE id = ?", (a,)).fetchone()
            row_b = conn.execute(f"SELECT {cols} FROM events WHERE id = ?", (b,)).fetchone()
            sets = ", ".join(f"{f} = ?" for f in fields)
            conn.execute("BEGIN")
            conn.execute(f"UPDATE events SET {sets} WHERE id = ?", (*row_b, a))
            conn.execute(f"UPDATE events SET {sets} WHERE id = ?", (*row_a, b))
            conn.execute("COMMIT")
        finally:
            conn.close()
    return attack


def duplicate_row(event_id: int) -> Callable[[Path, dict[str, Path]], None]:
    def attack(path: Path, _: dict[str, Path]) -> None:
        rows = _rows(path)
        at = event_id - 1
        _rebuild(path, rows[: at + 1] + [rows[at]] + rows[at + 1:], primary_key=False)
    return attack


def insert_row(at: int, *, rehash: bool) -> Callable[[Path, dict[str, Path]], None]:
    """A forged event as event ``at``, later events renumbered; with ``rehash`` the forgery links
    to event at-1 with a correctly computed hash, so only the event after it can give it away."""
    def attack(path: Path, _: dict[str, Path]) -> None:
        rows = _rows(path)
        before = rows[: at - 1]
        template = rows[at - 1]
        prev = before[-1][6] if before else "0" * 64
        content = "I never said this"
        meta = '{"source":"user"}'
        digest = (event_hash(_prefix(path), at, template[1], "observation_recorded", content, meta, prev)
                  if rehash else "ab" * 32)
        forged = (at, template[1], "observation_recorded", content, meta, prev, digest)
        after = [(r[0] + 1, *r[1:]) for r in rows[at - 1:]]
        _rebuild(path, before + [forged] + after)
    return attack


def splice_from_other(event_id: int) -> Callable[[Path, dict[str, Path]], None]:
    """Event ``event_id`` of mind b put in place of mind a's event at the same position."""
    def attack(path: Path, originals: dict[str, Path]) -> None:
        foreign = _rows(originals["b"])[event_id - 1]
        conn = _unguarded(path)
        try:
            sets = ", ".join(f"{f} = ?" for f in FIELDS)
            conn.execute(f"UPDATE events SET {sets} WHERE id = ?", (*foreign[1:], event_id))
        finally:
            conn.close()
    return attack


MIND_ATTACKS: list[tuple[str, Callable[[Path, dict[str, Path]], None], int]] = [
    *((f"flip-{field}-{where}", flip_field(field, eid), eid)
      for field in FLIPS for where, eid in (("first", FIRST), ("middle", MIDDLE), ("last", LAST))),
    ("delete-first", delete_row(FIRST), FIRST),
    ("delete-middle", delete_row(MIDDLE), MIDDLE),
    ("swap-rows-middle", swap_rows(10, 11), 10),
    ("swap-rows-last-two", swap_rows(LAST - 1, LAST), LAST - 1),
    ("swap-content-only", swap_rows(MIDDLE, MIDDLE + 1, ("content",)), MIDDLE),
    ("duplicate-first", duplicate_row(FIRST), FIRST),
    ("duplicate-middle", duplicate_row(MIDDLE), MIDDLE),
    ("duplicate-last", duplicate_row(LAST), LAST),
    ("insert-forged-genesis", insert_row(1, rehash=True), 2),
    ("insert-rehashed-middle", insert_row(MIDDLE, rehash=True), MIDDLE + 1),
    ("insert-naive-middle", insert_row(MIDDLE, rehash=False), MIDDLE),
    ("splice-first", splice_from_other(FIRST), FIRST),
    ("splice-middle", splice_from_other(MIDDLE), MIDDLE),
    ("splice-last", splice_from_other(LAST), LAST),
]


# -- checking what verify says -----------------------------------------------------------------

def _each(*calls: tuple[tuple[str, ...], bytes | None]) -> list:
    """Each ``pmm`` call in this process, in turn: what verify reports and how it exits is the
    same code whatever process runs it (the exit code at a real process boundary is
    test_signed_checkpoints' and test_witness_catches_rollback's)."""
    return [run_in(*args, input=data) for args, data in calls]


def _first_event_named(line: str) -> int | None:
    found = re.search(r"\bevent (\d+)\b", line)
    return int(found.group(1)) if found else None


def _assert_json_failure(result, bad_id: int | None, label: str) -> dict:
    assert result.returncode == 3, f"{label}: exit {result.returncode}: {result.stderr.decode()}"
    report = json_data(result.stdout)
    assert report["ok"] is False and report["problem"], report
    assert report["problem_event"] == bad_id, f"{label}: {report['problem']}"
    return report


def _assert_one_error_line(result, label: str) -> str:
    """Exit 3, nothing on stdout, one ``Error:`` line on stderr (a ``Hint:`` may follow)."""
    assert result.returncode == 3, f"{label}: exit {result.returncode}"
    assert result.stdout == b""
    lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, f"{label}: {lines}"
    assert all(line.startswith(("Error: ", "Hint: ", "Note: ")) for line in lines), lines
    assert "Traceback" not in result.stderr.decode()
    return errors[0]


@pytest.mark.parametrize(("attack", "bad_id"), [pytest.param(a, b, id=n) for n, a, b in MIND_ATTACKS])
def test_tampered_mind_file_fails_at_first_bad_event(
        originals: dict[str, Path], tmp_path: Path, attack: Callable, bad_id: int) -> None:
    path = tmp_path / "mind.db"
    shutil.copyfile(originals["a"], path)
    before = _rows(path)
    attack(path, originals)
    assert _rows(path) != before, "the attack changed nothing"

    as_json, plain = _each((("verify", str(path), "--json"), None), (("verify", str(path)), None))
    report = _assert_json_failure(as_json, bad_id, "verify --json")
    assert report["source_kind"] == "mind"
    # Verification stopped right there: the events before it (for a duplicate, the original
    # too) verified, nothing after it was counted.
    assert bad_id - 1 <= report["events"] == report["last_id"] <= bad_id, report
    error = _assert_one_error_line(plain, "verify")
    assert _first_event_named(error) == bad_id, error


# -- attacks on a JSONL export -----------------------------------------------------------------

def _load(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _event_line(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"


def _edit_event(lines: list[str], event_id: int, change: Callable[[dict], None]) -> list[str]:
    obj = json.loads(lines[event_id])  # line 0 is the header, line k is event k
    assert obj["id"] == event_id
    change(obj)
    return lines[:event_id] + [_event_line(obj)] + lines[event_id + 1:]


def x_flip(field: str, event_id: int) -> Callable[[list[str], dict[str, Path]], list[str]]:
    key, inner = field.split("-")[0], field.endswith("-inner")

    def attack(lines: list[str], _: dict[str, Path]) -> list[str]:
        return _edit_event(lines, event_id, lambda o: o.__setitem__(key, _flip(o[key], inner)))
    return attack


def x_delete(event_id: int) -> Callable[[list[str], dict[str, Path]], list[str]]:
    return lambda lines, _: lines[:event_id] + lines[event_id + 1:]


def x_swap_lines(a: int, b: int) -> Callable[[list[str], dict[str, Path]], list[str]]:
    def attack(lines: list[str], _: dict[str, Path]) -> list[str]:
        lines = list(lines)
        lines[a], lines[b] = lines[b], lines[a]
        return lines
    return attack


def x_swap_contents(a: int, b: int) -> Callable[[list[str], dict[str, Path]], list[str]]:
    """Exchange every field but the id between events a and b."""
    def attack(lines: list[str], _: dict[str, Path]) -> list[str]:
        obj_a, obj_b = json.loads(lines[a]), json.loads(lines[b])
        new_a, new_b = {**obj_b, "id": a}, {**obj_a, "id": b}
        lines = list(lines)
        lines[a], lines[b] = _event_line(new_a), _event_line(new_b)
        return lines
    return attack


def x_duplicate(event_id: int) -> Callable[[list[str], dict[str, Path]], list[str]]:
    return lambda lines, _: lines[: event_id + 1] + [lines[event_id]] + lines[event_id + 1:]


def x_insert(at: int, *, rehash: bool) -> Callable[[list[str], dict[str, Path]], list[str]]:
    def attack(lines: list[str], originals: dict[str, Path]) -> list[str]:
        events = [json.loads(line) for line in lines[1:-1]]
        prev = events[at - 2]["hash"] if at > 1 else "0" * 64
        content, meta, ts = "I never said this", '{"source":"user"}', events[at - 1]["ts"]
        digest = (event_hash(_prefix(originals["a"]), at, ts, "observation_recorded", content, meta, prev)
                  if rehash else "ab" * 32)
        forged = {"id": at, "ts": ts, "kind": "observation_recorded", "content": content,
                  "meta": meta, "prev_hash": prev, "hash": digest}
        shifted = [{**e, "id": e["id"] + 1} for e in events[at - 1:]]
        body = [_event_line(e) for e in events[: at - 1] + [forged] + shifted]
        end = json.loads(lines[-1])  # a careful forger fixes the end line too
        end.update(events=end["events"] + 1, last_id=end["last_id"] + 1)
        return [lines[0], *body, json.dumps(end, separators=(",", ":")) + "\n"]
    return attack


def x_splice(event_id: int) -> Callable[[list[str], dict[str, Path]], list[str]]:
    def attack(lines: list[str], originals: dict[str, Path]) -> list[str]:
        foreign = _load(originals["b_jsonl"])[event_id]
        return lines[:event_id] + [foreign] + lines[event_id + 1:]
    return attack


EXPORT_ATTACKS: list[tuple[str, Callable[[list[str], dict[str, Path]], list[str]], int]] = [
    *((f"flip-{field}-{where}", x_flip(field, eid), eid)
      for field in FLIPS for where, eid in (("first", FIRST), ("middle", MIDDLE), ("last", LAST))),
    ("delete-first", x_delete(FIRST), FIRST),
    ("delete-middle", x_delete(MIDDLE), MIDDLE),
    ("swap-lines-middle", x_swap_lines(10, 11), 10),
    ("swap-contents-middle", x_swap_contents(10, 11), 10),
    ("swap-contents-last-two", x_swap_contents(LAST - 1, LAST), LAST - 1),
    ("duplicate-first", x_duplicate(FIRST), FIRST),
    ("duplicate-middle", x_duplicate(MIDDLE), MIDDLE),
    ("duplicate-last", x_duplicate(LAST), LAST),
    ("insert-forged-genesis", x_insert(1, rehash=True), 2),
    ("insert-rehashed-middle", x_insert(MIDDLE, rehash=True), MIDDLE + 1),
    ("insert-naive-middle", x_insert(MIDDLE, rehash=False), MIDDLE),
    ("splice-first", x_splice(FIRST), FIRST),
    ("splice-middle", x_splice(MIDDLE), MIDDLE),
    ("splice-last", x_splice(LAST), LAST),
]


@pytest.mark.parametrize(("attack", "bad_id"), [pytest.param(a, b, id=n) for n, a, b in EXPORT_ATTACKS])
def test_tampered_export_fails_at_first_bad_event(
        originals: dict[str, Path], tmp_path: Path, attack: Callable, bad_id: int) -> None:
    lines = _load(originals["a_jsonl"])
    assert len(lines) == N + 2  # header, N events, end line
    edited = attack(lines, originals)
    assert edited != lines, "the attack changed nothing"
    path = tmp_path / "a.jsonl"
    path.write_text("".join(edited))
    data = path.read_bytes()

    from_file, from_stdin, plain = _each(
        (("verify", str(path), "--json"), None),
        (("verify", "-", "--json"), data),
        (("verify", str(path)), None),
    )
    for label, result in (("verify FILE --json", from_file), ("verify - --json", from_stdin)):
        report = _assert_json_failure(result, bad_id, label)
        assert report["source_kind"] == "export"
        assert bad_id - 1 <= report["events"] == report["last_id"] <= bad_id, (label, report)
    error = _assert_one_error_line(plain, "verify FILE")
    assert _first_event_named(error) == bad_id, error


@pytest.mark.parametrize(("cut", "expect", "intact"), [
    pytest.param(lambda lines: lines[:-1], r"end line.*truncated|truncated.*end line", N,
                 id="end-line-removed"),
    pytest.param(lambda lines: lines[:-4], r"end line.*truncated|truncated.*end line", N - 3,
                 id="last-lines-removed"),
    pytest.param(lambda lines: lines[:-3] + lines[-1:], r"end line", N - 2,
                 id="events-removed-before-end-line"),
    pytest.param(lambda lines: lines[:-2] + [lines[-2][:40]], r"line 31\b", N - 1, id="cut-mid-line"),
])
def test_truncated_export_is_reported(originals: dict[str, Path], tmp_path: Path,
                                      cut: Callable[[list[str]], list[str]], expect: str,
                                      intact: int) -> None:
    lines = _load(originals["a_jsonl"])
    path = tmp_path / "a.jsonl"
    path.write_text("".join(cut(lines)))
    data = path.read_bytes()

    from_file, from_stdin, plain = _each(
        (("verify", str(path), "--json"), None),
        (("verify", "-", "--json"), data),
        (("verify", str(path)), None),
    )
    for label, result in (("verify FILE --json", from_file), ("verify - --json", from_stdin)):
        assert result.returncode == 3, f"{label}: exit {result.returncode}: {result.stderr.decode()}"
        report = json_data(result.stdout)
        assert report["ok"] is False
        assert re.search(expect, report["problem"]), f"{label}: {report['problem']}"
        # The complete events that are there were checked, and the report says how far it got.
        assert (report["events"], report["last_id"]) == (intact, intact), (
            f"{label}: reports {report['events']} events verified up to {report['last_id']},"
            f" but events 1-{intact} are intact")
    error = _assert_one_error_line(plain, "verify FILE")
    assert re.search(expect, error), error
