"""`pmm merge OTHER` joins two copies of one mind that diverged (issue 17, part 2; docs/merge.md):
both ways to the same projections, duplicates skipped, nothing added a second time, hostile
input refused with nothing written, and neither copy reported forked afterwards."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import cli_json, json_data, json_failure, mind_events, run_in, run_pmm

from pmm.domain import events as ev
from pmm.domain.events import Draft
from pmm.domain.shapes import MAX_ID
from pmm.ledger.store import Ledger

# What `pmm stats --json` says about the file rather than the mind (docs/merge.md)
COPY_LOCAL = {"mind", "head_id", "head", "file_bytes", "projection_cache"}


def same_state(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k not in COPY_LOCAL}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def two_copies(tmp_path: Path, cli: bool = True) -> tuple[Path, Path]:
    """A mind with a shared history, and a copy of it made by export and import."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    run_in("--mind", str(a), "init", "--name", "Echo", check=True)
    run_in("--mind", str(a), "remember", "before the copies parted", check=True)
    run_in("--mind", str(a), "export", "-o", str(tmp_path / "shared.jsonl"), check=True)
    run_in("--mind", str(b), "import", str(tmp_path / "shared.jsonl"), check=True)
    return a, b


def test_two_copies_with_a_note_each_merge_both_ways_to_the_same_stats(tmp_path: Path) -> None:
    """Issue 17's Done-when, through the real CLI in subprocesses."""
    a, b = two_copies(tmp_path)
    run_pmm("--mind", str(a), "remember", "a note written on the laptop", check=True)
    run_pmm("--mind", str(b), "remember", "a note written on the desktop", check=True)
    assert run_pmm("verify", str(b)).returncode == 3  # the diverged copy: forked, before the merge

    first = run_pmm("--mind", str(a), "merge", str(b), "--json")
    assert first.returncode == 0, first.stderr.decode()
    assert json_data(first.stdout)["copied"] == 1
    run_pmm("--mind", str(a), "export", "-o", str(tmp_path / "a.jsonl"), check=True)
    second = run_pmm("--mind", str(b), "merge", str(tmp_path / "a.jsonl"), "--json")
    assert second.returncode == 0, second.stderr.decode()
    done = json_data(second.stdout)
    assert (done["copied"], done["already_here"]) == (1, 1)  # A's note; B's own note came back

    stats_a = json_data(run_pmm("--mind", str(a), "stats", "--json", check=True).stdout)
    stats_b = json_data(run_pmm("--mind", str(b), "stats", "--json", check=True).stdout)
    assert same_state(stats_a) == same_state(stats_b)
    assert stats_a["observations"] == 3 and stats_a["events"] == 4  # the mind_merged event counts in none
    for copy in (a, b):
        checked = run_pmm("verify", str(copy), "--json")
        assert checked.returncode == 0, checked.stdout.decode()
        assert json_data(checked.stdout)["witness"]["state"] in ("current", "merged")
    notes = {e["content"] for e in mind_events(b, "observation_recorded")}
    assert notes == {"before the copies parted", "a note written on the laptop", "a note written on the desktop"}


def test_merging_again_adds_nothing(tmp_path: Path) -> None:
    a, b = two_copies(tmp_path)
    run_in("--mind", str(a), "remember", "on a", check=True)
    run_in("--mind", str(b), "remember", "on b", check=True)
    cli_json(a, "merge", str(b))
    cli_json(b, "merge", str(a))
    before = (digest(a), digest(b))
    again_a, again_b = cli_json(a, "merge", str(b)), cli_json(b, "merge", str(a))
    assert again_a["appended"] == again_b["appended"] == 0
    assert (digest(a), digest(b)) == before
    assert "nothing new" in run_in("--mind", str(a), "merge", str(b)).stderr.decode()


def write(path: Path, *drafts: Draft) -> list[int]:
    with Ledger.open(path, write=True) as mind:
        return [e.id for e in mind.append(list(drafts))]


