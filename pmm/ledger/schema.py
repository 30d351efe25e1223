"""The mind file's SQLite schema and its migrations.

``SCHEMA_VERSION`` is the layout of the file (tables, indexes, triggers); it moves forward
through ``MIGRATIONS``, named steps applied in one transaction with their record. The ledger
format version that enters every event hash (``pmm.ledger.chain.FORMAT_VERSION``) is separate
and never changes for stored events.

Each applied migration is recorded in ``pmm_meta`` (``migration:NAME``: when, by which pmm), in
the transaction that applies it. The file's ``schema_version`` alone decides which migrations
run, and their SQL is always pmm's own: a record is history, checked against ``KNOWN`` before
any write (a file from someone else can hold anything there), never a reason to run or skip.

A file's ``sqlite_master`` must be exactly what ``create`` and ``migrate`` make for its version:
a trigger, view, table or index that pmm did not create would run (or be read) inside pmm's own
transactions, so ``check`` refuses any difference by name. The one exception is SQLite's own
``sqlite_stat1``-``sqlite_stat4`` (made by ``ANALYZE`` or ``PRAGMA optimize``, as a DB browser may
run): planner statistics run no code, so they are ignored.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from pmm import errors
from pmm.domain.shapes import is_ts
from pmm.ledger import fts, session_table

APPLICATION_ID = 0x504D4D31  # "PMM1": lets `file` and pmm tell a mind from other SQLite files

EVENTS_TABLE = """
CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    ts        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    content   TEXT NOT NULL,
    meta      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
)
"""

# Kept apart from the table so a bulk import into a new file can build them once, at the end.
BASE_INDEXES = (
    "CREATE UNIQUE INDEX events_prev_hash ON events(prev_hash)",
    "CREATE INDEX events_kind ON events(kind)",
    "CREATE INDEX events_ts ON events(ts)",
)

# Chat events by their session (schema 5), so `pmm trace` finds a session's start and answers,
# and a message's answer (in the message's session), in a lookup, not a scan of every meta. The
# key is ``meta.session``, or an imported conversation's ``meta.source_id`` on its
# ``session_started``. Partial: only the kinds trace looks up, and only a meta that is JSON (a
# hostile file's malformed meta would otherwise make json_extract fail the migration). One
# index, so building it costs one pass over the events (about a second per million). A query
# uses it by repeating its expression and its WHERE terms exactly (pmm.ledger.lookup does).
SESSION = "coalesce(json_extract(meta, '$.session'), json_extract(meta, '$.source_id'))"
SESSION_EVENTS = "kind IN ('response_sent', 'session_started') AND json_valid(meta)"
LINK_INDEXES = (f"CREATE INDEX events_session ON events({SESSION}) WHERE {SESSION_EVENTS}",)
EVENTS_INDEXES = (*BASE_INDEXES, *LINK_INDEXES)  # what a bulk build makes after its insert
EVENTS_INDEX_NAMES = tuple(statement.split(" ON ")[0].split()[-1] for statement in EVENTS_INDEXES)

GUARDS = (
    # Every insert must extend the head: the next id, linked to the head's hash. This also
    # refuses INSERT OR REPLACE over an existing event, which fires no DELETE trigger.
    """CREATE TRIGGER events_extend_head BEFORE INSERT ON events
       WHEN NEW.id IS NOT coalesce((SELECT max(id) FROM events), 0) + 1
         OR NEW.prev_hash IS NOT coalesce((SELECT hash FROM events WHERE id = NEW.id - 1),
                                          '0000000000000000000000000000000000000000000000000000000000000000')
       BEGIN SELECT RAISE(ABORT, 'pmm events are append-only: a new event must extend the head'); END""",
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, 'pmm events are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'pmm events are append-only: DELETE refused'); END""",
)

V1 = (
    "CREATE TABLE pmm_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    EVENTS_TABLE,
    *GUARDS,
    # External-content FTS5 over events.content; filled by the ledger in the appending transaction.
    fts.TABLE_V1,
    """CREATE TABLE projection_cache (
        name      TEXT PRIMARY KEY,
        version   TEXT NOT NULL,
        last_id   INTEGER NOT NULL,
        last_hash TEXT NOT NULL,
        state     TEXT NOT NULL
    )""",
)

# pmm.ledger.vectors' table: one embedding per recent event, derived, never hashed.
VECTORS_TABLE = "CREATE TABLE event_vectors (id INTEGER PRIMARY KEY, vec BLOB NOT NULL)"

# One row per event whose content was forgotten: the content digest its format-2 hash commits to.
FORGOTTEN_TABLE = "CREATE TABLE forgotten (id INTEGER PRIMARY KEY, content_digest TEXT NOT NULL)"
FORGOTTEN_FROM = 6  # the schema version that has the table

