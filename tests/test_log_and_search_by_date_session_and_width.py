"""`pmm log` and `pmm search` choose by date (on when each event was said, in local time) or by
id, refuse unknown kinds and bad dates, show each chat event's session (which `pmm trace`
takes, imported sessions too), say how many matched, count in words ("1 answer") and fit a
terminal's width."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PMM, cli_json, in_zone, invoke, run_pmm
from terminal import Terminal

ZONE = "Asia/Kolkata"  # UTC+05:30: a UTC evening is the next local day
MARCH_1_EVENING = 1740859200  # 2025-03-01T20:00:00Z = 2025-03-02 01:30 in Kolkata
MARCH_5_NOON = 1741176000  # 2025-03-05T12:00:00Z = 2025-03-05 17:30 in Kolkata
LONG = "The heron stood in the shallows of the pond " * 6


@pytest.fixture(autouse=True)
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from in_zone(monkeypatch, ZONE)


def _conversation(conv_id: str, title: str, created: int, words: tuple[str, str]) -> dict[str, Any]:
    def node(node_id: str, parent: str, child: str | None, role: str, text: str, at: int) -> dict[str, Any]:
        return {"id": node_id, "parent": parent, "children": [child] if child else [],
                "message": {"id": node_id, "author": {"role": role}, "create_time": at,
                            "content": {"content_type": "text", "parts": [text]}, "metadata": {}}}

    mapping = {
        "root": {"id": "root", "parent": None, "children": [f"{conv_id}-u"], "message": None},
        f"{conv_id}-u": node(f"{conv_id}-u", "root", f"{conv_id}-a", "user", words[0], created + 10),
        f"{conv_id}-a": node(f"{conv_id}-a", f"{conv_id}-u", None, "assistant", words[1], created + 20),
    }
    return {"id": conv_id, "title": title, "create_time": created, "mapping": mapping,
            "current_node": f"{conv_id}-a"}


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    """A native note about herons, then two ChatGPT conversations from March 2025 imported."""
    path = tmp_path / "mind.db"
    export = tmp_path / "conversations.json"
    export.write_text(json.dumps([
        _conversation("9f1c2d3e-0000-4000-8000-000000000001", "Herons", MARCH_1_EVENING,
                      ("Tell me about the heron at the pond.", LONG)),
        _conversation("9f1c2d3e-0000-4000-8000-000000000002", "Ducks", MARCH_5_NOON,
                      ("What do ducks eat?", "Ducks eat weeds, and herons eat the fish.")),
    ]), encoding="utf-8")
    for args in (("init", "--name", "Echo"), ("remember", "A heron note of my own"),
                 ("import", "--format", "chatgpt", str(export))):
        result = invoke("--mind", str(path), *args)
        assert result.exit_code == 0, result.output
    return path


def ids(mind: Path, *args: str) -> list[int]:
    return [e["id"] for e in cli_json(mind, "log", *args)]


def test_dates_filter_on_when_each_event_was_said_in_local_time(mind: Path) -> None:
    events = cli_json(mind, "log")
    by_text = {e["content"]: e["id"] for e in events}
    herons = [by_text["Herons"], by_text["Tell me about the heron at the pond."], by_text[LONG]]
    ducks = [by_text["Ducks"], by_text["What do ducks eat?"], by_text["Ducks eat weeds, and herons eat the fish."]]
    # 20:00 UTC on March 1 is already March 2 in Kolkata
    assert ids(mind, "--on", "2025-03-02") == herons
    assert ids(mind, "--on", "2025-03-01") == []
    assert ids(mind, "--since", "2025-03-02", "--until", "2025-03-04") == herons
    assert ids(mind, "--until", "2025-03-05") == herons + ducks  # --until takes the whole day
    assert ids(mind, "--since", "2025-03-05T17:30", "--until", "2025-03-05T17:30") == ducks[:3]
    assert ids(mind, "--on", "2025-03-01T20:00Z") == herons  # an explicit zone
    native = [e["id"] for e in events if e["kind"] in ("mind_created", "observation_recorded")]
    assert ids(mind, "--since", "2025-03-06") == native  # recorded today, said today
    assert ids(mind, "--on", "2025-03-05", "--kind", "response_sent") == ducks[2:]


def test_a_date_before_the_year_1000_compares_as_a_date(mind: Path) -> None:
    """The stored text has four-digit years: a three-digit one would sort after every event."""
    assert ids(mind, "--since", "0999-06-01") == ids(mind)
    assert ids(mind, "--until", "0999-06-01") == []


def test_digits_are_event_ids(mind: Path) -> None:
    assert ids(mind, "--since", "3", "--until", "4") == [3, 4]
    assert ids(mind, "--since", "2", "-n", "2") == ids(mind)[-2:]
    found = cli_json(mind, "search", "heron", "--since", "3")
    assert found and all(hit["id"] >= 3 for hit in found)


def test_search_by_date_and_how_many_matched(mind: Path) -> None:
    assert {hit["content"] for hit in cli_json(mind, "search", "herons", "--on", "2025-03-05")} == {
        "Ducks eat weeds, and herons eat the fish."}
    result = invoke("--mind", str(mind), "search", "heron", "-n", "1")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 1
    matched = len(cli_json(mind, "search", "heron", "-n", "100"))
    assert matched > 1 and f"{matched} matches (showing 1)\n" in result.stderr
    one = invoke("--mind", str(mind), "search", "weeds")
    assert "1 match\n" in one.stderr and "showing" not in one.stderr


@pytest.mark.parametrize("args", [("--since", "2025-02-30"), ("--until", "March 1"), ("--on", "tomorrow"),
                                  ("--on", "7"), ("--since", "2025-3-1")])
def test_a_bad_date_is_a_usage_error(mind: Path, args: tuple[str, ...]) -> None:
    for command in (("log",), ("search", "heron")):
        result = run_pmm("--mind", str(mind), *command, *args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.decode().splitlines()
        assert lines[0].startswith("Error: ") and lines[1].startswith("Hint: ") and len(lines) == 2
        assert result.stdout == b""


def test_an_unknown_kind_is_refused_and_completion_offers_the_kinds(mind: Path) -> None:
    result = run_pmm("--mind", str(mind), "log", "--kind", "responses")
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "unknown event kind 'responses'" in err and "response_sent" in err and "session_started" in err
    from pmm.services.browse import kinds_starting

    assert kinds_starting("sess") == ["session_started"]
    bash = (Path(__file__).parents[1] / "completions" / "pmm.bash").read_text(encoding="utf-8")
    line = next(line for line in bash.splitlines() if '"log:--kind")' in line)
    assert "response_sent" in line and "session_started" in line


def test_log_shows_sessions_that_trace_takes_for_imports(mind: Path) -> None:
    text = invoke("--mind", str(mind), "log").stdout
    heron_lines = [line for line in text.splitlines() if "[9f1c2d3e]" in line]
    assert len(heron_lines) == 6  # each imported event shows its conversation's first 8 characters
    whole = invoke("--mind", str(mind), "trace", "9f1c2d3e-0000-4000-8000-000000000001")
    assert whole.exit_code == 0, whole.output
    assert whole.stdout.startswith("Session 9f1c2d3e-0000-4000-8000-000000000001 (started #3 ")
    assert ", 1 answer\n" in whole.stdout and "Answered: The heron stood" in whole.stdout
    ambiguous = run_pmm("--mind", str(mind), "trace", "9f1c2d3e")
    assert ambiguous.returncode == 2 and b"more than one session starts with 9f1c2d3e" in ambiguous.stderr
    prefix = invoke("--mind", str(mind), "trace", "9f1c2d3e-0000-4000-8000-0000000000")
    assert prefix.exit_code == 2  # still two
    assert invoke("--mind", str(mind), "trace", "nosuchsession").exit_code == 2


def test_a_session_whose_id_starts_with_digits_is_traced_by_that_start(tmp_path: Path) -> None:
    """`pmm log` shows a session's first 8 characters: all digits, they are not an event id here."""
    path, export = tmp_path / "mind.db", tmp_path / "conversations.json"
    export.write_text(json.dumps([_conversation("20260301-0000-4000-8000-000000000001", "Herons",
                                                MARCH_1_EVENING, ("Tell me about the heron.", LONG))]),
                      encoding="utf-8")
    for args in (("init",), ("import", "--format", "chatgpt", str(export))):
        assert invoke("--mind", str(path), *args).exit_code == 0
    assert "[20260301]" in invoke("--mind", str(path), "log").stdout
    traced = invoke("--mind", str(path), "trace", "20260301")
    assert traced.exit_code == 0, traced.output
    assert traced.stdout.startswith("Session 20260301-0000-4000-8000-000000000001 ")
    asked = next(e["id"] for e in cli_json(path, "log") if e["content"] == "Tell me about the heron.")
    by_id = invoke("--mind", str(path), "trace", str(asked))  # an event id still wins
    assert by_id.exit_code == 0 and not by_id.stdout.startswith("Session"), by_id.output
    missing = run_pmm("--mind", str(path), "trace", "99999999")
    assert missing.returncode == 2 and b"there is no event 99999999" in missing.stderr


