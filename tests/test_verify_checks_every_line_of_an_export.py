"""`pmm verify` of an export checks every line, whole or `--since N`, from a file or stdin: a
changed field, a dropped, swapped or duplicated line, a cut file or an end line that lies all
exit 3 and name the first bad event; clean files pass and report every event they hold.
(Once, a `--since` export had only its first event checked: everything after it passed.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import invoke, json_data, run_pmm

from pmm.domain.events import Draft
from pmm.services import opening

N = 10  # events in the mind: the genesis and nine notes
Lines = list[bytes]  # header, one line per event, end line


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """A mind of N events and its exports from event 1 and from event 5, read once."""
    base = tmp_path_factory.mktemp("exports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(base / "state"))
        mind = base / "mind.db"
        with opening.init(mind, "Lines") as writer:
            writer.append([Draft("observation_recorded", f"real {i}", {"source": "user"})
                           for i in range(2, N + 1)])
        found = {}
        for since in (1, 5):
            result = invoke("--mind", str(mind), "export", "--since", str(since))
            assert result.exit_code == 0, result.stderr
            found[since] = result.stdout_bytes
    return found


def _lines(data: bytes) -> Lines:
    return data.splitlines(keepends=True)


def _edit(line: bytes, **fields: object) -> bytes:
    obj = json.loads(line)
    obj.update(fields)
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def _at(lines: Lines, event_id: int, since: int) -> int:
    return event_id - since + 1  # the line index of an event (the header is line 0)


Attack = Callable[[Lines, int, int], tuple[Lines, int]]  # (lines, since, target id) -> (lines, first bad id)


def changed(field: str) -> Attack:
    def attack(lines: Lines, since: int, target: int) -> tuple[Lines, int]:
        i = _at(lines, target, since)
        old = json.loads(lines[i])
        new = {"content": "EVIL", "ts": "2020-01-01T00:00:00.000000Z", "kind": "message_received",
               "meta": '{"source":"evil"}'}[field]
        assert old[field] != new
        lines[i] = _edit(lines[i], **{field: new})
        return lines, target
    return attack


def dropped(lines: Lines, since: int, target: int) -> tuple[Lines, int]:
    del lines[_at(lines, target, since)]
    return lines, target


def swapped(lines: Lines, since: int, target: int) -> tuple[Lines, int]:
    i = _at(lines, target, since) - 1  # this event and the one before it change places
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return lines, target - 1


def duplicated(lines: Lines, since: int, target: int) -> tuple[Lines, int]:
    i = _at(lines, target, since)
    lines.insert(i, lines[i])
    return lines, target


def cut_after(lines: Lines, since: int, target: int) -> tuple[Lines, int]:
    return lines[:_at(lines, target, since)], target  # everything from this event on is gone


def cut_mid_line(lines: Lines, since: int, target: int) -> tuple[Lines, int]:
    i = _at(lines, target, since)
    return [*lines[:i], lines[i][: len(lines[i]) // 2]], target


ATTACKS: dict[str, Attack] = {
    **{f"changed {f}": changed(f) for f in ("content", "ts", "kind", "meta")},
    "dropped line": dropped, "swapped lines": swapped, "duplicated line": duplicated,
    "cut at a line": cut_after, "cut mid-line": cut_mid_line,
}


def _verify(data: bytes, tmp_path: Path, how: str, *extra: str):
    if how == "stdin":
        return invoke("verify", "-", *extra, input=data)
    path = tmp_path / "export.jsonl"
    path.write_bytes(data)
    return invoke("verify", str(path), *extra)


@pytest.mark.parametrize("how", ["file", "stdin"])
@pytest.mark.parametrize("since", [1, 5])
@pytest.mark.parametrize("where", ["middle", "end"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_damaged_export_fails_naming_the_first_bad_event(
        exports: dict[int, bytes], tmp_path: Path, attack: str, where: str, since: int, how: str) -> None:
    target = N if where == "end" else since + 2
    lines, bad = ATTACKS[attack](_lines(exports[since]), since, target)
    result = _verify(b"".join(lines), tmp_path, how, "--no-witness")
    assert result.exit_code == 3, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("Error: export ") and f"FAILED verification: event {bad}:" in first, first
    assert "Traceback" not in result.output


@pytest.mark.parametrize("how", ["file", "stdin"])
@pytest.mark.parametrize("since", [1, 5])
@pytest.mark.parametrize("lie", ["events", "last_id", "head"])
def test_an_end_line_that_disagrees_fails(exports: dict[int, bytes], tmp_path: Path, lie: str,
                                          since: int, how: str) -> None:
    lines = _lines(exports[since])
    end = json.loads(lines[-1])
    wrong = {"events": end["events"] + 1, "last_id": end["last_id"] + 1, "head": "0" * 64}[lie]
    lines[-1] = _edit(lines[-1], **{lie: wrong})
    result = _verify(b"".join(lines), tmp_path, how, "--no-witness")
    assert result.exit_code == 3, result.output
    first = result.stderr.splitlines()[0]
    assert "FAILED verification" in first and "end line" in first, first
    if lie == "last_id":  # it claims an event that never came
        assert f"event {N + 1}:" in first, first


@pytest.mark.parametrize("extra", ["junk\n", '{"pmm":"end","events":0,"last_id":0,"head":""}\n'])
def test_anything_after_the_end_line_fails(exports: dict[int, bytes], extra: str) -> None:
    result = invoke("verify", "-", "--no-witness", input=exports[5] + extra.encode())
    assert result.exit_code == 3 and "after the end line" in result.stderr, result.output


@pytest.mark.parametrize("how", ["file", "stdin"])
@pytest.mark.parametrize("since", [1, 5, N, N + 1])
def test_a_clean_export_passes_and_counts_every_event(tmp_path: Path, how: str, since: int) -> None:
    mind = tmp_path / "mind.db"
    with opening.init(mind, "Clean") as writer:
        writer.append([Draft("observation_recorded", f"note {i}", {"source": "user"}) for i in range(2, N + 1)])
    data = invoke("--mind", str(mind), "export", "--since", str(since)).stdout_bytes
    result = _verify(data, tmp_path, how, "--json")
    assert result.exit_code == 0, result.output
    report = json_data(result.stdout)
    assert report["events"] == N - since + 1 and report["first_id"] == since
    assert report["last_id"] == (N if since <= N else since - 1)


def test_the_process_exit_codes_at_the_boundary(exports: dict[int, bytes], tmp_path: Path) -> None:
    """The reported repro, through the real console script: sed on a --since export is caught."""
    forged = exports[5].replace(b'"real 7"', b'"EVIL 7"')
    assert forged != exports[5]
    result = run_pmm("verify", "-", "--no-witness", input=forged)
    assert result.returncode == 3 and b"event 7:" in result.stderr, result.stderr
    (tmp_path / "ok.jsonl").write_bytes(exports[5])
    assert run_pmm("verify", str(tmp_path / "ok.jsonl"), "--no-witness").returncode == 0


@pytest.mark.parametrize("junk", [b"root:x:0:0:root:/root:/bin/bash\n", b"", b"\x00\xff binary", b"[1, 2]\n"])
def test_what_is_neither_a_mind_nor_an_export_gives_one_code_however_it_arrives(
        tmp_path: Path, junk: bytes) -> None:
    """Exit 4 ("not a mind": SPEC section 5) both as a file and on stdin."""
    path = tmp_path / "passwd"
    path.write_bytes(junk)
    by_file = invoke("verify", str(path))
    by_stdin = invoke("verify", "-", input=junk)
    assert by_file.exit_code == by_stdin.exit_code == 4, (by_file.output, by_stdin.output)
    for result in (by_file, by_stdin):
        assert result.stderr.startswith("Error: ") and "neither a pmm mind file nor a pmm export" in result.stderr


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_a_pmm_export_with_a_bad_header_is_a_failed_verification(tmp_path: Path, how: str,
                                                                  exports: dict[int, bytes]) -> None:
    """A pmm export header that is wrong (here: a mind id no pmm makes) is exit 3 either way."""
    lines = _lines(exports[1])
    lines[0] = _edit(lines[0], mind_id="../../x")
    result = _verify(b"".join(lines), tmp_path, how)
    assert result.exit_code == 3 and "mind_id '../../x' is not one pmm makes" in result.stderr, result.output


def test_sign_and_import_refuse_what_verify_refuses(exports: dict[int, bytes], tmp_path: Path) -> None:
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(exports[1].replace(b'"real 7"', b'"EVIL 7"'))
    key = tmp_path / "key.pem"
    assert invoke("keygen", "-o", str(key)).exit_code == 0
    signed = invoke("sign", str(forged), "--key", str(key), "-o", str(tmp_path / "f.sig"))
    assert signed.exit_code == 3 and "event 7" in signed.stderr, signed.output
    assert not (tmp_path / "f.sig").exists()
    imported = invoke("--mind", str(tmp_path / "new.db"), "import", str(forged))
    assert imported.exit_code == 6 and "event 7" in imported.stderr, imported.output
    assert not (tmp_path / "new.db").exists()
