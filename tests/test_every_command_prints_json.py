"""Every command of the real command tree, run with ``--json`` on a real mind, prints one JSON
document on stdout that ``json.loads`` reads; and every command takes ``--quiet``.

The commands run in one story (pmm's own ``main`` in this process; the models are a loopback
fake server), in an order where each finds what it needs: a note to unpin, a commitment to
close, a reflection to show, a backup to restore. A command the story does not know is a
failure that names it, so a new command cannot escape the check: give it a step in ``STORY``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import json_data, json_document, json_failure, run_in
from provider_servers import FakeServer

from pmm.cli.app import command_tree

PASSPHRASE = {"PMM_BACKUP_PASSPHRASE": "a passphrase for the story"}
REFLECTION = json.dumps({"reflection": "The user likes tea and tests.", "traits": [], "open": [], "close": []})


def leaves(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    found = []
    for name, sub in sorted(getattr(group, "commands", {}).items()):
        if getattr(sub, "commands", None):
            found += leaves(sub, (*path, name))
        else:
            found.append((" ".join((*path, name)), sub))
    return found


@dataclass
class Story:
    """What the steps share: the mind, its folder, the fake server, what earlier steps printed."""

    mind: Path
    tmp: Path
    server: FakeServer
    printed: dict[str, Any] = field(default_factory=dict)

    def ok(self, *args: str, **kw: Any) -> None:
        """A step's own preparation, in-process too; it must succeed."""
        run_in("--mind", str(self.mind), *args, check=True, **kw)


@dataclass(frozen=True)
class Step:
    args: Callable[[Story], list[str]]  # the command's arguments, before ``--json``
    before: Callable[[Story], None] | None = None
    env: Callable[[Story], dict[str, str]] = lambda _s: {}


def _editor(s: Story) -> dict[str, str]:
    """$EDITOR as a small Python script that rewrites the file it is given; $VISUAL unset."""
    script = s.tmp / "editor.py"
    script.write_text("import pathlib, sys\npathlib.Path(sys.argv[-1]).write_text('Edited persona.')\n")
    return {"VISUAL": "", "EDITOR": f"'{sys.executable}' '{script}'"}


def _format_1(s: Story) -> None:
    """A mind of ledger format 1 (made by an older pmm) for ``upgrade`` to rewrite."""
    import shutil

    shutil.copy(Path(__file__).resolve().parent / "data" / "mind-schema-4.db", s.tmp / "old.db")


def _reflect(s: Story) -> None:
    s.ok("model", "use", "srv", "--for", "reflection")
    s.server.text = REFLECTION


def _chat(s: Story) -> None:
    s.server.text = "Tea it is."


def _second_model(s: Story) -> None:
    s.ok("model", "add", "spare", "ollama:llama3")


def _pin(s: Story) -> None:
    s.ok("remember", "pinned for the prompt", "--pin")


def _evidence(s: Story) -> None:
    """An event after the commitment was opened, to close it with."""
    done = run_in("--mind", str(s.mind), "remember", "the tea was checked", "--json", check=True)
    s.printed["evidence"] = json_data(done.stdout)["id"]


def _m(s: Story) -> list[str]:
    return ["--mind", str(s.mind)]


