"""The owner can overrule the mind, and the counts are honest (issue 12, items 4, 5 and 6).

Through the real CLI (in-process): a retracted reflection's trait steps disappear from
`pmm stats` while `pmm verify` still passes, its commitments are dropped and recall no longer
brings it; `pmm commitments drop`; a closed then reopened commitment is not counted as kept;
imported turns do not age a commitment nor count as engagement. Bad ids are usage errors
(exit 2) that write nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke, json_data

from pmm.domain.events import Draft
from pmm.services import opening


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    path = tmp_path / "mind.db"
    assert invoke("--mind", str(path), "init", "--name", "Ada").exit_code == 0
    return path


def pmm(mind: Path, *args: str, code: int = 0) -> Any:
    """``pmm --mind MIND ARGS``: the parsed --json output when asked for, else the result."""
    result = invoke("--mind", str(mind), *args)
    assert result.exit_code == code, (args, result.output)
    return json_data(result.stdout) if "--json" in args and code == 0 else result


def append(mind: Path, *drafts: Draft) -> list[int]:
    with opening.open_write(mind, lambda _m: None) as opened:
        return [e.id for e in opened.append(list(drafts))]


def reflection(mind: Path, text: str, steps: list[tuple[str, float]], opens: list[str] = ()) -> int:
    """A reflection as `pmm reflect` records it: the reflection, then its trait steps and
    commitments, in one transaction."""
    with opening.open_write(mind, lambda _m: None) as opened:
        head = opened.head()[0]

        def drafts(first: int) -> list[Draft]:
            out = [Draft("reflection_recorded", text, {"first_id": 1, "last_id": head, "trigger": "manual"})]
            out += [Draft("trait_adjusted", f"because of {trait}", {"trait": trait, "delta": delta,
                                                                     "reflection": first})
                    for trait, delta in steps]
            out += [Draft("commitment_opened", c, {"source": "reflection", "reflection": first}) for c in opens]
            return out

        return opened.append(drafts)[0].id


def count(mind: Path) -> int:
    return pmm(mind, "stats", "--json")["events"]


def test_a_retracted_reflection_is_undone_in_stats_and_recall_and_verify_passes(mind: Path) -> None:
    append(mind, Draft("message_received", "We planted tomatoes and basil today.", {}))
    first = reflection(mind, "The user grows tomatoes; I am curious about their garden.",
                       [("openness", 0.05), ("agreeableness", -0.03)], ["Ask how the tomatoes grow"])
    append(mind, Draft("message_received", "The weather was lovely.", {}))
    second = reflection(mind, "We talked about the weather.", [("openness", 0.05)])
    before = pmm(mind, "stats", "--json")
    assert before["traits"]["openness"] == 0.6 and before["traits"]["agreeableness"] == 0.47
    assert before["reflections"]["count"] == 2
    assert first in pmm(mind, "recall", "tomatoes", "--json")["context_ids"]

    report = pmm(mind, "reflections", "retract", str(first), "--reason", "it made things up", "--json")
    assert report["traits"] == {"openness": [0.6, 0.55], "agreeableness": [0.47, 0.5]}
    assert report["dropped"] == [first + 3] and report["reopened"] == []
    after = pmm(mind, "stats", "--json")
    assert after["traits"]["openness"] == 0.55 and after["traits"]["agreeableness"] == 0.5
    assert after["reflections"] == {**after["reflections"], "count": 1, "latest_id": second, "retracted": 1}
    assert after["metrics"]["reflection_depth"] == 0.05 and after["metrics"]["trait_development"] == 0.05
    assert after["commitments"]["dropped"] == 1 and after["commitments"]["open"] == 0
    assert first not in pmm(mind, "recall", "tomatoes", "--json")["context_ids"]
    assert pmm(mind, "verify", "--deep").exit_code == 0  # the chain holds; the cache equals a replay

    listed = pmm(mind, "reflections", "list", "--json")
    assert [r["id"] for r in listed["reflections"]] == [second] and listed["retracted"] == 1
    text = pmm(mind, "reflections", "list", "--all").stdout
    assert f"#{first}" in text and "RETRACTED" in text.splitlines()[1] and "RETRACTED" not in text.splitlines()[2]
    shown = pmm(mind, "reflections", "show", str(first), "--json")
    assert shown["retracted"] and shown["retraction_reason"] == "it made things up"
    assert [e["kind"] for e in shown["led_to"]] == ["trait_adjusted", "trait_adjusted", "commitment_opened"]
    assert "RETRACTED by event" in pmm(mind, "reflections", "show", str(first)).stdout

    events = count(mind)
    again = pmm(mind, "reflections", "retract", str(first), "--reason", "twice", code=2)
    assert "retracted already" in again.stderr
    assert "not a reflection" in pmm(mind, "reflections", "retract", "2", "--reason", "x", code=2).stderr
    assert "no event #999" in pmm(mind, "reflections", "retract", "999", "--reason", "x", code=2).stderr
    assert "no event #999" in pmm(mind, "reflections", "show", "999", code=2).stderr
    pmm(mind, "reflections", "retract", str(second), "--reason", " ", code=2)
    assert count(mind) == events, "a refused retraction writes nothing"


def test_retracting_the_latest_shows_the_one_before_in_standing_memory_read_from_the_ledger(
        mind: Path) -> None:
    """The projection keeps no reflection's text (a retraction's window holds ids and times):
    the chat prompt reads the latest reflection's text from the ledger."""
    append(mind, Draft("message_received", "We planted tomatoes and basil today.", {}))
    first = reflection(mind, "The user grows tomatoes in a sunny corner.", [])
    append(mind, Draft("message_received", "The weather was lovely.", {}))
    second = reflection(mind, "We talked about the weather.", [])
    sent = pmm(mind, "recall", "tomatoes", "--json")["request"]["system"]  # standing memory's place
    assert "Latest reflection: We talked about the weather." in sent
    pmm(mind, "reflections", "retract", str(second), "--reason", "wrong")
    plan = pmm(mind, "recall", "tomatoes", "--json")
    assert "Latest reflection: The user grows tomatoes in a sunny corner." in plan["request"]["system"]
    assert "talked about the weather" not in plan["request"]["system"] + plan["request"]["context"]
    standing = next(s for s in plan["sections"] if s["name"] == "standing")
    assert [(i["id"], i["reason"]) for i in standing["items"]] == [(first, "reflection")]
    assert pmm(mind, "verify", "--deep").exit_code == 0  # the cache equals a replay


