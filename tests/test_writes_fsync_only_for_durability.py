"""A write command fsyncs what makes its event durable, and what hands the file back whole, and
nothing else (SPEC section 2: WAL, synchronous=FULL; an acknowledged event survives kill -9 and
power loss, which tests/test_kill9_loses_no_acknowledged_event.py checks for kill -9).

A mind rests in rollback-journal mode (a reader must never leave -wal or -shm files beside it), so
every writer switches it to WAL when it opens and the last one switches it back when it closes.
pmm makes both switches without a journal and the first without an fsync
(pmm.ledger.connection._enter_wal says why that is safe); the two facts that argument rests on
are held here, then the fsyncs of a real `pmm remember` are counted with strace.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pmm.domain.events import Draft
from pmm.ledger.store import Ledger

PAGE = 4096


def _note(text: str) -> Draft:
    return Draft("observation_recorded", text, {"source": "user"})


def _mind(tmp_path: Path) -> Path:
    (tmp_path / "minds").mkdir()
    path = tmp_path / "minds" / "mind.db"
    Ledger.create(path, _note("genesis")).close()
    return path


def test_the_switches_change_only_the_header_bytes(tmp_path: Path) -> None:
    path = _mind(tmp_path)
    at_rest = path.read_bytes()
    assert at_rest[18:20] == b"\x01\x01"  # rollback-journal mode at rest
    mind = Ledger.open(path, write=True)
    try:
        switched = path.read_bytes()
        assert switched[18:20] == b"\x02\x02"  # WAL while a writer has it
        assert not Path(f"{path}-journal").exists()
        changed = [i for i in range(len(at_rest)) if at_rest[i] != switched[i]]
        assert changed and max(changed) < 100, changed  # one write, within the 100-byte header
        assert len(switched) == len(at_rest)
    finally:
        mind.close()
    back = path.read_bytes()
    assert back[18:20] == b"\x01\x01"
    assert not any(Path(f"{path}{s}").exists() for s in ("-wal", "-shm", "-journal"))
    changed = [i for i in range(len(at_rest)) if at_rest[i] != back[i]]
    assert max(changed) < 100 and len(back) == len(at_rest)  # nothing appended: the header only


def test_a_wal_beside_the_file_is_read_whatever_its_header_says(tmp_path: Path) -> None:
    """The switch into WAL need not be durable: after a power cut that lost it (the header still
    says rollback journal) the committed events are in the -wal file, and SQLite reads them."""
    path = _mind(tmp_path)
    crash = tmp_path / "crash"
    crash.mkdir()
    with Ledger.open(path, write=True) as mind:
        acked = [mind.append([_note(f"note {i}")])[0] for i in range(5)]
        # what the disk may hold: the database as before the switch, the WAL as committed
        shutil.copyfile(path, crash / "mind.db")
        shutil.copyfile(f"{path}-wal", crash / "mind.db-wal")
    image = bytearray((crash / "mind.db").read_bytes())
    image[18:20] = b"\x01\x01"
    (crash / "mind.db").write_bytes(bytes(image))
    with Ledger.open(crash / "mind.db") as copy:
        assert [e.content for e in copy.tail(5)] == [e.content for e in acked]
        assert copy.head() == (acked[-1].id, acked[-1].hash)
    with sqlite3.connect(crash / "mind.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


STRACE = shutil.which("strace")


@pytest.mark.skipif(STRACE is None, reason="strace counts the fsyncs")
def test_remember_fsyncs_six_times_all_needed(tmp_path: Path) -> None:
    """Three for the commit into a new WAL (its header, the folder that now holds it, the
    commit: the least any first WAL commit costs), two for the checkpoint that folds it back
    (the WAL, then the database, before the WAL is deleted), one for the header switched back.
    SQLite's own journal-mode switches cost eight more, and a -journal file each."""
    path = _mind(tmp_path)
    log = tmp_path / "strace.txt"
    pmm = str(Path(sys.executable).with_name("pmm"))
    done = subprocess.run([str(STRACE), "-f", "-y", "-qq", "-o", str(log), "-e",
                           "trace=fsync,fdatasync,openat", pmm, "--mind", str(path), "remember", "a note"],
                          capture_output=True, text=True, env={**os.environ, "PMM_DEBUG": "1"})
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:100]}")
    assert done.returncode == 0, done.stderr
    calls = log.read_text()
    mine = str(path.parent)  # the mind's own files (the witness keeps its own, elsewhere)
    synced = [m.group(1) for m in re.finditer(r"f(?:data)?sync\(\d+<([^>]*)>\)\s+= 0", calls)
              if m.group(1).startswith(mine)]
    names = [Path(s).name if s != mine else "folder" for s in synced]
    assert names == ["mind.db-wal", "folder", "mind.db-wal", "mind.db-wal", "mind.db", "mind.db"], names
    assert "mind.db-journal" not in calls  # no rollback journal is ever made
    with Ledger.open(path) as mind:
        assert mind.tail(1)[0].content == "a note"
