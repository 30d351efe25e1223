"""docs/ledger-format.md is exact: its test vectors, example export and stand-alone verifier work.

The vectors are recomputed with pmm's own chain code and with an independent re-implementation
written here from the prose of the page. The verify snippet is extracted and run with a plain
``python3 -I`` (no pmm importable) against a real mind made by `pmm init` + `pmm remember`, its
`pmm export`, and tampered copies of both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_in

from pmm.domain.canonical import canonical_json
from pmm.ledger import jsonl, schema, store
from pmm.ledger.chain import FORMATS, GENESIS_PREV, chain_prefix, event_hash

DOC = Path(__file__).resolve().parent.parent / "docs" / "ledger-format.md"
FIELDS = ("ledger_format", "mind_id", "id", "ts", "kind", "content", "meta", "prev_hash")


def _block_after(marker: str, lang: str = "") -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(re.escape(marker) + r"\s*\n```" + lang + r"\n(.*?)\n```", text, re.S)
    assert match, f"docs/ledger-format.md has no ```{lang} block right after {marker}"
    return match.group(1)


def vectors() -> list[dict]:
    return json.loads(_block_after("<!-- test-vectors -->", "json"))


CONTENT_DOMAIN = b"pmm-content-v2\x00"  # as the page spells it out, byte by byte


def independent_digest(content: str) -> str:
    """Format 2's content digest as the page states it."""
    return hashlib.sha256(CONTENT_DOMAIN + content.encode("utf-8")).hexdigest()


def independent_preimage(v: dict) -> bytes:
    """The encoding as the page states it, written without pmm's code: field 6 is the content
    (format 1) or its digest, a forgotten event's being its tombstone (format 2)."""
    out = b""
    for name in FIELDS:
        value = v[name]
        if name == "content" and v["ledger_format"] == 2:
            value = v["content_digest"] if v.get("forgotten") else independent_digest(value)
        data = str(value).encode("utf-8")
        out += len(data).to_bytes(8, "big") + data
    return out


def test_the_domain_separator_is_the_bytes_the_page_lists() -> None:
    text = DOC.read_text(encoding="utf-8")
    listed = re.search(r"`(70 6d 6d[0-9a-f ]+00)`", text.replace("\n", " "))
    assert listed and bytes.fromhex(listed.group(1)) == CONTENT_DOMAIN
    assert independent_digest("") in text  # the empty content's digest, as documented


# -- test vectors ------------------------------------------------------------------------------


def test_the_page_has_enough_vectors_and_they_cover_the_hard_cases() -> None:
    vs = vectors()
    assert len(vs) >= 3
    for v in vs:
        assert set(FIELDS) | {"hash", "length_prefixes_hex", "preimage_hex"} <= v.keys()
        assert re.fullmatch(r"[0-9a-f]{64}", v["hash"])
        assert len(v["ts"]) == 27 and v["ts"].endswith("Z")
    assert any(v["prev_hash"] == GENESIS_PREV and v["id"] == 1 for v in vs), "a genesis vector"
    assert any(any(ord(c) > 127 for c in v["content"]) for v in vs), "non-ASCII content"
    assert any(any(ord(c) > 0xFFFF for c in v["content"]) for v in vs), "a non-BMP character"
    assert any(v["meta"] != "{}" for v in vs), "a non-empty meta"
    assert any(v["content"] == "" for v in vs), "an empty field"
    assert any(v["id"] >= 10 for v in vs), "a multi-digit id"
    assert {v["ledger_format"] for v in vs} == set(FORMATS), "every format pmm reads"
    twos = [v for v in vs if v["ledger_format"] == 2]
    assert any(v.get("forgotten") for v in twos), "a forgotten event (a tombstone)"
    assert any(v["kind"] == "content_forgotten" for v in twos), "the event that records it"
    assert any(v["content"] == "" and not v.get("forgotten") for v in twos), "empty, not forgotten"