def test_a_commitment_closed_then_reopened_is_not_counted_as_kept(mind: Path) -> None:
    cid = pmm(mind, "commitments", "open", "Read the book", "--json")["id"]
    (note,) = append(mind, Draft("observation_recorded", "Finished the book", {"source": "user"}))
    pmm(mind, "commitments", "close", str(cid), "-e", str(note), "-s", "Read it")
    assert pmm(mind, "stats", "--json")["metrics"]["commitment_success"] == 1.0
    pmm(mind, "commitments", "reopen", str(cid), "--reason", "read it again")
    stats = pmm(mind, "stats", "--json")
    assert stats["commitments"]["success"] is None and stats["commitments"]["closed"] == 0
    assert stats["metrics"]["commitment_success"] == 0.0 and stats["metrics"]["commitment_reliability"] == 1.0
    assert "0 closed, 0 expired, 1 open" in pmm(mind, "commitments", "list").stdout
    (again,) = append(mind, Draft("observation_recorded", "Read it twice", {"source": "user"}))
    pmm(mind, "commitments", "close", str(cid), "-e", str(again), "-s", "Read it twice")
    listing = pmm(mind, "commitments", "list", "--json")
    assert (listing["closed"], listing["reopened"], listing["success"]) == (1, 1, 1.0), "kept once, not twice"


