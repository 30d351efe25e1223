"""`pmm recall QUERY` shows what the prompt for a message would hold (standing memory, recalled
memory, recent turns: each event's id, date, who said it and why, the tokens per section)
without calling a model; `pmm chat` then sends exactly that, records which events were standing
and recalled memory, and `pmm trace` shows the same sections."""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke, json_data, mind_events, run_pmm
from provider_servers import FakeServer
from test_imported_history_keeps_its_dates import SAID, chatgpt_export
from test_read_commands_stay_offline import offline_env  # noqa: F401 (a fixture)

BIKE = "My bike is a blue Brompton, I ride it to work every day."
QUESTION = "What colour is my bike?"
TOPICS = ("sourdough starters and the hydration of rye flour", "the migration of arctic terns",
          "tuning a classical guitar to an open tuning", "how tides follow the moon",
          "growing tomatoes on a windy balcony")
FILLER = ("We went through it step by step, with examples, caveats and a few tangents about history,"
          " tools, habits, seasons and the people who first wrote about it at length. ")


def ok(*args: str, input: str | None = None) -> str:
    result = invoke(*args, input=input)
    assert result.exit_code == 0, result.output
    return result.stdout


def long_turn(i: int) -> str:
    return f"Turn {i}: tell me more about {TOPICS[i % len(TOPICS)]}. " + FILLER * 3


def stored(mind: Path) -> list[bytes]:
    """The mind file and its write-ahead log, byte for byte."""
    return [p.read_bytes() for p in (mind, mind.with_name(mind.name + "-wal")) if p.exists()]


def stable_and_new(server: FakeServer) -> tuple[str, str]:
    """What the OpenAI-compatible fake received last around the older conversation: the system
    message (system prompt and standing memory) and the last user message (the turn's context,
    then the message)."""
    body = server.requests[-1].body
    assert body["messages"][0]["role"] == "system" and body["messages"][-1]["role"] == "user"
    return body["messages"][0]["content"], body["messages"][-1]["content"]


