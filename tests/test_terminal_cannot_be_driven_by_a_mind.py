"""Nothing from a mind file or a model drives the terminal: escape sequences (OSC 52 clipboard
writes, CSI 2J, OSC 0 titles, CSI 6n cursor reports), C1 controls, carriage returns and bidi
overrides in events and answers are shown visibly by every human format, on a terminal and into
a pipe, while --json keeps the exact text; a title cannot forge turns in the Markdown export."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import PMM, invoke, json_data, mind_events
from hypothesis import given
from hypothesis import strategies as st
from provider_servers import FakeServer
from terminal import Terminal

from pmm.cli.output import clean

DATA = Path(__file__).parent / "data"
# Each piece would act on a terminal: clipboard write, clear screen, window title, cursor report
# (its answer lands in the input), C1 CSI, bidi override, bell, carriage return (overwrites).
HOSTILE = ("A\x1b]52;c;cHduZWQ=\x07B\x1b[2JC\x1b]0;owned\x07D\x1b[6nE\x9b6nF\u202eG\x07H\rI"
           "\x1b[31mJ")
ACTING = ("\x1b", "\x9b", "\x07", "\u202e", "\r")


def inert(text: str) -> None:
    """``text`` carries no byte a terminal would act on, yet shows that the sequence was there."""
    for char in ACTING:
        assert char not in text, (char, text)
    assert "␛]52;c;" in text


def ok(*args: str, input: bytes | str | None = None) -> str:
    done = invoke(*args, input=input)
    assert done.exit_code == 0, (args, done.stderr)
    inert_stderr = done.stderr
    for char in ACTING:
        assert char not in inert_stderr, (args, inert_stderr)
    return done.stdout


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A mind holding the hostile text everywhere a person reads: a note, a message and its
    answer, a reflection and its commitment, a commitment opened by hand; all through pmm."""
    mind = tmp_path / "mind.db"
    m = ("--mind", str(mind))
    ok(*m, "init", "--name", "Test")
    ok(*m, "remember", f"zebra note {HOSTILE}")
    ok(*m, "commitments", "open", f"zebra promise {HOSTILE}")
    with FakeServer("openai", text=f"zebra answer {HOSTILE}") as server:
        ok(*m, "model", "add", "srv", "openai-compatible:test-model", "--base-url", server.url, "--use")
        inert(ok(*m, "chat", "-m", f"zebra question {HOSTILE}"))  # the answer into a pipe
        server.text = json.dumps({
            "reflection": f"zebra reflection {HOSTILE}",
            "traits": [{"trait": "openness", "delta": 0.02, "reason": f"zebra {HOSTILE}"}],
            "open": [{"text": "I will zebra follow up\n  committed (#999): forged"}], "close": [],
        })
        reflected = ok(*m, "reflect")
        inert(reflected)
        assert "zebra follow up" in reflected  # a one-line field stays on its line
        assert not any(line.startswith("  committed (#999)") for line in reflected.splitlines())
    return mind


def test_every_human_format_shows_the_sequences_and_json_keeps_them(planted: Path) -> None:
    m = ("--mind", str(planted))
    log = ok(*m, "log")
    inert(log)
    assert log.count("␛]52;c;") >= 5  # note, commitment, message, answer, reflection
    inert(ok(*m, "search", "zebra"))
    inert(ok(*m, "trace"))
    session = next(e["meta"]["session"] for e in mind_events(planted, "session_started"))
    inert(ok(*m, "trace", session))
    listing = ok(*m, "commitments", "list", "--all")
    inert(listing)
    assert "zebra promise" in listing
    for args in (("stats",), ("health",), ("model", "list")):
        for char in ACTING:
            assert char not in ok(*m, *args), args

    stored = [e["content"] for e in mind_events(planted) if "zebra" in e["content"]]
    shown = json_data(ok(*m, "log", "--json"))
    assert [e["content"] for e in shown if "zebra" in e["content"]] == stored  # data, exactly
    raw = ok(*m, "log", "--json")
    assert "\x9b" not in raw and "\u202e" not in raw and "\x1b" not in raw  # escaped as \uXXXX
    assert HOSTILE in json_data(ok(*m, "trace", "--json"))["response"]["text"]


def test_errors_quoting_a_name_or_path_show_it_inertly(tmp_path: Path) -> None:
    done = invoke("--mind", str(tmp_path / "\x1b]0;owned\x07.db"), "log")
    assert done.exit_code == 4 and "␛]0;owned␇" in done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr


def test_streamed_answer_on_a_terminal_is_inert(tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    invoke("--mind", str(mind), "init")
    # spaces inside the sequences: the fake streams word by word, so they arrive in pieces
    with FakeServer("openai", text="Hi \x1b]52;c; cHduZWQ=\x07 there \x1b[2J done \u202e ok") as server:
        ok("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
           "--base-url", server.url, "--use")
        env = {**os.environ, "TERM": "xterm-256color"}
        env.pop("NO_COLOR", None)
        term = Terminal([PMM, "--mind", str(mind), "chat", "-m", "hello"], env)
        try:
            assert term.wait(60) == 0
        finally:
            term.kill()
    assert "done" in term.text() and "␛]52;c;" in term.text()
    for sequence in (b"\x1b]52", b"\x1b[2J", b"\xe2\x80\xae", b"\x07"):
        assert sequence not in term.raw, sequence


def test_a_title_with_newlines_cannot_forge_turns_in_the_markdown_export(tmp_path: Path) -> None:
    conversations = json.loads((DATA / "chatgpt_conversations.json").read_text())
    conversations[0]["title"] = ("Garden\n\n**User** (2000-01-01, event 1):\n> forged turn\n\n"
                                 "## Forged heading\r# Forged top\x1b[2J <script>x</script>")
    node = next(n for n in conversations[0]["mapping"].values()
                if n["message"] and n["message"]["author"]["role"] == "user")
    node["message"]["content"]["parts"] = ["real question\r## forged in a body\n</blockquote> <b>x"]
    export = tmp_path / "conversations.json"
    export.write_text(json.dumps(conversations))
    mind = tmp_path / "mind.db"
    ok("--mind", str(mind), "import", "--format", "chatgpt", str(export))
    md = ok("--mind", str(mind), "export", "--format", "md")

    lines = md.split("\n")
    sessions = mind_events(mind, "session_started")
    assert [line for line in lines if line.startswith("#")] == [
        lines[0], *(f"## {clean(' '.join(s['content'].split()), multiline=False)}"
                    .replace("<s", "\\<s").replace("</", "\\</") for s in sessions)]
    assert sum(line.startswith("**User**") for line in lines) == len(mind_events(mind, "message_received"))
    assert "> forged turn" not in lines and "## Forged heading" not in lines
    assert "> real question" in lines and "> ## forged in a body" in lines
    assert "> \\</blockquote> \\<b>x" in lines  # raw HTML cannot close the quote
    assert "\x1b" not in md and "\r" not in md
    assert not re.search(r"(?<!\\)<[a-z/]", md)  # every "<" that would open HTML is escaped


# -- the sanitiser itself -----------------------------------------------------------------------

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                    "\u2066-\u2069\ud800-\udfff]")


@given(st.text())
def test_clean_leaves_nothing_a_terminal_acts_on_and_is_idempotent(text: str) -> None:
    shown = clean(text)
    assert not UNSAFE.search(shown)
    assert clean(shown) == shown
    assert "\n" not in clean(text, multiline=False) and "\t" not in clean(text, multiline=False)
    if not UNSAFE.search(text) and "\r" not in text:
        assert shown == text  # plain text, newlines and tabs included, is left alone
