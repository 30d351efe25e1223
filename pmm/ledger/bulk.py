"""A new mind built from checked events in bulk (``pmm import`` into a new file), on two cores.

The events go into a private temp file in one transaction (``cx.new_file``: it appears whole
or not at all). Its indexes are built once, sorted, after the insert; its search index is
built meanwhile by a second thread (``SideIndex``) in a scratch file of its own, through its own
SQLite connection (SQLite runs without the GIL, so the two inserts overlap), and copied into
the mind's FTS5 tables, row for row, before COMMIT. FTS5 keeps nothing but those tables, so the
copy is the index a ``'rebuild'`` makes (the same token counts and matches; its segments are
merged differently), without a second pass over the events after the insert.
"""

from __future__ import annotations

import contextlib
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from pmm import errors
from pmm.domain.events import Event
from pmm.domain.states import States
from pmm.ledger import connection as cx
from pmm.ledger import folded, fts, past, schema, session_table
from pmm.ledger.chain import FORMAT_VERSION, GENESIS_PREV

Row = Sequence[Any]  # an ``Event``, or a plain tuple in its column order
Batch = Sequence[Row]
INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)"
HEAD_TRIGGER = "events_extend_head"  # schema.GUARDS[0]
# Events per statement of the search index's thread: FTS5 writes a segment at the end of each
# statement and merges them as they pile up, so fewer, larger ones cost less.
INDEX_BATCH = 4096
# Segments FTS5 lets pile up on a level before it merges them while the search index is built
# (its default is 4): each level it merges rewrites every token once more, and fewer levels
# took a fifth less of the thread's time at 1M events. The index reads the same.
AUTOMERGE = 16
CACHE_KIB = 4096  # the mind's page cache during the build
QUEUED = 2  # batches waiting for the search index's thread: memory stays flat at any size
_DONE = None


class Mind(folded.Source, Protocol):
    """What the build needs of the ledger it writes (``pmm.ledger.store.Ledger``)."""

    @property
    def tombstones(self) -> bool: ...  # the file keeps forgotten events' digests (ledger format 2)

    def _index_text(self, after_id: int) -> None: ...

    def _insert_tombstones(self, tombstones: dict[int, str]) -> None: ...


def build(path: Path, mind_id: str, batches: Iterable[Batch],
          opened: Callable[[Path, sqlite3.Connection, dict[str, str]], Mind],
          folded_states: Callable[[], States | None] | None = None,
          folded_snaps: Callable[[], list[past.Snap]] | None = None,
          tombstones: dict[int, str] | None = None, ledger_format: int = FORMAT_VERSION) -> int:
    """Create a new mind at ``path`` from batches of checked events (from event 1), of ledger
    format ``ledger_format``, with the ``tombstones`` of its forgotten events (read whole by
    the time the batches are); returns how many. ``opened(tmp, conn, identity)`` is the ledger over the temp file (store's
    ``Ledger``, passed in: that module imports this one). See ``Ledger.build``."""
    with cx.new_file(path) as (tmp, conn), cx.translated(tmp):
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        # 4 MiB: the insert appends, it needs few pages. The index builds sort in runs of that
        # size, merged from temp files (the page cache's, not this process's memory), so memory
        # stays flat at any size. No sorting threads: at 1M events a second one took 70% more
        # time and twice the memory (each holds a run), and the search index's thread has the
        # other core.
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        conn.execute("PRAGMA temp_store=FILE")
        with SideIndex(Path(f"{tmp}-fts"), schema.SCHEMA_VERSION, conn) as side:
            conn.execute("BEGIN")
            cx.init_file(conn, mind_id, with_indexes=False, ledger_format=ledger_format)
            conn.execute(f"DROP TRIGGER {HEAD_TRIGGER}")
            mind = opened(tmp, conn, cx.read_identity(conn, tmp))
            folding = folded.Folding(mind, 0) if folded_states is None else None
            keeping = session_table.Keeping(conn, mind_id, (0, GENESIS_PREV))
            count = _insert(conn, batches, side, folding, keeping)
            if tombstones and mind.tombstones:
                mind._insert_tombstones(tombstones)
            # The head trigger's rule held for every row (``_insert``); the indexes are sorted
            # once, while the side thread finishes the search index.
            for statement in (*schema.EVENTS_INDEXES, schema.GUARDS[0]):
                conn.execute(statement)
            side.finish()
            side.copy_into()
            mind._index_text(count)  # a no-op on a sound index that ends at the head
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
            if head[0] != count:
                raise errors.PmmError("internal: the bulk insert lost events")
            keeping.write(head)
            conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=DELETE")
    return count