def test_order_dependent_changes_converge_whichever_side_merges_first(tmp_path: Path) -> None:
    """Renames (the last wins), clamped trait steps, a commitment kept with evidence, a model
    switch and the same note on both sides, interleaved in time: both copies end in one state."""
    a, b = two_copies(tmp_path)
    write(a, Draft("mind_named", "Ada", {"name": "Ada"}))
    write(b, Draft("mind_named", "Bea", {"name": "Bea"}),
          Draft("trait_adjusted", "bolder", {"trait": "openness", "delta": 0.9}))
    (opened,) = write(a, Draft("commitment_opened", "write the report", {"source": "user"}))
    (evidence,) = write(a, Draft("observation_recorded", "the report is written", {"source": "user"}))
    write(b, Draft("trait_adjusted", "calmer", {"trait": "openness", "delta": -0.4}),
          Draft("observation_recorded", "the same note", {"source": "user"}))
    write(a, Draft("commitment_closed", "done", {"commitment": opened, "evidence": [evidence]}),
          Draft("observation_recorded", "the same note", {"source": "user"}),
          Draft("model_added", "m = ollama:x", {"name": "m", "provider": "ollama", "model": "x"}),
          Draft("model_switched", "to m", {"name": "m", "provider": "ollama", "model": "x", "role": "chat"}))
    write(b, Draft("mind_named", "Cy", {"name": "Cy"}))

    into_a = cli_json(a, "merge", str(b))
    assert into_a["duplicates"] == 1 and into_a["copied"] == 4
    into_b = cli_json(b, "merge", str(a))
    assert (into_b["copied"], into_b["already_here"], into_b["duplicates"]) == (6, 5, 0)  # its copy of our note is known by the alias
    stats_a, stats_b = cli_json(a, "stats"), cli_json(b, "stats")
    assert same_state(stats_a) == same_state(stats_b)
    assert stats_a["name"] == "Cy"  # the last rename in time, on either copy
    # B's copy of A's close names the commitment by the id its copy has in B
    closes = mind_events(b, "commitment_closed")
    (copied_open,) = [e["id"] for e in mind_events(b, "commitment_opened")]
    assert closes[0]["meta"]["commitment"] == copied_open != opened
    listed_a = cli_json(a, "commitments", "list", "--all")
    listed_b = cli_json(b, "commitments", "list", "--all")
    assert _texts(listed_a) == _texts(listed_b) != []
    for copy in (a, b):  # the cache the merge sealed is what a replay from the first event gives
        deep = cli_json(copy, "verify", "--deep")
        assert deep["deep"]["cache_matches_replay"] is True, deep["deep"]


def _texts(listed: object) -> list:
    rows = listed["commitments"] if isinstance(listed, dict) else listed
    return sorted((c["text"], c["status"]) for c in rows)


def test_the_same_note_on_both_copies_is_one_note(tmp_path: Path) -> None:
    a, b = two_copies(tmp_path)
    run_in("--mind", str(a), "remember", "buy milk", check=True)
    run_in("--mind", str(b), "remember", "buy milk", check=True)
    result = cli_json(a, "merge", str(b))
    assert (result["copied"], result["duplicates"]) == (0, 1)
    cli_json(b, "merge", str(a))
    assert same_state(cli_json(a, "stats")) == same_state(cli_json(b, "stats"))
    assert [e["content"] for e in mind_events(a, "observation_recorded")].count("buy milk") == 1
    assert cli_json(a, "merge", str(b))["appended"] == cli_json(b, "merge", str(a))["appended"] == 0


def test_a_copy_that_only_continued_this_one_is_appended_as_it_is(tmp_path: Path) -> None:
    a, b = two_copies(tmp_path)
    run_in("--mind", str(b), "remember", "only b went on", check=True)
    result = cli_json(a, "merge", str(b))
    assert result["extended"] and result["appended"] == 1
    assert digest_rows(a) == digest_rows(b)  # same ids, same hashes
    assert cli_json(b, "merge", str(a))["appended"] == 0  # a copy that is behind adds nothing


def digest_rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, hash FROM events ORDER BY id").fetchall()
    finally:
        conn.close()


def test_dry_run_says_what_would_be_merged_and_writes_nothing(tmp_path: Path) -> None:
    a, b = two_copies(tmp_path)
    run_in("--mind", str(b), "remember", "on b", check=True)
    run_in("--mind", str(a), "remember", "on a", check=True)
    before = digest(a)
    planned = cli_json(a, "merge", str(b), "--dry-run")
    assert planned["dry_run"] and planned["copied"] == 1 and planned["appended"] == 2
    assert digest(a) == before
    assert "Would merge" in run_in("--mind", str(a), "merge", str(b), "-n").stderr.decode()