# A migration step: a statement, or a function of the connection for what SQL alone cannot say.
Step = str | Callable[[sqlite3.Connection], None]


class Migration(NamedTuple):
    """One named step of the layout: it brings a file from schema ``number - 1`` to ``number``.
    Events are never touched by one: every hash is kept."""

    number: int
    name: str
    steps: tuple[Step, ...]


INITIAL = "0001_initial"  # the version-1 layout ``create`` makes (``V1``), recorded like the rest

MIGRATIONS: tuple[Migration, ...] = (
    # The projection cache carries a keyed MAC (pmm.ledger.seal); a v1 cache has none, so it is
    # untrusted until the next write rebuilds it.
    Migration(2, "0002_cache_mac", ("ALTER TABLE projection_cache ADD COLUMN mac TEXT NOT NULL DEFAULT ''",)),
    # The search index stems and folds diacritics; FTS5 cannot change a table's tokenizer, so
    # the index is made again and filled from the events (about 7 s per million events).
    Migration(3, "0003_fts_porter", (lambda conn: fts.retokenize(conn, 2, 3),)),
    # Recall vectors (pmm.ledger.vectors): derived like the search index and made as recall
    # needs them, so the migration only makes the empty table.
    Migration(4, "0004_event_vectors", (VECTORS_TABLE,)),
    # Chat events indexed by session (LINK_INDEXES): trace looks them up instead of scanning.
    Migration(5, "0005_link_indexes", (lambda conn: _link_indexes(conn),)),
    # Tombstones of forgotten content (ledger format 2, ``pmm forget``): the digest that stands
    # for an event's removed content in its hash. Empty until something is forgotten.
    Migration(6, "0006_forgotten", (FORGOTTEN_TABLE,)),
    # One row a session (pmm.ledger.session_table), kept by every append, so listing the newest
    # sessions reads a few rows; filled from the events (about 5 s per million).
    Migration(7, "0007_session_summary", (session_table.TABLE, session_table.INDEX,
                                          lambda conn: session_table.backfill(conn))),
)
SCHEMA_VERSION = MIGRATIONS[-1].number
KNOWN = {INITIAL: 1, **{m.name: m.number for m in MIGRATIONS}}  # every name pmm records, and its number


