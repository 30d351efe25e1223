"""A mind file opened for reading or writing: the chain's head, appends, streaming reads and
the full-text index. The projections read from it are pmm.ledger.folded's.

Every write is one ``BEGIN IMMEDIATE`` transaction that reads the head, appends, updates the
full-text index and the projection cache (``folded.Folding``), and commits; nothing is reported
until COMMIT returns.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pmm import errors
from pmm.domain.canonical import canonical_json
from pmm.domain.checks import check_draft
from pmm.domain.events import Draft, Event
from pmm.domain.states import States
from pmm.ledger import connection as cx
from pmm.ledger import folded, fts, past, schema, session_table
from pmm.ledger.chain import GENESIS_PREV, RawRow, chain_prefix, event_hash

NAMES = ("id", "ts", "kind", "content", "meta", "prev_hash", "hash")
HEAD_TRIGGER = "events_extend_head"  # schema.GUARDS[0]: every insert must extend the head


def select_list(table: str = "") -> str:
    """The event columns for an ordinary read. A crafted file may store a BLOB (or a number)
    where pmm writes TEXT; verify refuses that (``raw_rows``), and every other read gets text
    all the same, so no command meets bytes where it expects a string."""
    p = f"{table}." if table else ""
    return ", ".join([f"{p}id"] + [f"CAST({p}{c} AS TEXT) AS {c}" for c in NAMES[1:]])


COLUMNS = select_list()
# The chain checker reads text as bytes, so a BLOB of the same bytes would pass for text: a
# value of another storage class than pmm writes comes back as NULL, which the checker refuses.
_RAW_COLUMNS = ", ".join(
    ["CASE WHEN typeof(id) = 'integer' THEN id END"]
    + [f"CASE WHEN typeof({c}) = 'text' THEN {c} END" for c in NAMES[1:]])
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
T = TypeVar("T")


def now_ts() -> str:
    """The ledger's timestamp: UTC, microseconds, fixed width (27 characters)."""
    return datetime.now(UTC).strftime(TS_FORMAT)