def test_hostile_or_foreign_input_is_refused_with_nothing_written(tmp_path: Path) -> None:
    a, b = two_copies(tmp_path)
    run_in("--mind", str(a), "remember", "on a", check=True)
    run_in("--mind", str(b), "remember", "on b", check=True)
    export = tmp_path / "b.jsonl"
    run_in("--mind", str(b), "export", "-o", str(export), check=True)
    lines = export.read_text().splitlines()
    tampered = json.loads(lines[-2])
    tampered["content"] = "an altered note"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:-2], json.dumps(tampered), lines[-1]]) + "\n")
    other = tmp_path / "other.db"
    run_in("--mind", str(other), "init", check=True)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\xff" * 100)
    before = digest(a)
    for source in (bad, other, junk, tmp_path / "missing.jsonl"):
        refused = run_pmm("--mind", str(a), "merge", str(source), "--json")
        assert refused.returncode == 6, (source, refused.stderr.decode())
        json_failure(refused.stdout, 6)
        assert b"Traceback" not in refused.stderr
    assert run_pmm("--mind", str(a), "merge", str(a)).returncode == 2
    assert digest(a) == before


def test_a_partial_export_from_after_the_fork_is_refused(tmp_path: Path) -> None:
    a, b = two_copies(tmp_path)
    run_in("--mind", str(a), "remember", "on a", check=True)
    run_in("--mind", str(b), "remember", "on b", check=True)
    run_in("--mind", str(b), "remember", "on b again", check=True)
    part = tmp_path / "part.jsonl"
    run_in("--mind", str(b), "export", "--since", "4", "-o", str(part), check=True)
    refused = run_in("--mind", str(a), "merge", str(part))
    assert refused.returncode == 6 and "diverged" in refused.stderr.decode()
    from_fork = tmp_path / "from_fork.jsonl"
    run_in("--mind", str(b), "export", "--since", "3", "-o", str(from_fork), check=True)
    assert cli_json(a, "merge", str(from_fork))["copied"] == 2


def test_every_declared_event_id_field_is_mapped_by_a_merge() -> None:
    """A merged event's references to other events are mapped to the ids those have here: a
    new kind with an id field must be listed in events.EVENT_REFERENCES (or NOT_REFERENCES)."""
    for kind in ev.KINDS.values():
        for name, spec in kind.meta.items():
            if spec.high == MAX_ID and spec.type in ("int", "list"):
                assert name in ev.EVENT_REFERENCES | ev.NOT_REFERENCES, (kind.name, name)


@pytest.mark.parametrize("source", ["mind", "export"])
def test_a_merge_recorded_where_each_event_came_from(tmp_path: Path, source: str) -> None:
    a, b = two_copies(tmp_path)
    run_in("--mind", str(a), "remember", "on a", check=True)
    run_in("--mind", str(b), "remember", "on b", check=True)
    theirs = mind_events(b)[-1]
    other = b
    if source == "export":
        other = tmp_path / "b.jsonl"
        run_in("--mind", str(b), "export", "-o", str(other), check=True)
    cli_json(a, "merge", str(other))
    copy, marker = mind_events(a)[-2:]
    assert (copy["kind"], copy["content"], marker["kind"]) == ("observation_recorded", "on b", "mind_merged")
    conn = sqlite3.connect(f"file:{b}?mode=ro", uri=True)
    their_hash = conn.execute("SELECT hash FROM events WHERE id = ?", (theirs["id"],)).fetchone()[0]
    conn.close()
    meta = marker["meta"]
    assert meta["their_ids"] == [theirs["id"]] and meta["their_hashes"] == [their_hash]
    assert meta["origin_hashes"] == [their_hash] and meta["fork"] == 2 and meta["source"] == source