def _insert(conn: sqlite3.Connection, batches: Iterable[Batch], side: SideIndex,
            folding: folded.Folding | None, keeping: session_table.Keeping) -> int:
    """Insert every batch, each refused unless it extends the one before (the head trigger's
    rule: the caller checked every link inside a batch, and ids are consecutive in it)."""
    last_id, last_hash = 0, GENESIS_PREV
    texts: list[Row] = []  # handed to the search index's thread in runs of INDEX_BATCH
    for batch in batches:
        if not batch:
            continue
        first, last = batch[0], batch[-1]
        if first[0] != last_id + 1 or first[5] != last_hash or last[0] != last_id + len(batch):
            raise errors.PmmError("internal: pmm events are append-only: a new event must"
                                  f" extend the head (event {first[0]} does not)")
        if folding is not None:
            batch = list(folding.passing(map(Event._make, batch)))
        keeping.see(batch)
        conn.executemany(INSERT, batch)
        texts += batch
        if len(texts) >= INDEX_BATCH:
            side.add(texts)
            texts = []
        last_id, last_hash = last[0], last[6]
    if texts:
        side.add(texts)
    return last_id


class SideIndex:
    """The search index of events, built by a thread in a scratch SQLite file at ``path`` as
    batches arrive (``add``), then copied into a mind's (``copy_into``). The scratch file is
    removed on leaving the block, whatever happened."""

    def __init__(self, path: Path, schema_version: int, target: sqlite3.Connection) -> None:
        self.path, self.version, self.target = path, schema_version, target
        self.done = False
        self.queue: queue.Queue[Batch | None] = queue.Queue(QUEUED)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pmm-search-index", daemon=True)

    def __enter__(self) -> SideIndex:
        with open(self.path, "xb"):  # never someone else's file
            pass
        try:
            self.path.chmod(0o600)
            # Attached now: SQLite attaches nothing inside a transaction. The writer reads it
            # only once the thread has committed (``copy_into``).
            self.target.execute("ATTACH DATABASE ? AS pmm_side", (str(self.path),))
            self.thread.start()
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_DONE)
        self.thread.join()
        if not self.target.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.target.execute("DETACH DATABASE pmm_side")
        self.path.unlink(missing_ok=True)
        Path(f"{self.path}-journal").unlink(missing_ok=True)

    def add(self, batch: Batch) -> None:
        while True:
            if self.error is not None or not self.thread.is_alive():
                self.finish()  # raises what stopped the thread
            try:
                self.queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait for the index to be complete; raise what went wrong in the thread, if anything."""
        if self.thread.is_alive():
            self.queue.put(_DONE)
            self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            if isinstance(error, sqlite3.Error):
                raise cx.translate(error, self.path) from None
            raise error
        if not self.done:
            raise errors.PmmError("internal: the search index was not built")

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=OFF")
                conn.execute("PRAGMA synchronous=OFF")
                conn.execute("PRAGMA cache_size=-4096")  # 4 MiB: FTS5 appends its segments
                conn.execute("PRAGMA temp_store=FILE")
                conn.execute("BEGIN")
                conn.execute(fts.table(self.version))
                conn.execute("INSERT INTO events_fts(events_fts, rank) VALUES ('automerge', ?)",
                             (AUTOMERGE,))
                while (batch := self.queue.get()) is not _DONE and not self.stop.is_set():
                    _index(conn, batch)
                if batch is _DONE:
                    # the config back to what FTS5 makes (``fts.config_sound``): the mind's
                    # own writes merge as any index's
                    conn.execute("DELETE FROM events_fts_config WHERE k = 'automerge'")
                    conn.execute("COMMIT")
                    self.done = True
            finally:
                conn.close()
        except BaseException as exc:  # raised in the writing thread, by ``finish``
            self.error = exc
            self.stop.set()

    def copy_into(self) -> None:
        """Replace the target's (empty) search index by the one built here (in the target's
        transaction: a failure leaves the mind as it was)."""
        for name in fts.SHADOWS:
            self.target.execute(f"DELETE FROM main.{name}")
            self.target.execute(f"INSERT INTO main.{name} SELECT * FROM pmm_side.{name}")


def _index(conn: sqlite3.Connection, batch: Batch) -> None:
    """Add a batch of consecutive events to the search index in one SQLite step: the texts go
    in as one JSON array, so this thread holds the GIL once per batch, not once per row (which
    would hold up the writer). SQLite's JSON reads back every string ``json.dumps`` writes,
    except that this SQLite (3.40) ends a text at an escaped NUL: a batch holding one goes in
    row by row."""
    payload = json.dumps([row[3] for row in batch], ensure_ascii=False, check_circular=False)
    if "\\u0000" not in payload:
        conn.execute("INSERT INTO events_fts(rowid, content) SELECT ? + key, value"
                     " FROM json_each(?)", (batch[0][0], payload))
        return
    conn.executemany("INSERT INTO events_fts(rowid, content) VALUES (?, ?)",
                     [(row[0], row[3]) for row in batch])


def chunks(events: Iterable[Event], size: int = 4096) -> Iterator[list[Event]]:
    """``events`` in lists of ``size`` (the last one shorter)."""
    from itertools import islice

    it = iter(events)
    while batch := list(islice(it, size)):
        yield batch
