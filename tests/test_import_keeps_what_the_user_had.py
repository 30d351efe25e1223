"""Importing a ChatGPT or Claude export keeps what the user had: only the thread they kept (not
the regenerated or edited siblings), images, voice and files as their text or a placeholder with
the file name, a count of everything left out, and a later export's new turn shown in its own
conversation. ``pmm import FILE`` tells the formats apart by itself and reads the service's .zip.

The fixtures (tests/data/*_export*.json) are shaped like the real exports: a ChatGPT mapping
with a regenerated answer, an edited question, an image, a PDF and a voice conversation; Claude
messages linked by parent_message_uuid with a regenerated answer and an edited question, an
attachment with extracted text and image and PDF files; and a later export of each in which an
old conversation has one more turn."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import json_data, json_failure, run_in, run_pmm

DATA = Path(__file__).parent / "data"
CHATGPT, CHATGPT_LATER = DATA / "chatgpt_export.json", DATA / "chatgpt_export_later.json"
CLAUDE, CLAUDE_LATER = DATA / "claude_export.json", DATA / "claude_export_later.json"
KINDS = ("branch_message", "image", "audio", "file", "system_or_tool", "other")


def skipped(**counts: int) -> dict[str, int]:
    return {kind: counts.get(kind, 0) for kind in KINDS}


def do_import(mind: Path, source: Path | str, *extra: str, input: bytes | None = None) -> dict[str, Any]:
    proc = run_in("--mind", str(mind), "import", str(source), "--json", *extra, input=input)
    assert proc.returncode == 0, proc.stderr.decode()
    return json_data(proc.stdout)


def turns(mind: Path) -> list[tuple[str, str]]:
    events = json_data(run_in("--mind", str(mind), "log", "-n", "1000", "--json", check=True).stdout)
    return [(e["kind"], e["content"]) for e in events if e["kind"] != "mind_created"]


def zipped(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def export_zip(tmp_path: Path, fixture: Path) -> Path:
    """A service's .zip as it arrives: conversations.json beside the other files it sends."""
    return zipped(tmp_path / f"{fixture.stem}.zip", {
        "conversations.json": fixture.read_bytes(), "user.json": b'{"id": "user-1"}',
        "chat.html": b"<html></html>", "file-Tram28-tram.jpeg": b"\xff\xd8\xff\xe0 not really"})


# -- ChatGPT ---------------------------------------------------------------------------------------

CHATGPT_TURNS = [
    ("session_started", "Three days in Lisbon"),
    ("message_received", "Plan three days in Lisbon for me, please."),
    ("response_sent", "Day 1: Alfama and the castle. Day 2: Belém's tower and pastries. Day 3: a train to Sintra."),
    ("message_received", "[image: tram.jpeg]\nIs this the tram I should take to the castle?"),
    ("response_sent", "Yes: the yellow 28 climbs to the castle. Board at Martim Moniz to get a seat."),
    ("message_received", "Here is my booking, does the hotel fit the plan?\n[file: booking.pdf]"),
    ("response_sent", "Yes: Baixa is central, everything in the plan is a short walk or tram away."),
    ("session_started", "Runny eggs"),
    ("message_received", "How long should I boil an egg for a runny yolk?"),
    ("response_sent", "About six minutes from boiling, then into cold water."),
]