def test_a_merged_mind_exported_and_imported_elsewhere_reads_the_same(tmp_path: Path) -> None:
    """A mind_merged event read by an import (a new file, or the tail of an existing copy) is
    folded as the merge folded it: the same state, and a cache equal to a full replay."""
    a, b = two_copies(tmp_path)
    run_in("--mind", str(b), "remember", "on b", check=True)
    write(a, Draft("mind_named", "Late", {"name": "Late"}))
    write(b, Draft("mind_named", "Later", {"name": "Later"}))
    cli_json(a, "merge", str(b))
    export = tmp_path / "merged.jsonl"
    run_in("--mind", str(a), "export", "-o", str(export), check=True)
    fresh = tmp_path / "fresh.db"
    run_in("--mind", str(fresh), "import", str(export), check=True)
    assert same_state(cli_json(fresh, "stats")) == same_state(cli_json(a, "stats"))
    assert cli_json(fresh, "stats")["name"] == "Later"
    assert cli_json(fresh, "verify", "--deep")["deep"]["cache_matches_replay"] is True


def test_merge_into_a_missing_mind_is_exit_4(tmp_path: Path) -> None:
    a, _ = two_copies(tmp_path)
    refused = run_in("--mind", str(tmp_path / "none.db"), "merge", str(a))
    assert refused.returncode == 4 and not (tmp_path / "none.db").exists()


def test_a_crafted_marker_in_the_other_copy_is_only_data(tmp_path: Path) -> None:
    """The other copy's mind_merged events with nonsense provenance (ids out of range, times
    that are not times, lists of different lengths) neither crash the merge nor reach a marker
    written here."""
    a, b = two_copies(tmp_path)
    run_in("--mind", str(a), "remember", "on a", check=True)
    run_in("--mind", str(b), "remember", "on b", check=True)
    write(b, Draft("mind_merged", "crafted", {
        "fork": 2, "fork_hash": "x", "other_head_id": 1, "other_head": "x", "other_branch": "x",
        "their_ids": [3, 3, 3, 3, 3, 3], "their_hashes": ["x"], "origin_ts": ["not a time"],
        "origin_ids": [MAX_ID], "origin_hashes": ["y" * 64],
        "same": [MAX_ID], "same_ts": ["2020-01-01T00:00:00.000000Z"], "same_ids": [1],
        "same_hashes": ["z"]}))
    run_in("--mind", str(b), "remember", "after the crafted one", check=True)
    merged = cli_json(a, "merge", str(b))
    assert merged["copied"] == 2
    marker = mind_events(a, "mind_merged")[-1]["meta"]
    assert all(len(h) == 64 for h in marker["origin_hashes"] + marker.get("same_hashes", []))
    assert run_pmm("verify", str(a)).returncode == 0


# -- whichever order, whatever was written: one state ------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NOTES = st.sampled_from(["tea", "coffee", "water"])  # few texts: the same note on both sides is common
STEP = st.one_of(
    st.tuples(st.just("note"), NOTES),
    st.tuples(st.just("name"), st.sampled_from(["Ada", "Bea", "Cy"])),
    st.tuples(st.just("trait"), st.sampled_from([-0.9, -0.3, 0.4, 0.8])),
    st.tuples(st.just("commit"), NOTES),
    st.tuples(st.just("close"), st.just("")),
)
# (which copy writes, what) in the order written: the two copies' times interleave
HISTORY = st.lists(st.tuples(st.sampled_from("ab"), STEP), min_size=1, max_size=10)


def _draft(path: Path, step: tuple[str, object]) -> Draft | None:
    what, value = step
    if what == "note":
        return Draft("observation_recorded", str(value), {"source": "user"})
    if what == "name":
        return Draft("mind_named", str(value), {"name": value})
    if what == "trait":
        return Draft("trait_adjusted", "step", {"trait": "openness", "delta": value})
    if what == "commit":
        return Draft("commitment_opened", f"do {value}", {"source": "user"})
    opened = [e["id"] for e in mind_events(path, "commitment_opened")]
    if not opened:
        return None
    return Draft("commitment_closed", "kept", {"commitment": opened[-1], "evidence": [opened[-1]]})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(HISTORY, HISTORY, st.booleans())
