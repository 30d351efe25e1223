"""An answer opens a commitment only when it promises an act after this answer.

Table-driven over tests/data/commitment_sentences.tsv (also read by bench/bench_commitments.py):
the detector's precision must stay at least 95% on the whole table and on the held-out rows
(written after the detector was frozen), and every misclassified sentence is named on failure.
Then, through the real CLI against a fake provider, the phrasings from issue 12 open nothing
and a real promise opens one commitment.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import invoke, json_data, mind_events
from provider_servers import FakeServer

from pmm.domain import dynamics

TABLE = Path(__file__).parent / "data" / "commitment_sentences.tsv"
MIN_PRECISION = 0.95
# Not the bar (precision is what matters): a floor so that a detector that never fires, or
# fires on almost nothing, cannot pass with a vacuous precision.
MIN_RECALL = 0.8


def rows() -> list[tuple[bool, str, str]]:
    """(is a commitment, split, sentence) for every row of the table."""
    with TABLE.open(encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    table = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert all(row["label"] in ("commit", "none") and row["split"] in ("dev", "held-out")
               for row in table), "labels are commit/none, splits dev/held-out"
    return [(row["label"] == "commit", row["split"], row["sentence"]) for row in table]


def test_the_table_is_big_enough_and_a_third_of_it_is_held_out() -> None:
    table = rows()
    held_out = [row for row in table if row[1] == "held-out"]
    assert len(table) >= 100
    assert len(held_out) >= len(table) / 4
    for part in (table, held_out):
        assert sum(row[0] for row in part) >= 15 and sum(not row[0] for row in part) >= 30
    assert len({row[2] for row in table}) == len(table), "a sentence appears twice"


@pytest.mark.parametrize("split", ["all", "held-out"])
def test_precision_is_at_least_95_percent(split: str) -> None:
    table = [row for row in rows() if split == "all" or row[1] == split]
    false_pos = [s for want, _, s in table if not want and dynamics.is_commitment(s)]
    false_neg = [s for want, _, s in table if want and not dynamics.is_commitment(s)]
    true_pos = sum(1 for want, _, s in table if want and dynamics.is_commitment(s))
    named = "".join(f"\n  false commitment: {s}" for s in false_pos)
    named += "".join(f"\n  missed: {s}" for s in false_neg)
    fired = true_pos + len(false_pos)
    precision = true_pos / fired if fired else 0.0
    recall = true_pos / (true_pos + len(false_neg))
    assert precision >= MIN_PRECISION, f"precision {precision:.3f} on {split} rows:{named}"
    assert recall >= MIN_RECALL, f"recall {recall:.3f} on {split} rows:{named}"


def test_an_answer_commits_to_its_first_promising_sentence_and_only_that() -> None:
    for _, _, sentence in rows():  # every row is one sentence: the two functions agree on it
        assert (dynamics.commitment_in(sentence) is not None) is dynamics.is_commitment(sentence), sentence
    answer = ("Sure. I'll explain it step by step.\nFirst, install the package. "
              "I'll check back  tomorrow to see whether it worked. I will remind you on Friday.")
    assert dynamics.commitment_in(answer) == "I'll check back tomorrow to see whether it worked."
    assert dynamics.is_commitment("I'll send it tomorrow?") is False
    assert dynamics.is_commitment("I’ll send you the checklist tomorrow.") is True  # a curly apostrophe
    assert dynamics.is_commitment("I'll send it.") is False  # 3 words
    assert dynamics.is_commitment("I'll check back in a week " + "and then again " * 9) is False  # 33 words


ISSUE_PHRASINGS = (
    "I'll explain it step by step. First, open the settings page.",
    "I'll keep it short: use a list.",
    "I will remember that.",
    "I'll walk you through it. Start with the data model.",
    "I'll be honest with you, this will take a while.",
    "I'll assume you mean Python 3. Here is the code.",
)


def test_ordinary_phrasings_open_nothing_and_a_promise_opens_one_through_chat(tmp_path: Path) -> None:
    mind = str(tmp_path / "mind.db")

    def say(server: FakeServer, answer: str) -> dict:
        server.text = answer
        result = invoke("--mind", mind, "chat", "--json", "-m", "hello")
        assert result.exit_code == 0, result.output
        return json_data(result.stdout)

    with FakeServer("openai") as server:
        added = invoke("--mind", mind, "model", "add", "srv", "openai-compatible:test-model",
                       "--base-url", server.url, "--use")
        assert added.exit_code == 0, added.output
        for answer in ISSUE_PHRASINGS:
            assert say(server, answer)["changed"] == [], answer
        promised = say(server, "Got it. I'll send you the checklist tomorrow. Good luck!")
    opened = mind_events(Path(mind), "commitment_opened")
    assert [(e["content"], e["meta"]) for e in opened] == [
        ("I'll send you the checklist tomorrow.", {"source": "conversation", "turn": promised["response_id"]})]
    assert [c["kind"] for c in promised["changed"]] == ["commitment_opened"]


@pytest.mark.parametrize(("sentence", "promise"), [
    ("I will ask how the trip went", True),
    ("I will follow up with the user about the exam", True),
    ("I'll send you the checklist tomorrow.", True),
    ("You're right there in my store", False),
    ("I will remember that.", False),
    ("I'll be honest with you here.", False),
    ("I will not ask about it again", False),
    ("If you want, I'll ask about it later.", False),
    ("Will I ask how the trip went?", False),
])
def test_a_reflection_commitment_is_a_first_person_promise_of_an_act(sentence: str, promise: bool) -> None:
    """What a reflection commits to is for later by nature: only the act and the first person
    are checked (``is_promise``), not that it comes after an answer."""
    assert dynamics.is_promise(sentence) is promise