def sections(plan: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {s["name"]: s["items"] for s in plan["sections"]}


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    path = tmp_path / "mind.db"
    ok("--mind", str(path), "init", "--name", "Echo")
    return path


@pytest.fixture
def server():
    with FakeServer("openai", text="Noted. " + FILLER * 2) as fake:
        yield fake


def use(mind: Path, server: FakeServer, window: int = 2048) -> None:
    ok("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
       "--base-url", server.url, "--context-window", str(window), "--use")


def test_a_fact_fifteen_long_turns_back_is_recalled_sent_and_traced(tmp_path: Path, server: FakeServer) -> None:
    mind = tmp_path / "mind.db"
    use(mind, server)
    bike = json_data(ok("--mind", str(mind), "chat", "-m", BIKE, "--json"))["message_id"]
    for i in range(15):
        ok("--mind", str(mind), "chat", "-m", long_turn(i))
    before = stored(mind)

    text = ok("--mind", str(mind), "recall", QUESTION)
    recalled = text.split("Recalled memory:")[1].split("Recent conversation:")[0]
    line = next(x for x in recalled.splitlines() if x.strip().startswith(f"#{bike} "))
    assert re.search(r"  recalled \d+\.\d\d +user: My bike is a blue Brompton", line), line
    assert "Prompt for srv (openai-compatible:test-model): a window of 2,048 tokens" in text
    assert "Recall words: colour, bike" in text
    plan = json_data(ok("--mind", str(mind), "recall", QUESTION, "--json"))
    assert stored(mind) == before  # a reader: nothing written, not even the cache
    found = {i["id"]: i for i in sections(plan)["recalled"]}
    assert found[bike]["reason"] == "recalled" and found[bike]["score"] > 0
    assert bike + 1 in found and found[bike + 1]["reason"] == "exchange"  # its answer completes it
    assert found[bike + 1]["beside"] == bike
    assert bike not in {i["id"] for i in sections(plan).get("recent", [])}  # the window is too small
    assert plan["tokens"] <= plan["budget"] == 2048 - 256 - 32  # the answer: an eighth of it

    turn = json_data(ok("--mind", str(mind), "chat", "-m", QUESTION, "--json"))
    system, new = stable_and_new(server)
    assert BIKE in new and BIKE not in system  # recalled for this turn: after the cached prefix
    assert new.endswith(QUESTION)
    assert turn["sections"]["recalled"] == [i["id"] for i in sections(plan)["recalled"]]
    response = mind_events(mind, "response_sent")[-1]["meta"]
    assert response["recalled"] == turn["sections"]["recalled"] and response["standing"] == []
    assert set(response["context"]) == {*response["recalled"], *turn["sections"]["recent"]}
    # the plan recall showed is the prompt chat sent, to the byte (unless midnight passed in
    # between: the recent turns' date line names the day)
    if _today() in plan["request"]["context"]:
        assert response["prompt_xxh3"] == plan["prompt_xxh3"]

    traced = json_data(ok("--mind", str(mind), "trace", "last", "--json"))
    assert traced["sections"]["recalled"] == response["recalled"]
    assert {c["id"]: c["section"] for c in traced["context"]}[bike] == "recalled"
    shown = ok("--mind", str(mind), "trace", "last")
    part = shown.split("  Recalled memory (")[1].split("  Recent conversation (")[0]
    assert f"    #{bike} message_received, " in part and "My bike is a blue Brompton" in part
    assert "  Context (" not in shown


def _today() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("Today is %Y-%m-%d.")


def test_a_persona_and_a_pinned_note_lead_the_prompt_of_an_unrelated_question(
        tmp_path: Path, server: FakeServer) -> None:
    mind = tmp_path / "mind.db"
    use(mind, server, window=8192)
    ok("--mind", str(mind), "remember", "The quantum of solace is a film, not physics.")
    pin = json_data(ok("--mind", str(mind), "remember", "--pin", "I prefer short answers", "--json"))["id"]
    persona = json_data(ok("--mind", str(mind), "persona", "set", "You are Ada, curious and exact.",
                            "--json"))["id"]
    question = "Explain how quantum computers work"

    plan = json_data(ok("--mind", str(mind), "recall", question, "--json"))
    assert plan["sections"][0]["name"] == "standing"
    assert [(i["id"], i["reason"]) for i in sections(plan)["standing"]] == [(persona, "persona"), (pin, "pinned")]
    assert sections(plan)["standing"][1]["text"] == "I prefer short answers"
    text = ok("--mind", str(mind), "recall", question)
    standing = text.split("Standing memory: 2 events, ")[1].split("\n\n")[0].splitlines()[1:]
    assert re.fullmatch(rf"  #{persona}  \S+ \S+  persona +persona: You are Ada, curious and exact\.", standing[0])
    assert re.fullmatch(rf"  #{pin}  +\S+ \S+  pinned +note: I prefer short answers", standing[1])

    ok("--mind", str(mind), "chat", "-m", question)
    system, new = stable_and_new(server)
    assert "You are Ada, curious and exact." in system and "I prefer short answers" in system
    assert system.index("You are Ada") < system.index("I prefer short answers")
    assert "quantum of solace" in new  # standing memory is stable, recalled memory per turn
    response = mind_events(mind, "response_sent")[-1]["meta"]
    assert response["standing"] == sorted([pin, persona]) and pin in response["context"]
    shown = ok("--mind", str(mind), "trace")
    assert f"  Standing memory (2 events):\n    #{pin} note_pinned, " in shown
    assert f"    #{persona} persona_set, " in shown
    # the new fields are declared: the answer verifies, exports and imports to the same hashes
    ok("verify", str(mind))
    ok("--mind", str(mind), "export", "-o", str(tmp_path / "m.jsonl"))
    ok("--mind", str(tmp_path / "copy.db"), "import", str(tmp_path / "m.jsonl"))
    assert [e["meta"] for e in mind_events(tmp_path / "copy.db")] == [e["meta"] for e in mind_events(mind)]
    ok("verify", str(tmp_path / "copy.db"))


def test_an_imported_2025_message_is_shown_and_sent_with_its_date(tmp_path: Path, server: FakeServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")  # people are shown local time, to the minute
    time.tzset()
    mind = tmp_path / "mind.db"
    ok("--mind", str(mind), "import", "--format", "chatgpt", str(chatgpt_export(tmp_path / "c.json")))
    use(mind, server, window=8192)
    bike = next(e for e in mind_events(mind, "message_received") if "blue Brompton" in e["content"])
    question = "What colour is my Brompton?"

    plan = json_data(ok("--mind", str(mind), "recall", question, "--json"))
    items = {i["id"]: i for s in plan["sections"] for i in s["items"]}
    assert items[bike["id"]]["said_at"] == SAID["bike"]
    text = ok("--mind", str(mind), "recall", question)
    line = next(x for x in text.splitlines() if x.startswith(f"  #{bike['id']} "))
    assert "  2025-03-01 10:00 (imported " in line and "user: My bike is a blue Brompton" in line
    # a small mind: the conversation is recent, and the prompt dates it from 2025
    assert "said 1 March 2025 to " in plan["request"]["context"]

    ok("--mind", str(mind), "chat", "-m", question)
    assert "said 1 March 2025 to " in stable_and_new(server)[1]
    assert BIKE.split(",")[0] in json.dumps(server.requests[-1].body)


def test_recall_json_has_the_whole_plan_and_the_window_asked_for(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    ok("--mind", str(mind), "init", "--name", "Echo")
    note = json_data(ok("--mind", str(mind), "remember", "Kestrels hover over the motorway verge", "--json"))
    plan = json_data(ok("--mind", str(mind), "recall", "-", "--window", "4096", "--max-tokens", "300",
                         "--json", input="Where do kestrels hover?\n"))
    assert plan["message"] == "Where do kestrels hover?"
    assert plan["model"] == {"name": "embedded", "provider": "local", "model": "SmolLM2-135M-Instruct",
                             "builtin": True}
    assert (plan["window"], plan["answer_tokens"], plan["budget"]) == (4096, 300, 4096 - 300 - 32)
    assert plan["query"] == ["kestrels", "hover"]
    assert {"tokens", "system_tokens", "context_ids", "prompt_xxh3", "request"} <= plan.keys()
    assert plan["context_ids"] == [note["id"]]
    (section,) = plan["sections"]
    assert section["name"] == "recalled" and section["tokens"] > 0
    (item,) = section["items"]
    assert {"id", "kind", "said_at", "who", "reason", "tokens", "score", "text"} <= item.keys()
    assert item["id"] == note["id"] and item["who"] == "note"
    assert plan["tokens"] == plan["system_tokens"] + _message_tokens(plan) + section["tokens"]
    assert plan["request"]["messages"] == [{"role": "user", "content": "Where do kestrels hover?"}]
    assert "Kestrels hover over the motorway verge" in plan["request"]["context"]
    # the embedded model's window is the setting, read without loading the model
    small = json_data(ok("--mind", str(mind), "recall", "kestrels", "--json"))
    assert small["window"] == 2048 and small["answer_tokens"] == 256  # 512, at most an eighth
    half = json_data(ok("--mind", str(mind), "recall", "kestrels", "--window", "600",
                        "--max-tokens", "512", "--json"))
    assert half["answer_tokens"] == 300  # asked for: at most half the window, as chat keeps it
    full = ok("--mind", str(mind), "recall", "kestrels", "--full")
    assert "note:\n      Kestrels hover over the motorway verge\n" in full


def _message_tokens(plan: dict[str, Any]) -> int:
    """The new message's cost, counted as the plan counted it."""
    from pmm.services import models, tokens

    count = models.embedded().token_counter("") if plan["tokens_counted"] == "model" else None
    return tokens.Cost(count).text(plan["message"])


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["recall", ""], 2, "the message is empty"),
    (["recall", "   "], 2, "the message is empty"),
    (["recall", "hello", "--window", "10"], 2, "--window"),
    (["recall", "hello", "--window", "x"], 2, "--window"),
    (["recall", "hello", "--max-tokens", "0"], 2, "--max-tokens"),
    (["recall", "hello", "--model", "nope"], 2, "no model named 'nope'"),
    (["recall"], 2, "Missing argument"),
])
def test_recall_refuses_bad_input(mind: Path, args: list[str], code: int, needle: str) -> None:
    before = stored(mind)
    result = invoke("--mind", str(mind), *args)
    assert result.exit_code == code and needle in result.stderr, (result.exit_code, result.stderr)
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    assert result.stdout == "" and stored(mind) == before