def test_any_two_histories_merge_both_ways_to_one_state(tmp_path: Path, first: list, then: list,
                                                         a_first: bool) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        a, b = two_copies(Path(d))
        for rounds in (first, then):
            for side, step in rounds:
                path = a if side == "a" else b
                if (draft := _draft(path, step)) is not None:
                    write(path, draft)
            order = [(a, b), (b, a)] if a_first else [(b, a), (a, b)]
            for into, other in order:
                cli_json(into, "merge", str(other))
            assert same_state(cli_json(a, "stats")) == same_state(cli_json(b, "stats"))
            assert cli_json(a, "merge", str(b))["appended"] == 0
            assert cli_json(b, "merge", str(a))["appended"] == 0
        assert cli_json(a, "verify", "--deep")["deep"]["cache_matches_replay"] is True


def test_a_copy_behind_a_merge_takes_it_as_it_is(tmp_path: Path) -> None:
    """A third copy that only lags the one that merged takes its tail, mind_merged event and
    all (appended as they are), and reads it the same way: one state, a cache equal to a replay."""
    a, b = two_copies(tmp_path)
    c = tmp_path / "c.db"
    run_in("--mind", str(c), "import", str(tmp_path / "shared.jsonl"), check=True)
    write(a, Draft("mind_named", "Ann", {"name": "Ann"}))
    write(b, Draft("mind_named", "Bo", {"name": "Bo"}))
    write(a, Draft("mind_named", "Al", {"name": "Al"}))
    cli_json(a, "merge", str(b))
    taken = cli_json(c, "merge", str(a))
    assert taken["extended"] and digest_rows(c) == digest_rows(a)
    assert same_state(cli_json(c, "stats")) == same_state(cli_json(a, "stats"))
    assert cli_json(c, "stats")["name"] == "Al"
    assert cli_json(c, "verify", "--deep")["deep"]["cache_matches_replay"] is True


def test_a_merged_model_sends_nothing_until_the_owner_trusts_it(tmp_path: Path) -> None:
    """SPEC section 6: a model the other copy added (another host, another key variable) comes
    with the merge as an event, and this machine sends it nothing until its owner says so."""
    from provider_servers import FakeServer

    a, b = two_copies(tmp_path)
    run_in("--mind", str(a), "remember", "on a", check=True)
    with FakeServer("openai", text="answer") as server:
        spec = {"name": "evil", "provider": "openai-compatible", "model": server.model}
        write(b, Draft("model_added", "evil", {**spec, "base_url": server.url, "api_key_env": "MY_BANK_PASSWORD"}),
              Draft("model_switched", "to evil", {**spec, "role": "chat"}))
        assert cli_json(a, "merge", str(b))["copied"] == 2
        refused = run_in("--mind", str(a), "chat", "-m", "hello", env={"MY_BANK_PASSWORD": "hunter2"})
        assert refused.returncode == 2, refused.stderr.decode()
        assert f"talks to {server.url} and sends $MY_BANK_PASSWORD" in refused.stderr.decode()
        assert server.requests == []


def test_the_same_import_on_both_copies_is_imported_once(tmp_path: Path) -> None:
    """A ChatGPT export imported into each copy after they parted: every event of it (sessions,
    messages, answers naming the messages they reply to) is recognised as a duplicate."""
    source = Path(__file__).parent / "data" / "chatgpt_conversations.json"
    a, b = two_copies(tmp_path)
    run_in("--mind", str(a), "remember", "on a", check=True)
    for copy in (a, b):
        run_in("--mind", str(copy), "import", str(source), check=True)
    imported = len(mind_events(b)) - 2
    merged = cli_json(a, "merge", str(b))
    assert (merged["copied"], merged["duplicates"]) == (0, imported)
    cli_json(b, "merge", str(a))
    stats_a, stats_b = cli_json(a, "stats"), cli_json(b, "stats")
    assert same_state(stats_a) == same_state(stats_b)
    assert stats_a["messages"] == stats_b["messages"] == len(mind_events(b, "message_received"))


