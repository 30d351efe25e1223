"""`pmm import` refuses bad input cleanly and leaves the target exactly as it was (SPEC 4, 8).

Every corpus entry is a real file handed to `pmm import` (pmm's own ``main``, in this
process; stdin runs as a real process on a pipe): exit 6, exactly one ``Error:``
line on stderr (at most one ``Hint:``) naming the offending line where there is one, no
traceback; an existing mind byte-identical with no stray files beside it, and no file at all when
the target did not exist. Entries that need valid hashes around the fault (NaN in meta, a broken
link, a future ledger format) are re-hashed here, independently of pmm, so the fault is the only
thing wrong with them. The good paths (new file, no-op re-import, appending a tail, `--since`,
refusing a diverged chain or another mind, stdin) close the module.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import json_data, run_in, run_pmm

from pmm.ledger.jsonl import MAX_LINE

NOTES = ("first note", "Über Bücher — 日本語 🧠", "third", 'quote " and \\', "fifth", "sixth")
PREFIX_EVENTS = 2  # the "existing mind" holds events 1-2 of the export's 6


def isolated_env(base: Path) -> dict[str, str]:
    """Private XDG dirs for module-scoped fixtures (the autouse fixture is per test)."""
    return {var: str(base / sub) for var, sub in (
        ("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state"),
        ("XDG_CACHE_HOME", "cache"), ("HOME", "home"))}


@dataclass(frozen=True)
class Source:
    full: Path        # a mind with 6 events: init + 5 notes
    prefix: Path      # a copy of it taken after event 2
    export: Path      # `pmm export` of ``full``


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    base = tmp_path_factory.mktemp("source")
    env = isolated_env(base)
    full, prefix, export = base / "full.db", base / "prefix.db", base / "full.jsonl"
    run_in("--mind", str(full), "init", "--name", "Source", check=True, env=env)
    for i, note in enumerate(NOTES[:5], start=2):
        run_in("--mind", str(full), "remember", note, check=True, env=env)
        if i == PREFIX_EVENTS:
            shutil.copy(full, prefix)
    run_in("--mind", str(full), "export", "-o", str(export), check=True, env=env)
    return Source(full, prefix, export)


# -- building corpus entries -------------------------------------------------------------------


def _field(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def _body(fmt: int, content: str) -> str:
    """What stands for the content in the hash: itself (format 1), or its digest (format 2)."""
    return content if fmt == 1 else hashlib.sha256(b"pmm-content-v2\x00" + content.encode()).hexdigest()


def rehash(header: dict, events: list[dict], start: int = 0, relink_start: bool = True) -> None:
    """Re-link and re-hash ``events[start:]`` (docs/ledger-format.md), in place."""
    prefix = _field(str(header["ledger_format"]).encode()) + _field(header["mind_id"].encode())
    for i in range(start, len(events)):
        e = events[i]
        if i and (relink_start or i != start):
            e["prev_hash"] = events[i - 1]["hash"]
        parts = (str(e["id"]), e["ts"], e["kind"], _body(header["ledger_format"], e["content"]),
                 e["meta"], e["prev_hash"])
        e["hash"] = hashlib.sha256(prefix + b"".join(_field(p.encode()) for p in parts)).hexdigest()


@dataclass
class Export:
    """A parsed good export to mutate: header, event objects, end line."""

    header: dict
    events: list[dict]
    end: dict
    lines: list[bytes] = field(default_factory=list)  # the original bytes, line by line
    source_db: Path | None = None

    @classmethod
    def read(cls, path: Path) -> Export:
        lines = path.read_bytes().splitlines(keepends=True)
        objs = [json.loads(line) for line in lines]
        return cls(objs[0], objs[1:-1], objs[-1], lines)

    def render(self, end: dict | None | str = "auto") -> bytes:
        """The file; ``end="auto"`` writes an end line that agrees with the events."""
        if end == "auto":
            last = self.events[-1]
            end = {"pmm": "end", "events": len(self.events), "last_id": last["id"],
                   "head": last["hash"]}
        objs = [self.header, *self.events, *([end] if end is not None else [])]
        return b"".join(json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                        for o in objs)

    def line_of(self, event_id: int) -> int:
        return event_id + 1  # line 1 is the header


# A case writes the bad file and returns the line pmm must name (None: no line applies).
Case = Callable[[Export, Path], "int | None"]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn
    return register


def _meta_case(meta: str) -> Case:
    def build(x: Export, out: Path) -> int:
        x.events[3]["meta"] = meta  # event 4
        rehash(x.header, x.events, 3)
        out.write_bytes(x.render())
        return 5
    return build


def _event4_case(mutate: Callable[[dict], None]) -> Case:
    def build(x: Export, out: Path) -> int:
        mutate(x.events[3])
        out.write_bytes(x.render())
        return 5
    return build


@case("empty file")
def _(x: Export, out: Path) -> None:
    out.write_bytes(b"")


@case("only a newline")
def _(x: Export, out: Path) -> int:
    out.write_bytes(b"\n")
    return 1


@case("binary garbage")
def _(x: Export, out: Path) -> int:
    out.write_bytes(b"\x1f\x8b\x08\x00" + random.Random(6).randbytes(8192))
    return 1


@case("a mind.db instead of an export")
def _(x: Export, out: Path) -> int:
    assert x.source_db is not None
    out.write_bytes(x.source_db.read_bytes())
    return 1


@case("truncated mid-line")
def _(x: Export, out: Path) -> int:
    data = b"".join(x.lines[:4]) + x.lines[4][: len(x.lines[4]) // 2]
    out.write_bytes(data)
    return 5


@case("truncated at a line boundary: no end line")
def _(x: Export, out: Path) -> int:
    out.write_bytes(b"".join(x.lines[:-1]))
    return len(x.lines)


@case("truncated at a line boundary mid-file")
def _(x: Export, out: Path) -> int:
    out.write_bytes(b"".join(x.lines[:4]))
    return 5


@case("only the header")
def _(x: Export, out: Path) -> int:
    out.write_bytes(x.lines[0])
    return 2


@case("wrong hash")
def _(x: Export, out: Path) -> int:
    x.events[3]["hash"] = hashlib.sha256(b"not this event").hexdigest()
    out.write_bytes(x.render())
    return 5


@case("altered content, stale hash")
def _(x: Export, out: Path) -> int:
    x.events[3]["content"] += "!"
    out.write_bytes(x.render())
    return 5


@case("broken prev link")
def _(x: Export, out: Path) -> int:
    x.events[4]["prev_hash"] = x.events[2]["hash"]  # event 5 links past event 4
    rehash(x.header, x.events, 4, relink_start=False)  # every hash valid: only the link is bad
    out.write_bytes(x.render())
    return 6


@case("duplicate id")
def _(x: Export, out: Path) -> int:
    x.events.insert(4, dict(x.events[3]))  # event 4 twice, end line agrees with the count
    out.write_bytes(x.render())
    return 6


@case("gap in ids")
def _(x: Export, out: Path) -> int:
    del x.events[3]  # event 4 missing
    out.write_bytes(x.render())
    return 5


@case("gap in ids, re-chained")
def _(x: Export, out: Path) -> int:
    del x.events[3]
    rehash(x.header, x.events, 3)  # links and hashes all valid; only the ids jump 3 -> 5
    out.write_bytes(x.render())
    return 5


CASES["NaN in meta"] = _meta_case('{"source":NaN}')
CASES["-Infinity nested in meta"] = _meta_case('{"source":{"x":[-Infinity]}}')
CASES["1e999 (infinite) in meta"] = _meta_case('{"source":1e999}')
CASES["1e999 nested in meta"] = _meta_case('{"source":{"x":[1e999]}}')
CASES["meta with a space (not canonical)"] = _meta_case('{"source": "user"}')
CASES["meta is a JSON array"] = _meta_case("[1,2]")
CASES["meta is not JSON"] = _meta_case("{source: user}")


@case("-0.0 in meta (not canonical), in a kind a newer pmm wrote")
def _(x: Export, out: Path) -> int:
    # the hash commits to these bytes, so import cannot write them as 0: it refuses them, as
    # verify --deep refuses them in a mind (tests/test_import_refuses_what_verify_deep_refuses.py)
    x.events[3]["kind"], x.events[3]["meta"] = "a_later_kind", '{"x":-0.0}'
    rehash(x.header, x.events, 3)
    out.write_bytes(x.render())
    return 5


@case("NaN as a field value")
def _(x: Export, out: Path) -> int:
    data = x.render().replace(b'{"id":4,', b'{"id":NaN,')
    assert b"NaN" in data
    out.write_bytes(data)
    return 5


@case("huge line")
def _(x: Export, out: Path) -> int:
    with open(out, "wb") as handle:
        handle.write(x.lines[0] + b'{"id":1,"ts":"')
        handle.truncate(len(x.lines[0]) + MAX_LINE + 16)  # sparse: instant, no 64 MiB in memory
    return 2


@case("invalid UTF-8 in the middle")
def _(x: Export, out: Path) -> int:
    bad = x.lines[4].replace(b"third", b"th\xffrd")
    assert bad != x.lines[4]
    out.write_bytes(b"".join([*x.lines[:4], bad, *x.lines[5:]]))
    return 5


@case("UTF-8-encoded surrogate in the middle")
def _(x: Export, out: Path) -> int:
    bad = x.lines[4].replace(b"third", b"th\xed\xa0\x80rd")
    out.write_bytes(b"".join([*x.lines[:4], bad, *x.lines[5:]]))
    return 5


@case("future export version")
def _(x: Export, out: Path) -> int:
    x.header["version"] += 1
    out.write_bytes(x.render())
    return 1


@case("future ledger format, hashes consistent with it")
def _(x: Export, out: Path) -> int:
    x.header["ledger_format"] += 1
    rehash(x.header, x.events)
    out.write_bytes(x.render())
    return 1


@case("header without mind_id")
def _(x: Export, out: Path) -> int:
    del x.header["mind_id"]
    out.write_bytes(x.render())
    return 1


@case("not a pmm export (a JSON array)")
def _(x: Export, out: Path) -> None:
    # without --format a JSON list is read as the service's conversations.json it looks like:
    # this one is refused for its conversation without an id (no line: the file is one value)
    out.write_bytes(b'[{"title":"a ChatGPT conversation","mapping":{}}]\n')


@case("second header in the middle")
def _(x: Export, out: Path) -> int:
    out.write_bytes(b"".join([*x.lines[:4], x.lines[0], *x.lines[4:]]))
    return 5


CASES["event with an extra field"] = _event4_case(lambda e: e.update(extra=1))
CASES["event with a missing field"] = _event4_case(lambda e: e.pop("meta"))
CASES["content of the wrong type"] = _event4_case(lambda e: e.update(content=42))
CASES["id as a string"] = _event4_case(lambda e: e.update(id="4"))
CASES["id as a boolean"] = _event4_case(lambda e: e.update(id=True))
CASES["meta as an object, not a string"] = _event4_case(lambda e: e.update(meta={"source": "user"}))


@case("event line is not an object")
def _(x: Export, out: Path) -> int:
    out.write_bytes(b"".join([*x.lines[:4], b"[4]\n", *x.lines[5:]]))
    return 5


@case("end line with the wrong count")
def _(x: Export, out: Path) -> int:
    x.end["events"] -= 1
    out.write_bytes(x.render(end=x.end))
    return 8


@case("end line with the wrong head")
def _(x: Export, out: Path) -> int:
    x.end["head"] = x.events[-2]["hash"]
    out.write_bytes(x.render(end=x.end))
    return 8


@case("data after the end line")
def _(x: Export, out: Path) -> int:
    out.write_bytes(b"".join(x.lines) + x.lines[1])
    return 9


# -- running a case ----------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def assert_rejected(proc, line: int | None) -> str:
    """Exit 6, one Error line (plus at most one Hint line), naming ``line``; returns the error."""
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 6, f"exit {proc.returncode}, expected 6; stderr: {stderr}"
    assert "Traceback" not in stderr, stderr
    assert proc.stdout == b"", proc.stdout[:200]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    hints = [ln for ln in lines if ln.startswith("Hint: ")]
    assert len(errors) == 1 and len(hints) <= 1 and len(lines) == len(errors) + len(hints), stderr
    if line is not None:
        assert re.search(rf"\bline {line}\b", errors[0]), f"expected line {line}: {errors[0]}"
    assert len(errors[0]) < 400, "one clear message, not a dump of the input"
    return errors[0]


def build_case(name: str, source: Source, where: Path) -> tuple[Path, int | None]:
    x = Export.read(source.export)
    x.source_db = source.full
    bad = where / "bad.jsonl"
    return bad, CASES[name](x, bad)


@dataclass
class Run:
    """One corpus entry imported into one target, with the target's state before and after."""

    proc: subprocess.CompletedProcess[bytes]
    line: int | None
    sha_before: str | None
    files_before: list[str]
    sha_after: str | None
    files_after: list[str]