def test_recall_of_a_missing_mind_is_exit_4_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mind.db"
    result = invoke("--mind", str(missing), "recall", "hello")
    assert result.exit_code == 4 and "Error: " in result.stderr
    assert not missing.parent.exists()


def test_recall_refuses_stdin_that_is_not_utf8(mind: Path) -> None:
    result = invoke("--mind", str(mind), "recall", "-", input=b"caf\xe9\n")
    assert result.exit_code == 6 and "not valid UTF-8" in result.stderr


def test_recall_opens_no_socket_and_loads_no_model_even_for_an_untrusted_one(
        offline_env: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    """A real process under the offline hook (test_read_commands_stay_offline), which also
    records whether the embedded model's weights were loaded (its vocabulary may be read:
    that is how its tokens are counted)."""
    log, marker = offline_env
    hook = tmp_path / "hook" / "sitecustomize.py"
    loaded = tmp_path / "llama.log"
    hook.write_text(hook.read_text() + textwrap.dedent(f'''
        import atexit
        atexit.register(lambda: open({str(loaded)!r}, "a").write(
            f"weights={{bool(getattr(sys.modules.get('pmm.providers.local'), '_LOADED', None))}}\\n"))
    '''))
    mind = tmp_path / "mind.db"
    ok("--mind", str(mind), "remember", "Ravens cache food for later")
    ok("--mind", str(mind), "model", "add", "far", "openai-compatible:m", "--base-url", "http://192.0.2.1:9")
    ok("--mind", str(mind), "model", "trust", "far", "--revoke")
    for model in ("embedded", "far"):
        done = run_pmm("--mind", str(mind), "recall", "Where do ravens cache food?", "--model", model)
        assert done.returncode == 0, done.stderr.decode()
        assert b"recalled" in done.stdout and b"Ravens cache food for later" in done.stdout
    assert len(marker.read_text().splitlines()) == 2 and not log.exists()
    assert loaded.read_text().splitlines() == ["weights=False"] * 2


def test_trace_shows_an_answer_recorded_before_the_sections_as_one_list(mind: Path) -> None:
    """What an older pmm wrote: a response whose meta has ``context`` but no sections."""
    from pmm.domain.events import Draft
    from pmm.services import opening

    note = json_data(ok("--mind", str(mind), "remember", "Owls hunt at night", "--json"))["id"]
    with opening.open_write(mind, lambda _m: None) as opened:
        opened.append(lambda first: [
            Draft("message_received", "When do owls hunt?", {"session": "s" * 32}),
            Draft("response_sent", "At night.", {"session": "s" * 32, "reply_to": first,
                                                 "provider": "local", "model": "m", "context": [note]})])
    report = json_data(ok("--mind", str(mind), "trace", "--json"))
    assert report["sections"] is None and "section" not in report["context"][0]
    text = ok("--mind", str(mind), "trace")
    assert f"  Context (1 event):\n    #{note} observation_recorded, " in text
    assert "Recalled memory" not in text