def test_a_large_export_bad_far_in_is_refused_with_nothing_written(tmp_path: Path) -> None:
    """Over 1 MiB, the export is read and checked by a second process: a line altered near its
    end still refuses the whole merge (exit 6, naming the file and the line), and nothing is
    written."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    from bench_ledger import synthetic_export

    source, a = tmp_path / "big.jsonl", tmp_path / "a.db"
    synthetic_export(source, 4000)
    assert source.stat().st_size > 1 << 20
    run_in("--mind", str(a), "import", str(source), check=True)
    run_in("--mind", str(a), "remember", "on a", check=True)
    lines = source.read_text().splitlines()
    altered = json.loads(lines[3900])
    altered["content"] += " (altered)"
    lines[3900] = json.dumps(altered)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    before = digest(a)
    refused = run_pmm("--mind", str(a), "merge", str(bad))
    error = refused.stderr.decode()
    assert refused.returncode == 6 and f"{bad}: line 3901" in error, error
    assert len(error.strip().splitlines()) <= 2, error  # the error and at most its hint
    assert digest(a) == before


def test_as_of_a_merged_mind_reads_it_as_the_merge_does_and_keeps_no_snapshot_past_it(tmp_path: Path) -> None:
    """--as-of past a merge replays as a merged mind reads (the fold again from the fork), so it
    agrees with `pmm stats`; before the merge it shows the copy as it was; no snapshot is kept
    from the first merge on (a plain fold of what came before would not be the state there)."""
    a, b = two_copies(tmp_path)
    run_in("--mind", str(a), "rename", "Ada", check=True)
    run_in("--mind", str(b), "rename", "Bea", check=True)  # two renames: the order decides the name
    before_merge = cli_json(b, "stats")["head_id"]
    cli_json(a, "merge", str(b))
    cli_json(b, "merge", str(a))  # on b, Ada's rename is appended after Bea's but happened before it
    merged = {}
    for copy in (a, b):
        merged[copy] = cli_json(copy, "stats")
        run_in("--mind", str(copy), "remember", "after the merge", check=True)  # the cache moves on
        then = cli_json(copy, "stats", "--as-of", str(merged[copy]["head_id"]))
        assert same_state({k: v for k, v in then.items() if k != "as_of"}) == same_state(merged[copy])
    assert merged[a]["name"] == merged[b]["name"] == "Bea"
    assert cli_json(b, "stats", "--as-of", str(before_merge))["name"] == "Bea"
    assert cli_json(a, "stats", "--as-of", str(before_merge))["name"] == "Ada"
    from pmm.ledger import past
    with sqlite3.connect(a) as conn:
        assert past.first_merge(conn) is not None
        past.store(conn, "unused", [(past.SPACING, "h", {})], past.SPACING)
        assert past.ids(conn) == []  # a snapshot point after the merge: not kept


def test_a_merged_copy_put_in_place_of_the_mind_it_was_merged_into_is_a_rollback(tmp_path: Path) -> None:
    """The witness judges a file by its own history first: after x merged y, `cp y.db x.db`
    throws x's own events and the merge away, and verify says so (exit 3), though y itself
    passes as a merged copy."""
    a, b = two_copies(tmp_path)
    run_in("--mind", str(a), "remember", "on a", check=True)
    run_in("--mind", str(b), "remember", "on b", check=True)
    cli_json(a, "merge", str(b))
    assert run_pmm("verify", str(b)).returncode == 0  # the merged copy, where it is
    a.write_bytes(b.read_bytes())
    done = run_pmm("verify", str(a), "--json")
    assert done.returncode == 3, done.stdout.decode()
    assert json_data(done.stdout)["witness"]["state"] in ("forked", "truncated", "rolled_back")


def test_a_write_that_lands_while_the_merge_is_planned_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan reads the whole other copy first (slow); a note written here meanwhile (a real
    second process) makes the merge refuse, nothing written, rather than copy from a head it
    did not plan from (which could append the same copies twice)."""
    from pmm.services import merge

    a, b = two_copies(tmp_path)
    run_in("--mind", str(b), "remember", "on b", check=True)
    real = merge.plan

    def plan_then_another_writer(*args, **kwargs):
        planned = real(*args, **kwargs)
        run_pmm("--mind", str(a), "remember", "written meanwhile", check=True)
        return planned

    monkeypatch.setattr(merge, "plan", plan_then_another_writer)
    done = run_in("--mind", str(a), "merge", str(b))
    assert done.returncode == 6 and b"written to while the merge was planned" in done.stderr, done.stderr
    assert [e["content"] for e in mind_events(a, "observation_recorded")][-1] == "written meanwhile"
    assert not mind_events(a, "mind_merged")