def test_chatgpt_keeps_the_thread_images_files_and_voice_and_counts_what_it_left_out(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    result = do_import(mind, CHATGPT)

    assert result["format"] == "chatgpt" and result["appended"] == 10
    # a regenerated answer and an edited question with its answer; the hidden system message
    assert result["skipped"] == skipped(branch_message=3, image=1, audio=2, file=1, system_or_tool=1)
    assert turns(mind) == CHATGPT_TURNS
    for discarded in ("first try, regenerated", "best pastel de nata", "Pastéis de Belém"):
        found = json_data(run_in("--mind", str(mind), "search", discarded, "--json", check=True).stdout)
        assert not found, f"a discarded branch reached the ledger: {found}"


def test_the_summary_says_what_was_left_out_by_kind(tmp_path: Path) -> None:
    proc = run_in("--mind", str(tmp_path / "mind.db"), "import", str(CHATGPT))

    assert proc.returncode == 0 and proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert lines[1] == "Imported 10 new events (head is now #11)"
    left_out = lines[2]
    assert left_out.startswith("Left out: 3 messages on other branches")
    for said in ("1 image (kept as [image: NAME])", "2 voice recordings (their transcripts kept)",
                 "1 file (kept as [file: NAME]", "1 system or tool message"):
        assert said in left_out
    again = run_in("--mind", str(tmp_path / "mind.db"), "import", str(CHATGPT)).stderr.decode()
    assert "Nothing to import" in again and "Left out" not in again  # said once, when it was imported


# -- Claude ----------------------------------------------------------------------------------------

CLAUDE_TURNS = [
    ("session_started", "Dense sourdough"),
    ("message_received", "Why is my sourdough so dense?"),
    ("response_sent", "Most often the dough is under-proofed: let it rise until it has grown by half."),
    ("message_received", "Here are my notes and a photo of the crumb.\n\n[attachment: bake-log.txt]\n"
                         "Day 1: 70% hydration, 4 h bulk at 20 C.\nDay 2: same, 5 h.\n\n[image: crumb.jpg]"),
    ("response_sent", "Four hours at 20 C is short: try six, or a warmer spot."),
    ("session_started", "Good morning in three languages"),
    ("message_received", "Translate 'good morning' to Italian."),
    ("response_sent", "Buongiorno."),
    ("message_received", "And to Portuguese?\n\n[file: phrasebook.pdf]"),
    ("response_sent", "Bom dia."),
]


def test_claude_follows_parent_message_uuid_and_keeps_attachments_and_files(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    result = do_import(mind, CLAUDE)

    assert result["format"] == "claude" and result["appended"] == 10
    # one regenerated answer; one edited question and the answer to it
    assert result["skipped"] == skipped(branch_message=3, image=1, file=1)
    assert turns(mind) == CLAUDE_TURNS
    everything = json.dumps(turns(mind))
    assert "first answer, regenerated" not in everything and "Spanish" not in everything


def test_claude_uses_the_leaf_the_export_names(tmp_path: Path) -> None:
    export = json.loads(CLAUDE.read_text(encoding="utf-8"))
    export[1]["current_leaf_message_uuid"] = "e4a"  # the user went back to the Spanish branch
    source = tmp_path / "conversations.json"
    source.write_text(json.dumps(export), encoding="utf-8")
    mind = tmp_path / "mind.db"

    do_import(mind, source)

    assert turns(mind)[-2:] == [("message_received", "And to Spanish?"), ("response_sent", "Buenos días.")]


def test_a_parent_cycle_is_refused(tmp_path: Path) -> None:
    export = json.loads(CLAUDE.read_text(encoding="utf-8"))
    export[0]["chat_messages"][0]["parent_message_uuid"] = "b4"  # b1 -> b4 -> b3 -> b2b -> b1
    source = tmp_path / "conversations.json"
    source.write_text(json.dumps(export), encoding="utf-8")

    proc = run_in("--mind", str(tmp_path / "mind.db"), "import", str(source))

    assert proc.returncode == 6 and b"cycle" in proc.stderr
    assert not (tmp_path / "mind.db").exists()


# -- a later export --------------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "later", "new_turn", "heading"), [
    (CHATGPT, CHATGPT_LATER, "Thanks! Which day is best for the Sintra train?", "## Three days in Lisbon"),
    (CLAUDE, CLAUDE_LATER, "Six hours worked: the crumb is open now!", "## Dense sourdough"),
])
def test_a_later_export_adds_its_turn_and_markdown_shows_it_in_its_conversation(
        tmp_path: Path, first: Path, later: Path, new_turn: str, heading: str) -> None:
    mind = tmp_path / "mind.db"
    do_import(mind, first)
    result = do_import(mind, later)
    assert result["already_present"] == 10  # two sessions and eight messages, not imported twice
    before = mind.read_bytes()
    assert do_import(mind, later)["appended"] == 0
    assert mind.read_bytes() == before, "a no-op re-import rewrote the mind"

    md = run_in("--mind", str(mind), "export", "--format", "md", check=True).stdout.decode()

    sections = md.split("\n## ")
    owner = next(s for s in sections if f"> {new_turn}" in s)
    assert ("## " + owner).startswith(heading), "the new turn is shown under another conversation"
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert len(headings) == len(set(headings)) == (3 if first is CHATGPT else 2)
    # sessions in the time they began, each session's turns in the time they were said
    times = [line.split("_")[1].split(" ")[0] for line in md.splitlines() if line.startswith("_")]
    assert times == sorted(times)
    for section in sections[1:]:
        said = [line.split("(", 1)[1].split(",")[0] for line in section.splitlines()
                if line.startswith(("**User**", "**Mind**"))]
        assert said == sorted(said)


