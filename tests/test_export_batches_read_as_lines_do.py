"""A bulk import reads an export a batch of lines per decoder call (``ExportReader.batches``);
whatever a file holds, that reads the same events, and refuses with the same error on the same
line, as reading it line by line (``ExportReader.events``), and `pmm import` refuses it so."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_in

from pmm.errors import InputRejected
from pmm.ledger.jsonl import ExportReader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_ledger import synthetic_export  # noqa: E402

EVENTS = 40


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    path = tmp_path_factory.mktemp("batches") / "export.jsonl"
    synthetic_export(path, EVENTS)
    return path.read_bytes().splitlines(keepends=True)


def _read(data: bytes, how: str, size: int) -> tuple[list[tuple[int, tuple[object, ...]]], str | None]:
    """(line, event) pairs read before the first refusal, and the refusal as printed."""
    reader = ExportReader(io.BytesIO(data), "x")
    got: list[tuple[int, tuple[object, ...]]] = []
    try:
        reader.read_header()
        if how == "lines":
            for line, event in reader.events():
                got.append((line, tuple(event)))
        else:
            for first, events in reader.batches(size):
                got += [(first + n, tuple(event)) for n, event in enumerate(events)]
    except InputRejected as exc:
        return got, f"{exc.message} @ {exc.line}"
    return got, None


def _split_event(ls: list[bytes]) -> list[bytes]:
    """One event spread over two lines, two events on one line: as many lines as before."""
    first, second = ls[5].rstrip(b"\n"), ls[6]
    cut = first.index(b',"meta"')
    return [*ls[:5], first[:cut] + b"\n", first[cut + 1:] + b"," + second, *ls[7:]]


MUTATIONS: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "as written": lambda ls: ls,
    "keys in another order": lambda ls: [*ls[:9], ls[9].replace(b'{"id":9,', b'{').replace(
        b'}\n', b',"id":9}\n'), *ls[10:]],
    "a duplicate key": lambda ls: [*ls[:9], ls[9].replace(b'"kind":', b'"kind":"x","kind":'),
                                   *ls[10:]],
    "one event over two lines": _split_event,
    "two events joined by a comma": lambda ls: [*ls[:5], ls[5].rstrip(b"\n") + b"," + ls[6],
                                                *ls[7:]],
    "a blank line": lambda ls: [*ls[:7], b"\n", *ls[7:]],
    "CRLF line ends": lambda ls: [line.replace(b"\n", b"\r\n") for line in ls],
    "spaces after a line": lambda ls: [*ls[:3], ls[3].replace(b"}\n", b"}  \n"), *ls[4:]],
    "an id that is a float": lambda ls: [*ls[:4], ls[4].replace(b'{"id":4,', b'{"id":4.0,'),
                                         *ls[5:]],
    "invalid UTF-8": lambda ls: [*ls[:8], ls[8].replace(b'"content":"', b'"content":"\xff'),
                                 *ls[9:]],
    "a lone surrogate": lambda ls: [*ls[:8], ls[8].replace(b'"content":"', b'"content":"\\ud800'),
                                    *ls[9:]],
    "a NUL escape": lambda ls: [*ls[:8], ls[8].replace(b'"content":"', b'"content":"\\u0000'),
                                *ls[9:]],
    "a raw tab in a string": lambda ls: [*ls[:8], ls[8].replace(b'"content":"', b'"content":"\t'),
                                         *ls[9:]],
    "an array of events on one line": lambda ls: [*ls[:2], b"[" + ls[2].rstrip(b"\n") + b"]\n",
                                                  *ls[3:]],
    "the end line early": lambda ls: [*ls[:20], ls[-1], *ls[20:]],
    "no end line": lambda ls: ls[:-1],
    "no newline at the end": lambda ls: [*ls[:-1], ls[-1].rstrip(b"\n")],
    "the last event without its newline": lambda ls: [*ls[:-2], ls[-2].rstrip(b"\n")],
}


@pytest.mark.parametrize("size", [1, 3, 7, 4096])
@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_batches_read_what_lines_read(lines: list[bytes], mutation: str, size: int) -> None:
    data = b"".join(MUTATIONS[mutation](list(lines)))
    (in_batches, refused), (one_by_one, refusal) = _read(data, "batches", size), _read(data, "lines", 1)
    assert refused == refusal
    # a batch is handed over whole or not at all, so a refused one may end the events earlier
    assert in_batches == one_by_one[:len(in_batches)]
    assert refusal is not None or in_batches == one_by_one


@pytest.mark.parametrize("mutation", ["one event over two lines", "two events joined by a comma",
                                      "a duplicate key"])
def test_import_refuses_a_file_that_only_a_batch_could_read(
        lines: list[bytes], tmp_path: Path, mutation: str) -> None:
    source = tmp_path / "odd.jsonl"
    source.write_bytes(b"".join(MUTATIONS[mutation](list(lines))))
    _, refusal = _read(source.read_bytes(), "lines", 1)
    target = tmp_path / "new" / "mind.db"
    proc = run_in("--mind", str(target), "import", str(source))
    stderr = proc.stderr.decode()
    if refusal is None:  # read the same either way (a duplicate key: the last one counts)
        assert proc.returncode in (0, 6), stderr
        return
    message, line = refusal.rsplit(" @ ", 1)
    assert proc.returncode == 6, stderr
    assert f"line {line}:" in stderr and "Traceback" not in stderr, stderr
    assert not target.exists()


def test_an_export_as_pmm_writes_it_is_decoded_a_batch_per_call(
        lines: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    import pydantic_core

    calls = []
    real = pydantic_core.from_json

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pydantic_core, "from_json", counting)  # the library's, not pmm's
    got, refusal = _read(b"".join(lines), "batches", 8)
    assert refusal is None and len(got) == EVENTS
    # five full batches in one call each; the last run (the end line) is read line by line
    assert len(calls) <= EVENTS // 8 + 2 + 1