def test_a_dropped_commitment_counts_in_no_success_figure(mind: Path) -> None:
    kept = pmm(mind, "commitments", "open", "Water the plants", "--json")["id"]
    lapsed = pmm(mind, "commitments", "open", "Learn about compost", "--json")["id"]
    (note,) = append(mind, Draft("observation_recorded", "Watered them", {"source": "user"}))
    pmm(mind, "commitments", "close", str(kept), "-e", str(note), "-s", "Watered")
    append(mind, Draft("commitment_expired", "lapsed", {"commitment": lapsed, "reason": "due"}))
    assert pmm(mind, "commitments", "list", "--json")["success"] == 0.5
    report = pmm(mind, "commitments", "drop", str(lapsed), "--reason", "not mine to keep", "--json")
    assert report["kind"] == "commitment_dropped" and report["meta"] == {"commitment": lapsed, "source": "user"}
    listing = pmm(mind, "commitments", "list", "--json")
    assert (listing["closed"], listing["expired"], listing["dropped"], listing["success"]) == (1, 0, 1, 1.0)
    assert pmm(mind, "stats", "--json")["metrics"]["commitment_reliability"] == 1.0
    assert "1 dropped" in pmm(mind, "commitments", "list").stdout
    assert f"#{lapsed:<6} dropped" in pmm(mind, "commitments", "list", "--all").stdout

    events = count(mind)
    assert "dropped already" in pmm(mind, "commitments", "drop", str(lapsed), "-r", "again", code=2).stderr
    assert "not a commitment" in pmm(mind, "commitments", "drop", str(note), "-r", "x", code=2).stderr
    pmm(mind, "commitments", "drop", str(kept), code=2)  # --reason is required
    assert count(mind) == events
    pmm(mind, "commitments", "reopen", str(lapsed), "--reason", "after all")
    assert pmm(mind, "commitments", "list", "--json")["open"] == 1


def _claude_export(path: Path, messages: int) -> Path:
    """A Claude data export with one conversation of ``messages`` exchanges, said in 2024."""
    chat = []
    for i in range(messages):
        for sender, text in (("human", f"Question {i} about my garden?"), ("assistant", f"Answer {i}.")):
            ts = f"2024-03-10T09:{i // 60:02d}:{i % 60:02d}.{0 if sender == 'human' else 5}00000Z"
            chat.append({"uuid": f"m-{i}-{sender}", "text": text, "sender": sender, "created_at": ts,
                         "content": [{"type": "text", "text": text}]})
    export = [{"uuid": "conv-1", "name": "Garden", "created_at": "2024-03-10T09:00:00.000000Z",
               "chat_messages": chat}]
    path.write_text(json.dumps(export), encoding="utf-8")
    return path


def test_imported_turns_do_not_age_a_commitment_or_count_as_engagement(mind: Path, tmp_path: Path) -> None:
    cid = pmm(mind, "commitments", "open", "Plan the spring beds", "--json")["id"]
    pmm(mind, "import", "--format", "claude", str(_claude_export(tmp_path / "c.json", 60)))
    listing = pmm(mind, "commitments", "list", "--json")
    assert listing["commitments"][0]["overdue"] is None, "60 imported turns are history, not turns now"
    assert "OVERDUE" not in pmm(mind, "commitments", "list").stdout
    stats = pmm(mind, "stats", "--json")
    assert stats["messages"] == 60 and stats["metrics"]["turns"] == 0
    assert stats["metrics"]["engagement"] == 0.0 and stats["metrics"]["gas"] == 0.0
    assert stats["reflections"]["turns_since"] == 60, "imported messages are still worth reflecting on"
    append(mind, *[Draft("message_received", f"live {i}", {}) for i in range(50)])
    assert pmm(mind, "commitments", "list", "--json")["commitments"][0]["overdue"] == \
        "open for 50 turns without being kept"
    assert pmm(mind, "stats", "--json")["metrics"]["turns"] == 50
    assert cid == 2


def test_overruling_a_missing_mind_creates_none(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    for args in (("reflections", "retract", "2", "-r", "x"), ("commitments", "drop", "2", "-r", "x"),
                 ("commitments", "reopen", "2"), ("reflections", "list")):
        assert invoke("--mind", str(missing), *args).exit_code == 4, args
    assert not missing.exists()