def test_a_native_session_is_traced_by_the_start_log_shows(tmp_path: Path) -> None:
    from provider_servers import FakeServer

    path = tmp_path / "mind.db"
    assert invoke("--mind", str(path), "init").exit_code == 0
    with FakeServer("openai", text="Herons wait.") as server:
        added = invoke("--mind", str(path), "model", "add", "srv", "openai-compatible:test-model",
                       "--base-url", server.url, "--use")
        assert added.exit_code == 0, added.stderr
        chat = invoke("--mind", str(path), "chat", "-m", "Hello")
        assert chat.exit_code == 0, chat.output
    session = cli_json(path, "log", "--kind", "session_started")[0]["meta"]["session"]
    logged = invoke("--mind", str(path), "log").stdout
    assert f"[{session[:8]}]" in logged
    traced = invoke("--mind", str(path), "trace", session[:8])
    assert traced.exit_code == 0 and traced.stdout.startswith(f"Session {session} ")


def test_plurals_in_words() -> None:
    from pmm.cli.output import plural

    assert [plural(n, "event") for n in (0, 1, 2, 2000)] == ["0 events", "1 event", "2 events", "2,000 events"]
    assert plural(1, "match") == "1 match" and plural(3, "match") == "3 matches"


def test_times_are_local_and_json_keeps_utc(mind: Path) -> None:
    answer = next(e for e in cli_json(mind, "log") if e["content"] == LONG)
    assert answer["said_at"] == "2025-03-01T20:00:20.000000Z"
    text = invoke("--mind", str(mind), "log").stdout
    line = next(line for line in text.splitlines() if line.startswith(f"#{answer['id']} "))
    assert "2025-03-02 01:30 (imported " in line and "T20:00" not in line


