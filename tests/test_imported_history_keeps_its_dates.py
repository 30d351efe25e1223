"""An imported message keeps the time it was said: `log`, `search`, `export --format md`, `trace`
and `stats` show its original time (and that it was imported), while the ledger's `ts` stays the
append time; native events, and imported ones without an original time, show their `ts`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import in_zone, invoke, json_data
from provider_servers import FakeServer

MARCH_1 = 1740823200  # 2025-03-01T10:00:00Z
SAID = {"session": "2025-03-01T10:00:00.000000Z", "bike": "2025-03-01T10:00:10.000000Z",
        "answer": "2025-03-01T10:00:20.000000Z"}


def _node(node_id: str, parent: str | None, child: str | None, role: str, text: str,
          created: float | None) -> dict[str, Any]:
    return {"id": node_id, "parent": parent, "children": [child] if child else [],
            "message": {"id": node_id, "author": {"role": role}, "create_time": created,
                        "content": {"content_type": "text", "parts": [text]}, "metadata": {}}}


def chatgpt_export(path: Path) -> Path:
    """One ChatGPT conversation from March 2025; its last message has no time of its own."""
    mapping = {
        "root": {"id": "root", "parent": None, "children": ["u1"], "message": None},
        "u1": _node("u1", "root", "a1", "user", "My bike is a blue Brompton, folded in the hall.", MARCH_1 + 10),
        "a1": _node("a1", "u1", "u2", "assistant", "A blue Brompton folds small enough for any hall.", MARCH_1 + 20),
        "u2": _node("u2", "a1", None, "user", "Where else could the Brompton live?", None),
    }
    conversation = {"id": "conv-bike", "title": "Bikes", "create_time": MARCH_1, "mapping": mapping,
                    "current_node": "u2"}
    path.write_text(json.dumps([conversation]), encoding="utf-8")
    return path


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    """A native note, then the 2025 conversation imported after it."""
    path = tmp_path / "mind.db"
    ok("--mind", str(path), "init", "--name", "Echo")
    ok("--mind", str(path), "remember", "Native note about the Brompton")
    ok("--mind", str(path), "import", "--format", "chatgpt", str(chatgpt_export(tmp_path / "c.json")))
    return path


def events(mind: Path) -> dict[str, dict[str, Any]]:
    """The events of `log --json` by what they are."""
    logged = json_data(ok("--mind", str(mind), "log", "--json"))
    by_content = {e["content"].split()[1] if e["kind"] != "session_started" else "session": e for e in logged}
    return {"note": by_content["note"], "session": by_content["session"], "bike": by_content["bike"],
            "answer": by_content["blue"], "untimed": by_content["else"]}


ZONE = "Asia/Kolkata"  # UTC+05:30 all year: the local time differs from UTC by a half hour


@pytest.fixture(autouse=True)
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from in_zone(monkeypatch, ZONE)


def imported(said: str, ts: str) -> str:
    return f"{plain(said)} (imported {plain(ts)[:10]})"


def plain(ts: str) -> str:
    """``ts`` (UTC) as a person in ZONE reads it, to the minute."""
    moment = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M")


def test_log_shows_when_each_event_was_said_and_json_keeps_both_times(mind: Path) -> None:
    e = events(mind)
    for name in ("session", "bike", "answer"):
        assert e[name]["said_at"] == SAID[name] == e[name]["meta"]["original_ts"]
        assert e[name]["ts"] != e[name]["said_at"]  # the stored, hashed append time, unchanged
    assert "original_ts" not in e["untimed"]["meta"] and e["untimed"]["said_at"] == e["untimed"]["ts"]
    assert e["note"]["said_at"] == e["note"]["ts"]

    lines = {line.split()[0]: line for line in ok("--mind", str(mind), "log").splitlines()}
    assert f"  {imported(SAID['bike'], e['bike']['ts'])}  message_received " in lines[f"#{e['bike']['id']}"]
    for name in ("note", "untimed"):  # their own time, padded to the imported lines' width
        line = lines[f"#{e[name]['id']}"]
        assert f"  {plain(e[name]['ts'])}  " in line and "imported" not in line
    kinds = {f"#{x['id']}": x["kind"] for x in json_data(ok("--mind", str(mind), "log", "--json"))}
    after_id = [line.split("  ", 1)[1] for line in lines.values()]
    assert len({rest.index(kinds[line.split()[0]]) for line, rest in zip(lines.values(), after_id, strict=True)}) == 1
    assert ok("--mind", str(mind), "log", "--kind", "observation_recorded").startswith(
        f"#{e['note']['id']}  {plain(e['note']['ts'])}  observation_recorded")


def test_search_and_the_markdown_transcript_show_the_original_date(mind: Path) -> None:
    e = events(mind)
    hits = json_data(ok("--mind", str(mind), "search", "Brompton", "--json"))
    assert {h["id"]: h["said_at"] for h in hits} == {
        e["note"]["id"]: e["note"]["ts"], e["bike"]["id"]: SAID["bike"], e["answer"]["id"]: SAID["answer"],
        e["untimed"]["id"]: e["untimed"]["ts"]}
    found = ok("--mind", str(mind), "search", "hall")
    assert f"#{e['bike']['id']}  {imported(SAID['bike'], e['bike']['ts'])}  message_received" in found

    day = e["bike"]["ts"][:10]
    md = ok("--mind", str(mind), "export", "--format", "md")
    assert f"## Bikes\n\n_{SAID['session']} · imported {day} · event {e['session']['id']}_" in md
    assert f"**User** ({SAID['bike']}, event {e['bike']['id']}):" in md  # the heading said it once
    assert f"**Mind** ({SAID['answer']}, event {e['answer']['id']}):" in md
    assert f"**User** ({e['untimed']['ts']}, event {e['untimed']['id']}):" in md
    assert f"**Remembered** ({e['note']['ts']}, event {e['note']['id']}):" in md
    tail = ok("--mind", str(mind), "export", "--format", "md", "--since", str(e["answer"]["id"]))
    assert f"**Mind** ({SAID['answer']}, imported {day}, event {e['answer']['id']}):" in tail  # no heading


def test_stats_span_runs_from_the_first_thing_said(mind: Path) -> None:
    e = events(mind)
    report = json_data(ok("--mind", str(mind), "stats", "--json"))
    genesis = json_data(ok("--mind", str(mind), "log", "--kind", "mind_created", "--json"))[0]
    assert report["first_said"] == SAID["session"] and report["backdated"] == 3
    assert report["first_ts"] == genesis["ts"]  # the recorded span is unchanged
    assert report["last_said"] == report["last_ts"] == e["untimed"]["ts"]
    text = ok("--mind", str(mind), "stats")
    assert (f"Span: 2025-03-01 15:30 to {plain(e['untimed']['ts'])}"
            " (when said: 3 imported events at their original time)") in text
    assert f"Recorded: {plain(genesis['ts'])} to {plain(e['untimed']['ts'])}" in text


def test_stats_of_a_mind_without_imports_has_one_span(tmp_path: Path) -> None:
    path = tmp_path / "native.db"
    ok("--mind", str(path), "init")
    report = json_data(ok("--mind", str(path), "stats", "--json"))
    assert report["first_said"] == report["first_ts"] and report["last_said"] == report["last_ts"]
    assert report["backdated"] == 0
    text = ok("--mind", str(path), "stats")
    assert f"Span: {plain(report['first_ts'])} to {plain(report['last_ts'])}\n" in text
    assert "Recorded:" not in text


def test_trace_dates_an_imported_answer_and_the_imported_context_of_a_new_one(mind: Path) -> None:
    e = events(mind)
    old = json_data(ok("--mind", str(mind), "trace", str(e["answer"]["id"]), "--json"))
    assert old["response"]["said_at"] == SAID["answer"] and old["message"]["said_at"] == SAID["bike"]
    assert old["response"]["ts"] == e["answer"]["ts"]
    assert ok("--mind", str(mind), "trace", str(e["answer"]["id"])).startswith(
        f"Answer #{e['answer']['id']}  {imported(SAID['answer'], e['answer']['ts'])}  session conv-bike")

    with FakeServer("openai", text="It is blue.") as server:
        ok("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
           "--base-url", server.url, "--use")
        turn = json_data(ok("--mind", str(mind), "chat", "-m", "What colour is my Brompton bike?", "--json"))
    report = json_data(ok("--mind", str(mind), "trace", str(turn["response_id"]), "--json"))
    context = {c["id"]: c for c in report["context"]}
    assert context[e["bike"]["id"]]["said_at"] == SAID["bike"]
    assert context[e["bike"]["id"]]["ts"] == e["bike"]["ts"]
    assert report["response"]["said_at"] == report["response"]["ts"]  # a native answer: its own time
    text = ok("--mind", str(mind), "trace", str(turn["response_id"]))
    assert f"    #{e['bike']['id']} message_received, {imported(SAID['bike'], e['bike']['ts'])}: My bike" in text
    assert f"Answer #{turn['response_id']}  {plain(report['response']['ts'])}  session" in text