def _link_indexes(conn: sqlite3.Connection) -> None:
    """Make ``LINK_INDEXES``, except in a file being bulk-built (``create`` without indexes,
    as ``Ledger.build`` does): it makes every one of ``EVENTS_INDEXES`` after its insert."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'events_kind'"
                    ).fetchone() is None:
        return
    for statement in LINK_INDEXES:
        conn.execute(statement)


def migration(number: int) -> Migration:
    """The migration that brings a file to schema ``number`` (2 to ``SCHEMA_VERSION``)."""
    return MIGRATIONS[number - 2]


SchemaEntry = tuple[str, str, str, str | None]  # type, name, tbl_name, sql
ALTERED_HINT = ("pmm will not write to it; to keep its events, `pmm export` it and `pmm import`"
                " the export into a new mind (import checks every event)")


def create(conn: sqlite3.Connection, *, with_indexes: bool = True) -> None:
    """Create the version-1 layout (inside the caller's transaction), then migrate to current."""
    for statement in V1:
        conn.execute(statement)
    if with_indexes:
        for statement in BASE_INDEXES:
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    set_schema_version(conn, 1)
    record(conn, INITIAL)
    migrate(conn, 1)


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Apply every migration after ``version`` up to ``SCHEMA_VERSION``, each recorded as it is
    applied (the caller holds the transaction: a crash leaves the file whole at ``version``).
    Which migrations run is decided by ``version`` alone, never by the file's records."""
    for step in MIGRATIONS[max(version - 1, 0):]:
        _run(conn, step.steps)
        set_schema_version(conn, step.number)
        record(conn, step.name)


def _run(conn: sqlite3.Connection, steps: tuple[Step, ...]) -> None:
    for step in steps:
        if isinstance(step, str):
            conn.execute(step)
        else:
            step(conn)


def set_schema_version(conn: sqlite3.Connection, version: int) -> None:
    conn.execute(
        "INSERT INTO pmm_meta(key, value) VALUES ('schema_version', ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (str(version),),
    )


RECORD_PREFIX = "migration:"  # pmm_meta key of a migration's record: the prefix, then its name
_RECORD_FIELDS = frozenset({"applied_at", "pmm_version"})


def record(conn: sqlite3.Connection, name: str) -> None:
    """Note in ``pmm_meta`` that migration ``name`` was applied now, by this pmm (inside the
    migration's transaction). The record is history only: nothing ever runs or skips by it."""
    from pmm import __version__

    applied = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    value = json.dumps({"applied_at": applied, "pmm_version": __version__}, sort_keys=True,
                       separators=(",", ":"))
    conn.execute(
        "INSERT INTO pmm_meta(key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (RECORD_PREFIX + name, value),
    )


def history(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The migrations recorded in the file as (name, applied_at, pmm_version), oldest first.
    A file made before pmm recorded them holds none for the steps it took then."""
    found = []
    for name, value in _records(conn):
        fields = _record_fields(value)
        if name in KNOWN and fields is not None:
            found.append((name, *fields))
    return sorted(found, key=lambda entry: KNOWN[entry[0]])


def record_problems(conn: sqlite3.Connection, version: int) -> list[str]:
    """Records that are not history pmm could have written for a file at ``version``: a name
    it does not know, a migration past the file's version, or a value it does not write."""
    found = []
    for name, value in _records(conn):
        shown = errors.quoted(RECORD_PREFIX + name, 60)
        if name not in KNOWN:
            found.append(f"a migration record {shown} that pmm does not write")
        elif KNOWN[name] > version:
            found.append(f"a migration record {shown} past the file's schema version {version}")
        elif _record_fields(value) is None:
            found.append(f"a migration record {shown} whose value is not one pmm writes")
    return found


def _records(conn: sqlite3.Connection) -> list[tuple[str, object]]:
    rows = conn.execute("SELECT key, value FROM pmm_meta WHERE key GLOB ?", (RECORD_PREFIX + "*",))
    return [(key[len(RECORD_PREFIX):], value) for key, value in rows if isinstance(key, str)]


def _record_fields(value: object) -> tuple[str, str] | None:
    """``(applied_at, pmm_version)`` from a record's value, or ``None`` if pmm did not write it."""
    try:
        parsed = json.loads(value) if isinstance(value, str) and len(value) <= 200 else None
    except ValueError:
        return None
    if not (isinstance(parsed, dict) and parsed.keys() == _RECORD_FIELDS):
        return None
    applied, by = parsed["applied_at"], parsed["pmm_version"]
    if not (type(applied) is str and is_ts(applied) and type(by) is str and by.isascii()
            and by.isprintable() and 0 < len(by) <= 40):
        return None
    return applied, by


def valid_version(text: str) -> int | None:
    """``text`` as a schema or ledger format version: a plain positive integer, else ``None``."""
    if not (text.isascii() and text.isdigit()) or text.startswith("0"):
        return None
    return int(text)


@functools.cache
def expected(version: int) -> frozenset[SchemaEntry]:
    """Every ``sqlite_master`` row pmm makes for a file at ``version``, built the same way a real
    file is (so SQLite's own text for the FTS5 shadow tables and autoindexes is included)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for statement in V1:
            conn.execute(statement)
        for statement in BASE_INDEXES:
            conn.execute(statement)
        for step in MIGRATIONS[:max(version - 1, 0)]:
            _run(conn, step.steps)
        return frozenset(_entries(conn))
    finally:
        conn.close()


def _entries(conn: sqlite3.Connection) -> list[SchemaEntry]:
    return [tuple(row) for row in conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master")]


def differences(conn: sqlite3.Connection, version: int) -> list[str]:
    """What in ``conn``'s schema is not what pmm makes at ``version``, one phrase per object,
    then each migration record pmm would not have written (``record_problems``). Names are the
    file's own text: shown by repr, so no control character reaches a terminal."""
    want = {(entry[0], entry[1]): entry for entry in expected(version)}
    have = [entry for entry in _entries(conn) if not _statistics(entry)]
    found = []
    for entry in sorted(have, key=lambda e: (e[1], e[0])):
        kind, name = entry[0], errors.quoted(entry[1], 60)
        if (entry[0], entry[1]) not in want:
            found.append(f"a {kind} {name} that pmm does not create")
        elif entry != want[entry[0], entry[1]]:
            found.append(f"{kind} {name} differs from the one pmm creates")
    missing = set(want) - {(entry[0], entry[1]) for entry in have}
    found += [f"{kind} {errors.quoted(name, 60)} is missing" for kind, name in sorted(missing)]
    return found + record_problems(conn, version)


def _statistics(entry: SchemaEntry) -> bool:
    """SQLite's planner statistics (``ANALYZE``): rows it reads to pick indexes, never code."""
    return entry[0] == "table" and entry[1] in STAT_TABLES


STAT_TABLES = frozenset(f"sqlite_stat{n}" for n in range(1, 5))


def check(conn: sqlite3.Connection, version: int, path: Path) -> None:
    """Refuse (exit 3) a file whose schema is not exactly pmm's for ``version``, or whose
    migration records are not ones pmm writes (``differences``)."""
    found = differences(conn, version)
    if found:
        more = f" (and {len(found) - 1} more difference{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""
        raise errors.IntegrityError(
            f"{path} has been altered outside pmm: {found[0]}{more}; refusing to write to it",
            hint=ALTERED_HINT,
        )