@pytest.mark.parametrize("index", range(len(vectors())))
def test_vector_matches_pmm_and_an_independent_implementation(index: int) -> None:
    v = vectors()[index]
    assert v["ledger_format"] in FORMATS
    # meta in the vectors is stored text: canonical, so pmm could have written it
    assert canonical_json(json.loads(v["meta"])) == v["meta"]
    if v["ledger_format"] == 2:
        if v.get("forgotten"):  # the tombstone is the digest of what was forgotten
            assert v["content"] == "" and v["content_digest"] == independent_digest(v["forgotten_content"])
        else:
            assert v["content_digest"] == independent_digest(v["content"])

    prefix = chain_prefix(v["ledger_format"], v["mind_id"])
    tomb = v["content_digest"] if v.get("forgotten") else None
    ours = event_hash(prefix, v["id"], v["ts"], v["kind"], v["content"], v["meta"], v["prev_hash"],
                      forgotten=tomb)
    assert ours == v["hash"], "pmm's event_hash disagrees with the documented vector"

    pre = independent_preimage(v)
    assert pre.hex() == v["preimage_hex"]
    assert hashlib.sha256(pre).hexdigest() == v["hash"]
    field6 = v.get("content_digest", v["content"])
    lengths = [len(str(field6 if name == "content" else v[name]).encode("utf-8")).to_bytes(8, "big").hex()
               for name in FIELDS]
    assert lengths == v["length_prefixes_hex"]
    assert pre.startswith(prefix), "chain_prefix is the first two encoded fields"


def test_vectors_sharing_a_mind_link_into_one_chain() -> None:
    by_mind: dict[str, list[dict]] = {}
    for v in vectors():
        by_mind.setdefault(v["mind_id"], []).append(v)
    chains = [vs for vs in by_mind.values() if len(vs) > 1]
    assert chains, "at least two vectors of one mind, so the page shows a link"
    for vs in chains:
        vs.sort(key=lambda v: v["id"])
        for before, after in zip(vs, vs[1:], strict=False):
            if after["id"] == before["id"] + 1:
                assert after["prev_hash"] == before["hash"]


@pytest.mark.parametrize("index", [1, 5])  # a format-1 and a format-2 vector
def test_any_single_field_change_changes_the_hash(index: int) -> None:
    v = vectors()[index]
    base = hashlib.sha256(independent_preimage(v)).hexdigest()
    for name in FIELDS:
        changed = dict(v, **{name: (v[name] + 1) if isinstance(v[name], int) else v[name] + "x"})
        prefix = chain_prefix(changed["ledger_format"], changed["mind_id"])
        args = (changed[k] for k in FIELDS[2:])
        assert event_hash(prefix, *args) != base, name
    # moving a byte between adjacent fields keeps the concatenation but not the encoding
    shifted = dict(v, kind=v["kind"] + v["content"][:1], content=v["content"][1:])
    assert hashlib.sha256(independent_preimage(shifted)).hexdigest() != base


def test_documented_constants_match_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"0x{schema.APPLICATION_ID:08X}" in text
    assert store.TS_FORMAT in text
    assert len(store.now_ts()) == 27
    assert f"{jsonl.MAX_LINE // (1024 * 1024)} MiB" in text
    assert f'"version":{jsonl.EXPORT_VERSION}' in text and '"version":1' in text
    assert schema.FORGOTTEN_TABLE in text
    for statement in (*schema.V1, *schema.EVENTS_INDEXES):
        for name in re.findall(r"CREATE (?:UNIQUE INDEX|INDEX|TRIGGER|TABLE|VIRTUAL TABLE) (\w+)",
                               statement):
            assert name in text, f"the page does not mention {name}"


# -- the example export and the snippet ---------------------------------------------------------


@functools.cache
def plain_python() -> str:
    """A python3 without pmm importable: the base interpreter, not this venv's."""
    found = shutil.which("python3")
    venv = Path(sys.prefix).resolve()
    if found is None or Path(found).resolve().is_relative_to(venv):
        found = getattr(sys, "_base_executable", None) or sys.executable
    probe = subprocess.run([found, "-I", "-c", "import importlib.util as u, sys;"
                            " sys.exit(u.find_spec('pmm') is not None)"], capture_output=True)
    assert probe.returncode == 0, f"{found} can import pmm: the snippet test would prove nothing"
    return found


