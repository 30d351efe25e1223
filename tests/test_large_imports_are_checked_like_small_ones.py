"""An export large enough to be read by a second process (pmm.services.import_reader) imports as
a small one does: identical hashes, a sound mind (schema, head trigger, indexes, search index,
projection cache), and every refusal with its line and nothing written. `kill -9` of pmm, or of
its reading process, mid-import leaves no mind and no reader running.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PMM, cli_json, invoke, json_data, run_in

from pmm.ledger.store import Ledger
from pmm.services import import_reader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_ledger import synthetic_export  # noqa: E402

EVENTS = 4000  # about 1.5 MB: over import_reader.PARALLEL_FROM


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "export.jsonl"
    synthetic_export(path, EVENTS)
    assert path.stat().st_size > import_reader.PARALLEL_FROM
    return path


def test_a_large_import_reproduces_the_mind_and_leaves_it_sound(export: Path, tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    result = cli_json(mind, "import", str(export))
    assert result["appended"] == EVENTS and result["created"] is True
    out = tmp_path / "again.jsonl"
    run_in("--mind", str(mind), "export", "-o", str(out), check=True)
    assert out.read_bytes() == export.read_bytes()  # identical hashes, every field as it was
    report = cli_json(mind, "verify", "--deep")
    assert report["ok"] is True and report["events"] == EVENTS
    assert report["deep"]["cache_matches_replay"] is True
    with Ledger.open(mind, write=True) as opened:  # a writer refuses any schema pmm did not make
        assert opened.schema_problems() == []
        assert opened.index_problem() is None
    conn = sqlite3.connect(mind)
    try:
        conn.execute("INSERT INTO events_fts(events_fts) VALUES ('integrity-check')")
        assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH 'garden'"
                            ).fetchone()[0] > 0
        with pytest.raises(sqlite3.IntegrityError, match="extend the head"):
            conn.execute("INSERT INTO events VALUES (?, 't', 'k', '', '{}', 'x', 'y')", (EVENTS + 5,))
    finally:
        conn.close()
    found = json_data(invoke("--mind", str(mind), "search", "garden", "--json").stdout)
    assert found  # the search index covers the imported events


def test_a_large_tail_appended_to_a_mind_leaves_it_sound(export: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.jsonl"
    synthetic_export(first, 1000)  # the same seed: the large export's first 1,000 events
    mind = tmp_path / "mind.db"
    run_in("--mind", str(mind), "import", str(first), check=True)
    result = cli_json(mind, "import", str(export))
    assert (result["appended"], result["already_present"]) == (EVENTS - 1000, 1000)
    with Ledger.open(mind, write=True) as opened:
        assert opened.schema_problems() == []  # the head trigger is back, exactly as pmm makes it
    report = cli_json(mind, "verify", "--deep")
    assert report["ok"] is True and report["deep"]["cache_matches_replay"] is True
    conn = sqlite3.connect(mind)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="extend the head"):
            conn.execute("INSERT INTO events VALUES (?, 't', 'k', '', '{}', 'x', 'y')", (EVENTS + 5,))
    finally:
        conn.close()


def _altered(export: Path, out: Path, line: int, old: bytes, new: bytes) -> None:
    lines = export.read_bytes().splitlines(keepends=True)
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    out.write_bytes(b"".join(lines))


@pytest.mark.parametrize(("what", "old", "new"), [
    ("a stale hash", b'"content":"', b'"content":"!'),
    ("a lone surrogate", b'"content":"', b'"content":"\\ud800'),
    ("invalid UTF-8", b'"content":"', b'"content":"\xff'),
    ("meta that is not an object", b'"meta":"{', b'"meta":"[1],{'),
])
def test_a_bad_line_late_in_a_large_export_is_refused_by_line(
        export: Path, tmp_path: Path, what: str, old: bytes, new: bytes) -> None:
    bad, line = tmp_path / "bad.jsonl", EVENTS - 10
    _altered(export, bad, line, old, new)
    target = tmp_path / "new" / "mind.db"
    proc = run_in("--mind", str(target), "import", str(bad))
    stderr = proc.stderr.decode()
    assert proc.returncode == 6, stderr
    assert f"line {line}:" in stderr and "Traceback" not in stderr, stderr
    assert not target.parent.exists()  # no mind, no temp file, not even the directory


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _gone(pid: int, within: float = 60) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return True  # dead, waiting for a parent to reap it
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "export.jsonl"
    synthetic_export(path, 60_000)  # long enough to be caught mid-way
    return path


def _stopped_mid_import(big_export: Path, target: Path, stop: Callable[[int, list[int]], None],
                        file_ending: str = "") -> tuple[subprocess.Popen[bytes], int, bytes]:
    """Run `pmm import` into ``target`` and ``stop(pid, readers)`` it once its reading process
    runs and its temp file is being written; returns the process, the reader's pid, stderr."""
    target.parent.mkdir()
    proc = subprocess.Popen([PMM, "--mind", str(target), "import", str(big_export)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        readers: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            readers = _children(proc.pid)
            if readers and any(p.name.startswith(".mind.db.tmp") and p.name.endswith(file_ending)
                               for p in target.parent.iterdir()):
                break
            time.sleep(0.01)
        assert readers and proc.poll() is None, "the import ended before it could be stopped"
        stop(proc.pid, readers)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _gone(readers[0]), "the reading process outlived the import"
    return proc, readers[0], stderr


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("victim", ["pmm", "reader"])
def test_kill9_mid_import_leaves_no_mind(big_export: Path, tmp_path: Path, victim: str) -> None:
    target = tmp_path / "minds" / "mind.db"
    proc, _, stderr = _stopped_mid_import(big_export, target, lambda pid, readers: os.kill(
        pid if victim == "pmm" else readers[0], signal.SIGKILL))
    if victim == "pmm":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 1, stderr.decode()
        assert b"reading process died" in stderr and b"Traceback" not in stderr, stderr
    assert not target.exists()
    if victim == "reader":  # pmm itself cleaned up; a killed pmm leaves only its private temp file
        assert list(target.parent.iterdir()) == []
    # Importing again works: nothing was left that stands in the way.
    done = subprocess.run([PMM, "--mind", str(target), "import", str(big_export), "--json"],
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert json_data(done.stdout)["appended"] == 60_000
    # and what the killed import left beside it (its temp mind, its index's scratch) is gone
    assert [p.name for p in target.parent.iterdir()] == ["mind.db"]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_kill9_while_the_search_index_is_built_beside_leaves_no_mind(
        big_export: Path, tmp_path: Path) -> None:
    target = tmp_path / "minds" / "mind.db"
    proc, _, _ = _stopped_mid_import(big_export, target, lambda pid, _readers: os.kill(
        pid, signal.SIGKILL), file_ending="-fts")  # the search index's scratch file
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    # only private temp files are left, and they stand in nobody's way
    assert all(p.name.startswith(".mind.db.tmp-") for p in target.parent.iterdir())
    done = subprocess.run([PMM, "--mind", str(target), "import", str(big_export), "--json"],
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert json_data(done.stdout)["appended"] == 60_000
    # and what the killed import left beside it (its temp mind, its index's scratch) is gone
    assert [p.name for p in target.parent.iterdir()] == ["mind.db"]
    assert cli_json(target, "verify")["ok"] is True


def test_a_large_export_on_a_pipe_imports(export: Path, tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    done = subprocess.run([PMM, "--mind", str(mind), "import", "-", "--json"],
                          input=export.read_bytes(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert json_data(done.stdout)["appended"] == EVENTS
    assert cli_json(mind, "verify")["ok"] is True


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_ctrl_c_mid_import_exits_130_and_leaves_no_mind(big_export: Path, tmp_path: Path) -> None:
    target = tmp_path / "minds" / "mind.db"
    proc, _, stderr = _stopped_mid_import(big_export, target,
                                          lambda pid, _readers: os.kill(pid, signal.SIGINT))
    assert proc.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    assert list(target.parent.iterdir()) == []


def test_kill9_mid_import_into_a_small_mind_leaves_it_as_it_was(
        big_export: Path, tmp_path: Path) -> None:
    """Into a mind smaller than the import, the indexes are dropped and made again after the
    insert, in the import's one transaction: a kill -9 in between leaves them, and the mind,
    exactly as they were."""
    first = tmp_path / "first.jsonl"
    synthetic_export(first, 1000)  # the big export's first 1,000 events
    mind = tmp_path / "mind.db"
    run_in("--mind", str(mind), "import", str(first), check=True)
    wal = Path(f"{mind}-wal")
    proc = subprocess.Popen([PMM, "--mind", str(mind), "import", str(big_export)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if wal.exists() and wal.stat().st_size > 4 << 20:  # the insert is spilling pages
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the import ended before it could be stopped"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Ledger.open(mind, write=True) as opened:  # recovers the WAL: nothing of the import
        assert opened.count() == 1000
        assert opened.schema_problems() == []  # every index is there, as pmm makes it
        assert opened.index_problem() is None
    assert cli_json(mind, "verify", "--deep")["ok"] is True
    result = cli_json(mind, "import", str(big_export))
    assert (result["appended"], result["already_present"]) == (59_000, 1000)
    with Ledger.open(mind, write=True) as opened:
        assert opened.schema_problems() == [] and opened.count() == 60_000
