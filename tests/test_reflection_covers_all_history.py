"""`pmm reflect` reflects on all history, once, in order: each reflection is shown one contiguous
window of unreflected events, oldest first, and records exactly the ids it was shown; a run works
through the windows up to its bound, with progress on stderr, silent with -q; a failed
reflection makes due-only runs back off; many reflections are condensed into a standing summary.
Through the real CLI in-process, against a loopback fake of the OpenAI protocol."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke, json_data, json_failure
from conftest import mind_events as events
from provider_servers import FakeServer

from pmm.domain.events import Draft
from pmm.services import opening
from pmm.services.reflection_answer import ANSWER_TOKENS

SEEN = ("message_received", "response_sent", "observation_recorded", "note_pinned")
# one answer for both calls: a reflection's fields, and a summary once 8 reflections are condensed
ANSWER = json.dumps({"reflection": "The user wrote about plants: tomatoes, basil, garlic, onions and water.", "traits": [], "open": [], "close": [],
                     "summary": "I have looked back on the garden talk."})
SUMMARY = json.dumps({"summary": "The user gardens; I keep promises about plants."})
LINE = re.compile(r"^#(\d+) (?:user|you|note)\b", re.M)


def pmm(mind: Path, *args: str):
    return invoke("--mind", str(mind), *args)


def append(mind: Path, drafts: list[Draft]) -> list[int]:
    with opening.open_write(mind, lambda _m: None) as opened:
        return [e.id for e in opened.append(drafts)]


def shown(server: FakeServer) -> list[list[int]]:
    """The event ids each reflection request showed the model, as it was sent."""
    return [[int(i) for i in LINE.findall(_prompt(r.body))] for r in server.requests
            if r.method == "POST" and "Events #" in _prompt(r.body)]


def _prompt(body: dict) -> str:
    return "\n".join(m["content"] for m in body.get("messages", []) if isinstance(m.get("content"), str))


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    path = tmp_path / "mind.db"
    assert pmm(path, "init", "--name", "Test").exit_code == 0
    return path


@pytest.fixture
def server(mind: Path):
    with FakeServer("openai", text=ANSWER) as fake:
        # a small window, so that 600 events take several windows and the test stays fast
        added = pmm(mind, "model", "add", "srv", "openai-compatible:test-model", "--base-url", fake.url,
                    "--use", "--context-window", str(ANSWER_TOKENS + 1200))
        assert added.exit_code == 0, added.output
        yield fake


def imported(mind: Path, pairs: int = 300) -> list[int]:
    """A conversation of ``pairs`` exchanges (one answer very long), as an import leaves it."""
    drafts = [Draft("session_started", "Gardening", {"source": "chatgpt", "session": "s1"})]
    for n in range(pairs):
        drafts.append(Draft("message_received", f"Question {n} about my tomatoes and basil.",
                            {"source": "chatgpt", "session": "s1"}))
        answer = "Water them deeply. " * (300 if n == 7 else 1)
        drafts.append(Draft("response_sent", answer.strip(), {"source": "chatgpt", "session": "s1"}))
    return append(mind, drafts)


def test_a_run_reflects_on_every_event_once_in_order_and_records_what_it_showed(mind: Path, server: FakeServer) -> None:
    imported(mind)
    seen_ids = [e["id"] for e in events(mind) if e["kind"] in SEEN]
    assert len(seen_ids) == 600

    first = pmm(mind, "reflect", "--max-windows", "3")
    assert first.exit_code == 0, first.output
    assert first.stdout.count("Reflection #") == 3
    progress = re.findall(r"Reflecting on events #(\d+)-#(\d+) \((\d+) of about (\d+)\)", first.stderr)
    assert [int(p[2]) for p in progress] == [1, 2, 3] and int(progress[0][3]) > 3
    assert int(progress[0][0]) == seen_ids[0]  # from the very first event, not the newest
    assert "Not caught up" in first.stderr and "events of history left" in first.stderr
    assert "clipped to 400 of" in _prompt(server.requests[-3].body)  # the long answer says so

    rest = pmm(mind, "reflect", "--max-windows", "100", "--json")
    assert rest.exit_code == 0, rest.output
    report = json_data(rest.stdout)
    assert report["left"] == 0 and report["reason"] == "caught up"
    assert len(report["reflections"]) >= 1 and report["reflection"] == report["reflections"][-1]["reflection"]
    assert report["summary"]["covers"][:8] == [r["id"] for r in events(mind, kind="reflection_recorded")][:8]

    windows = shown(server)
    reflections = [e for e in events(mind) if e["kind"] == "reflection_recorded"]
    assert len(windows) == len(reflections) == 3 + len(report["reflections"])
    for window, reflection in zip(windows, reflections, strict=True):
        meta = reflection["meta"]
        assert (meta["first_id"], meta["last_id"]) == (window[0], window[-1])  # what it was shown
        assert window == [i for i in seen_ids if meta["first_id"] <= i <= meta["last_id"]]  # contiguous
    assert [i for w in windows for i in w] == seen_ids  # every event once, in order, none skipped

    again = pmm(mind, "reflect")
    assert again.exit_code == 0 and "No reflection: nothing new" in again.stderr
    assert len(shown(server)) == len(windows)  # no model call for nothing


def test_quiet_success_prints_nothing_and_left_history_waits_for_the_cadence(mind: Path, server: FakeServer) -> None:
    imported(mind, pairs=150)
    # cron: due (no reflection yet), so it catches up, up to its bound, and says nothing at all
    quiet = invoke("-q", "--mind", str(mind), "reflect", "--if-due", "--max-windows", "2")
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""
    assert len(shown(server)) == 2
    assert [e["meta"]["trigger"] for e in events(mind, kind="reflection_recorded")] == ["due", "due"]
    # what the bound left is due at the stage's cadence, not at the next tick
    later = pmm(mind, "reflect", "--if-due", "--json")
    report = json_data(later.stdout)
    assert report["recorded"] is False and "events of history waiting from the last run" in report["reason"]
    assert "next is due in" in report["reason"]
    assert len(shown(server)) == 2


def test_autonomous_run_catches_up_window_by_window(mind: Path, server: FakeServer) -> None:
    imported(mind, pairs=100)
    done = pmm(mind, "run", "--autonomous", "--max-cycles", "1", "--interval", "0", "--json")
    assert done.exit_code == 0, done.output
    assert json_data(done.stdout)["reflections"] == len(shown(server)) > 1
    assert re.search(r"Cycle 1: reflected \(\d+ windows, events \d+ to \d+, ", done.stderr)
    last = [e for e in events(mind) if e["kind"] == "reflection_recorded"][-1]
    assert last["meta"]["last_id"] == max(e["id"] for e in events(mind) if e["kind"] in SEEN)


def backoff_files() -> list[Path]:
    state = Path(os.environ["XDG_STATE_HOME"]) / "pmm" / "backoff"
    return sorted(state.glob("*.json")) if state.exists() else []


def test_a_failed_reflection_backs_off_due_runs_until_a_success(mind: Path, server: FakeServer,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_PROVIDER_RETRIES", "0")
    append(mind, [Draft("message_received", "I planted garlic today.", {"source": "pmm"})])
    server.push("500")
    failed = pmm(mind, "reflect", "--if-due")
    assert failed.exit_code == 5 and "Error:" in failed.stderr
    (record,) = backoff_files()
    assert json.loads(record.read_text())["reflection"]["failures"] == 1
    posts = len(shown(server))

    waiting = pmm(mind, "reflect", "--if-due")  # cron: no model call until the back-off passed
    assert waiting.exit_code == 0 and len(shown(server)) == posts
    assert re.search(r"No reflection: the last reflection failed \d+ s ago \(.+\); next try in (59|60) min",
                     waiting.stderr)
    assert "the last reflection failed" in pmm(mind, "health").output  # health shows it too

    server.text = "I reflected, but not in JSON."  # a manual reflect always tries, and counts too
    assert pmm(mind, "reflect").exit_code == 5
    doubled = json_data(pmm(mind, "reflect", "--if-due", "--json").stdout)["reason"]
    assert "did not answer with JSON, 2 times in a row" in doubled  # the wait doubles
    assert re.search(r"next try in (119 min|2 h)$", doubled)

    record.write_bytes(b"\x00{not json")  # a corrupt record is ignored, never a crash
    server.text = ANSWER
    ok = pmm(mind, "reflect", "--if-due", "--json")
    assert ok.exit_code == 0 and json_data(ok.stdout)["recorded"] is True
    assert backoff_files() == []  # a success resets the back-off

    os.mkfifo(record)  # planted where the record goes: read without blocking, then replaced
    append(mind, [Draft("message_received", "And onions.", {"source": "pmm"})])
    server.push("500")
    assert pmm(mind, "reflect").exit_code == 5
    assert json.loads(record.read_text())["reflection"]["failures"] == 1  # counted afresh


def test_many_reflections_are_condensed_into_a_standing_summary(mind: Path, server: FakeServer) -> None:
    said = append(mind, [Draft("message_received", "My tomatoes are thriving.", {"source": "pmm"})])
    ids = append(mind, [Draft("reflection_recorded", f"Reflection {n} on tomatoes.",
                              {"first_id": said[0], "last_id": said[0], "trigger": "manual"})
                        for n in range(8)])
    server.text = SUMMARY
    done = pmm(mind, "reflect", "--json")  # nothing new to reflect on, but 8 wait to be condensed
    assert done.exit_code == 0, done.output
    summary = json_data(done.stdout)["summary"]
    assert summary["covers"] == ids and summary["text"].startswith("The user gardens")
    (stored,) = events(mind, kind="summary_recorded")
    assert stored["meta"]["covers"] == ids and stored["meta"]["model_name"] == "srv"
    assert all(f"#{i}" in _prompt(server.requests[-1].body) for i in ids)

    plan = json_data(pmm(mind, "recall", "how are my plants?", "--json").stdout)
    standing = next(s for s in plan["sections"] if s["name"] == "standing")
    reasons = {i["id"]: i["reason"] for i in standing["items"]}
    assert reasons[stored["id"]] == "summary" and ids[-1] not in reasons  # condensed: not shown twice
    text = pmm(mind, "recall", "how are my plants?", "--full").stdout
    assert "The user gardens" in text
    server.text = "They are fine."
    assert pmm(mind, "chat", "-m", "how are my plants?").exit_code == 0
    sent = _prompt(server.requests[-1].body)  # what a chat turn really sends, citing compactly
    assert f"Summary of your reflections #{ids[0]} ... #{ids[-1]} (8): The user gardens" in sent
    assert "Latest reflection:" not in sent  # the summary condenses it: not standing twice

    # forced: the one reflection since is condensed with the previous summary
    (newer,) = append(mind, [Draft("reflection_recorded", "One more.",
                                   {"first_id": said[0], "last_id": said[0], "trigger": "manual"})])
    server.text = ANSWER  # the run reflects on the chat turn first, then condenses both
    report = json_data(pmm(mind, "reflect", "--consolidate", "--json").stdout)
    forced = report["summary"]
    assert forced["covers"] == [newer, report["reflections"][0]["reflection"]["id"]]
    assert forced["previous"] == stored["id"]
    assert "Your summary so far (event #" in _prompt(server.requests[-1].body)
    assert len(events(mind, kind="reflection_recorded")) == 10  # nothing is lost


def test_the_bound_per_run_is_documented_in_help(mind: Path) -> None:
    import inspect

    from pmm.cli.reflect import reflect
    from pmm.services.reflection import MAX_WINDOWS

    assert inspect.signature(reflect).parameters["max_windows"].default == MAX_WINDOWS
    shown_help = invoke("reflect", "--help").stdout
    assert "--max-windows" in shown_help and "left for the next run" in shown_help


def test_a_failing_window_stops_the_run_with_the_windows_before_it_kept(
        mind: Path, server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_PROVIDER_RETRIES", "0")
    imported(mind, pairs=150)
    server.push("hang", seconds=0)  # the first window is answered, the second fails
    server.push("500")
    stopped = pmm(mind, "reflect", "--json")
    assert stopped.exit_code == 5 and "Error:" in stopped.stderr
    failed = json_failure(stopped.stdout, 5)  # one document: the error, with what was recorded before it
    assert failed["error"]["type"] == "ProviderError" and failed["command"] == "reflect"
    report = failed["data"]
    (kept,) = events(mind, kind="reflection_recorded")
    assert [r["reflection"]["id"] for r in report["reflections"]] == [kept["id"]]
    assert json.loads(backoff_files()[0].read_text())["reflection"]["failures"] == 1
    resumed = json_data(pmm(mind, "reflect", "--json").stdout)  # goes on where it stopped
    assert resumed["reflections"][0]["reflection"]["first_id"] > kept["meta"]["last_id"]
    assert backoff_files() == []


def test_a_failed_summary_is_remembered_on_its_own(mind: Path, server: FakeServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_PROVIDER_RETRIES", "0")
    said = append(mind, [Draft("message_received", "Basil needs sun.", {"source": "pmm"})])
    append(mind, [Draft("reflection_recorded", f"Reflection {n}.",
                        {"first_id": said[0], "last_id": said[0], "trigger": "manual"}) for n in range(8)])
    server.push("500")
    assert pmm(mind, "reflect").exit_code == 5
    assert list(json.loads(backoff_files()[0].read_text())) == ["consolidation"]
    assert events(mind, kind="summary_recorded") == []
    append(mind, [Draft("message_received", "And water.", {"source": "pmm"})])
    server.text = ANSWER  # a manual run always tries: it reflects, then condenses all nine
    done = json_data(pmm(mind, "reflect", "--json").stdout)
    assert len(done["reflections"]) == 1 and len(done["summary"]["covers"]) == 9
    assert backoff_files() == []


def test_after_a_retraction_the_next_reflection_starts_after_the_retracted_window(
        mind: Path, server: FakeServer) -> None:
    """The owner withdraws what a reflection concluded, not the events it looked at: they are
    not shown again."""
    first_batch = append(mind, [Draft("message_received", "I planted basil today.", {})])
    first = json_data(pmm(mind, "reflect", "--json").stdout)["reflection"]
    assert pmm(mind, "reflections", "retract", str(first["id"]), "--reason", "made up").exit_code == 0
    later = append(mind, [Draft("message_received", "The basil sprouted.", {})])
    result = pmm(mind, "reflect", "--json")
    assert result.exit_code == 0, result.output
    again = json_data(result.stdout)["reflection"]
    assert again["first_id"] > first_batch[-1] and again["last_id"] == later[-1]
    assert shown(server)[-1] == later


def test_a_retracted_reflection_is_never_condensed(mind: Path, server: FakeServer) -> None:
    said = append(mind, [Draft("message_received", "My tomatoes are thriving.", {"source": "pmm"})])
    ids = append(mind, [Draft("reflection_recorded", f"Reflection {n} on tomatoes.",
                              {"first_id": said[0], "last_id": said[0], "trigger": "manual"})
                        for n in range(9)])
    assert pmm(mind, "reflections", "retract", str(ids[3]), "--reason", "wrong").exit_code == 0
    server.text = SUMMARY
    done = pmm(mind, "reflect", "--json")
    assert done.exit_code == 0, done.output
    assert json_data(done.stdout)["summary"]["covers"] == ids[:3] + ids[4:]
    assert "Reflection 3 on" not in _prompt(server.requests[-1].body)
    assert "Reflection 4 on" in _prompt(server.requests[-1].body)


def _reflections(mind: Path, said: int, texts: list[str]) -> list[int]:
    return append(mind, [Draft("reflection_recorded", text, {"first_id": said, "last_id": said, "trigger": "manual"})
                         for text in texts])


def _standing(mind: Path) -> dict[int, str]:
    plan = json_data(pmm(mind, "recall", "tomatoes", "--json").stdout)
    standing: dict[str, Any] = next((s for s in plan["sections"] if s["name"] == "standing"), {"items": []})
    return {i["id"]: i["reason"] for i in standing["items"]}


def test_a_summary_of_a_retracted_reflection_is_stale_and_rebuilt_from_the_reflections(
        mind: Path, server: FakeServer) -> None:
    said = append(mind, [Draft("message_received", "My tomatoes are thriving.", {"source": "pmm"})])[0]
    first = _reflections(mind, said, [f"Early {n} on tomatoes." for n in range(8)])
    server.text = json.dumps({"summary": "Early summary of tomatoes."})
    one = json_data(pmm(mind, "reflect", "--json").stdout)["summary"]
    second = _reflections(mind, said, [f"Later {n} on tomatoes." for n in range(8)])
    server.text = json.dumps({"summary": "Later summary folding the early one."})
    two = json_data(pmm(mind, "reflect", "--json").stdout)["summary"]
    assert two["covers"] == second and two["previous"] == one["id"]
    assert _standing(mind)[two["id"]] == "summary"

    # a reflection the second summary condenses is retracted: the first one stands again
    assert pmm(mind, "reflections", "retract", str(second[2]), "--reason", "wrong").exit_code == 0
    standing = _standing(mind)
    assert two["id"] not in standing and standing[one["id"]] == "summary"
    assert standing[second[-1]] == "reflection"  # no clean summary covers the latest one now
    # one in the first summary too: no summary stands at all, so nothing retracted is carried on
    assert pmm(mind, "reflections", "retract", str(first[0]), "--reason", "wrong").exit_code == 0
    standing = _standing(mind)
    assert "summary" not in standing.values()
    assert "Later summary" not in pmm(mind, "recall", "tomatoes", "--full").stdout.split("Recalled")[0]

    # the next summary is rebuilt from the reflections themselves, not from the stale text
    server.text = json.dumps({"summary": "Rebuilt from the clean reflections."})
    done = json_data(pmm(mind, "reflect", "--json").stdout)
    assert [s["covers"] for s in done["summaries"]] == [first[1:] + second[:2] + second[3:]]
    prompt = _prompt(server.requests[-1].body)
    assert "You have no summary yet" in prompt and "summary of tomatoes" not in prompt.lower()
    assert "Early 0 on" not in prompt and "Later 2 on" not in prompt and "Later 3 on" in prompt
    assert _standing(mind)[done["summary"]["id"]] == "summary"


def test_a_backlog_of_reflections_is_condensed_even_when_no_reflection_is_due(
        mind: Path, server: FakeServer) -> None:
    said = append(mind, [Draft("message_received", "My tomatoes are thriving.", {"source": "pmm"})])[0]
    ids = _reflections(mind, said, [f"Reflection {n} on tomatoes." for n in range(40)])
    server.text = SUMMARY
    # nothing new since the last reflection: not due, but 40 reflections wait to be condensed
    done = pmm(mind, "reflect", "--if-due", "--json")
    assert done.exit_code == 0, done.output
    report = json_data(done.stdout)
    assert report["recorded"] is False and report["reflections"] == []
    assert [s["covers"] for s in report["summaries"]] == [ids[:16], ids[16:32], ids[32:]]
    assert report["summary"] == report["summaries"][-1]
    assert [e["meta"]["covers"] for e in events(mind, kind="summary_recorded")] == [ids[:16], ids[16:32], ids[32:]]
    again = json_data(pmm(mind, "reflect", "--if-due", "--json").stdout)
    assert again["summaries"] == [] and again["summary"] is None  # nothing pending: no model call


def test_a_crafted_summary_covering_a_future_id_does_not_stop_consolidation(
        mind: Path, server: FakeServer) -> None:
    from pmm.domain.events import MAX_ID

    said = append(mind, [Draft("message_received", "My tomatoes are thriving.", {"source": "pmm"})])[0]
    append(mind, [Draft("summary_recorded", "Forged.", {"covers": [MAX_ID], "trigger": "manual"})])
    ids = _reflections(mind, said, [f"Reflection {n} on tomatoes." for n in range(8)])
    assert pmm(mind, "verify").exit_code == 0
    server.text = SUMMARY
    report = json_data(pmm(mind, "reflect", "--json").stdout)
    assert report["summary"]["covers"] == ids
    assert "Forged" not in _prompt(server.requests[-1].body)


def test_a_retraction_while_the_model_condenses_discards_that_summary(mind: Path, server: FakeServer) -> None:
    said = append(mind, [Draft("message_received", "My tomatoes are thriving.", {"source": "pmm"})])[0]
    ids = _reflections(mind, said, [f"Reflection {n} on tomatoes." for n in range(9)])
    server.text = SUMMARY
    record, retracted = server.record, list[int]()

    def retract_meanwhile(entry) -> None:  # another process retracts while the model writes
        record(entry)
        if entry.method == "POST" and "condensing" in json.dumps(entry.body) and not retracted:
            retracted.extend(append(mind, [Draft("reflection_retracted", "wrong", {"reflection": ids[2]})]))

    server.record = retract_meanwhile  # type: ignore[method-assign]
    ran = pmm(mind, "reflect", "--json")
    assert ran.exit_code == 0 and retracted, ran.output
    report = json_data(ran.stdout)
    assert report["summary"] is None and events(mind, kind="summary_recorded") == []
    again = json_data(pmm(mind, "reflect", "--json").stdout)
    assert again["summary"]["covers"] == ids[:2] + ids[3:]


def test_a_crafted_reflection_claiming_all_ids_does_not_switch_reflection_off(mind: Path, server: FakeServer) -> None:
    """A reflection_recorded whose last_id is the largest id (or after itself) is schema-valid,
    so verify passes, but it covers nothing: the history after it is still reflected on."""
    said = append(mind, [Draft("message_received", "I planted garlic today.", {})])
    append(mind, [Draft("reflection_recorded", "I have seen everything.",
                        {"first_id": 1, "last_id": 2**53 - 1, "trigger": "manual"})])
    assert pmm(mind, "verify", "--deep").exit_code == 0
    later = append(mind, [Draft("message_received", "The garlic sprouted.", {})])
    result = pmm(mind, "reflect", "--json")
    assert result.exit_code == 0, result.output
    report = json_data(result.stdout)["reflection"]
    assert report is not None and report["first_id"] <= said[0] and report["last_id"] == later[-1]


def test_retracting_the_latest_reflection_of_a_bounded_run_leaves_its_backlog_due(
        mind: Path, server: FakeServer) -> None:
    append(mind, [Draft("message_received", "I planted basil today.", {"source": "pmm"})])
    assert pmm(mind, "reflect").exit_code == 0  # a reflection before the import
    imported(mind, pairs=150)
    bounded = json_data(pmm(mind, "reflect", "--max-windows", "1", "--json").stdout)
    assert bounded["left"] > 0
    latest = bounded["reflection"]["id"]
    assert pmm(mind, "reflections", "retract", str(latest), "--reason", "wrong").exit_code == 0
    # cron still sees the backlog (due at the cadence), and says where it starts
    cron = json_data(pmm(mind, "reflect", "--if-due", "--json").stdout)
    assert cron["recorded"] is False and "events of history waiting from the last run" in cron["reason"]
    assert cron["left"] == bounded["left"] and cron["next_id"] == bounded["next_id"]


def test_left_and_next_id_are_true_on_every_kind_of_run(mind: Path, server: FakeServer) -> None:
    append(mind, [Draft("message_received", "I planted basil today.", {"source": "pmm"})])
    assert json_data(pmm(mind, "reflect", "--json").stdout)["reason"] == "caught up"
    nothing = json_data(pmm(mind, "reflect", "--json").stdout)
    assert nothing["reason"].startswith("nothing new") and (nothing["left"], nothing["next_id"]) == (0, None)
    imported(mind, pairs=150)
    bounded = json_data(pmm(mind, "reflect", "--max-windows", "1", "--json").stdout)
    not_due = json_data(pmm(mind, "reflect", "--if-due", "--json").stdout)
    assert not_due["recorded"] is False and "next is due in" in not_due["reason"]
    assert (not_due["left"], not_due["next_id"]) == (bounded["left"], bounded["next_id"]) and bounded["left"] > 0


def test_a_retraction_while_the_model_answers_does_not_throw_the_reflection_away(
        mind: Path, server: FakeServer) -> None:
    append(mind, [Draft("message_received", "I planted basil today.", {"source": "pmm"})])
    first = json_data(pmm(mind, "reflect", "--json").stdout)["reflection"]["id"]
    append(mind, [Draft("message_received", "The basil sprouted.", {"source": "pmm"})])
    record = server.record

    def retract_meanwhile(entry) -> None:  # another process: the owner retracts the first
        if entry.method == "POST":
            append(mind, [Draft("reflection_retracted", "wrong", {"reflection": first, "source": "user"})])
        record(entry)

    server.record = retract_meanwhile  # type: ignore[method-assign]
    done = json_data(pmm(mind, "reflect", "--json").stdout)
    assert done["recorded"] is True and done["reason"] == "caught up"
    assert len(events(mind, kind="reflection_recorded")) == 2


def test_a_reflection_recorded_meanwhile_is_not_duplicated_and_the_run_says_so(
        mind: Path, server: FakeServer) -> None:
    (said,) = append(mind, [Draft("message_received", "I planted basil today.", {"source": "pmm"})])
    record = server.record

    def reflect_and_retract_meanwhile(entry) -> None:  # another process reflects, then retracts it
        if entry.method == "POST":
            (other,) = append(mind, [Draft("reflection_recorded", "Basil, elsewhere.",
                                           {"first_id": said, "last_id": said, "trigger": "manual"})])
            append(mind, [Draft("reflection_retracted", "wrong", {"reflection": other, "source": "user"})])
        record(entry)

    server.record = reflect_and_retract_meanwhile  # type: ignore[method-assign]
    result = pmm(mind, "reflect", "--json")
    assert result.exit_code == 0, result.output
    report = json_data(result.stdout)
    assert report["recorded"] is False and "another process recorded a reflection" in report["reason"]
    assert len(events(mind, kind="reflection_recorded")) == 1  # the window is not reflected on twice


UNGROUNDED = json.dumps({"reflection": "I am a test and my goal is to improve myself.",
                         "traits": [], "open": [], "close": []})


def test_a_window_whose_answer_is_refused_shrinks_until_it_passes(
        mind: Path, server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    imported(mind, pairs=100)
    server.text = UNGROUNDED
    refused = pmm(mind, "reflect")  # the run tries again at once with half, twice
    assert refused.exit_code == 5 and "does not mention anything" in refused.stderr
    assert refused.stderr.count("trying again with half the window") == 2
    sizes = [len(w) for w in shown(server)]
    starts = {w[0] for w in shown(server)}
    assert len(sizes) == 3 and len(starts) == 1
    assert sizes[1] == sizes[0] // 2 and sizes[2] == sizes[1] // 2 and sizes[2] >= 1
    health = pmm(mind, "health").output
    assert f"stuck at #{starts.pop()}" in health and "3 times in a row" in health
    server.text = ANSWER
    done = json_data(pmm(mind, "reflect", "--max-windows", "2", "--json").stdout)
    first, second = (r["reflection"] for r in done["reflections"])
    assert len(shown(server)[-2]) == sizes[2] // 2  # half the last refused window, and it passed
    assert (first["first_id"], first["last_id"]) == (shown(server)[-2][0], shown(server)[-2][-1])
    assert second["first_id"] > first["last_id"]
    assert len(shown(server)[-1]) > sizes[2]  # then the windows are full again
    assert backoff_files() == []


def test_a_back_off_dated_in_the_future_or_of_another_model_is_not_believed(
        mind: Path, server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_PROVIDER_RETRIES", "0")
    append(mind, [Draft("message_received", "I planted garlic today.", {"source": "pmm"})])
    server.push("500")
    assert pmm(mind, "reflect", "--if-due").exit_code == 5
    (record,) = backoff_files()
    assert "the last reflection failed" in pmm(mind, "health").output
    # switched to another reflection model: cron tries it now, and health does not warn
    assert pmm(mind, "model", "add", "other", "openai-compatible:test-model", "--base-url", server.url,
               "--context-window", str(ANSWER_TOKENS + 1200)).exit_code == 0
    assert pmm(mind, "model", "use", "other").exit_code == 0
    assert "the last reflection failed" not in pmm(mind, "health").output
    assert pmm(mind, "model", "use", "srv").exit_code == 0
    assert "the last reflection failed" in pmm(mind, "health").output
    # a failure "at" the end of time (a forged date, a clock set back) is not a wait for ever
    entry = json.loads(record.read_text())
    entry["reflection"]["at"] = "9999-12-31T23:59:59.000000Z"
    record.write_text(json.dumps(entry))
    assert "the last reflection failed" not in pmm(mind, "health").output
    posts = len(shown(server))
    ok = json_data(pmm(mind, "reflect", "--if-due", "--json").stdout)
    assert ok["recorded"] is True and len(shown(server)) == posts + 1


def test_each_window_of_a_run_gets_its_own_retries(mind: Path, server: FakeServer) -> None:
    imported(mind, pairs=100)
    answers = [ANSWER, UNGROUNDED, UNGROUNDED, ANSWER, UNGROUNDED, UNGROUNDED, ANSWER]
    record = server.record

    def next_answer(entry) -> None:  # the answer to each request in turn
        if entry.method == "POST" and answers:
            server.text = answers.pop(0)
        record(entry)

    server.record = next_answer  # type: ignore[method-assign]
    done = pmm(mind, "reflect", "--max-windows", "3", "--json")
    assert done.exit_code == 0, done.output
    assert len(json_data(done.stdout)["reflections"]) == 3
    assert done.stderr.count("trying again with half the window") == 4


def test_a_single_event_refused_is_shown_again_in_a_whole_window(mind: Path, server: FakeServer) -> None:
    """Halving stops at one event; refused there, the next try shows the whole window again,
    so no one event stalls reflection for good."""
    imported(mind, pairs=2)
    server.text = UNGROUNDED
    for _ in range(2):
        assert pmm(mind, "reflect").exit_code == 5
    assert [len(w) for w in shown(server)] == [4, 2, 1, 4, 2, 1]