# The order is the story's: later steps use what earlier ones made.
STORY: dict[str, Step] = {
    "init": Step(lambda s: ["--mind", str(s.tmp / "fresh.db"), "init", "--name", "Fresh"]),
    "model add": Step(lambda s: [*_m(s), "model", "add", "srv", "openai-compatible:test-model",
                                 "--base-url", s.server.url]),
    "model use": Step(lambda s: [*_m(s), "model", "use", "srv"]),
    "model trust": Step(lambda s: [*_m(s), "model", "trust", "srv", "--yes"]),
    "model list": Step(lambda s: [*_m(s), "model", "list"]),
    "model info": Step(lambda s: [*_m(s), "model", "info", "srv"]),
    "model set": Step(lambda s: [*_m(s), "model", "set", "srv", "--context-window", "8192"]),
    "model remove": Step(lambda s: [*_m(s), "model", "remove", "spare"], before=_second_model),
    "remember": Step(lambda s: [*_m(s), "remember", "the user likes tea"]),
    "pins": Step(lambda s: [*_m(s), "pins"], before=_pin),
    "unpin": Step(lambda s: [*_m(s), "unpin", str(s.printed["pins"][0]["id"])]),
    "rename": Step(lambda s: [*_m(s), "rename", "Tester"]),
    "persona set": Step(lambda s: [*_m(s), "persona", "set", "A patient tester."]),
    "persona show": Step(lambda s: [*_m(s), "persona", "show"]),
    "persona edit": Step(lambda s: [*_m(s), "persona", "edit"], env=_editor),
    "persona clear": Step(lambda s: [*_m(s), "persona", "clear"]),
    "chat": Step(lambda s: [*_m(s), "chat", "-m", "Tea or coffee?"], before=_chat),
    "recall": Step(lambda s: [*_m(s), "recall", "tea"]),
    "trace": Step(lambda s: [*_m(s), "trace", "last"]),
    "commitments open": Step(lambda s: [*_m(s), "commitments", "open", "I will check the tea"]),
    "commitments list": Step(lambda s: [*_m(s), "commitments", "list"]),
    "commitments close": Step(lambda s: [*_m(s), "commitments", "close", str(s.printed["commitments open"]["id"]),
                                         "-e", str(s.printed["evidence"]), "-s", "checked"], before=_evidence),
    "commitments reopen": Step(lambda s: [*_m(s), "commitments", "reopen",
                                          str(s.printed["commitments open"]["id"]), "-r", "not yet"]),
    "commitments drop": Step(lambda s: [*_m(s), "commitments", "drop", str(s.printed["commitments open"]["id"]),
                                        "-r", "no longer wanted"]),
    "reflect": Step(lambda s: [*_m(s), "reflect"], before=_reflect),
    "reflections list": Step(lambda s: [*_m(s), "reflections", "list"]),
    "reflections show": Step(lambda s: [*_m(s), "reflections", "show", str(s.printed["reflect"]["reflection"]["id"])]),
    "reflections retract": Step(lambda s: [*_m(s), "reflections", "retract",
                                           str(s.printed["reflect"]["reflection"]["id"]), "-r", "overruled"]),
    "run": Step(lambda s: [*_m(s), "run", "--autonomous", "--max-cycles", "1", "--interval", "0"]),
    "log": Step(lambda s: [*_m(s), "log"]),
    "search": Step(lambda s: [*_m(s), "search", "tea"]),
    "stats": Step(lambda s: [*_m(s), "stats"]),
    "diff": Step(lambda s: [*_m(s), "diff", "1"]),
    "sessions": Step(lambda s: [*_m(s), "sessions"]),
    "health": Step(lambda s: [*_m(s), "health"]),
    "export": Step(lambda s: [*_m(s), "export", "-o", str(s.tmp / "mind.jsonl")]),
    "import": Step(lambda s: ["--mind", str(s.tmp / "copy.db"), "import", str(s.tmp / "mind.jsonl")]),
    "merge": Step(lambda s: [*_m(s), "merge", str(s.tmp / "copy.db")]),
    "verify": Step(lambda s: ["verify", str(s.mind)]),
    "keygen": Step(lambda s: ["keygen", "-o", str(s.tmp / "k.pem")]),
    "sign": Step(lambda s: ["sign", str(s.mind), "--key", str(s.tmp / "k.pem"), "-o", str(s.tmp / "mind.sig")]),
    "backup": Step(lambda s: [*_m(s), "backup", "-o", str(s.tmp / "mind.age")],
                   env=lambda _s: PASSPHRASE),
    "restore": Step(lambda s: ["--mind", str(s.tmp / "restored.db"), "restore", str(s.tmp / "mind.age")],
                    env=lambda _s: PASSPHRASE),
    "forget": Step(lambda s: [*_m(s), "forget", str(s.printed["remember"]["id"]), "-r", "a test", "--yes"]),
    "upgrade": Step(lambda s: ["--mind", str(s.tmp / "old.db"), "upgrade"], before=_format_1),
}

LEAVES = leaves(command_tree())


def test_every_command_takes_quiet() -> None:
    missing = [path for path, command in LEAVES if not {"--quiet", "-q"} <= {o for p in command.params for o in p.opts}]
    assert missing == [], f"no --quiet: {missing}"