@pytest.fixture(scope="module")
def corpus_runs(source: Source, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Run]:
    """Every corpus entry into an existing mind and into a missing target, each by pmm's own
    ``main`` in this process (one at a time: it owns sys.stdout while it runs); a refusal is the
    same code path whatever process runs it, and the exit code as a process sees it is held by
    ``test_bad_input_on_stdin_is_rejected_the_same_way``."""
    base = tmp_path_factory.mktemp("corpus")
    env = isolated_env(base)
    runs = {}
    for i, name in enumerate(CASES):
        for where in ("existing", "missing"):
            root = base / f"{i}-{where}"
            (root / "in").mkdir(parents=True)
            (root / "target").mkdir()
            bad, line = build_case(name, source, root / "in")
            target = root / "target" / "mind.db"
            if where == "existing":
                shutil.copy(source.prefix, target)
            sha = sha256(target) if target.exists() else None
            files = listing(target.parent)
            proc = run_in("--mind", str(target), "import", str(bad), env=env)
            runs[name, where] = Run(proc, line, sha, files, sha256(target) if target.exists() else None,
                                    listing(target.parent))
    return runs


@pytest.mark.parametrize("name", CASES)
def test_bad_input_into_an_existing_mind_changes_nothing(name: str, corpus_runs) -> None:
    run = corpus_runs[name, "existing"]
    assert_rejected(run.proc, run.line)
    assert run.files_after == run.files_before == ["mind.db"], "stray files beside the mind"
    assert run.sha_after == run.sha_before, "the existing mind file was modified by a refused import"


