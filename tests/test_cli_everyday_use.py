"""Everyday commands as a user runs them: init, remember, log, search, stats, export formats."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import json_data, run_in, run_pmm


def test_version_and_help_list_every_command() -> None:
    """Real processes: start-up (the console script, the help at its real width) is the point."""
    assert run_pmm("--version", check=True).stdout.decode().startswith("pmm ")
    help_text = run_pmm("--help", check=True).stdout.decode()
    for command in ("init", "remember", "log", "search", "stats", "export", "import", "verify"):
        assert f" {command} " in help_text
    assert "Exit codes" in help_text


def test_init_names_the_mind_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    made = run_in("--mind", str(path), "init", "--name", "Echo", "--json", check=True)
    info = json_data(made.stdout)
    assert info["name"] == "Echo" and len(info["mind_id"]) == 32
    before = path.read_bytes()
    again = run_in("--mind", str(path), "init")
    assert again.returncode == 2
    assert b"already exists" in again.stderr and b"Traceback" not in again.stderr
    assert path.read_bytes() == before
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_default_mind_lives_in_the_user_data_dir(private_dirs: Path) -> None:
    run_in("init", check=True)
    assert (private_dirs / "data" / "pmm" / "mind.db").exists()
    other = private_dirs / "env.db"
    run_in("init", env={"PMM_MIND": str(other)}, check=True)
    assert other.exists()


def test_remember_log_search_stats(mind: Path) -> None:
    m = ["--mind", str(mind)]
    run_in(*m, "remember", "The user grows tomatoes in a small garden", check=True)
    piped = run_in(*m, "remember", "-", input="Prefers tea over coffee\n", check=True)
    assert b"Remembered as event 3" in piped.stderr and piped.stdout == b""
    log = json_data(run_in(*m, "log", "--json", check=True).stdout)
    assert [e["kind"] for e in log] == ["mind_created", "observation_recorded", "observation_recorded"]
    assert log[2]["content"] == "Prefers tea over coffee"
    only = json_data(run_in(*m, "log", "-n", "1", "--kind", "mind_created", "--json", check=True).stdout)
    assert [e["id"] for e in only] == [1]
    hits = json_data(run_in(*m, "search", "garden", "--json", check=True).stdout)
    assert [h["id"] for h in hits] == [2] and "[garden]" in hits[0]["snippet"]
    assert run_in(*m, "search", "nothing-like-this", check=True).stdout == b""
    stats = json_data(run_in(*m, "stats", "--json", check=True).stdout)
    assert stats["name"] == "Test" and stats["events"] == 3 and stats["observations"] == 2
    assert stats["projection_cache"] == "current"
    plain = run_in(*m, "stats", check=True).stdout.decode()
    assert "Events: 3" in plain and "Notes: 2" in plain


def test_empty_note_is_a_usage_error_and_any_search_text_works(mind: Path) -> None:
    empty = run_in("--mind", str(mind), "remember", "   ")
    assert empty.returncode == 2 and empty.stderr.count(b"\n") <= 2
    literal = run_in("--mind", str(mind), "search", '"unbalanced self-aware', check=True)
    assert literal.stdout == b""
    unknown = run_in("--mind", str(mind), "log", "--no-such-option")
    assert unknown.returncode == 2


def test_read_commands_on_a_missing_mind_exit_4_and_create_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mind.db"
    for args in (["stats"], ["log"], ["search", "x"], ["export"], ["verify"]):
        run = run_pmm if args == ["stats"] else run_in  # one real process: exit 4 as a script sees it
        proc = run("--mind", str(missing), *args)
        assert proc.returncode == 4, args
        assert proc.stderr.decode().startswith("Error: no mind file at")
    assert not missing.parent.exists()


def test_export_markdown_since_and_to_a_file(mind: Path, tmp_path: Path) -> None:
    m = ["--mind", str(mind)]
    for text in ("first note", "second note", "third note"):
        run_in(*m, "remember", text, check=True)
    md = run_in(*m, "export", "--format", "md", check=True).stdout.decode()
    assert md.startswith("# Mind ") and "second note" in md
    tail = run_in(*m, "export", "--since", "3", check=True).stdout.decode().splitlines()
    assert json.loads(tail[0])["since"] == 3
    assert [json.loads(line)["id"] for line in tail[1:-1]] == [3, 4]
    out = tmp_path / "out.jsonl"
    proc = run_in(*m, "export", "-o", str(out), check=True)
    assert b"Exported 4 events" in proc.stderr and proc.stdout == b""
    assert out.read_bytes() == run_in(*m, "export", check=True).stdout
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
