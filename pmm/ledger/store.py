"""A mind file opened for reading or writing: the chain's head, appends, streaming reads and
the full-text index. The projections read from it are pmm.ledger.folded's.

Every write is one ``BEGIN IMMEDIATE`` transaction that reads the head, appends, updates the
full-text index and the projection cache (``folded.Folding``), and commits; nothing is reported
until COMMIT returns.

What only a write runs (the projection cache, the --as-of snapshots, the draft checks) is
imported by the methods that write: a read command (``pmm log``, ``pmm verify``) loads none of
the projections.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pmm import errors
from pmm.domain.events import LEDGER_ONLY, Draft, Event
from pmm.ledger import connection as cx
from pmm.ledger import fts, schema, session_table
from pmm.ledger.chain import (
    FORMAT_VERSION,
    GENESIS_PREV,
    ChainState,
    RawRow,
    chain_prefix,
    check_chain,
    content_digest,
    event_hash,
)

if TYPE_CHECKING:
    from pmm.domain.states import States
    from pmm.ledger import past

NAMES = ("id", "ts", "kind", "content", "meta", "prev_hash", "hash")
HEAD_TRIGGER = "events_extend_head"  # schema.GUARDS[0]: every insert must extend the head
UPDATE_TRIGGER = "events_no_update"  # schema.GUARDS[1]: no event is ever changed (but forgotten)
DEFER_INDEXES_FROM = 10_000  # events an import adds before its indexes are built after it


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
# Format 2 adds each row's tombstone (a forgotten event's content digest; NULL, then None, for
# the rest): one lookup in a table that holds only the forgotten events. A tombstone that is
# not text comes back as a BLOB the checker refuses.
_RAW_COLUMNS_2 = ", ".join(
    ["CASE WHEN typeof(e.id) = 'integer' THEN e.id END"]
    + [f"CASE WHEN typeof(e.{c}) = 'text' THEN e.{c} END" for c in NAMES[1:]]
    + ["CASE WHEN f.id IS NULL THEN NULL WHEN typeof(f.content_digest) = 'text'"
       " THEN f.content_digest ELSE x'00' END"])
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
        if self.tombstones:
            sql = (f"SELECT {_RAW_COLUMNS_2} FROM events e LEFT JOIN forgotten f ON f.id = e.id"
                   " WHERE e.id >= ? AND e.id < ? ORDER BY e.id")
        else:
            sql = f"SELECT {_RAW_COLUMNS} FROM events WHERE id >= ? AND id < ? ORDER BY id"
        try:
            with cx.translated(self.path):
                cursor.execute(sql, (low, high))
                while batch := cursor.fetchmany(4096):
                    yield from batch
        finally:
            self.conn.text_factory = str

    @property
    def tombstones(self) -> bool:
        """Whether events of this mind can be forgotten: format 2, with the tombstone table."""
        return self.ledger_format >= 2 and self.schema_version >= schema.FORGOTTEN_FROM

    def forgotten(self) -> dict[int, str]:
        """The content digest of every forgotten event, by id (few: read whole)."""
        if not self.tombstones:
            return {}
        with cx.translated(self.path):
            return {int(i): str(d) for i, d in self.conn.execute(
                "SELECT id, CAST(content_digest AS TEXT) FROM forgotten ORDER BY id")}

    def event(self, event_id: int) -> Event | None:
        """The event with id ``event_id``, or None."""
        with cx.translated(self.path):
            row = self.conn.execute(f"SELECT {COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else Event._make(row)

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
        from pmm.ledger import folded

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
        from pmm.ledger import folded

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

    # -- forgetting ----------------------------------------------------------------------------

    def forget(self, event_id: int, draft: Callable[[Event, str], Draft]) -> tuple[Event, Event]:
        """Remove event ``event_id``'s content and append the event ``draft(target, digest)``
        makes (its ``content_forgotten``), in one transaction; returns (target as it was, new).

        The content's digest stays as the event's tombstone (``forgotten``), so its format-2
        hash, and every hash and signature after it, still verify. The content leaves the
        events table, the search index (its segments merged, so no old entry survives), the
        recall vectors and the projection cache (every row: any may hold the text; the next
        write rebuilds it); the write runs with ``secure_delete`` (freed bytes are zeroed).
        The caller then empties the WAL (``truncate_wal``), where older pages may remain."""
        from pmm.ledger import folded

        if not self.tombstones:
            raise errors.PmmError("internal: only a format-2 mind can forget")
        with cx.translated(self.path):
            self.conn.execute("PRAGMA secure_delete=ON")
        with self.transaction():
            head_id, head_hash = self.head()
            target = self.event(event_id)
            if target is None:
                raise errors.UsageError(f"there is no event #{event_id}",
                                        hint=f"this mind's events are #1-#{head_id}; see pmm log")
            digest = content_digest(target.content.encode())
            ((kind, content, meta),) = _prepare([draft(target, digest)], ledger_only=True)
            self.scrub({event_id: digest})
            ts = now_ts()
            new = Event(head_id + 1, ts, kind, content, meta, head_hash,
                        event_hash(self.prefix, head_id + 1, ts, kind, content, meta, head_hash))
            self._insert([new])
            self._index_text(head_id)
        folded.forget()  # this process's folds may hold the text too
        return target, new

    def scrub(self, tombstones: dict[int, str]) -> None:
        """Replace each event's content by nothing and record its digest as its tombstone
        (inside the caller's transaction, which must run with ``secure_delete``). The
        no-update guard is dropped for the one statement and made again before COMMIT, as
        ``append_checked`` does with the head trigger: a crash or a refusal rolls both back."""
        if not tombstones:
            return
        ids = sorted(tombstones)
        damaged = False
        self.conn.execute("SAVEPOINT pmm_forget_fts")
        try:
            for event_id in ids:
                if self.conn.execute("SELECT 1 FROM events_fts_docsize WHERE id = ?",
                                     (event_id,)).fetchone() is None:
                    continue  # not indexed (an index behind the events): nothing to take out
                old = self.conn.execute("SELECT content FROM events WHERE id = ?", (event_id,)).fetchone()
                self.conn.execute("INSERT INTO events_fts(events_fts, rowid, content)"
                                  " VALUES ('delete', ?, ?)", (event_id, old[0]))
                self.conn.execute("INSERT INTO events_fts(rowid, content) VALUES (?, '')", (event_id,))
            # FTS5 (before SQLite 3.42's secure-delete) only marks an entry deleted: merging
            # every segment into one is what drops the old entry from the file.
            fts.optimize(self.conn)
        except sqlite3.DatabaseError as exc:
            if not fts.is_damage(exc):
                raise
            self.conn.execute("ROLLBACK TO pmm_forget_fts")
            damaged = True
        self.conn.execute("RELEASE pmm_forget_fts")
        self.conn.execute(f"DROP TRIGGER {UPDATE_TRIGGER}")
        self.conn.executemany("UPDATE events SET content = '' WHERE id = ?", [(i,) for i in ids])
        self.conn.execute(schema.GUARDS[1])
        self.conn.executemany("INSERT OR REPLACE INTO forgotten(id, content_digest) VALUES (?, ?)",
                              [(i, tombstones[i]) for i in ids])
        self.conn.executemany("DELETE FROM event_vectors WHERE id = ?", [(i,) for i in ids])
        self.conn.execute("DELETE FROM projection_cache")
        if damaged:  # made again from the events, whose content is gone now
            fts.reset(self.conn, self.schema_version)

    def truncate_wal(self) -> bool:
        """Copy the WAL into the file and cut it to nothing (old pages leave with it); False
        when another connection holds it open (its last writer empties it on closing)."""
        with cx.translated(self.path):
            # a reader mid-transaction would hold the checkpoint for the whole lock timeout:
            # wait a little, then leave the WAL to the last writer's close
            timeout = self.conn.execute("PRAGMA busy_timeout").fetchone()[0]
            self.conn.execute("PRAGMA busy_timeout=1000")
            try:
                row = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                self.conn.execute(f"PRAGMA busy_timeout={int(timeout)}")
        return row is None or row[0] == 0

    # -- upgrading the ledger format -----------------------------------------------------------

    def upgrade_format(self, draft: Callable[[int, str], Draft]) -> Event | None:
        """Rewrite a format-1 chain as format 2 in place, in one transaction: every event keeps
        its id, ts, kind, content and meta, and is linked and hashed again; the format-1 chain
        is checked as it is read (a broken one is refused, nothing written). Then the event
        ``draft(format1_events, format1_head)`` makes is appended. None: format 2 already.

        In place rather than a new file: SQLite's lock keeps other writers out, a crash rolls
        it all back, and no copy of the old file (which may hold what its owner means to
        forget) is left beside it. The projection cache is dropped (it names the old hashes)."""
        from pmm.ledger import folded

        if self.ledger_format >= 2:
            return None
        old_prefix, new_prefix = self.prefix, chain_prefix(2, self.mind_id)
        with self.transaction():
            if int(self.conn.execute("SELECT value FROM pmm_meta WHERE key = 'ledger_format'"
                                     ).fetchone()[0]) >= 2:
                return None  # another process upgraded it meanwhile
            problem = check_chain(old_prefix, self.raw_rows(), ChainState()).problem
            if problem is not None:
                raise errors.IntegrityError(f"{self.path} fails verification, so it is not"
                                            f" upgraded: {problem}", hint="see pmm verify")
            head_id, old_head = self.head()
            self.conn.execute(f"DROP TRIGGER {UPDATE_TRIGGER}")
            # In batches (memory stays flat); a new prev_hash never equals an old one that the
            # UNIQUE index holds, as SHA-256 does not repeat in practice.
            prev, last = GENESIS_PREV, 0
            while rows := self.conn.execute(f"SELECT {COLUMNS} FROM events WHERE id > ?"
                                            " ORDER BY id LIMIT 8192", (last,)).fetchall():
                updates = []
                for event_id, ts, kind, content, meta, _prev, _hash in rows:
                    digest = event_hash(new_prefix, event_id, ts, kind, content, meta, prev)
                    updates.append((prev, digest, event_id))
                    prev, last = digest, event_id
                self.conn.executemany("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", updates)
            self.conn.execute(schema.GUARDS[1])
            self.conn.execute("UPDATE pmm_meta SET value = '2' WHERE key = 'ledger_format'")
            self.conn.execute("DELETE FROM projection_cache")
            self.ledger_format, self.prefix = 2, new_prefix
            ((kind, content, meta),) = _prepare([draft(head_id, old_head)], ledger_only=True)
            ts = now_ts()
            new = Event(head_id + 1, ts, kind, content, meta, prev,
                        event_hash(new_prefix, head_id + 1, ts, kind, content, meta, prev))
            self._insert([new])
            self._index_text(head_id)
        folded.forget()
        self.truncate_wal()
        return new

    def format1_hash_at(self, size: int) -> str | None:
        """The hash event ``size`` had in this mind's format-1 chain (before ``upgrade_format``),
        recomputed from the stored events; None when one of them is forgotten (a format-1 hash
        covers the content itself)."""
        prefix, prev = chain_prefix(1, self.mind_id), GENESIS_PREV
        forgotten = self.forgotten()
        if any(event_id <= size for event_id in forgotten):
            return None
        for event in self.events():
            if event.id > size:
                break
            prev = event_hash(prefix, event.id, event.ts, event.kind, event.content,
                              event.meta_json, prev)
        return prev

    # -- imports -------------------------------------------------------------------------------

    def append_checked(self, events: Iterable[Event], tombstones: dict[int, str] | None = None, *,
                       expected: int = 0) -> int:
        """Append events that carry their own ids and hashes, in one transaction.

        ``events`` must already be checked against this mind's chain (the caller's iterator
        raises to abort, and then nothing is written). ``tombstones`` holds the digests of
        the forgotten ones among them (read by then). A ``content_forgotten`` among them that
        forgets an event this mind still holds the content of removes it here too. Returns
        how many were appended. ``expected``, how many the caller counted, decides whether the
        indexes are made again after the insert (``DEFER_INDEXES_FROM``) rather than kept up
        row by row.
        """
        from pmm.ledger import folded

        with self.transaction():
            head_id, head_hash = self.head()
            folding = folded.Folding(self, head_id)
            keeping = session_table.Keeping(self.conn, self.mind_id, (head_id, head_hash))
            # The head trigger would look the head up again for every row: it is dropped for the
            # insert and made again before COMMIT (one transaction: a crash or a refusal rolls
            # both back), and its rule is held here, row by row, in memory.
            self.conn.execute(f"DROP TRIGGER {HEAD_TRIGGER}")
            # Into a mind smaller than the import, the indexes too: a sort once after the insert
            # costs a fraction of a random B-tree insert per row (the same transaction again).
            defer = expected >= max(head_id, DEFER_INDEXES_FROM)
            if defer:
                for name in schema.EVENTS_INDEX_NAMES:
                    self.conn.execute(f"DROP INDEX {name}")
            self._insert(keeping.passing(folding.passing(_extending(events, head_id, head_hash))))
            if defer:
                for statement in schema.EVENTS_INDEXES:
                    self.conn.execute(statement)
            self.conn.execute(schema.GUARDS[0])
            scrubbed = False
            if self.tombstones:
                self._insert_tombstones({i: d for i, d in (tombstones or {}).items() if i > head_id})
                scrubbed = self._forget_recorded(head_id)
            self._index_text(head_id)
            if not scrubbed:  # else the folds saw the content: the next write rebuilds the cache
                folding.seal()
            keeping.write(self.head())
        if scrubbed:
            folded.forget()
            self.truncate_wal()
        return folding.count

    def _insert_tombstones(self, tombstones: dict[int, str]) -> None:
        self.conn.executemany("INSERT INTO forgotten(id, content_digest) VALUES (?, ?)",
                              sorted(tombstones.items()))

    def _forget_recorded(self, head_id: int) -> bool:
        """Forget here what the ``content_forgotten`` events after ``head_id`` forgot among the
        events up to it (an import of another copy's forgetting); True if anything was. Each
        recorded digest must be the stored content's: anything else is refused."""
        import json

        wanted: dict[int, str] = {}
        for record_id, meta in self.conn.execute(
                "SELECT id, meta FROM events WHERE kind = 'content_forgotten' AND id > ?", (head_id,)):
            parsed = json.loads(meta)
            if parsed["event"] <= head_id:
                wanted[parsed["event"]] = parsed["content_digest"]
                wanted_by = record_id
        have = self.forgotten()
        todo = {i: d for i, d in wanted.items() if i not in have}
        for event_id, digest in todo.items():
            row = self.conn.execute("SELECT content FROM events WHERE id = ?", (event_id,)).fetchone()
            if row is None or content_digest(str(row[0]).encode()) != digest:
                raise errors.InputRejected(
                    f"event {wanted_by} forgets event {event_id} with a digest that is not its"
                    " content's: the two copies disagree about it")
        self.scrub(todo)
        return bool(todo)

    def adopt_identity(self, mind_id: str, ledger_format: int | None = None) -> None:
        """Give a mind with no events another mind's id, and its ledger format (an import into
        an empty mind: the export's hashes are of that format)."""
        if self.count():
            raise errors.PmmError("internal: only an empty mind can take another mind's id")
        fmt = self.ledger_format if ledger_format is None else ledger_format
        with self.transaction():
            self.conn.execute("UPDATE pmm_meta SET value = ? WHERE key = 'mind_id'", (mind_id,))
            self.conn.execute("UPDATE pmm_meta SET value = ? WHERE key = 'ledger_format'", (str(fmt),))
        self.mind_id, self.ledger_format = mind_id, fmt
        self.prefix = chain_prefix(fmt, mind_id)

    @classmethod
    def build(cls, path: Path, mind_id: str, events: Iterable[Event],
              folded_states: Callable[[], States | None] | None = None,
              folded_snaps: Callable[[], list[past.Snap]] | None = None,
              tombstones: dict[int, str] | None = None, ledger_format: int = FORMAT_VERSION) -> int:
        """Create a new mind at ``path`` from checked events: a temp file, published on success.

        ``folded_states``, when given, returns the projections folded over ``events`` once they
        are all read (the caller folded them as it checked them), and ``folded_snaps`` the
        states it passed at snapshot points (``pmm.ledger.past``); else they are folded here,
        as they are inserted. ``events`` may also be batches of them (``build_batches``).

        The temp file is private to this call, so it is written without a journal, and the
        indexes and the head trigger are made once at the end, in the same transaction (the
        events are checked links of one chain from event 1: what the trigger would hold for
        each row); it is fsynced before it appears under ``path`` (pmm.ledger.bulk).
        """
        from pmm.ledger import bulk

        return bulk.build(path, mind_id, bulk.chunks(events), cls._over_temp, folded_states,
                          folded_snaps, tombstones, ledger_format)

    @classmethod
    def _over_temp(cls, tmp: Path, conn: sqlite3.Connection, meta: dict[str, str]) -> Ledger:
        return cls(tmp, conn, meta, True)

    @classmethod
    def build_batches(cls, path: Path, mind_id: str, batches: Iterable[Sequence[Sequence[Any]]],
                      folded_states: Callable[[], States | None] | None = None,
                      folded_snaps: Callable[[], list[past.Snap]] | None = None,
                      tombstones: dict[int, str] | None = None,
                      ledger_format: int = FORMAT_VERSION) -> int:
        """``build`` from lists of consecutive checked events, each an ``Event`` or a plain
        tuple in its column order (the cheapest hand-over)."""
        from pmm.ledger import bulk

        return bulk.build(path, mind_id, batches, cls._over_temp, folded_states, folded_snaps,
                          tombstones, ledger_format)


def _extending(events: Iterable[Event], head_id: int, head_hash: str) -> Iterator[Event]:
    """``events``, each refused unless it extends the one before (the head trigger's rule)."""
    last_id, last_hash = head_id, head_hash
    for event in events:
        if event.id != last_id + 1 or event.prev_hash != last_hash:
            raise errors.PmmError("internal: pmm events are append-only: a new event must"
                                  f" extend the head (event {event.id} does not)")
        last_id, last_hash = event.id, event.hash
        yield event


def _prepare(drafts: Iterable[Draft], *, ledger_only: bool = False) -> list[tuple[str, str, str]]:
    """Check each draft against its kind and canonicalise its meta once, before any write. A
    kind of ``LEDGER_ONLY`` is written only by the operation it records (``ledger_only``)."""
    from pmm.domain.canonical import canonical_json
    from pmm.domain.checks import check_draft

    prepared = []
    for draft in drafts:
        try:
            if draft.kind in LEDGER_ONLY and not ledger_only:
                raise ValueError(f"a {draft.kind} event is written only by the ledger's own operation")
            check_draft(draft)
            prepared.append((draft.kind, draft.content, canonical_json(draft.meta)))
        except ValueError as exc:
            raise errors.PmmError(f"internal: refusing to write a malformed event: {exc}") from None
    return prepared