@pytest.fixture(scope="module")
def snippet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    code = _block_after("<!-- verify-snippet -->", "python")
    assert len(code.splitlines()) < 75, "the snippet is meant to be short"
    imported = set(re.findall(r"^\s*(?:import|from)\s+([\w.]+(?:\s*,\s*\w+)*)", code, re.M))
    modules = {m.strip().split(".")[0] for group in imported for m in group.split(",")}
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)
    path = tmp_path_factory.mktemp("snippet") / "verify_pmm.py"
    path.write_text(code + "\n", encoding="utf-8")
    return path


def run_snippet(snippet: Path, target: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([plain_python(), "-I", str(snippet), str(target)], capture_output=True,
                          text=True, timeout=60, cwd=target.parent, env=env)


@pytest.mark.parametrize("marker", ["<!-- example-export -->", "<!-- example-export-2 -->"])
def test_example_export_on_the_page_verifies(snippet: Path, tmp_path: Path, pmm, marker: str) -> None:
    example = tmp_path / "example.jsonl"
    example.write_text(_block_after(marker) + "\n", encoding="utf-8")
    assert pmm("verify", str(example)).returncode == 0
    done = run_snippet(snippet, example)
    assert done.returncode == 0, done.stdout + done.stderr
    head = json.loads(example.read_text().splitlines()[0])
    assert head["mind_id"] in {v["mind_id"] for v in vectors()}
    assert head["version"] == jsonl.VERSION_OF[head["ledger_format"]]
    # the format-2 example's forgotten event is the vectors' tombstone
    for line in example.read_text().splitlines()[1:-1]:
        event = json.loads(line)
        if "content_digest" in event:
            assert event["content"] == "" and any(
                v["hash"] == event["hash"] and v["content_digest"] == event["content_digest"]
                for v in vectors() if v.get("forgotten"))
    # the tombstone is needed: without it the line's empty content does not hash
    if "content_digest" in example.read_text():
        lines = example.read_text().splitlines()
        stripped = [re.sub(r',"content_digest":"[0-9a-f]{64}"', "", line) for line in lines]
        example.write_text("\n".join(stripped) + "\n", encoding="utf-8")
        assert run_snippet(snippet, example).returncode == 1
        assert pmm("verify", str(example)).returncode == 3


NOTES = ("first note", "Über Bücher — 日本語 🧠", 'quotes " and \\ backslash\nand a second line')


@pytest.fixture(scope="module")
def made_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One real mind and its export per module (the autouse dirs fixture is per test)."""
    base = tmp_path_factory.mktemp("made")
    env = {var: str(base / sub) for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
           ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache"), ("HOME", "home"))}
    mind = base / "mind.db"
    run_in("--mind", str(mind), "init", "--name", "Zoë", check=True, env=env)
    for note in NOTES:
        run_in("--mind", str(mind), "remember", note, check=True, env=env)
    export = base / "export.jsonl"
    run_in("--mind", str(mind), "export", "-o", str(export), check=True, env=env)
    return mind, export


@pytest.fixture
def real_mind(made_once: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """Private copies of the module's mind and export."""
    copies = []
    for src in made_once:
        copies.append(tmp_path / src.name)
        shutil.copy(src, copies[-1])
    return copies[0], copies[1]


def test_snippet_verifies_a_real_mind_and_its_export(snippet: Path, real_mind, pmm) -> None:
    mind, export = real_mind
    for target in (mind, export):
        done = run_snippet(snippet, target)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("OK") and f"{1 + len(NOTES)} events" in done.stdout
    since = mind.parent / "since.jsonl"
    since.write_bytes(pmm("--mind", str(mind), "export", "--since", "3", check=True).stdout)
    done = run_snippet(snippet, since)
    assert done.returncode == 0 and "2 events" in done.stdout, done.stdout + done.stderr


def _tampered_mind(mind: Path, dest: Path, sql: str, *args: object) -> Path:
    shutil.copy(mind, dest)
    conn = sqlite3.connect(dest, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute(sql, args)
    conn.close()
    return dest


def _flip(text: str, at: int = 0) -> str:
    return text[:at] + chr(ord(text[at]) ^ 1) + text[at + 1:]


MIND_TAMPERS = {  # name: (SQL, its arguments, the first bad event)
    "content byte": ("UPDATE events SET content = ? WHERE id = 3", (_flip(NOTES[1]),), 3),
    "meta byte": ("UPDATE events SET meta = ? WHERE id = 2", ('{"source":"usfr"}',), 2),
    "kind": ("UPDATE events SET kind = 'mind_named' WHERE id = 3", (), 3),
    "ts": ("UPDATE events SET ts = replace(ts, '.', ',') WHERE id = 3", (), 3),
    "deleted row": ("DELETE FROM events WHERE id = 3", (), 3),
    "last hash": ("UPDATE events SET hash = ? WHERE id = 4", ("f" * 64,), 4),
}


@pytest.mark.parametrize("name", MIND_TAMPERS)
def test_snippet_rejects_a_tampered_mind(snippet: Path, real_mind, tmp_path: Path, name: str,
                                         pmm) -> None:
    mind, _ = real_mind
    sql, args, bad_event = MIND_TAMPERS[name]
    bad = _tampered_mind(mind, tmp_path / "bad.db", sql, *args)
    done = run_snippet(snippet, bad)
    assert done.returncode != 0, done.stdout
    assert done.stdout.startswith(f"FAILED: event {bad_event}:"), done.stdout
    # pmm itself agrees that the copy is bad: the snippet is not stricter than the product
    assert pmm("verify", str(bad)).returncode == 3


def test_snippet_rejects_a_tampered_or_truncated_export(snippet: Path, real_mind,
                                                        tmp_path: Path) -> None:
    _, export = real_mind
    lines = export.read_bytes().splitlines(keepends=True)
    line = lines[3]  # event 3: the non-ASCII note
    at = line.index("Bücher".encode())
    cases = {
        "content byte": [*lines[:3], line[:at] + b"C" + line[at + 1:], *lines[4:]],
        "missing end line": lines[:-1],
        "dropped event": [*lines[:2], *lines[3:-1],
                          lines[-1].replace(b'"events":4', b'"events":3')],
    }
    for name, content in cases.items():
        bad = tmp_path / f"{name.replace(' ', '-')}.jsonl"
        bad.write_bytes(b"".join(content))
        done = run_snippet(snippet, bad)
        assert done.returncode != 0, (name, done.stdout)
        assert done.stdout.startswith("FAILED"), (name, done.stdout)


def test_snippet_verifies_a_mind_with_a_forgotten_event_and_its_export(snippet: Path, real_mind, pmm,
                                                                       tmp_path: Path) -> None:
    mind, _ = real_mind
    pmm("--mind", str(mind), "forget", "3", "--reason", "test", "--yes", check=True)
    export = tmp_path / "forgotten.jsonl"
    pmm("--mind", str(mind), "export", "-o", str(export), check=True)
    assert '"content_digest"' in export.read_text()
    for target in (mind, export):
        done = run_snippet(snippet, target)
        assert done.returncode == 0 and f"{2 + len(NOTES)} events" in done.stdout, done.stdout + done.stderr
    # content removed outside pmm (a tombstone, but no content_forgotten event): both refuse it
    bad = _tampered_mind(mind, tmp_path / "blanked.db", "UPDATE events SET content = '' WHERE id = 2")
    conn = sqlite3.connect(bad)
    conn.execute("INSERT INTO forgotten VALUES (2, ?)",
                 (hashlib.sha256(b"pmm-content-v2\x00" + NOTES[0].encode()).hexdigest(),))
    conn.commit()
    conn.close()
    done = run_snippet(snippet, bad)
    assert done.returncode == 1 and done.stdout.startswith("FAILED: event 2:"), done.stdout
    assert pmm("verify", str(bad), "--no-witness").returncode == 3
    # and a forgotten event's content put back, or its tombstone dropped, fails as well
    for sql in ("UPDATE events SET content = 'back' WHERE id = 3", "DELETE FROM forgotten"):
        bad = _tampered_mind(mind, tmp_path / "back.db", sql)
        done = run_snippet(snippet, bad)
        assert done.returncode == 1 and done.stdout.startswith("FAILED: event 3:"), (sql, done.stdout)
        bad.unlink()