def test_every_command_prints_json_that_parses(mind: Path, tmp_path: Path) -> None:
    unknown = [path for path, _ in LEAVES if path not in STORY]
    assert unknown == [], f"give these commands a step in STORY, so their --json is checked too: {unknown}"
    assert len(STORY) == len(LEAVES), f"STORY has steps for commands that are gone: {set(STORY) - dict(LEAVES).keys()}"
    without_json = [path for path, command in LEAVES if "--json" not in {o for p in command.params for o in p.opts}]
    assert without_json == [], f"no --json: {without_json}"
    with FakeServer("openai", text="Noted.") as server:
        story = Story(mind, tmp_path, server)
        for path, step in STORY.items():
            if step.before is not None:
                step.before(story)
            result = run_in(*step.args(story), "--json", env=step.env(story))
            assert result.returncode == 0, f"pmm {path} --json: exit {result.returncode}: {result.stderr.decode()}"
            try:
                document = json_document(result.stdout)
            except ValueError as exc:
                raise AssertionError(f"pmm {path} --json printed what is not JSON ({exc}): {result.stdout[:300]!r}") \
                    from None
            check_envelope(document, path)
            story.printed[path] = json_data(result.stdout)
            check_data(story.printed[path], path)


# The schema (docs/json.md): the envelope, the error object, and each command's ``data``: its
# JSON type and, for an object, the fields it always has (more may follow; none may go).
ENVELOPE_TYPES = {"ok": bool, "command": str, "data": object, "error": dict | type(None)}
ERROR_TYPES = {"code": int, "type": str, "message": str, "hint": str | type(None)}
DATA: dict[str, tuple[type, set[str]]] = {}  # filled below from docs/json.md's tables


def check_envelope(document: dict[str, Any], path: str) -> None:
    assert list(document) == list(ENVELOPE_TYPES), (path, list(document))
    for key, kind in ENVELOPE_TYPES.items():
        assert isinstance(document[key], kind), (path, key, document[key])
    assert document["command"] == path, (path, document["command"])
    if document["ok"]:
        assert document["error"] is None, (path, document)
    else:
        assert list(document["error"]) == list(ERROR_TYPES), (path, document["error"])
        for key, kind in ERROR_TYPES.items():
            assert isinstance(document["error"][key], kind), (path, key, document["error"])


def check_data(data: Any, path: str) -> None:
    kind, fields = DATA[path]
    assert isinstance(data, kind), (path, type(data).__name__, kind.__name__)
    if isinstance(data, dict):
        assert fields <= set(data), f"pmm {path} --json: data lacks {sorted(fields - set(data))}"
    elif isinstance(data, list):
        for item in data:
            assert fields <= set(item), f"pmm {path} --json: an item lacks {sorted(fields - set(item))}"


def _documented() -> dict[str, tuple[type, set[str]]]:
    """Each command's row in docs/json.md: `` `command` | object/list/null | `field`, ... ``."""
    import re

    text = (Path(__file__).parent.parent / "docs" / "json.md").read_text().partition("## Each command's `data`")[2]
    kinds = {"object": dict, "list": list, "object or null": dict | type(None)}
    found = {}
    for row in re.finditer(r"^\| `([a-z ]+)` \| (object or null|object|list) \| (.*) \|$", text, re.M):
        found[row[1]] = (kinds[row[2]], set(re.findall(r"`([a-z_]+)`", row[3])))
    return found


DATA.update(_documented())


def test_docs_json_describes_every_command() -> None:
    assert sorted(DATA) == sorted(STORY), f"docs/json.md's table and the commands differ: {set(DATA) ^ set(STORY)}"


def test_every_command_reports_an_error_as_the_envelope_with_its_exit_code(mind: Path, tmp_path: Path) -> None:
    for path, _ in LEAVES:
        result = run_in(*path.split(), "--no-such-option", "--json")
        assert result.returncode == 2, (path, result.returncode)
        document = json_failure(result.stdout, 2)
        check_envelope(document, path)
        assert document["error"]["type"] == "UsageError" and document["data"] is None, (path, document)
        assert result.stderr.decode().startswith("Error: "), (path, result.stderr)  # stderr keeps its line
    missing = run_in("--mind", str(tmp_path / "none.db"), "log", "--json")
    failed = json_failure(missing.stdout, 4)
    assert missing.returncode == 4 and failed["error"]["type"] == "MindNotFound", failed
    check_envelope(failed, "log")
    bad = run_in("--mind", str(mind), "model", "info", "nope", "--json")
    assert bad.returncode == 2 and json_failure(bad.stdout, 2)["error"]["message"].startswith("no model named")
    plain = run_in("--mind", str(mind), "model", "info", "nope")  # without --json stdout stays empty
    assert plain.returncode == 2 and plain.stdout == b""
