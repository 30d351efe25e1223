"""The benchmark scripts run against the code as it is: a refactor that moves what they import
fails here, not weeks later when someone measures. Tiny inputs; the figures are not checked
beyond what a tiny input makes certain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_recall_runs_on_a_tiny_locomo_conversation(tmp_path: Path) -> None:
    turns = [{"speaker": "Ann", "dia_id": "D1:1", "text": "My bike is a blue Brompton."},
             {"speaker": "Bo", "dia_id": "D1:2", "text": "A fine folding bike."},
             {"speaker": "Ann", "dia_id": "D2:1", "text": "I went to the market today."},
             {"speaker": "Bo", "dia_id": "D2:2", "text": "What did you buy?"}]
    conversation = {
        "speaker_a": "Ann", "speaker_b": "Bo",
        "session_1_date_time": "1:56 pm on 8 May, 2023", "session_1": turns[:2],
        "session_2_date_time": "10:00 am on 9 May, 2023", "session_2": turns[2:],
        "qa": [{"question": "What colour is Ann's bike?", "answer": "blue", "evidence": ["D1:1"],
                "category": 4}],
    }
    source = tmp_path / "conv-tiny.json"
    source.write_text(json.dumps(conversation), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_recall.py"), str(source),
                           "--windows", "2048", "--exact", "", "--no-semantic", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["2048/pmm"]["all"] == 1.0  # four short turns all fit: the evidence is there
    assert result["2048/pmm"]["evidence_turns"] == 1


def test_bench_cache_runs_on_a_tiny_mind(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_cache.py"), "--sizes", "200",
                           "--turns", "1", "--warm", "1", "--kept", "10",
                           "--repeats", "1", "--dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # one replay for the stale stats and one for the first chat, none once that chat cached it
    assert "`pmm stats`: " in proc.stdout and "replays [1]; with the cache the chat wrote:" in proc.stdout
    assert "replays [0]" in proc.stdout and "with 10 kept" in proc.stdout


def test_bench_backup_runs_on_a_tiny_mind(tmp_path: Path) -> None:
    """Its launcher, its pty for age's passphrase prompts, and its figures, on 300 events."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_backup.py"), "--events", "300",
                           "--dir", str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout
    for line in ("pmm backup", "pmm restore", "limit: cp", "limit: pmm verify", "limit: age -p", "limit: age -d"):
        assert line in shown, shown
    assert not (tmp_path / "work").exists()


def test_bench_import_runs_at_two_tiny_sizes(tmp_path: Path) -> None:
    # 3,000 events is over 1 MiB: the import's reading process runs, as at the real sizes
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_import.py"),
                           "--sizes", "200,3000", "--dir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("pmm import:") == 2 and "python floor" in proc.stdout
    assert not (tmp_path / "work").exists()  # it cleans up after itself


def test_bench_merge_runs_on_two_tiny_copies(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_merge.py"), "--events", "300",
                           "--diverged", "20", "--dir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for line in ("merge of the export:", "merge back of the mind file:", "limit: verify of that export",
                 "limit: import into a new file", "same state (stats --json but copy-local fields): True"):
        assert line in proc.stdout, proc.stdout
    assert not (tmp_path / "work").exists()


def test_bench_reads_runs_on_a_tiny_mind(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_reads.py"), "--sizes", "300",
                           "--runs", "1", "--dir", str(tmp_path / "work"), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["300"]
    assert set(result) == {"pmm --version", "search garden", "health", "trace message",
                           "trace session", "log -n 5", "sessions -n 5", "chat -c lookup", "--session s12"}
    assert all(f.get("wall", 1) > 0 and ("limit" not in f or f["limit"] > 0) for f in result.values())
    assert result["sessions -n 5"]["log"] > 0 and result["chat -c lookup"]["own"] > 0


def test_bench_verify_runs_on_a_tiny_mind(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_verify.py"), "--sizes", "300",
                           "--runs", "1", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pmm verify --deep" in proc.stdout and "pmm remember" in proc.stdout


def test_bench_asof_runs_on_a_tiny_mind(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_asof.py"), "--sizes", "300",
                           "--runs", "1", "--dir", str(tmp_path / "work"), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])["300"]
    assert {"limit", "middle, with snapshots", "near the end, without snapshots", "recall middle"} <= set(result)
    assert all(figure > 0 for figure in result.values())
    assert "events replayed" in proc.stdout and not (tmp_path / "work").exists()


def test_bench_forget_runs_on_a_tiny_mind(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_forget.py"), "--events", "300",
                           "--runs", "1", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for line in ("pmm verify (format 2)", "limit: Python loop", "pmm forget ID --yes", "limit: pmm remember",
                 "pmm verify after 1 forgets"):
        assert line in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == []  # it cleans up after itself
