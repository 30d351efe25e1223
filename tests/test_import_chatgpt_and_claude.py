"""`pmm import --format chatgpt|claude`: a data export's conversations.json becomes sessions and
messages, re-imports add only what is new, and a bad file is refused without touching the mind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import json_data, json_failure, run_in

DATA = Path(__file__).parent / "data"
CHATGPT = DATA / "chatgpt_conversations.json"
CLAUDE = DATA / "claude_conversations.json"


@pytest.fixture
def pmm():
    """pmm's own ``main`` in this process (conftest's ``pmm`` is a real process): what an import
    writes and refuses is the same code; stdin here is bytes in memory, a pipe is
    test_import_rejects_bad_input's."""
    return run_in


def run_import(pmm, mind: Path, fmt: str, source: Path | str, *extra: str, input: bytes | None = None):
    return pmm("--mind", str(mind), "import", "--format", fmt, str(source), *extra, input=input)


def log(pmm, mind: Path) -> list[dict[str, Any]]:
    proc = pmm("--mind", str(mind), "log", "-n", "1000", "--json", check=True)
    return json_data(proc.stdout)


def stats(pmm, mind: Path) -> dict[str, Any]:
    return json_data(pmm("--mind", str(mind), "stats", "--json", check=True).stdout)


def imported(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["kind"], e["content"]) for e in events if e["kind"] != "mind_created"]


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")
    return path


# -- ChatGPT ---------------------------------------------------------------------------------------

CHATGPT_EVENTS = [
    # the older conversation first: imports are laid down in the order they happened
    ("session_started", "Rust lifetimes"),
    ("message_received", "Why does the borrow checker say `x` does not live long enough?"),
    ("response_sent", "Because the reference you return outlives the value it borrows from."),
    # then the garden one: the branch current_node picks, without system, tool or image-only parts
    ("session_started", "Shady garden corner"),
    ("message_received", "What should I plant in a shady corner of the garden?"),
    ("response_sent", "Ferns, hostas and hellebores all do well in shade."),
    ("message_received", "[image: corner.jpg]\nHere is a photo of the spot. How much sun does it get?"),
    ("response_sent", "It looks like about two hours of morning sun: part shade."),
]