class Ledger:
    """An open mind file: the ledger. Use ``Ledger.open`` or ``Ledger.create``; close with ``close()``."""

    # COMMITs this process has begun (counted just before each one): a signal handler tells
    # from it whether the work it would interrupt is already writing itself (``pmm run``).
    commits_begun: ClassVar[int] = 0

    def __init__(self, path: Path, conn: sqlite3.Connection, meta: dict[str, str], writable: bool):
        self.path = path
        self.conn = conn
        self.mind_id = meta["mind_id"]
        self.ledger_format = int(meta["ledger_format"])
        self.schema_version = int(meta["schema_version"])
        self.writable = writable
        self.prefix = chain_prefix(self.ledger_format, self.mind_id)
        # Called with the open mind just before a writer closes (the services' witness uses it).
        self.on_close: Callable[[Ledger], None] | None = None
        self.on_commit: Callable[[Ledger], None] | None = None  # after each COMMIT (the witness)

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, write: bool = False,
             on_migrate: Callable[[int, int], None] | None = None) -> Ledger:
        """Open an existing mind. A writer refuses a schema that is not exactly pmm's (a planted
        trigger would run in its transactions) and migrates an older one (``on_migrate(from,
        to)`` first: it may take seconds); reads run no trigger, so ``pmm verify`` can report
        what differs and ``pmm export`` can rescue the events."""
        conn = cx.connect(path, write=write)
        try:
            meta = cx.writable_identity(conn, path) if write else cx.read_identity(conn, path)
            if write:
                cx.configure_writer(conn, path)
                if int(meta["schema_version"]) < schema.SCHEMA_VERSION:
                    if on_migrate is not None:
                        on_migrate(int(meta["schema_version"]), schema.SCHEMA_VERSION)
                    cx.migrate_file(conn, path)
                    meta = cx.read_identity(conn, path)
                with cx.translated(path):
                    sound = fts.config_sound(conn, int(meta["schema_version"]))
        except BaseException:
            conn.close()
            raise
        mind = cls(path, conn, meta, write)
        if write and not sound:  # a config FTS5 refuses would fail every write and search
            try:
                mind.repair_index()
            except BaseException:
                conn.close()
                raise
        return mind

    @classmethod
    def create(cls, path: Path, genesis: Draft | None, mind_id: str | None = None) -> Ledger:
        """Create a new mind at ``path`` (never overwriting) and open it for writing."""
        with cx.new_file(path) as (tmp, conn):
            with cx.translated(tmp):
                # A private temp file, fsynced whole before it is published: no fsync before that
                conn.execute("PRAGMA journal_mode=MEMORY")
                conn.execute("PRAGMA synchronous=OFF")
                conn.execute("BEGIN IMMEDIATE")
                cx.init_file(conn, mind_id or cx.new_mind_id())
                conn.execute("COMMIT")
            if genesis is not None:
                cls(tmp, conn, cx.read_identity(conn, tmp), True).append([genesis])
        return cls.open(path, write=True)

    def close(self) -> None:
        if self.writable:
            try:
                if self.on_close is not None:
                    self.on_close(self)
            finally:
                cx.close_writer(self.conn)
        else:
            self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """The last event's id and hash, or (0, GENESIS_PREV) for an empty mind."""
        with cx.translated(self.path):
            row = self.conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS_PREV)

    def count(self) -> int:
        with cx.translated(self.path):
            row = self.conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0])

    def first_id_from(self, event_id: int) -> int | None:
        """The lowest stored id at or after ``event_id`` (None when there is none)."""
        with cx.translated(self.path):
            row = self.conn.execute("SELECT min(id) FROM events WHERE id >= ?", (event_id,)).fetchone()
        return None if row[0] is None else int(row[0])

    def hash_at(self, event_id: int) -> str | None:
        with cx.translated(self.path):
            row = self.conn.execute("SELECT hash FROM events WHERE id = ?", (event_id,)).fetchone()
        return row[0] if row else None

    @contextlib.contextmanager
    def read_transaction(self) -> Iterator[None]:
        """Several reads in one snapshot: what a writer appends meanwhile is not seen."""
        with cx.translated(self.path):
            self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                with cx.translated(self.path):
                    self.conn.execute("COMMIT")

    def events(self, since: int = 1, kind: str | None = None, until: int | None = None) -> Iterator[Event]:
        """Stream events in id order from ``since`` (to ``until``, inclusive); nothing is
        loaded all at once."""
        sql = f"SELECT {COLUMNS} FROM events WHERE id >= ?"
        args: tuple[Any, ...] = (since,)
        if until is not None:
            sql += " AND id <= ?"
            args += (until,)
        if kind is not None:
            sql += " AND kind = ?"
            args += (kind,)
        yield from self._stream(sql + " ORDER BY id", args, Event._make)

    def rows(self, since: int = 1) -> Iterator[tuple[Any, ...]]:
        """Events as plain row tuples (cheaper than ``events()`` where speed matters)."""
        yield from self._stream(f"SELECT {COLUMNS} FROM events WHERE id >= ? ORDER BY id",
                                (since,), None)

    def raw_rows(self, since: int | None = None, before: int | None = None) -> Iterator[RawRow]:
        """Rows as bytes for the chain checker, in id order (duplicates and odd ids kept)."""
        cursor = self.conn.cursor()
        self.conn.text_factory = bytes
        low = since if since is not None else -(2**63)
        high = before if before is not None else 2**63 - 1
        try:
            with cx.translated(self.path):
                cursor.execute(f"SELECT {_RAW_COLUMNS} FROM events WHERE id >= ? AND id < ?"
                               " ORDER BY id", (low, high))
                while batch := cursor.fetchmany(4096):
                    yield from batch
        finally:
            self.conn.text_factory = str

    def tail(self, n: int, kind: str | None = None) -> list[Event]:
        sql = f"SELECT {COLUMNS} FROM events"
        args: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            args = (kind,)
        with cx.translated(self.path):
            rows = self.conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, n)).fetchall()
        return [Event._make(r) for r in reversed(rows)]

    def _stream(self, sql: str, args: tuple[Any, ...], make: Callable[[Any], Any] | None
                ) -> Iterator[Any]:
        cursor = self.conn.cursor()
        with cx.translated(self.path):
            cursor.execute(sql, args)
            while batch := cursor.fetchmany(4096):
                yield from (batch if make is None else map(make, batch))

    # -- the file's health ---------------------------------------------------------------------

    def schema_problems(self) -> list[str]:
        """What in the file's schema pmm did not make; empty when nothing."""
        with cx.translated(self.path):
            return schema.differences(self.conn, self.schema_version)

    def index_problem(self) -> str | None:
        """What FTS5 refuses in the search index's own files, or None (reads every entry)."""
        with cx.translated(self.path):
            return fts.problem(self.conn, self.schema_version)

    def quick_check(self) -> str:
        """SQLite's own structural check: "ok" or what it found."""
        try:
            return str(self.conn.execute("PRAGMA quick_check").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            return str(exc)

    def repair(self) -> None:
        """Rebuild the search index, the projection cache and the sessions table from the
        events, in one transaction."""
        with self.transaction():
            fts.reset(self.conn, self.schema_version)
            folded.rebuild(self)
            session_table.rebuild(self.conn, self.mind_id)

    def repair_index(self) -> None:
        """Reset and rebuild the search index from the events (in the open transaction, if any)."""
        if self.conn.in_transaction:
            with cx.translated(self.path):
                fts.reset(self.conn, self.schema_version)
            return
        with self.transaction():
            fts.reset(self.conn, self.schema_version)

    def full_text(self, run: Callable[[], T]) -> T:
        """``run`` (raw FTS5 queries); a damaged index is rebuilt by a writer, then ``run`` again,
        and refused by a reader (exit 3, with the repair hint)."""
        try:
            return run()
        except sqlite3.DatabaseError as exc:
            if not fts.is_damage(exc):
                raise cx.translate(exc, self.path) from None
            if not self.writable:
                raise fts.damaged_error(self.path) from None
        self.repair_index()
        with cx.translated(self.path):
            return run()

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error, translated to PmmError."""
        if not self.writable:
            raise errors.PmmError("internal: write on a read-only mind")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            yield
            Ledger.commits_begun += 1
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise cx.translate(exc, self.path) from None
            raise
        if self.on_commit is not None:
            self.on_commit(self)

    def append(self, drafts: Iterable[Draft] | Callable[[int], Iterable[Draft]]) -> list[Event]:
        """Append drafts as one transaction; returns the events once committed.

        ``drafts`` may be a function of the id the first new event will get, called inside the
        transaction, so that events of one batch can name each other (a response its message)."""
        if not callable(drafts):
            prepared = _prepare(drafts)
        with self.transaction():
            head_id, head_hash = self.head()
            if callable(drafts):
                prepared = _prepare(drafts(head_id + 1))
            folding = folded.Folding(self, head_id)
            keeping = session_table.Keeping(self.conn, self.mind_id, (head_id, head_hash))
            new: list[Event] = []
            prev = head_hash
            for kind, content, meta in prepared:
                event_id = head_id + len(new) + 1
                ts = now_ts()
                digest = event_hash(self.prefix, event_id, ts, kind, content, meta, prev)
                new.append(Event(event_id, ts, kind, content, meta, prev, digest))
                prev = digest
            self._insert(keeping.passing(folding.passing(new)))
            self._index_text(head_id)
            folding.seal()
            keeping.write((new[-1].id, new[-1].hash) if new else (head_id, head_hash))
        return new

    def _insert(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self.conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def _index_text(self, after_id: int) -> None:
        """Index the events after ``after_id``; an index that did not end there is rebuilt, and
        one FTS5 refuses (its shadow tables are outside the schema check) is reset and rebuilt."""
        self.conn.execute("SAVEPOINT pmm_fts")
        try:
            if not fts.config_sound(self.conn, self.schema_version):
                fts.reset(self.conn, self.schema_version)
            elif fts.covers(self.conn, after_id):
                fts.index_after(self.conn, after_id)
            else:
                fts.rebuild(self.conn)
        except sqlite3.DatabaseError as exc:
            if not fts.is_damage(exc):
                raise
            self.conn.execute("ROLLBACK TO pmm_fts")
            fts.reset(self.conn, self.schema_version)
        self.conn.execute("RELEASE pmm_fts")

    # -- imports -------------------------------------------------------------------------------

    def append_checked(self, events: Iterable[Event]) -> int:
        """Append events that carry their own ids and hashes, in one transaction.

        ``events`` must already be checked against this mind's chain (the caller's iterator
        raises to abort, and then nothing is written). Returns how many were appended.
        """
        with self.transaction():
            head_id, head_hash = self.head()
            folding = folded.Folding(self, head_id)
            keeping = session_table.Keeping(self.conn, self.mind_id, (head_id, head_hash))
            # The head trigger would look the head up again for every row: it is dropped for the
            # insert and made again before COMMIT (one transaction: a crash or a refusal rolls
            # both back), and its rule is held here, row by row, in memory.
            self.conn.execute(f"DROP TRIGGER {HEAD_TRIGGER}")
            self._insert(keeping.passing(folding.passing(_extending(events, head_id, head_hash))))
            self.conn.execute(schema.GUARDS[0])
            self._index_text(head_id)
            folding.seal()
            keeping.write(self.head())
        return folding.count

    def adopt_identity(self, mind_id: str) -> None:
        """Give a mind with no events another mind's id (an import into an empty mind)."""
        if self.count():
            raise errors.PmmError("internal: only an empty mind can take another mind's id")
        with self.transaction():
            self.conn.execute("UPDATE pmm_meta SET value = ? WHERE key = 'mind_id'", (mind_id,))
        self.mind_id = mind_id
        self.prefix = chain_prefix(self.ledger_format, mind_id)

    @classmethod
    def build(cls, path: Path, mind_id: str, events: Iterable[Event],
              folded_states: Callable[[], States | None] | None = None,
              folded_snaps: Callable[[], list[past.Snap]] | None = None) -> int:
        """Create a new mind at ``path`` from checked events: a temp file, published on success.

        ``folded_states``, when given, returns the projections folded over ``events`` once they
        are all read (the caller folded them as it checked them, in another process), and
        ``folded_snaps`` the states it passed at snapshot points (``pmm.ledger.past``); else
        they are folded here, as they are inserted.

        The temp file is private to this call, so it is written without a journal, and the
        indexes and the head trigger are made once at the end, in the same transaction (the
        events are checked links of one chain from event 1: what the trigger would hold for
        each row); it is fsynced before it appears under ``path``.
        """
        with cx.new_file(path) as (tmp, conn), cx.translated(tmp):
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA cache_size=-16384")  # 16 MiB: the insert appends, it needs few pages
            # Index builds sort in temp files (the page cache's, not this process's memory),
            # so memory stays flat at any size; and they may use a second core to do it.
            conn.execute("PRAGMA temp_store=FILE")
            conn.execute("PRAGMA threads=2")
            conn.execute("BEGIN")
            cx.init_file(conn, mind_id, with_indexes=False)
            conn.execute(f"DROP TRIGGER {HEAD_TRIGGER}")
            mind = cls(tmp, conn, cx.read_identity(conn, tmp), True)
            folding = folded.Folding(mind, 0) if folded_states is None else None
            keeping = session_table.Keeping(conn, mind_id, (0, GENESIS_PREV))
            rows = keeping.passing(_extending(events, 0, GENESIS_PREV))
            mind._insert(rows if folding is None else folding.passing(rows))
            for statement in (*schema.EVENTS_INDEXES, schema.GUARDS[0]):
                conn.execute(statement)
            mind._index_text(0)
            if folding is not None:
                folding.seal()
            else:
                states = folded_states() if folded_states is not None else None
                if states is None:
                    raise errors.PmmError("internal: the events were not all read")
                if past.first_merge(conn) is not None:  # the fold beside could not read back from a fork: again, here
                    folded.rebuild(mind)
                else:
                    folded.seal(mind, states, folded_snaps() if folded_snaps is not None else None)
            head = mind.head()
            keeping.write(head)
            count = head[0]
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode=DELETE")
        return count


def _extending(events: Iterable[Event], head_id: int, head_hash: str) -> Iterator[Event]:
    """``events``, each refused unless it extends the one before (the head trigger's rule)."""
    last_id, last_hash = head_id, head_hash
    for event in events:
        if event.id != last_id + 1 or event.prev_hash != last_hash:
            raise errors.PmmError("internal: pmm events are append-only: a new event must"
                                  f" extend the head (event {event.id} does not)")
        last_id, last_hash = event.id, event.hash
        yield event


def _prepare(drafts: Iterable[Draft]) -> list[tuple[str, str, str]]:
    """Check each draft against its kind and canonicalise its meta once, before any write."""
    prepared = []
    for draft in drafts:
        try:
            check_draft(draft)
            prepared.append((draft.kind, draft.content, canonical_json(draft.meta)))
        except ValueError as exc:
            raise errors.PmmError(f"internal: refusing to write a malformed event: {exc}") from None
    return prepared
