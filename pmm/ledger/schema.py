"""The mind file's SQLite schema and its migrations.

``SCHEMA_VERSION`` is the layout of the file (tables, indexes, triggers); it can move forward
through ``MIGRATIONS``, each applied in one transaction. The ledger format version that enters
every event hash (``pmm.ledger.chain.FORMAT_VERSION``) is separate and never changes for stored
events.

A file's ``sqlite_master`` must be exactly what ``create`` and ``migrate`` make for its version:
a trigger, view, table or index that pmm did not create would run (or be read) inside pmm's own
transactions, so ``check`` refuses any difference by name. The one exception is SQLite's own
``sqlite_stat1``-``sqlite_stat4`` (made by ``ANALYZE`` or ``PRAGMA optimize``, as a DB browser may
run): planner statistics run no code, so they are ignored.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path

from pmm import errors
from pmm.ledger import fts

APPLICATION_ID = 0x504D4D31  # "PMM1": lets `file` and pmm tell a mind from other SQLite files
SCHEMA_VERSION = 4

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
EVENTS_INDEXES = (
    "CREATE UNIQUE INDEX events_prev_hash ON events(prev_hash)",
    "CREATE INDEX events_kind ON events(kind)",
    "CREATE INDEX events_ts ON events(ts)",
)

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

# A migration step: a statement, or a function of the connection for what SQL alone cannot say.
Step = str | Callable[[sqlite3.Connection], None]

# MIGRATIONS[n] brings a file from schema version n to n + 1. Events are never touched by one:
# every hash is kept.
MIGRATIONS: dict[int, tuple[Step, ...]] = {
    # The projection cache carries a keyed MAC (pmm.ledger.seal); a v1 cache has none, so it is
    # untrusted until the next write rebuilds it.
    1: ("ALTER TABLE projection_cache ADD COLUMN mac TEXT NOT NULL DEFAULT ''",),
    # The search index stems and folds diacritics; FTS5 cannot change a table's tokenizer, so
    # the index is made again and filled from the events (about 7 s per million events).
    2: (lambda conn: fts.retokenize(conn, 2, 3),),
    # Recall vectors (pmm.ledger.vectors): derived like the search index and made as recall
    # needs them, so the migration only makes the empty table.
    3: (VECTORS_TABLE,),
}

SchemaEntry = tuple[str, str, str, str | None]  # type, name, tbl_name, sql
ALTERED_HINT = ("pmm will not write to it; to keep its events, `pmm export` it and `pmm import`"
                " the export into a new mind (import checks every event)")


def create(conn: sqlite3.Connection, *, with_indexes: bool = True) -> None:
    """Create the version-1 layout (inside the caller's transaction), then migrate to current."""
    for statement in V1:
        conn.execute(statement)
    if with_indexes:
        for statement in EVENTS_INDEXES:
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    set_schema_version(conn, 1)
    migrate(conn, 1)


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Apply every migration from ``version`` to ``SCHEMA_VERSION`` (caller holds the txn)."""
    while version < SCHEMA_VERSION:
        _run(conn, MIGRATIONS[version])
        version += 1
        set_schema_version(conn, version)


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
        for statement in EVENTS_INDEXES:
            conn.execute(statement)
        for step in range(1, version):
            _run(conn, MIGRATIONS[step])
        return frozenset(_entries(conn))
    finally:
        conn.close()


def _entries(conn: sqlite3.Connection) -> list[SchemaEntry]:
    return [tuple(row) for row in conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master")]


def differences(conn: sqlite3.Connection, version: int) -> list[str]:
    """What in ``conn``'s schema is not what pmm makes at ``version``, one phrase per object
    (names are the file's own text: shown by repr, so no control character reaches a terminal)."""
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
    return found


def _statistics(entry: SchemaEntry) -> bool:
    """SQLite's planner statistics (``ANALYZE``): rows it reads to pick indexes, never code."""
    return entry[0] == "table" and entry[1] in STAT_TABLES


STAT_TABLES = frozenset(f"sqlite_stat{n}" for n in range(1, 5))


def check(conn: sqlite3.Connection, version: int, path: Path) -> None:
    """Refuse (exit 3) a file whose schema is not exactly pmm's for ``version``."""
    found = differences(conn, version)
    if found:
        more = f" (and {len(found) - 1} more difference{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""
        raise errors.IntegrityError(
            f"{path} has been altered outside pmm: {found[0]}{more}; refusing to write to it",
            hint=ALTERED_HINT,
        )
