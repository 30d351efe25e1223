"""The witness under pressure: a verify racing a writer is not a false rollback, a file rewritten
under a new mind id is caught, verifying many other copies cannot launder a rollback, a writer
killed before it closes has its commits witnessed, and a forged partial export can never push
the witnessed head ahead (after which the genuine mind would look forked)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import invoke, json_data, restore_guards, unguarded

from pmm.domain.checkpoint import Checkpoint
from pmm.domain.events import Draft
from pmm.ledger.chain import chain_prefix, event_hash
from pmm.ledger.jsonl import end_line, event_lines, header_line
from pmm.services import integrity, opening, witness


def _note(i: int) -> Draft:
    return Draft("observation_recorded", f"note {i}", {"source": "user"})


def _mind(path: Path, events: int) -> Path:
    with opening.init(path, "Witnessed") as writer:
        writer.append([_note(i) for i in range(2, events + 1)])
    return path


def _verify(path: Path | str, *extra: str, input: bytes | None = None) -> tuple[int, dict]:
    result = invoke("verify", str(path), "--json", *extra, input=input)
    return result.exit_code, json_data(result.stdout)


def test_a_writer_appending_during_verify_is_not_a_rollback(tmp_path: Path) -> None:
    """The writer commits (and tells the witness) after verify read the file and before it
    judges it: exactly the moment chosen here, through the progress callback."""
    mind = _mind(tmp_path / "mind.db", 5)
    appended = []

    def writer_strikes(_: int) -> None:
        if not appended:
            with opening.open_write(mind, lambda _m: None) as other:
                appended.extend(other.append([_note(6), _note(7)]))

    report = integrity.verify_file(mind, integrity.Checks(path=mind), on_progress=writer_strikes)
    assert appended and report.ok, report.problem
    assert report.last_id == 5 and report.witness is not None
    assert report.witness["state"] == "current" and "a writer appended 2 events" in report.witness["message"]
    code, again = _verify(mind)
    assert code == 0 and again["witness"]["state"] == "current" and again["last_id"] == 7


def test_a_real_rollback_is_still_one_when_the_file_is_read_again(tmp_path: Path) -> None:
    mind = _mind(tmp_path / "mind.db", 5)
    older = tmp_path / "older.db"
    shutil.copy(mind, older)
    with opening.open_write(mind, lambda _m: None) as writer:
        writer.append([_note(6)])
    shutil.copy(older, mind)
    code, report = _verify(mind)
    assert code == 3 and report["witness"]["state"] == "rolled_back"


def test_a_rewrite_under_a_new_mind_id_at_the_same_path_is_caught(tmp_path: Path) -> None:
    mind = _mind(tmp_path / "mind.db", 4)
    other = _mind(tmp_path / "other.db", 9)
    assert _verify(mind)[0] == 0
    shutil.copy(other, mind)  # another mind (hash-valid on its own) put in this one's place
    result = invoke("verify", str(mind))
    assert result.exit_code == 3, result.output
    error, hint = result.stderr.splitlines()[:2]
    assert "this file held another mind" in error and "--accept-rollback" in hint
    assert invoke("verify", str(mind), "--accept-rollback").exit_code == 0
    assert _verify(mind)[1]["witness"]["state"] == "current"


def test_an_export_file_rewritten_with_another_minds_export_is_not_a_replacement(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    for name, events in (("a.db", 3), ("b.db", 4)):
        mind = _mind(tmp_path / name, events)
        assert invoke("--mind", str(mind), "export", "-o", str(out)).exit_code == 0
        code, report = _verify(out)
        assert code == 0, report


def test_a_new_mind_made_by_pmm_at_the_same_path_is_not_a_replacement(tmp_path: Path) -> None:
    mind = _mind(tmp_path / "mind.db", 4)
    assert _verify(mind)[0] == 0
    mind.unlink()
    assert invoke("--mind", str(mind), "init").exit_code == 0
    code, report = _verify(mind)
    assert code == 0, report
    mind.unlink()
    export = invoke("--mind", str(_mind(tmp_path / "src.db", 3)), "export").stdout_bytes
    assert invoke("--mind", str(mind), "import", "-", input=export).exit_code == 0
    assert _verify(mind)[0] == 0


def test_verifying_many_other_copies_cannot_launder_a_rollback(tmp_path: Path) -> None:
    chain = {i: f"{i:064x}" for i in range(1, 11)}
    mid = "c" * 32
    assert witness.observe(Checkpoint(mid, 9, chain[9]), chain.get, tmp_path / "a.db", "write").ok
    for n in range(100):  # far more copies than any per-mind table of files would keep
        assert witness.observe(Checkpoint(mid, 3, chain[3]), chain.get, tmp_path / f"copy{n}.db").state == "behind"
    assert witness.observe(Checkpoint(mid, 5, chain[5]), chain.get, tmp_path / "a.db").state == "truncated"


def test_a_fork_at_any_depth_is_caught_with_bounded_memory(tmp_path: Path) -> None:
    """A writer's 600 commits: the witness keeps the recent heads and older ones spaced out by
    powers of two, so a copy that diverged near the start (and stops 300 commits before the
    top, below any window of recent heads) is still forked, not behind."""
    top = 600
    chain = {i: f"{i:064x}" for i in range(1, top + 1)}
    mid = "d" * 32
    for i in range(1, top + 1):
        witness.observe(Checkpoint(mid, i, chain[i]), chain.get, tmp_path / "a.db", "write")
    kept = witness.known(mid, None)
    assert max(kept) == top and len(kept) <= witness.KEEP_RECENT + top.bit_length() + 1
    for depth in (3, 20, 150, top - 1):  # diverged at event `depth`
        forked = {i: (h if i < depth else f"{i:063x}f") for i, h in chain.items()}
        for size in (300, top):
            if size >= depth:
                verdict = witness.observe(Checkpoint(mid, size, forked[size]), forked.get,
                                          tmp_path / "b.db", remember=False)
                assert verdict.state == "forked", (depth, size, verdict.message)
    # a genuine copy behind is still only behind
    assert witness.observe(Checkpoint(mid, 10, chain[10]), chain.get, tmp_path / "c.db").state == "behind"


def test_a_writer_killed_before_it_closes_has_its_commits_witnessed(tmp_path: Path) -> None:
    """The witness learns every COMMIT as it happens, not when the writer closes."""
    mind = _mind(tmp_path / "mind.db", 3)
    writer = opening.open_write(mind, lambda _m: None)
    try:
        (event,) = writer.append([_note(4)])
        report = json_data(invoke("verify", str(mind), "--json", "--no-witness").stdout)
        assert witness.known(report["mind_id"], mind).get(4) == event.hash  # before any close
    finally:
        writer.close()
    cut = unguarded(mind)  # and so a cut after a killed writer is caught
    cut.execute("DELETE FROM events WHERE id = 4")
    restore_guards(cut)  # covering the tracks: pmm refuses a file whose schema it did not make
    cut.close()
    code, report = _verify(mind)
    assert code == 3 and report["witness"]["state"] in ("rolled_back", "truncated")


def _forged_partial(mind_id: str, since: int, n: int) -> bytes:
    """Events since..since+n-1 of ``mind_id``, hash-valid among themselves, from nowhere."""
    prefix, prev, rows = chain_prefix(1, mind_id), "9" * 64, []
    for i in range(since, since + n):
        ts, content = "2026-01-01T00:00:00.000000Z", f"forged {i}"
        digest = event_hash(prefix, i, ts, "observation_recorded", content, "{}", prev)
        rows.append((i, ts, "observation_recorded", content, "{}", prev, digest))
        prev = digest
    return (header_line(mind_id, 1, since) + "".join(event_lines(rows)) + end_line(n, since + n - 1, prev)).encode()


def test_a_forged_partial_export_never_advances_the_witness(tmp_path: Path) -> None:
    mind = _mind(tmp_path / "mind.db", 5)
    code, report = _verify(mind)
    mid = report["mind_id"]
    # since = the witnessed head + 1: its link is checked against what the witness knows
    result = invoke("verify", "-", input=_forged_partial(mid, 6, 4))
    assert result.exit_code == 3 and "event 6: does not link to event 5 as pmm knows it" in result.stderr
    # further on, where the witness knows nothing: judged, never recorded
    code, forged = _verify("-", input=_forged_partial(mid, 8, 4))
    assert code == 0 and forged["anchored"] is False and max(witness.known(mid, None)) == 5
    (tmp_path / "forged.jsonl").write_bytes(_forged_partial(mid, 8, 4))
    assert invoke("verify", str(tmp_path / "forged.jsonl"), "--accept-rollback").exit_code == 3
    key = tmp_path / "key.pem"
    assert invoke("keygen", "-o", str(key)).exit_code == 0
    signed = invoke("sign", str(tmp_path / "forged.jsonl"), "--key", str(key), "-o", str(tmp_path / "f.sig"))
    assert signed.exit_code == 3 and "partial export" in signed.stderr and not (tmp_path / "f.sig").exists()
    code, genuine = _verify(mind)  # the genuine mind is not made to look forked
    assert code == 0 and genuine["witness"]["state"] == "current"


def test_a_genuine_partial_export_links_to_the_witnessed_head(tmp_path: Path) -> None:
    mind = _mind(tmp_path / "mind.db", 5)
    assert _verify(mind)[0] == 0
    copy = tmp_path / "copy.db"
    shutil.copy(mind, copy)
    with opening.open_write(copy, lambda _m: None) as writer:  # a copy pmm has not seen the tail of
        writer.on_commit = writer.on_close = None
        writer.append([_note(i) for i in range(6, 10)])
    part = invoke("--mind", str(copy), "export", "--since", "6")
    assert part.exit_code == 0, part.output
    code, report = _verify("-", input=part.stdout_bytes)
    assert code == 0 and report["anchored"] is True and report["events"] == 4
    # judged as extending the witnessed head, but never learnt: only a writer advances a mind
    assert report["witness"]["state"] == "ahead" and max(witness.known(report["mind_id"], None)) == 5
    code, genuine = _verify(mind)
    assert code == 0 and genuine["witness"]["state"] == "current"


@pytest.mark.parametrize("since", [1, 5])
def test_sign_of_an_export_signs_what_it_verified(tmp_path: Path, since: int) -> None:
    """A whole export, or a partial one that starts at a head pmm witnessed (event 4 here)."""
    mind = _mind(tmp_path / "mind.db", 4)
    with opening.open_write(mind, lambda _m: None) as writer:
        writer.append([_note(5), _note(6)])
    export = tmp_path / "m.jsonl"
    export.write_bytes(invoke("--mind", str(mind), "export", "--since", str(since)).stdout_bytes)
    key = tmp_path / "key.pem"
    assert invoke("keygen", "-o", str(key)).exit_code == 0
    result = invoke("sign", str(export), "--key", str(key), "-o", str(tmp_path / "m.sig"), "--json")
    assert result.exit_code == 0, result.output
    assert json_data(result.stdout)["events"] == 6
