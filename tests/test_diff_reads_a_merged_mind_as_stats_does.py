"""`pmm diff A B` where a side is a merged mind, or an export of one, reads it as the merged mind
reads (the fold again from each fork, docs/merge.md), not event after event: its states are the
ones `pmm stats --json` gives for that mind. Two copies merged both ways through the real CLI,
with order-dependent changes (renames, clamped trait steps, a commitment kept) on each side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli_json, run_in
from test_import_rejects_bad_input import isolated_env

from pmm.domain.events import Draft
from pmm.ledger.store import Ledger


def _ok(*args: str, env: dict[str, str | None] | None = None) -> None:
    run_in(*args, check=True, env=env)


def _cli(mind: Path, *args: str) -> dict:
    return cli_json(mind, *args)


def _write(path: Path, *drafts: Draft) -> list[int]:
    with Ledger.open(path, write=True) as mind:
        return [e.id for e in mind.append(list(drafts))]


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copy A and copy B, each merged with the other through `pmm merge`, and an export of each."""
    tmp_path = tmp_path_factory.mktemp("merged")
    env: dict[str, str | None] = dict(isolated_env(tmp_path))
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _ok("--mind", str(a), "init", "--name", "Echo", env=env)
    _ok("--mind", str(a), "remember", "before the copies parted", env=env)
    _ok("--mind", str(a), "export", "-o", str(tmp_path / "shared.jsonl"), env=env)
    _ok("--mind", str(b), "import", str(tmp_path / "shared.jsonl"), env=env)
    _ok("--mind", str(a), "rename", "Ada", env=env)
    _write(b, Draft("trait_adjusted", "bolder", {"trait": "openness", "delta": 0.9}))
    _ok("--mind", str(b), "rename", "Bea", env=env)
    (opened,) = _write(a, Draft("commitment_opened", "write the report", {"source": "user"}))
    (evidence,) = _write(a, Draft("observation_recorded", "the report is written", {"source": "user"}))
    _write(b, Draft("trait_adjusted", "calmer", {"trait": "openness", "delta": -0.4}))
    _write(a, Draft("trait_adjusted", "bolder still", {"trait": "openness", "delta": 0.3}),
           Draft("commitment_closed", "done", {"commitment": opened, "evidence": [evidence]}))
    _ok("--mind", str(a), "merge", str(b), env=env)
    _ok("--mind", str(b), "merge", str(a), env=env)
    sides = {"a.db": a, "b.db": b}
    for name, mind in (("a.jsonl", a), ("b.jsonl", b)):
        sides[name] = tmp_path / name
        _ok("--mind", str(mind), "export", "-o", str(sides[name]), env=env)
    return sides


@pytest.mark.parametrize("side", ["a.db", "b.db", "a.jsonl", "b.jsonl"])
def test_a_merged_side_of_a_diff_is_the_state_stats_gives(merged: dict[str, Path], tmp_path: Path,
                                                          side: str) -> None:
    mind = merged[side.replace("jsonl", "db")]
    stats = _cli(mind, "stats")
    commitments = _cli(mind, "commitments", "list", "--all")
    fresh = tmp_path / "fresh.db"
    _ok("--mind", str(fresh), "init", "--name", "Echo")
    found = _cli(fresh, "diff", "1", str(merged[side]))  # from a mind with nothing in it
    assert found["name"]["after"] == stats["name"] == "Bea"  # the later rename, on either copy
    assert found["stage"]["after"] == stats["stage"]
    assert found["events"]["after"] == stats["events"]
    moved = {t["trait"]: t["after"] for t in found["traits"]}
    assert moved["openness"] == pytest.approx(stats["traits"]["openness"], abs=1e-6)
    rows = commitments["commitments"] if isinstance(commitments, dict) else commitments
    assert sorted(c["text"] for c in found["commitments"]["closed"]) == sorted(
        c["text"] for c in rows if c["status"] == "closed") == ["write the report"]


@pytest.mark.parametrize(("first", "second"), [("b.jsonl", "b.db"), ("a.db", "a.jsonl"),
                                               ("a.jsonl", "b.jsonl"), ("b.db", "a.jsonl")])
def test_two_sides_of_one_merged_state_show_no_change(merged: dict[str, Path], first: str,
                                                      second: str) -> None:
    found = cli_json(merged["a.db"], "diff", str(merged[first]), str(merged[second]))
    assert not found["name"]["changed"] and found["traits"] == [], found
    assert found["events"]["added"] == 0 and found["events"]["by_kind"] == {}
    if first[0] == second[0]:  # one copy: its commitments by the same ids (each copy has its own)
        assert all(rows == [] for rows in found["commitments"].values()), found["commitments"]


def test_an_export_changed_between_its_reads_is_refused(merged: dict[str, Path], tmp_path: Path) -> None:
    """The merged export is read again for the ranges a merge folds anew: each read must end
    at the hashes the first found, or the diff is refused (exit 6) rather than mixed."""
    from pmm.services import diff

    export = merged["b.jsonl"]
    lines = export.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    events = [json.loads(line) for line in lines[1:-1]]
    markers = [diff.ev.Event(e["id"], e["ts"], e["kind"], e["content"], e["meta"], e["prev_hash"],
                             e["hash"]) for e in events if e["kind"] == "mind_merged"]
    assert markers and header["since"] == 1
    head = (events[-1]["id"], events[-1]["hash"])
    assert diff._as_merged(export, markers, head)["identity"]["name"] == "Bea"
    with pytest.raises(diff.errors.InputRejected, match="changed while it was read"):
        diff._as_merged(export, markers, (head[0], "0" * 64))