def test_markdown_of_a_mind_without_imports_is_in_the_order_written(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    run_in("--mind", str(mind), "init", "--name", "Ada", check=True)
    for note in ("first note", "second note", "third note"):
        run_in("--mind", str(mind), "remember", note, check=True)
    do_import(mind, CLAUDE)
    run_in("--mind", str(mind), "remember", "after the import", check=True)

    md = run_in("--mind", str(mind), "export", "--format", "md", check=True).stdout.decode()

    notes = [md.index(f"> {n}") for n in ("first note", "second note", "third note", "after the import")]
    assert notes == sorted(notes) and notes[-1] < md.index("## Dense sourdough")


# -- telling the formats apart, and the .zip -------------------------------------------------------


@pytest.mark.parametrize("fixture", [CHATGPT, CLAUDE])
def test_without_format_the_file_says_what_it_is(tmp_path: Path, fixture: Path) -> None:
    plain = do_import(tmp_path / "plain.db", fixture)
    archive = do_import(tmp_path / "zip.db", export_zip(tmp_path, fixture))

    assert plain["format"] == archive["format"] == ("chatgpt" if fixture is CHATGPT else "claude")
    assert turns(tmp_path / "plain.db") == turns(tmp_path / "zip.db")
    assert archive["skipped"] == plain["skipped"]


def test_a_pmm_export_is_still_imported_without_format(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    do_import(source, CLAUDE)
    exported = run_in("--mind", str(source), "export", check=True).stdout

    result = do_import(tmp_path / "copy.db", "-", input=exported)

    assert result["format"] == "jsonl" and result["created"] is True
    assert run_in("--mind", str(tmp_path / "copy.db"), "export", check=True).stdout == exported


def test_format_still_forces_the_reading(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    wrong = run_in("--mind", str(mind), "import", "--format", "claude", str(CHATGPT))
    as_jsonl = run_in("--mind", str(mind), "import", "--format", "jsonl", str(CLAUDE))
    zipped_claude = do_import(mind, export_zip(tmp_path, CLAUDE), "--format", "claude")

    assert (wrong.returncode, as_jsonl.returncode) == (6, 6)
    assert b"looks like a ChatGPT export" in wrong.stderr
    assert b"not valid JSON" in as_jsonl.stderr
    assert zipped_claude["format"] == "claude" and zipped_claude["appended"] == 10


def test_a_zip_on_a_pipe_is_imported(tmp_path: Path) -> None:
    """A real process reading a real pipe: stdin cannot seek, so the zip is spooled first."""
    mind = tmp_path / "mind.db"
    proc = run_pmm("--mind", str(mind), "import", "-", "--json",
                   input=export_zip(tmp_path, CHATGPT).read_bytes())

    assert proc.returncode == 0, proc.stderr.decode()
    assert json_data(proc.stdout)["appended"] == 10
    json_pipe = run_pmm("--mind", str(tmp_path / "two.db"), "import", "-", input=CLAUDE.read_bytes())
    assert json_pipe.returncode == 0, json_pipe.stderr.decode()


def test_member_paths_never_name_a_file_here(tmp_path: Path) -> None:
    """A member called ../../conversations.json is read in memory and nothing is extracted."""
    (tmp_path / "in").mkdir()
    archive = zipped(tmp_path / "in" / "export.zip", {
        "../../conversations.json": CLAUDE.read_bytes(), "/etc/evil": b"x", "../planted.txt": b"x"})
    mind = tmp_path / "in" / "mind.db"
    deep = tmp_path / "in" / "a" / "b"
    deep.mkdir(parents=True)

    proc = run_in("--mind", str(mind), "import", str(archive), "--json", cwd=deep)

    assert proc.returncode == 0 and json_data(proc.stdout)["appended"] == 10
    names = {p.name for p in tmp_path.rglob("*")}
    assert not names & {"conversations.json", "evil", "planted.txt"}, "a member was extracted"


def _bomb(path: Path) -> Path:
    return zipped(path, {"conversations.json": b"[" + b" " * (40 << 20) + b"]"})


REFUSED = {
    "no conversations.json": (lambda p: zipped(p, {"users.json": b"[]", "projects.json": b"[]"}),
                              "zip archive without a conversations.json"),
    "two of them": (lambda p: zipped(p, {"a/conversations.json": b"[]", "b/conversations.json": b"[]"}),
                    "2 files named conversations.json"),
    "a zip bomb": (_bomb, "zip bomb"),
    "cut short": (lambda p: p.write_bytes(export_zip(p.parent, CLAUDE).read_bytes()[:300]) and p,
                  "not a readable zip archive"),
    "an empty zip": (lambda p: zipped(p, {}), "zip archive without a conversations.json"),
    "a JSON list of neither": (lambda p: p.write_bytes(b'[{"messages": []}]') and p,
                               "not a ChatGPT or Claude conversations.json"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_bad_archive_is_refused_in_one_line_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    build, expected = REFUSED[case]
    (tmp_path / "in").mkdir()
    source = build(tmp_path / "in" / "export.zip")
    mind = tmp_path / "mind.db"

    proc = run_in("--mind", str(mind), "import", str(source), "--json")

    assert proc.returncode == 6 and json_failure(proc.stdout, 6)["data"] is None
    lines = proc.stderr.decode().splitlines()
    assert lines[0].startswith("Error: ") and expected in lines[0], lines
    assert [line[:6] for line in lines[1:]] == ["Hint: "]
    assert not mind.exists()


def test_a_zip_bomb_on_a_pipe_exits_6(tmp_path: Path) -> None:
    proc = run_pmm("--mind", str(tmp_path / "mind.db"), "import", "-",
                   input=_bomb(tmp_path / "bomb.zip").read_bytes())

    assert proc.returncode == 6 and b"zip bomb" in proc.stderr and b"Traceback" not in proc.stderr
    assert not (tmp_path / "mind.db").exists()


def test_zip_bytes_in_memory_are_what_the_fixture_holds() -> None:
    """The helper builds a real zip (a broken helper would make the tests above pass vacuously)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", CLAUDE.read_bytes())
    assert zipfile.ZipFile(buffer).read("conversations.json") == CLAUDE.read_bytes()


@pytest.mark.parametrize("role", [{}, [], 3, None])
def test_an_author_role_that_is_not_text_is_not_a_message(tmp_path: Path, role: object) -> None:
    """A hostile export may put anything where ChatGPT writes "user": never a crash."""
    node = {"id": "m1", "author": {"role": role}, "content": {"content_type": "text", "parts": ["hi"]}}
    mapping = {"n1": {"id": "n1", "parent": None, "children": [], "message": node}}
    source = tmp_path / "conversations.json"
    source.write_text(json.dumps([{"id": "c1", "title": "t", "current_node": "n1", "mapping": mapping}]))
    mind = tmp_path / "mind.db"
    proc = run_in("--mind", str(mind), "import", str(source))
    assert proc.returncode == 0 and b"unexpected" not in proc.stderr, proc.stderr
    assert b"Nothing to import" in proc.stderr