@pytest.mark.parametrize("name", CASES)
def test_bad_input_into_a_missing_target_leaves_no_file(name: str, corpus_runs) -> None:
    run = corpus_runs[name, "missing"]
    assert_rejected(run.proc, run.line)
    assert run.files_after == [], "a refused import left a file behind"


def test_bad_input_on_stdin_is_rejected_the_same_way(source: Source, tmp_path: Path) -> None:
    tmp_path = tmp_path / "target"
    tmp_path.mkdir()
    target = tmp_path / "mind.db"
    shutil.copy(source.prefix, target)
    before = sha256(target)
    data = source.export.read_bytes()
    # a real process on a real pipe: stdin cannot be read twice (pmm spools it; CliRunner's
    # stdin is seekable), and exit 6 is what the shell sees
    proc = run_pmm("--mind", str(target), "import", "-", input=data[: len(data) - 40])
    assert_rejected(proc, 8)
    assert listing(tmp_path) == ["mind.db"] and sha256(target) == before


def test_bad_input_into_an_empty_mind_keeps_its_identity(source: Source, tmp_path: Path) -> None:
    """An empty mind (created by the library, no genesis) takes an export's id only on success."""
    from pmm.ledger.store import Ledger

    target = tmp_path / "target" / "mind.db"
    Ledger.create(target, None).close()
    before = sha256(target)
    bad, line = build_case("wrong hash", source, tmp_path)
    assert_rejected(run_in("--mind", str(target), "import", str(bad)), line)
    with Ledger.open(target) as mind:
        assert mind.count() == 0
        assert mind.mind_id != Export.read(source.export).header["mind_id"], \
            "the refused import still gave the empty mind the export's identity"
    assert sha256(target) == before