def test_chatgpt_import_follows_the_current_branch(pmm, tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    proc = run_import(pmm, mind, "chatgpt", CHATGPT)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    assert b"Created a new mind at" in proc.stderr
    assert b"Imported 8 new events (head is now #9)" in proc.stderr
    events = log(pmm, mind)
    assert imported(events) == CHATGPT_EVENTS
    everything = json.dumps(events)
    for left_out in ("Try hostas", "You are ChatGPT", "analyze_image", "brightness: low"):
        assert left_out not in everything


def test_chatgpt_import_keeps_original_ids_times_and_models(pmm, tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    run_import(pmm, mind, "chatgpt", CHATGPT)
    metas = [e["meta"] for e in log(pmm, mind)[1:]]

    assert metas[0] == {"source": "chatgpt", "source_id": "conv-rust-0002",
                        "original_ts": "2023-07-22T04:26:40.000000Z", "title": "Rust lifetimes"}
    assert metas[3] == {"source": "chatgpt", "source_id": "conv-garden-0001",
                        "original_ts": "2023-11-14T22:13:20.250000Z", "title": "Shady garden corner"}
    assert metas[4] == {"source": "chatgpt", "source_id": "msg-u-1", "session": "conv-garden-0001",
                        "original_ts": "2023-11-14T22:13:30.500000Z"}
    assert metas[5] == {"source": "chatgpt", "source_id": "msg-a-1b", "session": "conv-garden-0001",
                        "original_ts": "2023-11-14T22:13:50.000000Z", "model": "gpt-4o"}
    assert [m["source_id"] for m in metas[6:]] == ["msg-u-2", "msg-a-3"]
    assert metas[7]["original_ts"] == "2023-11-14T22:15:20.750000Z"
    assert metas[2]["model"] == "gpt-4"

    report = stats(pmm, mind)
    assert (report["events"], report["sessions"], report["messages"], report["responses"]) == (9, 2, 3, 3)
    verified = pmm("--mind", str(mind), "verify")
    assert verified.returncode == 0, verified.stderr
    assert b"OK:" in verified.stdout


def test_json_output_reports_what_was_imported(pmm, tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    first = run_import(pmm, mind, "chatgpt", CHATGPT, "--json")
    again = run_import(pmm, mind, "chatgpt", CHATGPT, "--json")

    mind_id = stats(pmm, mind)["mind_id"]
    skipped = {"branch_message": 1, "image": 1, "audio": 0, "file": 0, "system_or_tool": 3, "other": 0}
    assert json_data(first.stdout) == {
        "appended": 8, "already_present": 0, "created": True, "mind_id": mind_id, "head_id": 9,
        "format": "chatgpt", "skipped": skipped}
    assert json_data(again.stdout) == {
        "appended": 0, "already_present": 8, "created": False, "mind_id": mind_id, "head_id": 9,
        "format": "chatgpt", "skipped": skipped}


def test_reimporting_the_same_export_adds_nothing(pmm, tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    run_import(pmm, mind, "chatgpt", CHATGPT)
    before = mind.read_bytes()

    proc = run_import(pmm, mind, "chatgpt", CHATGPT)

    assert proc.returncode == 0, proc.stderr
    assert b"Nothing to import: all 8 events are already in" in proc.stderr
    assert mind.read_bytes() == before, "a no-op import rewrote the mind file"


def test_a_grown_conversation_adds_only_its_new_messages(pmm, tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    run_import(pmm, mind, "chatgpt", CHATGPT)
    export = json.loads(CHATGPT.read_text(encoding="utf-8"))
    rust = export[1]["mapping"]
    rust["msg-b-a-1"]["children"].append("msg-b-u-3")
    rust["msg-b-u-3"] = _chatgpt_node("msg-b-u-3", "user", "Can I return an owned String instead?",
                                      1690000100.0, parent="msg-b-a-1", children=["msg-b-a-2"])
    rust["msg-b-a-2"] = _chatgpt_node("msg-b-a-2", "assistant", "Yes: then nothing is borrowed.",
                                      1690000110.0, parent="msg-b-u-3")
    export[1]["current_node"] = "msg-b-a-2"
    export.insert(0, {
        "id": "conv-new-0003", "title": "Later question", "create_time": 1710000000.0,
        "current_node": "n-2",
        "mapping": {
            "n-1": _chatgpt_node("n-1", "user", "Is it going to rain?", 1710000001.0, children=["n-2"]),
            "n-2": _chatgpt_node("n-2", "assistant", "Take an umbrella.", 1710000002.0, parent="n-1"),
        },
    })
    grown = write_json(tmp_path / "conversations.json", export)

    result = json_data(run_import(pmm, mind, "chatgpt", grown, "--json").stdout)

    assert (result["appended"], result["already_present"], result["head_id"]) == (5, 8, 14)
    events = log(pmm, mind)
    assert imported(events[:9]) == CHATGPT_EVENTS  # what was there stays as it was
    assert imported(events[9:]) == [
        ("message_received", "Can I return an owned String instead?"),
        ("response_sent", "Yes: then nothing is borrowed."),
        ("session_started", "Later question"),
        ("message_received", "Is it going to rain?"),
        ("response_sent", "Take an umbrella."),
    ]
    assert events[9]["meta"]["session"] == "conv-rust-0002"
    assert events[12]["meta"]["session"] == "conv-new-0003"
    assert pmm("--mind", str(mind), "verify").returncode == 0


def test_without_current_node_the_latest_leaf_is_taken(pmm, tmp_path: Path) -> None:
    export = json.loads(CHATGPT.read_text(encoding="utf-8"))
    for conversation in export:
        del conversation["current_node"]
    mind = tmp_path / "mind.db"

    run_import(pmm, mind, "chatgpt", write_json(tmp_path / "c.json", export))

    # the newest leaf of the garden conversation is the regenerated answer the user switched away from
    assert imported(log(pmm, mind)) == CHATGPT_EVENTS[:5] + [
        ("response_sent", "Try hostas. (A regenerated answer the user switched away from.)")]


def _chatgpt_node(node_id: str, role: str, text: str, created: float, *, parent: str | None = None,
                  children: list[str] | None = None) -> dict[str, Any]:
    message = {"id": node_id, "author": {"role": role}, "create_time": created,
               "content": {"content_type": "text", "parts": [text]}, "metadata": {}, "recipient": "all"}
    return {"id": node_id, "message": message, "parent": parent, "children": children or []}


# -- Claude ----------------------------------------------------------------------------------------


def test_claude_import_from_stdin_into_an_existing_mind(pmm, mind: Path) -> None:
    proc = run_import(pmm, mind, "claude", "-", input=CLAUDE.read_bytes())

    assert proc.returncode == 0, proc.stderr
    assert b"Created a new mind" not in proc.stderr
    events = log(pmm, mind)
    assert events[0]["kind"] == "mind_created"
    assert imported(events) == [
        ("session_started", "Sourdough starter troubleshooting"),
        ("message_received", "My starter smells like nail polish remover. Is it dead?"),
        # the text blocks, not the export's `text` with its tool-use placeholder
        ("response_sent", "Not dead, just hungry: the acetone smell means the yeast ran out of food."
                          "\n\nFeed it twice a day for a few days."),
        # an attachment's extracted text is kept, under its file name
        ("message_received", "Thanks! What ratio should I feed it?\n\n[attachment: photo-notes.txt]\njar photo"),
        ("response_sent", "1:1:1 starter, flour and water by weight is a good start."),
        ("session_started", ""),
        ("message_received", "Summarise the plot of Hamlet in one sentence."),
        ("response_sent", "A prince feigns madness to avenge his father's murder, and nearly everyone dies."),
    ]
    assert events[1]["meta"] == {
        "source": "claude", "source_id": "5f1c7a7e-0000-4000-8000-000000000001",
        "original_ts": "2024-03-10T09:15:00.123456Z", "title": "Sourdough starter troubleshooting"}
    assert events[4]["meta"] == {
        "source": "claude", "source_id": "c1-m3", "session": "5f1c7a7e-0000-4000-8000-000000000001",
        "original_ts": "2024-03-10T09:17:00.000000Z"}
    assert events[6]["meta"] == {"source": "claude", "source_id": "5f1c7a7e-0000-4000-8000-000000000002",
                                 "original_ts": "2024-04-01T18:00:00.000000Z"}
    report = stats(pmm, mind)
    assert (report["name"], report["sessions"], report["messages"], report["responses"]) == ("Test", 2, 3, 3)

    again = run_import(pmm, mind, "claude", "-", input=CLAUDE.read_bytes())
    assert again.returncode == 0
    assert b"Nothing to import: all 8 events are already in" in again.stderr


def test_both_services_share_one_mind_and_empty_conversations_are_skipped(pmm, tmp_path: Path) -> None:
    export = json.loads(CLAUDE.read_text(encoding="utf-8"))
    export.append({"uuid": "empty-conversation", "name": "Never used",
                   "created_at": "2024-05-01T00:00:00Z", "chat_messages": []})
    claude = write_json(tmp_path / "claude.json", export)
    mind = tmp_path / "mind.db"

    assert run_import(pmm, mind, "chatgpt", CHATGPT).returncode == 0
    assert run_import(pmm, mind, "claude", claude).returncode == 0

    report = stats(pmm, mind)
    assert (report["events"], report["sessions"], report["messages"], report["responses"]) == (17, 4, 6, 6)
    assert "Never used" not in json.dumps(log(pmm, mind))
    assert json_data(run_import(pmm, mind, "chatgpt", CHATGPT, "--json").stdout)["appended"] == 0
    assert json_data(run_import(pmm, mind, "claude", claude, "--json").stdout)["appended"] == 0


# -- bad input -------------------------------------------------------------------------------------

_CHATGPT_TEXT = CHATGPT.read_bytes()
_CYCLE = json.dumps([{"id": "c1", "current_node": "a", "mapping": {
    "a": {"id": "a", "message": None, "parent": "b", "children": []},
    "b": {"id": "b", "message": None, "parent": "a", "children": ["a"]}}}]).encode()

BAD_INPUTS = {
    "empty": ("chatgpt", b"", "is empty"),
    "only whitespace": ("claude", b"  \n\t\n", "is empty"),
    "not JSON": ("chatgpt", b'[{"id": "c1",\n  oops}]', "line 2"),
    "truncated": ("chatgpt", _CHATGPT_TEXT[: len(_CHATGPT_TEXT) // 2], "not valid JSON"),
    "an object": ("claude", b'{"conversations": []}', "expected a JSON list of conversations"),
    "a list of strings": ("chatgpt", b'["hello"]', "conversation 1 is not a JSON object"),
    "invalid UTF-8": ("claude", b'[{"uuid": "caf\xe9"}]', "not valid UTF-8"),
    "NaN": ("chatgpt", b"[NaN]", "not valid JSON"),
    "a broken zip": ("chatgpt", b"PK\x03\x04\x14\x00\x00\x00", "not a readable zip archive"),
    "Claude file as ChatGPT": ("chatgpt", CLAUDE.read_bytes(), "use --format claude"),
    "ChatGPT file as Claude": ("claude", _CHATGPT_TEXT, "use --format chatgpt"),
    "mapping not an object": ("chatgpt", b'[{"id": "c1", "mapping": []}]', "no 'mapping' object"),
    "a cycle": ("chatgpt", _CYCLE, "cycle"),
    "message without uuid": ("claude", b'[{"uuid": "c1", "chat_messages": [{"sender": "human"}]}]',
                             "message 1 has no 'uuid'"),
    "good then bad": ("claude", b'[' + CLAUDE.read_bytes().strip()[1:-1] + b', {"name": "x"}]',
                      "conversation 3 has no 'uuid'"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_refused_and_no_mind_is_created(pmm, tmp_path: Path, case: str) -> None:
    fmt, data, expected = BAD_INPUTS[case]
    source = tmp_path / "conversations.json"
    source.write_bytes(data)
    mind = tmp_path / "new.db"

    proc = run_import(pmm, mind, fmt, source, "--json")

    assert proc.returncode == 6
    failed = json_failure(proc.stdout, 6)  # under --json the error is on stdout too, as JSON
    assert failed["command"] == "import" and failed["data"] is None and expected in failed["error"]["message"]
    lines = proc.stderr.decode().splitlines()
    assert lines[0].startswith("Error: ") and [line[:6] for line in lines[1:]] == ["Hint: "], lines
    assert expected in lines[0]
    assert not mind.exists()
    assert not [p.name for p in tmp_path.iterdir() if "new.db" in p.name]  # no temp file left either


@pytest.mark.parametrize("case", ["not JSON", "truncated", "ChatGPT file as Claude", "good then bad"])
def test_bad_input_leaves_an_existing_mind_byte_identical(pmm, mind: Path, case: str) -> None:
    fmt, data, expected = BAD_INPUTS[case]
    before = mind.read_bytes()

    proc = run_import(pmm, mind, fmt, "-", input=data)

    assert proc.returncode == 6
    assert expected in proc.stderr.decode()
    assert mind.read_bytes() == before


def test_empty_stdin_and_a_missing_file_are_refused(pmm, tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    empty = run_import(pmm, mind, "claude", "-", input=b"")
    missing = run_import(pmm, mind, "chatgpt", tmp_path / "nowhere.json")

    assert (empty.returncode, missing.returncode) == (6, 6)
    assert b"stdin is empty" in empty.stderr
    assert b"nowhere.json" in missing.stderr
    assert not mind.exists()
