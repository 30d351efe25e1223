"""`pmm reflect` and commitments, end to end: structured output validated part by part, one
transaction, bounded trait steps, commitments closed only with evidence, cron-safe --if-due, the
conversation rule, and the user's `pmm commitments` commands. In-process against a loopback fake
of the OpenAI protocol, but for the concurrent crons (real processes) and one smoke test of the
embedded model's reflection."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from conftest import PMM, invoke, json_data, run_pmm
from conftest import mind_events as events
from provider_servers import FakeServer

REAL_MODEL = 600  # seconds: the embedded model on a machine whose cores are busy elsewhere


def head(mind: Path) -> int:
    return events(mind)[-1]["id"]


def pmm(mind: Path, *args: str):
    return invoke("--mind", str(mind), *args)


def ok_json(mind: Path, *args: str):
    result = pmm(mind, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json_data(result.stdout)


def use_fake(mind: Path, server: FakeServer) -> None:
    added = pmm(mind, "model", "add", "srv", "openai-compatible:test-model", "--base-url", server.url, "--use")
    assert added.exit_code == 0, added.stderr


def say(server: FakeServer, mind: Path, answer: str, message: str = "hello") -> dict:
    server.text = answer
    return ok_json(mind, "chat", "-m", message)


def reflect(server: FakeServer, mind: Path, output: dict | str, *args: str):
    server.text = output if isinstance(output, str) else json.dumps(output)
    return pmm(mind, "reflect", "--json", *args)


def test_a_reflection_keeps_what_is_valid_and_writes_it_in_one_transaction(mind: Path) -> None:
    with FakeServer("openai") as server:
        use_fake(mind, server)
        turn = say(server, mind, "Noted.", "I water my plants every morning.")
        result = reflect(server, mind, {
            "reflection": "The user cares for plants.",
            "traits": [{"trait": "conscientiousness", "delta": 0.05, "evidence": [turn["message_id"]],
                        "reason": "a daily routine"},
                       {"trait": "charm", "delta": 0.01, "evidence": [turn["message_id"]], "reason": "not a trait"}],
            "open": [{"text": "I will ask about the plants next week", "due_in_hours": 168}],
            "close": [{"commitment": 999, "evidence": [turn["message_id"]], "statement": "no such"}],
            "name": "Sage",
        })
        assert result.exit_code == 0, result.stderr
        body = server.requests[-1].body
    report = json_data(result.stdout)
    assert report["recorded"] and report["reflection"]["text"] == "The user cares for plants."
    assert "response_format" in body  # constrained output was asked for
    reflection_id = report["reflection"]["id"]
    written = events(mind, since=reflection_id)
    assert [e["kind"] for e in written] == ["reflection_recorded", "trait_adjusted", "commitment_opened"]
    assert written[1]["meta"] == {"trait": "conscientiousness", "delta": 0.05, "reflection": reflection_id,
                                  "v": 2}
    rejected = " | ".join(written[0]["meta"]["rejected"])
    for needle in ("traits[1]", "#999 is not an open", "already named Test"):
        assert needle in rejected
    # exactly the events it was shown: the user's message and the answer
    assert written[0]["meta"]["first_id"] == turn["message_id"]
    assert written[0]["meta"]["last_id"] == turn["response_id"] == reflection_id - 1
    listing = ok_json(mind, "commitments", "list")
    (opened,) = listing["commitments"]
    assert opened["text"] == "I will ask about the plants next week" and opened["due"] and opened["source"] == "reflection"
    from pmm.ledger import folded
    from pmm.ledger.store import Ledger

    with Ledger.open(mind) as opened_mind:
        assert folded.state(opened_mind)[0]["traits"]["values"]["conscientiousness"] == 0.55
    assert pmm(mind, "verify", "--deep").exit_code == 0


def test_a_commitment_closes_only_with_evidence_after_it_was_opened(mind: Path) -> None:
    with FakeServer("openai") as server:
        use_fake(mind, server)
        before = say(server, mind, "Fine.", "Earlier chat.")
        opened = ok_json(mind, "commitments", "open", "Send the summary")["id"]
        say(server, mind, "Ok.", "Send me the summary please")
        bad = reflect(server, mind, {"reflection": "Checking the summary.", "traits": [], "open": [],
                                     "close": [{"commitment": opened, "evidence": [before["message_id"]],
                                                "statement": "it was sent"}]})
        assert bad.exit_code == 0
        report = json_data(bad.stdout)
        assert report["changes"] == [] and "must name events after it was opened" in report["rejected"][0]
        after = say(server, mind, "Here is the summary you asked for.", "The summary?")
        good = reflect(server, mind, {"reflection": "I sent the summary.", "traits": [], "open": [],
                                      "close": [{"commitment": opened, "evidence": [after["response_id"]],
                                                 "statement": "The summary was sent."}]})
        change = json_data(good.stdout)["changes"][0]
    assert change["kind"] == "commitment_closed" and change["meta"]["evidence"] == [after["response_id"]]
    listing = ok_json(mind, "commitments", "list")
    assert listing["closed"] == 1 and listing["open"] == 0 and listing["success"] == 1.0


def test_output_that_is_not_json_is_exit_5_and_writes_nothing(mind: Path) -> None:
    with FakeServer("openai") as server:
        use_fake(mind, server)
        say(server, mind, "Hi.")
        before = head(mind)
        result = reflect(server, mind, "I reflected, but not in JSON.")
        assert result.exit_code == 5 and "JSON" in result.stderr and "Traceback" not in result.stderr
        assert head(mind) == before
        textless = reflect(server, mind, {"traits": [{"trait": "openness", "delta": 0.02, "reason": "curious"}]})
        assert textless.exit_code == 5 and "no reflection text" in textless.stderr
        assert head(mind) == before
        partial = reflect(server, mind, {"reflection": "The user said hello.", "open": "nope"})
        assert partial.exit_code == 0
        report = json_data(partial.stdout)
        assert report["reflection"]["text"] == "The user said hello." and report["changes"] == []
        assert any("open: not a list" in r for r in report["rejected"])


def test_if_due_is_quiet_when_nothing_is_due_and_reflects_when_it_is(mind: Path) -> None:
    with FakeServer("openai") as server:
        use_fake(mind, server)
        output = {"reflection": "The user said hello.", "traits": [], "open": [], "close": []}
        nothing = reflect(server, mind, output, "--if-due")
        assert nothing.exit_code == 0 and json_data(nothing.stdout)["recorded"] is False
        quiet = pmm(mind, "reflect", "--if-due")
        assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""
        say(server, mind, "Hello back.")
        first = reflect(server, mind, output, "--if-due")
        assert json_data(first.stdout)["recorded"] is True
        say(server, mind, "Again.")
        later = reflect(server, mind, output, "--if-due")  # S0 reflects hourly: not yet
        assert json_data(later.stdout)["recorded"] is False
        assert "next is due in" in json_data(later.stdout)["reason"]
    assert [e["meta"]["trigger"] for e in events(mind) if e["kind"] == "reflection_recorded"] == ["due"]


def test_concurrent_crons_and_a_chat_never_fork_or_double_reflect(mind: Path) -> None:
    with FakeServer("openai") as server:
        use_fake(mind, server)
        say(server, mind, "Hello.")
        server.text = json.dumps({"reflection": "The user said hello.", "traits": [], "open": [], "close": []})
        release = threading.Event()
        server.push("slow", release=release)  # the first reflection waits on the model until released
        posts = len(server.requests)
        crons = [subprocess.Popen([PMM, "--mind", str(mind), "reflect", "--if-due"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
        try:
            until(lambda: len(server.requests) > posts, "a cron to ask the model")
            # while that reflection runs, a chat writes and the other two crons step aside
            chat = subprocess.run([PMM, "--mind", str(mind), "chat", "-m", "meanwhile"],
                                  capture_output=True, timeout=120)
            until(lambda: sum(p.poll() is not None for p in crons) == 2, "two crons to step aside")
            assert [r.body.get("response_format") is not None for r in server.requests[posts:]] == [True, False]
        finally:
            release.set()
            codes = [p.wait(timeout=120) for p in crons]
    assert codes == [0, 0, 0] and chat.returncode == 0, [p.stderr.read() for p in crons] + [chat.stderr]
    kinds = [e["kind"] for e in events(mind)]
    assert kinds.count("reflection_recorded") == 1
    assert kinds.count("response_sent") == 2
    assert pmm(mind, "verify").exit_code == 0


def until(condition, what: str, timeout: float = 120) -> None:  # noqa: ANN001 (a callable)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_promise_in_an_answer_opens_one_commitment(mind: Path) -> None:
    with FakeServer("openai") as server:
        use_fake(mind, server)
        turn = say(server, mind, "Sure. I will water the plants every morning. Anything else?")
        assert turn["changed"] and turn["changed"][0]["kind"] == "commitment_opened"
        again = say(server, mind, "OK! I will water the plants  every morning!")
        assert again["changed"] == []  # the same commitment is not opened twice
        say(server, mind, "I will.")  # too short to be a commitment
    opened = [e for e in events(mind) if e["kind"] == "commitment_opened"]
    assert len(opened) == 1
    assert opened[0]["content"] == "I will water the plants every morning."
    assert opened[0]["meta"] == {"source": "conversation", "turn": turn["response_id"]}
    trace = ok_json(mind, "trace", str(turn["response_id"]))
    assert [c["kind"] for c in trace["changed"]] == ["commitment_opened"]


def test_the_user_manages_commitments(mind: Path) -> None:
    def cmd(*args: str):
        return pmm(mind, "commitments", *args)

    opened = json_data(cmd("open", "Read the book", "--due", "2d", "--json").stdout)["id"]
    assert cmd("open", "read the   BOOK").exit_code == 2  # the same commitment
    assert cmd("open", "Call", "--due", "someday").exit_code == 2
    assert pmm(mind, "remember", "Finished the book today").exit_code == 0
    note = head(mind)
    no_evidence = cmd("close", str(opened), "--statement", "done")
    assert no_evidence.exit_code == 2
    early = cmd("close", str(opened), "--evidence", "1", "--statement", "done")
    assert early.exit_code == 2 and "after #" in early.stderr
    assert cmd("close", str(opened), "-e", str(note), "-s", "Read it").exit_code == 0
    assert cmd("close", str(opened), "-e", str(note), "-s", "again").exit_code == 2
    assert cmd("reopen", str(opened), "--reason", "re-read").exit_code == 0
    stale = cmd("close", str(opened), "-e", str(note), "-s", "Read it again")
    assert stale.exit_code == 2, "evidence from before the reopening closed it again"
    listing = json_data(cmd("list", "--json").stdout)
    # reopened: open again, no longer kept, so no success figure yet (not "100% success")
    assert listing["open"] == 1 and listing["closed"] == 0 and listing["reopened"] == 1
    assert listing["success"] is None
    text = cmd("list").stdout
    assert text.startswith("Commitments: 1 opened, 0 closed, 0 expired, 1 open")
    assert "Read the book" in text


def test_the_embedded_model_answers_within_the_schema_and_what_it_records_is_valid(mind: Path) -> None:
    from pmm.domain.dynamics import commitment_in
    from pmm.domain.events import Draft
    from pmm.services import opening
    from pmm.services.reflection_answer import ANSWER_TOKENS, STEPS

    with opening.open_write(mind, lambda _m: None) as written:  # a turn, without asking a model
        written.append([Draft("message_received", "I love hiking in the mountains.", {"source": "pmm"})])
    result = run_pmm("--mind", str(mind), "reflect", "--json", timeout=REAL_MODEL)
    assert result.returncode == 0, result.stderr.decode()  # JSON, whole, and grounded in the turn
    report = json_data(result.stdout)
    assert report["recorded"] and report["model"] == "embedded"
    assert report["reflection"]["text"] and report["reflection"]["tokens_out"] < ANSWER_TOKENS
    for change in report["changes"]:
        if change["kind"] == "trait_adjusted":
            assert change["meta"]["delta"] in STEPS and "(#" in change["content"]
        elif change["kind"] == "commitment_opened":
            assert commitment_in(change["content"]) is not None
    assert run_pmm("--mind", str(mind), "verify", "--deep").returncode == 0


def test_reflect_json_reports_the_step_a_trait_took_not_the_one_asked(mind: Path) -> None:
    """At the bound a step of +0.05 moves the trait less, or not at all: ``applied`` says so."""
    taken = []
    with FakeServer("openai") as server:
        use_fake(mind, server)
        start = ok_json(mind, "stats")["traits"]["openness"]
        for i in range(int((1 - start) / 0.05) + 2):  # enough steps to reach 1.0 and push past it
            turn = say(server, mind, "Noted.", f"I tried a new thing today, number {i}.")
            result = reflect(server, mind, {"summary": "The user tries new things.", "reflection": f"The user tried a new thing today, number {i}.", "open": [], "close": [],
                                            "traits": [{"trait": "openness", "delta": 0.05, "reason": "tries new things",
                                                        "evidence": [turn["message_id"]]}]})
            assert result.exit_code == 0, result.stderr
            report = json_data(result.stdout)
            changes = [c for c in report["changes"] if c["kind"] == "trait_adjusted"]
            assert len(changes) == 1, (i, report["rejected"], report["reason"])
            change = changes[0]
            assert change["meta"]["delta"] == 0.05  # asked, as stored
            taken.append(change["applied"])
        final = ok_json(mind, "stats")["traits"]["openness"]
    assert final == 1.0 and taken[-1] == 0 and 0 <= min(taken) < 0.05 == max(taken)
    assert round(sum(taken), 6) == round(final - start, 6)
