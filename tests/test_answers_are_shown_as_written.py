"""A chat answer on a real terminal shows the model's text as written, once: line breaks, `#`,
`1)` and code kept; a long answer is not redrawn into the scrollback; Ctrl-C mid-answer shows
its first line once; a spinner on stderr until the first token, gone once the answer starts.

What is checked is what the terminal shows (tests/terminal.py feeds the pty's output to pyte, a
terminal emulator, scrollback included), not only the bytes pmm wrote."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
from conftest import PMM, invoke
from conftest import mind_kinds as kinds
from provider_servers import FakeServer
from terminal import Terminal

from pmm.cli.stream import Faithful, complete_blocks

ENV = {"TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
SPINNER = "waiting for the answer…"

HAIKU = "An old silent pond\nA frog jumps into the pond\nSplash! Silence again."
CODE = '```python\ndef greet(name):\n    return f"hi {name}"\n\nprint(greet("pond"))\n```'
VERBATIM = f"{HAIKU}\n\n# not a heading\n\n1) item\n2) another\n\n{CODE}\n\nThe end."
LONG = "\n\n".join(f"Paragraph {n:02d} says its own words, number {n}." for n in range(1, 41))


def serving(mind: Path, server: FakeServer) -> None:
    added = invoke("--mind", str(mind), "model", "add", "srv", "openai-compatible:test-model",
                   "--base-url", server.url, "--use")
    assert added.exit_code == 0, added.stderr


def one_shot(mind: Path, server: FakeServer, *args: str, rows: int = 30) -> Terminal:
    serving(mind, server)
    env = {**os.environ, **ENV}
    env.pop("NO_COLOR", None)  # colour on: the answer must still be its characters alone
    return Terminal([PMM, "--mind", str(mind), "chat", *args, "-m", "hello"], env, rows=rows)


def shown_whole(mind: Path, server: FakeServer, *args: str, rows: int = 30) -> list[str]:
    """What the terminal shows once ``pmm chat ARGS -m hello`` has answered and exited 0."""
    term = one_shot(mind, server, *args, rows=rows)
    try:
        assert term.wait(60) == 0
    finally:
        term.kill()
    return term.shown()


def cancelled(term: Terminal, release: threading.Event, at: int) -> list[str]:
    """Ctrl-C while an answer is held back, then the screen once the prompt is back."""
    term.send("\x03")
    at = term.expect(r"answer cancelled: nothing of this turn was saved", after=at)
    release.set()
    term.expect(r"you>", after=at)
    term.until(lambda: sum("you>" in line for line in term.shown()) >= 2, what="the prompt again")
    return term.shown()


def block_at(lines: list[str], block: list[str]) -> int:
    """Where ``block`` stands as consecutive lines of ``lines``; fails when it is not there."""
    for n in range(len(lines) - len(block) + 1):
        if lines[n:n + len(block)] == block:
            return n
    raise AssertionError("not shown as written:\n" + "\n".join(block) + "\n--- screen:\n" + "\n".join(lines))


def test_an_answer_on_a_terminal_is_the_models_text_exactly(mind: Path) -> None:
    with FakeServer("openai", text=VERBATIM) as server:
        shown = shown_whole(mind, server)
    block_at(shown, VERBATIM.split("\n"))  # every line, blank ones too, character for character
    assert sum(line == "# not a heading" for line in shown) == 1
    assert "    return f\"hi {name}\"" in shown and "print(greet(\"pond\"))" in shown


def test_a_long_answer_appears_once_in_the_scrollback(mind: Path) -> None:
    with FakeServer("openai", text=LONG) as server:
        shown = shown_whole(mind, server, rows=24)
    block_at(shown, LONG.split("\n"))
    for n in range(1, 41):
        assert sum(f"Paragraph {n:02d} " in line for line in shown) == 1, n


def test_markdown_renders_each_block_once_without_redrawing(mind: Path) -> None:
    with FakeServer("openai", text=f"# A heading\n\n{LONG}") as server:
        shown = shown_whole(mind, server, "--markdown", rows=24)
    assert not any(line.startswith("# ") for line in shown), "the heading was not rendered"
    assert sum("A heading" in line for line in shown) == 1
    for n in range(1, 41):
        assert sum(f"Paragraph {n:02d} " in line for line in shown) == 1, n


def test_pmm_markdown_in_the_environment_is_the_default_and_raw_overrides_it(
        mind: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_MARKDOWN", "1")
    with FakeServer("openai", text="# not a heading") as server:
        rendered = shown_whole(mind, server)
        term = Terminal([PMM, "--mind", str(mind), "chat", "--raw", "-m", "hello"], {**os.environ, **ENV})
        try:
            assert term.wait(60) == 0
        finally:
            term.kill()
        raw = term.shown()
    assert "# not a heading" not in rendered and any("not a heading" in line for line in rendered)
    assert "# not a heading" in raw


@pytest.fixture
def session(mind: Path):
    """`pmm chat` (the REPL) on a terminal, talking to a loopback fake."""
    with FakeServer("openai", text="Zanzibar comes first.\nThen a long story the test holds back.") as server:
        serving(mind, server)
        term = Terminal([PMM, "--mind", str(mind), "chat"], {**os.environ, **ENV})
        try:
            yield server, term
        finally:
            term.kill()


def test_ctrl_c_mid_answer_shows_the_first_line_once_and_the_prompt_again(session, mind: Path) -> None:
    server, term = session
    at = term.expect(r"you>")
    before = kinds(mind)
    release = threading.Event()
    server.push("slow", release=release, pieces=3)  # "Zanzibar comes first.\n", the rest held
    term.send("Tell me a long story.\r")
    at = term.expect(r"Zanzibar comes first\.", after=at)
    shown = cancelled(term, release, at)
    assert sum("Zanzibar" in line for line in shown) == 1, "\n".join(shown)
    assert sum("answer cancelled" in line for line in shown) == 1, "\n".join(shown)
    assert not any("long story the test" in line for line in shown)
    assert kinds(mind) == before
    term.send("/exit\r")
    assert term.wait() == 0


def test_a_spinner_shows_until_the_first_token_and_is_gone_after(mind: Path) -> None:
    with FakeServer("openai", text=HAIKU) as server:
        release = threading.Event()
        server.push("slow", release=release, pieces=0)  # nothing of the answer until released
        term = one_shot(mind, server)
        try:
            term.until(lambda: any(SPINNER in line for line in term.shown()), timeout=60,
                       what="the spinner")
            assert not any("old silent pond" in line for line in term.shown())
            release.set()
            assert term.wait(60) == 0
        finally:
            release.set()
            term.kill()
    shown = term.shown()
    assert not any(SPINNER in line for line in shown), "\n".join(shown)
    block_at(shown, HAIKU.split("\n"))


def test_pieces_are_cleaned_even_when_a_sequence_or_a_line_break_is_split() -> None:
    screen = io.StringIO()
    view = Faithful(screen)
    for piece in ("\n\nHi \x1b", "[2J there\r", "\nnext\n\n", "\n"):
        view.feed(piece)
    view.finish()
    assert screen.getvalue() == "Hi ␛[2J there\nnext\n"


def test_a_block_is_complete_after_a_blank_line_outside_a_code_fence() -> None:
    blocks, rest = complete_blocks("One\ntwo\n\n```\na\n\nb\n```\n\nThree")
    assert blocks == ["One\ntwo\n", "```\na\n\nb\n```\n"]
    assert rest == "Three"
    assert complete_blocks("```\nopen\n\nstill open\n") == ([], "```\nopen\n\nstill open\n")


def test_ctrl_c_while_the_spinner_shows_erases_it_and_gives_the_prompt_back(session, mind: Path) -> None:
    server, term = session
    at = term.expect(r"you>")
    release = threading.Event()
    server.push("slow", release=release, pieces=0)
    term.send("Tell me a long story.\r")
    term.until(lambda: any(SPINNER in line for line in term.shown()), what="the spinner")
    shown = cancelled(term, release, at)
    assert not any(SPINNER in line for line in shown), "\n".join(shown)
    assert sum("answer cancelled" in line for line in shown) == 1
    term.send("/exit\r")
    assert term.wait() == 0


def test_the_spinner_shows_on_the_terminal_while_the_answer_goes_to_a_file(mind: Path, tmp_path: Path) -> None:
    answer = tmp_path / "answer.txt"
    with FakeServer("openai", text=HAIKU) as server:
        serving(mind, server)
        release = threading.Event()
        server.push("slow", release=release)  # not streamed: the whole answer waits
        term = Terminal(["/bin/sh", "-c", 'exec "$0" --mind "$1" chat -m hello > "$2"', PMM, str(mind),
                         str(answer)], {**os.environ, **ENV})
        try:
            term.until(lambda: any(SPINNER in line for line in term.shown()), timeout=60, what="the spinner")
            release.set()
            assert term.wait(60) == 0
        finally:
            release.set()
            term.kill()
    assert answer.read_text() == HAIKU + "\n"
    assert not any(SPINNER in line for line in term.shown())