def test_lines_fit_the_terminal_and_stay_whole_into_a_pipe(mind: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}, "TERM": "xterm-256color", "TZ": ZONE}
    term = Terminal([PMM, "--mind", str(mind), "log"], env, cols=110)
    try:
        assert term.wait(60) == 0
    finally:
        term.kill()
    lines = [line for line in term.shown() if line.startswith("#")]
    assert len(lines) == 8  # none wrapped onto a second row
    long_line = next(line for line in lines if "The heron stood" in line)
    assert len(long_line) == 110 and long_line.endswith("…")
    assert "  response_sent        [9f1c2d3e] The heron" in long_line  # the columns kept
    piped = run_pmm("--mind", str(mind), "log", env={"TZ": ZONE}).stdout.decode()
    in_pipe = next(line for line in piped.splitlines() if "The heron stood" in line)
    assert len(in_pipe) > 110  # into a pipe: the text cut at 100 characters, not at a width


def test_trace_lines_fit_the_terminal_too(mind: Path) -> None:
    answer = next(e for e in cli_json(mind, "log") if e["content"] == LONG)
    env = {**{k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}, "TERM": "xterm-256color", "TZ": ZONE}
    term = Terminal([PMM, "--mind", str(mind), "trace", str(answer["id"])], env, cols=60)
    try:
        assert term.wait(60) == 0
    finally:
        term.kill()
    shown = [line for line in term.shown() if line.strip()]
    answered = next(line for line in shown if line.startswith("  Answered: The heron"))
    assert answered.endswith("…") and len(answered) == 60  # cut to the width, not wrapped
    assert not any(line.startswith(LONG[40:60]) for line in shown)  # no continuation row
    piped = run_pmm("--mind", str(mind), "trace", str(answer["id"]), env={"TZ": ZONE}).stdout.decode()
    assert len(next(line for line in piped.splitlines() if "Answered:" in line)) > 60  # a pipe: whole