@pytest.mark.parametrize("name", ["future export version", "wrong hash", "truncated mid-line"])
def test_bad_input_into_a_new_directory_leaves_no_directory(name: str, source: Source,
                                                            tmp_path: Path) -> None:
    """pmm makes a missing directory for a new mind; a refused import must not leave it."""
    (tmp_path / "in").mkdir()
    bad, line = build_case(name, source, tmp_path / "in")
    assert_rejected(run_in("--mind", str(tmp_path / "new" / "deeper" / "mind.db"), "import",
                            str(bad)), line)
    assert listing(tmp_path) == ["in"], "a refused import left a directory behind"


# -- good paths --------------------------------------------------------------------------------


def export_bytes(mind: Path, *args: str) -> bytes:
    return run_in("--mind", str(mind), "export", *args, check=True).stdout


def import_json(mind: Path, src: str, input: bytes | None = None, run=run_in) -> dict:
    proc = run("--mind", str(mind), "import", src, "--json", input=input)
    assert proc.returncode == 0, proc.stderr.decode()
    return json_data(proc.stdout)


def test_import_into_a_new_file_reproduces_the_mind(source: Source, tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    result = import_json(new, str(source.export))
    assert result["appended"] == 6 and result["created"] is True
    assert export_bytes(new) == export_bytes(source.full) == source.export.read_bytes()
    assert result["mind_id"] == Export.read(source.export).header["mind_id"]
    assert run_in("verify", str(new)).returncode == 0
    assert new.stat().st_mode & 0o777 == 0o600


def test_reimport_is_a_no_op(source: Source, tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    import_json(new, str(source.export))
    exported = export_bytes(new)
    result = import_json(new, str(source.export))
    assert (result["appended"], result["already_present"], result["head_id"]) == (0, 6, 6)
    assert export_bytes(new) == exported


def test_reimport_leaves_the_file_byte_identical(source: Source, tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    import_json(new, str(source.export))
    before = sha256(new)
    import_json(new, str(source.export))
    assert sha256(new) == before, "a no-op import rewrote the mind file"


def test_longer_export_appends_just_the_tail(source: Source, tmp_path: Path) -> None:
    target = tmp_path / "mind.db"
    shutil.copy(source.prefix, target)
    result = import_json(target, str(source.export))
    assert (result["appended"], result["already_present"], result["head_id"]) == (4, 2, 6)
    assert export_bytes(target) == source.export.read_bytes()
    assert run_in("verify", str(target)).returncode == 0
    stats = json_data(run_in("--mind", str(target), "stats", "--json", check=True).stdout)
    assert stats["events"] == 6 and stats["observations"] == 5


@pytest.mark.parametrize("since", [PREFIX_EVENTS + 1, PREFIX_EVENTS])
def test_export_since_k_appends_onto_a_mind_ending_at_k_minus_1(source: Source, tmp_path: Path,
                                                                since: int) -> None:
    partial = tmp_path / "partial.jsonl"
    partial.write_bytes(export_bytes(source.full, "--since", str(since)))
    target = tmp_path / "mind.db"
    shutil.copy(source.prefix, target)
    result = import_json(target, str(partial))
    assert result["appended"] == 6 - PREFIX_EVENTS and result["head_id"] == 6
    assert export_bytes(target) == source.export.read_bytes()


def test_export_since_past_the_end_is_refused(source: Source, tmp_path: Path) -> None:
    partial = tmp_path / "partial.jsonl"
    partial.write_bytes(export_bytes(source.full, "--since", str(PREFIX_EVENTS + 2)))
    target = tmp_path / "t" / "mind.db"
    target.parent.mkdir()
    shutil.copy(source.prefix, target)
    exported = export_bytes(target)
    error = assert_rejected(run_in("--mind", str(target), "import", str(partial)), None)
    assert f"event {PREFIX_EVENTS + 2}" in error
    assert export_bytes(target) == exported
    fresh = tmp_path / "fresh" / "mind.db"
    fresh.parent.mkdir()
    assert_rejected(run_in("--mind", str(fresh), "import", str(partial)), None)
    assert listing(fresh.parent) == []


def test_diverged_chain_is_refused_with_the_divergence(source: Source, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    shutil.copy(source.prefix, ours)
    shutil.copy(source.prefix, theirs)
    run_in("--mind", str(ours), "remember", "only in ours", check=True)
    run_in("--mind", str(theirs), "remember", "only in theirs", check=True)
    run_in("--mind", str(theirs), "remember", "and more", check=True)
    exported = export_bytes(ours)
    their_export = tmp_path / "theirs.jsonl"
    their_export.write_bytes(export_bytes(theirs))

    error = assert_rejected(run_in("--mind", str(ours), "import", str(their_export)),
                            PREFIX_EVENTS + 2)
    assert f"event {PREFIX_EVENTS + 1}" in error and "diverge" in error
    assert export_bytes(ours) == exported


def test_export_of_another_mind_is_refused(source: Source, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    run_in("--mind", str(other), "init", "--name", "Other", check=True)
    exported = export_bytes(other)
    error = assert_rejected(run_in("--mind", str(other), "import", str(source.export)), None)
    their_id = Export.read(source.export).header["mind_id"]
    assert their_id in error
    assert export_bytes(other) == exported


def test_stdin_dash_imports(source: Source, tmp_path: Path) -> None:
    """A real process on a real pipe (not seekable, so pmm spools it), exit 0 as the shell sees it."""
    new = tmp_path / "new.db"
    result = import_json(new, "-", input=source.export.read_bytes(), run=run_pmm)
    assert result["appended"] == 6
    assert export_bytes(new) == source.export.read_bytes()
    target = tmp_path / "prefix.db"
    shutil.copy(source.prefix, target)
    assert import_json(target, "-", input=source.export.read_bytes(), run=run_pmm)["appended"] == 4
