"""Forgetting (ledger format 2) through the paths that read many events at once: a bulk import
of a large export (batched, and checked in a second process), and `pmm merge`, which extends a
copy with the other's tail (tombstones and all) but refuses to copy a forgetting it cannot make."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from conftest import cli_json, run_in, run_pmm

from pmm.services import import_reader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_ledger import synthetic_export  # noqa: E402

SECRET = "correct horse battery staple"


def _ok(*args: str) -> None:
    done = run_in(*args)
    assert done.returncode == 0, (args, done.stderr.decode())


def _forgotten(mind: Path) -> dict[int, str]:
    with sqlite3.connect(f"file:{mind}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT id, content_digest FROM forgotten"))


def test_a_large_export_with_a_forgotten_event_imports_in_bulk_and_verifies(tmp_path: Path) -> None:
    source, big = tmp_path / "src.jsonl", tmp_path / "big.db"
    synthetic_export(source, 6_000)
    _ok("--mind", str(big), "-q", "import", str(source))
    _ok("--mind", str(big), "remember", f"the password is {SECRET}")
    secret_id = cli_json(big, "stats")["head_id"]
    _ok("--mind", str(big), "forget", str(secret_id), "--yes")
    _ok("--mind", str(big), "remember", "after the forgetting")
    export = tmp_path / "big.jsonl"
    _ok("--mind", str(big), "export", "-o", str(export))
    assert export.stat().st_size > import_reader.PARALLEL_FROM  # read and checked beside
    assert SECRET.encode() not in export.read_bytes()
    copy = tmp_path / "copy.db"
    _ok("--mind", str(copy), "-q", "import", str(export))
    assert _forgotten(copy) == _forgotten(big) and secret_id in _forgotten(copy)
    checked = run_pmm("verify", str(copy), "--json")
    assert checked.returncode == 0, checked.stdout.decode()
    assert SECRET.encode() not in copy.read_bytes()


def _two_copies(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _ok("--mind", str(a), "init", "--name", "Echo")
    _ok("--mind", str(a), "remember", "before the copies parted")
    _ok("--mind", str(a), "export", "-o", str(tmp_path / "shared.jsonl"))
    _ok("--mind", str(b), "import", str(tmp_path / "shared.jsonl"))
    return a, b


def test_merging_a_copy_that_only_went_on_brings_its_forgetting_along(tmp_path: Path) -> None:
    a, b = _two_copies(tmp_path)
    _ok("--mind", str(b), "remember", f"the password is {SECRET}")
    secret_id = cli_json(b, "stats")["head_id"]
    _ok("--mind", str(b), "forget", str(secret_id), "--yes")
    for other in (b, tmp_path / "b.jsonl"):
        target = tmp_path / f"a-{other.suffix[1:]}.db"
        target.write_bytes(a.read_bytes())
        if other.suffix == ".jsonl":
            _ok("--mind", str(b), "export", "-o", str(other))
        done = cli_json(target, "merge", str(other))
        assert done["appended"] == 2  # the note and its forgetting: b's tail, as it is
        assert secret_id in _forgotten(target)
        checked = run_pmm("verify", str(target), "--json")
        assert checked.returncode == 0, checked.stdout.decode()
        assert SECRET.encode() not in target.read_bytes()


def test_a_forgetting_after_the_copies_parted_is_refused_in_one_line(tmp_path: Path) -> None:
    a, b = _two_copies(tmp_path)
    _ok("--mind", str(a), "remember", "on a")
    _ok("--mind", str(b), "remember", f"the password is {SECRET}")
    _ok("--mind", str(b), "forget", str(cli_json(b, "stats")["head_id"]), "--yes")
    before = a.read_bytes()
    done = run_pmm("--mind", str(a), "merge", str(b))
    err = done.stderr.decode()
    assert done.returncode == 6 and "content_forgotten" in err and "Traceback" not in err, err
    assert a.read_bytes() == before


def test_log_says_a_forgotten_events_content_was_forgotten(tmp_path: Path) -> None:
    mind = tmp_path / "m.db"
    _ok("--mind", str(mind), "init")
    _ok("--mind", str(mind), "remember", f"the password is {SECRET}")
    _ok("--mind", str(mind), "forget", "2", "--yes")
    shown = run_in("--mind", str(mind), "log").stdout.decode()
    assert "#2 " in shown and "(content forgotten)" in shown and SECRET not in shown
    assert [e["content"] for e in cli_json(mind, "log") if e["id"] == 2] == [""]  # --json: as stored


def test_a_large_export_with_a_forged_tombstone_is_refused_and_makes_no_mind(tmp_path: Path) -> None:
    """Hostile input through the batched import read in a second process: a tombstone whose
    digest is not the one its event's hash commits to (and its record names) is refused, exit 6,
    and no mind (nor temp file) is left."""
    import json

    source, big = tmp_path / "src.jsonl", tmp_path / "big.db"
    synthetic_export(source, 6_000)
    _ok("--mind", str(big), "-q", "import", str(source))
    _ok("--mind", str(big), "remember", f"the password is {SECRET}")
    _ok("--mind", str(big), "forget", str(cli_json(big, "stats")["head_id"]), "--yes")
    export = tmp_path / "big.jsonl"
    _ok("--mind", str(big), "export", "-o", str(export))
    lines = export.read_bytes().splitlines(keepends=True)
    (n, line), = [(i, raw) for i, raw in enumerate(lines) if b'"content_digest"' in raw]
    event = json.loads(line)
    event["content_digest"] = "0" * 64  # well formed, and not the content's
    lines[n] = json.dumps(event, ensure_ascii=False).encode() + b"\n"
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"".join(lines))
    assert forged.stat().st_size > import_reader.PARALLEL_FROM
    target = tmp_path / "minds" / "copy.db"
    done = run_pmm("--mind", str(target), "import", str(forged))
    err = done.stderr.decode()
    assert done.returncode == 6 and "Traceback" not in err and err.startswith("Error:"), err
    assert not target.exists()
    assert not target.parent.exists() or list(target.parent.iterdir()) == []
