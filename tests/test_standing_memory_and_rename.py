"""Standing memory and the name, through the CLI: pinned notes (remember --pin, pins, unpin), the
persona (set, show, edit in $EDITOR, clear) and rename; bad input for each writes nothing; the
standing projection replays the same from the events, and survives export and import."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import PMM, invoke, json_data, mind_events
from hypothesis import given, settings
from hypothesis import strategies as st

from pmm.domain import events as ev
from pmm.domain import projections
from pmm.domain.events import Draft, Event
from pmm.ledger.store import Ledger
from pmm.services import opening, standing


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    path = tmp_path / "mind.db"
    assert invoke("--mind", str(path), "init", "--name", "Ada").exit_code == 0
    return path


def ok(mind: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None):
    done = invoke("--mind", str(mind), *args, input=input, env=env)
    assert done.exit_code == 0, done.stderr
    return done


def as_json(mind: Path, *args: str, input: str | None = None):
    return json_data(ok(mind, *args, "--json", input=input).stdout)


def refused(mind: Path, code: int, *args: str, input: str | None = None,
            env: dict[str, str] | None = None) -> str:
    """Run a command that must fail with ``code`` (one ``Error:`` line and a hint) and leave the
    mind's events exactly as they were (a writer that opened the file may still have moved it
    from WAL back to rollback journal mode, so the bytes of the header can differ)."""
    before = mind_events(mind) if mind.exists() else None
    done = invoke("--mind", str(mind), *args, input=input, env=env)
    assert done.exit_code == code, (done.exit_code, done.stderr)
    assert done.stderr.startswith("Error: ") and "\nHint: " in done.stderr
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr
    assert (mind_events(mind) if mind.exists() else None) == before
    return done.stderr


def test_pinned_notes_are_listed_in_order_until_unpinned(mind: Path) -> None:
    first = as_json(mind, "remember", "--pin", "I prefer short answers")
    second = as_json(mind, "remember", "--pin", "-", input="  My bike is a blue Brompton\n")
    ok(mind, "remember", "an ordinary note")
    assert first["kind"] == "note_pinned" and second["content"] == "My bike is a blue Brompton"
    listed = as_json(mind, "pins")
    assert [(p["id"], p["text"]) for p in listed] == [(first["id"], "I prefer short answers"),
                                                      (second["id"], "My bike is a blue Brompton")]
    assert f"#{second['id']}" in ok(mind, "pins").stdout

    unpinned = as_json(mind, "unpin", str(first["id"]))
    assert unpinned["kind"] == "note_unpinned" and unpinned["meta"] == {"note": first["id"]}
    assert [p["id"] for p in as_json(mind, "pins")] == [second["id"]]
    report = as_json(mind, "stats")
    assert report["standing"] == {"persona": None, "pinned": 1}
    assert "Standing memory: no persona, 1 pinned note" in ok(mind, "stats").stdout
    # the note stays in the ledger and in search after it is unpinned
    assert [e["id"] for e in as_json(mind, "search", "short answers")] == [first["id"]]


def test_unpin_refuses_what_is_not_a_pinned_note(mind: Path) -> None:
    note = as_json(mind, "remember", "a plain note")["id"]
    gone = as_json(mind, "remember", "--pin", "pinned, then not")["id"]
    ok(mind, "unpin", str(gone))
    for target, why in ((99, "there is no such event"), (1, "it is a mind_created event"),
                        (note, "it is a observation_recorded event"), (gone, "it was unpinned already")):
        err = refused(mind, 2, "unpin", str(target))
        assert f"#{target} is not a pinned note: {why}" in err and "pmm pins" in err, err
    refused(mind, 2, "unpin", "0")  # ids start at 1
    refused(mind, 2, "unpin", "seven")


def test_pins_are_bounded_and_an_empty_pin_is_refused(mind: Path) -> None:
    assert "at most 1,000 fit" in refused(mind, 6, "remember", "--pin", "x" * (standing.PIN_MAX_CHARS + 1))
    refused(mind, 2, "remember", "--pin", "   ")
    with Ledger.open(mind, write=True) as opened:  # the first 20 in one transaction: faster
        opened.append([Draft(ev.NOTE_PINNED.name, f"standing fact {i}") for i in range(standing.PINS_MAX)])
    err = refused(mind, 6, "remember", "--pin", "one too many")
    assert f"{standing.PINS_MAX} notes are pinned already" in err and "pmm unpin" in err
    ok(mind, "remember", "one too many")  # as an ordinary note it is fine


def test_persona_set_show_and_clear(mind: Path) -> None:
    done = ok(mind, "persona", "show")
    assert done.stdout == "" and "No persona set" in done.stderr
    assert as_json(mind, "persona", "show") == {"persona": None, "max_chars": standing.PERSONA_MAX_CHARS}

    text = "You are Ada.\nYou answer in plain words and never guess."
    event = as_json(mind, "persona", "set", "-", input=text + "\n\n")
    assert event["kind"] == "persona_set" and event["content"] == text
    assert ok(mind, "persona", "show").stdout == text + "\n"
    shown = as_json(mind, "persona", "show")["persona"]
    assert (shown["id"], shown["text"]) == (event["id"], text)

    count = len(mind_events(mind))
    assert "nothing written" in ok(mind, "persona", "set", text).stderr  # the same text again
    assert len(mind_events(mind)) == count
    newer = as_json(mind, "persona", "set", "You are Ada, briefly.")
    assert as_json(mind, "stats")["standing"]["persona"] == {"id": newer["id"], "chars": 21}

    cleared = as_json(mind, "persona", "clear")
    assert cleared["kind"] == "persona_cleared"
    assert as_json(mind, "persona", "show")["persona"] is None
    assert "No persona to clear" in ok(mind, "persona", "clear").stderr
    assert len(mind_events(mind)) == count + 2


def test_persona_is_bounded_and_never_empty(mind: Path) -> None:
    err = refused(mind, 6, "persona", "set", "-", input="y" * (standing.PERSONA_MAX_CHARS + 1))
    assert "2,001 characters; at most 2,000 fit" in err
    refused(mind, 2, "persona", "set", " \n ")
    refused(mind, 6, "persona", "set", "-", input=b"not \xff UTF-8")  # type: ignore[arg-type]
    # the documented limits are the enforced ones
    assert f"{standing.PERSONA_MAX_CHARS:,} characters" in invoke("persona", "set", "--help").stdout
    assert (f"{standing.PINS_MAX} pinned notes of {standing.PIN_MAX_CHARS:,} characters"
            in " ".join(invoke("remember", "--help").stdout.split()))


def editor(tmp_path: Path, body: str) -> dict[str, str]:
    """$EDITOR as a small Python script (the edited file is its last argument); VISUAL unset."""
    script = tmp_path / "fake_editor.py"
    script.write_text("import sys\nfrom pathlib import Path\npath = Path(sys.argv[-1])\n" + body)
    return {"VISUAL": "", "EDITOR": f"'{sys.executable}' '{script}'"}


def test_persona_edit_opens_the_editor_on_the_current_text(mind: Path, tmp_path: Path) -> None:
    seen = tmp_path / "seen.txt"
    ok(mind, "persona", "set", "You are Ada.")
    env = editor(tmp_path, f"Path({str(seen)!r}).write_text(path.read_text() + '|' + str(path))\n"
                           "path.write_text(path.read_text() + 'You like tea.\\n')\n")
    event = json_data(ok(mind, "persona", "edit", "--json", env=env).stdout)
    assert event["kind"] == "persona_set" and event["content"] == "You are Ada.\nYou like tea."
    before, scratch = seen.read_text().split("|")
    assert before == "You are Ada.\n" and not Path(scratch).exists()  # the temp file is gone
    # VISUAL wins over EDITOR
    visual = editor(tmp_path, "path.write_text('From VISUAL')\n")["EDITOR"]
    ok(mind, "persona", "edit", env={"VISUAL": visual, "EDITOR": "false"})
    assert as_json(mind, "persona", "show")["persona"]["text"] == "From VISUAL"


def test_a_failed_or_unchanged_edit_writes_nothing(mind: Path, tmp_path: Path) -> None:
    ok(mind, "persona", "set", "You are Ada.")
    unchanged = invoke("--mind", str(mind), "persona", "edit", env=editor(tmp_path, "pass\n"))
    assert unchanged.exit_code == 0 and "unchanged; nothing written" in unchanged.stderr
    before = mind.read_bytes()
    assert invoke("--mind", str(mind), "persona", "edit", env=editor(tmp_path, "pass\n")).exit_code == 0
    assert mind.read_bytes() == before

    failing = editor(tmp_path, "path.write_text('half typed')\nsys.exit(3)\n")
    assert "exited with status 3; nothing written" in refused(mind, 2, "persona", "edit", env=failing)
    assert "cannot run the editor" in refused(mind, 2, "persona", "edit",
                                              env={"VISUAL": "", "EDITOR": str(tmp_path / "nowhere")})
    assert "neither $VISUAL nor $EDITOR" in refused(mind, 2, "persona", "edit",
                                                    env={"VISUAL": "", "EDITOR": ""})
    err = refused(mind, 2, "persona", "edit", env=editor(tmp_path, "path.write_text('  ')\n"))
    assert "empty; nothing written" in err and "pmm persona clear" in err
    err = refused(mind, 6, "persona", "edit", env=editor(
        tmp_path, f"path.write_text('z' * {standing.PERSONA_MAX_CHARS + 1})\n"))
    kept = Path(err.split("your text is kept in ")[1].strip())
    assert kept.read_text() == "z" * (standing.PERSONA_MAX_CHARS + 1)  # no typing is lost
    kept.unlink()
    err = refused(mind, 6, "persona", "edit", env=editor(tmp_path, "path.write_bytes(b'caf\\xe9')\n"))
    assert "not valid UTF-8" in err
    kept = Path(err.split("your text is kept in ")[1].strip())
    assert kept.read_bytes() == b"caf\xe9"
    kept.unlink()
    assert as_json(mind, "persona", "show")["persona"]["text"] == "You are Ada."


def test_an_edit_does_not_overwrite_a_persona_set_meanwhile(mind: Path, tmp_path: Path) -> None:
    ok(mind, "persona", "set", "You are Ada.")
    # the editor is slow: while it is open, another pmm sets the persona
    body = ("import subprocess\n"
            f"subprocess.run([{PMM!r}, '--mind', {str(mind)!r}, 'persona', 'set', 'Set elsewhere'],"
            " check=True, capture_output=True)\n"
            "path.write_text('My edit')\n")
    err = refused_after_change(mind, "persona", "edit", env=editor(tmp_path, body))
    assert "the persona changed while it was being edited" in err
    kept = Path(err.split("your text is kept in ")[1].strip())
    assert kept.read_text() == "My edit"
    kept.unlink()
    assert as_json(mind, "persona", "show")["persona"]["text"] == "Set elsewhere"


def refused_after_change(mind: Path, *args: str, env: dict[str, str]) -> str:
    count = len(mind_events(mind))
    done = invoke("--mind", str(mind), *args, env=env)
    assert done.exit_code == 2, done.stderr
    assert len(mind_events(mind)) == count + 1  # only the other writer's event
    return done.stderr


def test_rename_is_a_mind_named_event(mind: Path) -> None:
    event = as_json(mind, "rename", "  Ada Lovelace ")
    assert (event["kind"], event["content"]) == ("mind_named", "Ada Lovelace")
    assert event["meta"] == {"name": "Ada Lovelace", "reason": "renamed by the user"}
    assert as_json(mind, "stats")["name"] == "Ada Lovelace"
    count = len(mind_events(mind))
    assert "Already named Ada Lovelace; nothing written" in ok(mind, "rename", "Ada Lovelace").stderr
    assert len(mind_events(mind)) == count
    ok(mind, "rename", "Émilie ✓")
    assert as_json(mind, "stats")["name"] == "Émilie ✓"


BAD_NAMES = (("", "cannot be empty"), ("   ", "cannot be empty"), ("two\nlines", "line break"),
             ("tab\there", "control character"), ("bell\x07", "control character"),
             ("evil\u202eeman", "control character"),
             ("x" * (opening.MAX_NAME + 1), "at most 64 characters"))


def test_rename_and_init_refuse_a_bad_name(mind: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    for name, why in BAD_NAMES:
        assert why in refused(mind, 2, "rename", name), name
        assert why in refused(fresh, 2, "init", "--name", name), name
        assert not fresh.exists()
    assert as_json(mind, "stats")["name"] == "Ada"


def test_removing_from_a_missing_mind_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    for args in (["unpin", "2"], ["persona", "clear"], ["pins"], ["persona", "show"]):
        refused(missing, 4, *args)
        assert not missing.exists()
    created = invoke("--mind", str(missing), "remember", "--pin", "first words")
    assert created.exit_code == 0 and "Created a new mind" in created.stderr


def test_standing_memory_survives_export_and_import(mind: Path, tmp_path: Path) -> None:
    kept = as_json(mind, "remember", "--pin", "Always answer in English")["id"]
    dropped = as_json(mind, "remember", "--pin", "temporary")["id"]
    ok(mind, "persona", "set", "You are Ada.")
    ok(mind, "unpin", str(dropped))
    ok(mind, "rename", "Ada II")
    ok(mind, "persona", "set", "You are Ada II.")
    export = tmp_path / "mind.jsonl"
    ok(mind, "export", "-o", str(export))
    ok(mind, "verify", str(export))
    markdown = ok(mind, "export", "--format", "md").stdout
    assert "**Pinned** (" in markdown and f"event {kept}):\n> Always answer in English" in markdown
    assert "**Persona** (" in markdown and "> You are Ada II." in markdown
    copy = tmp_path / "copy.db"
    ok(copy, "import", str(export))
    ok(copy, "verify", "--deep")
    for args in (["pins"], ["persona", "show"]):
        assert as_json(copy, *args) == as_json(mind, *args)
    assert [p["id"] for p in as_json(copy, "pins")] == [kept]
    assert as_json(copy, "stats")["name"] == "Ada II"
    assert as_json(copy, "stats")["standing"] == as_json(mind, "stats")["standing"]


def test_a_cache_from_a_pmm_without_standing_memory_is_not_reused(mind: Path) -> None:
    import sqlite3

    from pmm.ledger import seal

    pinned = as_json(mind, "remember", "--pin", "Always in mind")["id"]
    # the row an older pmm on this machine wrote: its projections' version and states, sealed
    # with this machine's key, so only the version tells it apart
    older = ",".join(f"{p.name}:{p.version}" for p in projections.PROJECTIONS if p.name != "standing")
    with Ledger.open(mind) as opened:
        states = projections.replay(opened.events())
        head_id, head = opened.head()
        mind_id = opened.mind_id
    del states["standing"]
    text = json.dumps(states, separators=(",", ":"), sort_keys=True)
    secret = seal.key(create=False)
    assert secret is not None
    conn = sqlite3.connect(mind)
    conn.execute("UPDATE projection_cache SET version = ?, state = ?, mac = ? WHERE name = 'mind'",
                 (older, text, seal.mac(secret, mind_id, older, head_id, head, text)))
    conn.commit()
    conn.close()
    report = as_json(mind, "stats")
    assert report["projection_cache"] == "stale" and report["standing"]["pinned"] == 1
    assert [p["id"] for p in as_json(mind, "pins")] == [pinned]
    ok(mind, "remember", "a write rebuilds the cache")
    assert as_json(mind, "stats")["projection_cache"] == "current"
    ok(mind, "verify", "--deep")


# -- the projection, as a pure fold ------------------------------------------------------------

TS = "2026-01-02T03:04:05.000000Z"
STEPS = st.lists(st.one_of(
    st.tuples(st.just(ev.NOTE_PINNED.name), st.text(max_size=8)),
    st.tuples(st.just(ev.NOTE_UNPINNED.name), st.integers(1, 30)),
    st.tuples(st.just(ev.PERSONA_SET.name), st.text(max_size=8)),
    st.tuples(st.just(ev.PERSONA_CLEARED.name), st.just("")),
    st.tuples(st.just(ev.MESSAGE_RECEIVED.name), st.text(max_size=8))), max_size=30)


def events_of(steps: list[tuple[str, object]]) -> list[Event]:
    out = []
    for i, (kind, value) in enumerate(steps, start=1):
        meta = {"note": value} if kind == ev.NOTE_UNPINNED.name else {}
        content = "" if kind == ev.NOTE_UNPINNED.name else str(value)
        out.append(Event(i, TS, kind, content, json.dumps(meta), "0" * 64, "0" * 64))
    return out


@settings(max_examples=80, deadline=None)
@given(STEPS, st.integers(0, 30))
def test_standing_replays_the_same_in_any_split(steps: list[tuple[str, object]], cut: int) -> None:
    events = events_of(steps)
    whole = projections.replay(events)
    split = projections.replay(events[cut:], json.loads(json.dumps(projections.replay(events[:cut]))))
    assert split == whole == projections.replay(events)
    # the plain reading of the events: the last persona set (unless cleared or blank since),
    # the pins not unpinned, in pin order
    persona: tuple[int, str] | None = None
    pinned: list[tuple[int, str]] = []
    for e in events:
        if e.kind == ev.PERSONA_SET.name:
            persona = (e.id, e.content) if e.content.strip() else None
        elif e.kind == ev.PERSONA_CLEARED.name:
            persona = None
        elif e.kind == ev.NOTE_PINNED.name:
            pinned.append((e.id, e.content))
        elif e.kind == ev.NOTE_UNPINNED.name:
            pinned = [p for p in pinned if p[0] != e.meta["note"]]
    assert projections.standing(whole) == (persona, pinned)
