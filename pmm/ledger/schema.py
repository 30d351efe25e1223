"""The mind file's SQLite schema and its migrations.

``SCHEMA_VERSION`` is the layout of the file (tables, indexes); it can move forward through
``MIGRATIONS``, each applied in one transaction. The ledger format version that enters every
event hash (``pmm.ledger.chain.FORMAT_VERSION``) is separate and never changes for stored events.
"""

from __future__ import annotations

import sqlite3

APPLICATION_ID = 0x504D4D31  # "PMM1": lets `file` and pmm tell a mind from other SQLite files
SCHEMA_VERSION = 1

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
    "CREATE VIRTUAL TABLE events_fts USING fts5(content, content='events', content_rowid='id')",
    """CREATE TABLE projection_cache (
        name      TEXT PRIMARY KEY,
        version   TEXT NOT NULL,
        last_id   INTEGER NOT NULL,
        last_hash TEXT NOT NULL,
        state     TEXT NOT NULL
    )""",
)

# MIGRATIONS[n] brings a file from schema version n to n + 1.
MIGRATIONS: dict[int, tuple[str, ...]] = {}


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
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
        version += 1
        set_schema_version(conn, version)


def set_schema_version(conn: sqlite3.Connection, version: int) -> None:
    conn.execute(
        "INSERT INTO pmm_meta(key, value) VALUES ('schema_version', ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (str(version),),
    )
