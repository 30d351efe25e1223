"""The pmm JSONL export format: a header line, one line per event, an end line.

    {"pmm":"export","version":1,"ledger_format":1,"mind_id":"…","since":1}
    {"id":1,"ts":"…","kind":"…","content":"…","meta":"{…}","prev_hash":"…","hash":"…"}
    {"pmm":"end","events":N,"last_id":N,"head":"…"}

``meta`` is carried as the exact canonical text that was hashed (a JSON string), so an export
re-imports to identical hashes without re-serialising anything. The end line makes a file that
was cut at a line boundary detectable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import IO, Any

from pmm.domain.events import Event
from pmm.errors import InputRejected

EXPORT_VERSION = 1
MAX_LINE = 64 * 1024 * 1024
EVENT_KEYS = ("id", "ts", "kind", "content", "meta", "prev_hash", "hash")
_EVENT_KEYSET = frozenset(EVENT_KEYS)


def header_line(mind_id: str, ledger_format: int, since: int) -> str:
    header = {
        "pmm": "export",
        "version": EXPORT_VERSION,
        "ledger_format": ledger_format,
        "mind_id": mind_id,
        "since": since,
    }
    return json.dumps(header, separators=(",", ":")) + "\n"


def event_lines(events: Iterable[Event]) -> Iterator[str]:
    enc = encode_basestring
    for e in events:
        yield (
            f'{{"id":{e.id},"ts":{enc(e.ts)},"kind":{enc(e.kind)},"content":{enc(e.content)},'
            f'"meta":{enc(e.meta_json)},"prev_hash":{enc(e.prev_hash)},"hash":{enc(e.hash)}}}\n'
        )


def end_line(count: int, last_id: int, head: str) -> str:
    return json.dumps(
        {"pmm": "end", "events": count, "last_id": last_id, "head": head}, separators=(",", ":")
    ) + "\n"


@dataclass(frozen=True)
class Header:
    mind_id: str
    ledger_format: int
    since: int


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


class ExportReader:
    """Parse a pmm JSONL export from a binary stream, strictly, with line numbers in errors.

    Iterate ``events()`` after ``read_header()``; the end line is checked when the events stop.
    Every problem raises ``InputRejected`` naming the line.
    """

    def __init__(self, stream: IO[bytes], name: str = "input") -> None:
        self.stream = stream
        self.name = name
        self.line = 0
        self.count = 0
        self.last_hash: str | None = None
        self.last_id = 0

    def _next_line(self) -> bytes | None:
        raw = self.stream.readline(MAX_LINE + 1)
        if not raw:
            return None
        self.line += 1
        if len(raw) > MAX_LINE:
            raise InputRejected(f"line longer than {MAX_LINE // (1024 * 1024)} MiB", line=self.line)
        return raw

    def _decode(self, raw: bytes) -> Any:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputRejected("not valid UTF-8 (is this a binary file?)", line=self.line) from None
        try:
            return _loads(text)
        except ValueError as exc:
            raise InputRejected(f"not valid JSON ({exc})", line=self.line) from None

    def read_header(self) -> Header:
        raw = self._next_line()
        if raw is None:
            raise InputRejected(f"{self.name} is empty: expected a pmm JSONL export")
        obj = self._decode(raw)
        if not isinstance(obj, dict) or obj.get("pmm") != "export":
            raise InputRejected(
                "not a pmm export header (expected {\"pmm\":\"export\",…})",
                hint="for ChatGPT or Claude data use --format chatgpt / --format claude",
                line=self.line,
            )
        if obj.get("version") != EXPORT_VERSION:
            raise InputRejected(f"unsupported export version {obj.get('version')!r}", line=self.line)
        mind_id, fmt, since = obj.get("mind_id"), obj.get("ledger_format"), obj.get("since")
        if not isinstance(mind_id, str) or not mind_id or not _is_int(fmt) or not _is_int(since) or since < 1:
            raise InputRejected("export header is missing mind_id, ledger_format or since", line=self.line)
        self.last_id = since - 1
        return Header(mind_id, fmt, since)

    def events(self) -> Iterator[tuple[int, Event]]:
        """Yield (line number, event); raises at the end line if counts or head disagree."""
        while (raw := self._next_line()) is not None:
            obj = self._decode(raw)
            if not isinstance(obj, dict):
                raise InputRejected("expected a JSON object", line=self.line)
            if "pmm" in obj:
                self._check_end(obj)
                return
            if obj.keys() != _EVENT_KEYSET:
                missing = sorted(_EVENT_KEYSET - obj.keys()) or sorted(obj.keys() - _EVENT_KEYSET)
                raise InputRejected(f"event has missing or unknown fields: {', '.join(missing)}", line=self.line)
            event = Event(
                obj["id"], obj["ts"], obj["kind"], obj["content"], obj["meta"],
                obj["prev_hash"], obj["hash"],
            )
            if not _is_int(event.id) or not all(isinstance(v, str) for v in event[1:]):
                raise InputRejected("event fields have the wrong types", line=self.line)
            _check_meta(event.meta_json, self.line)
            self.count += 1
            self.last_id = event.id
            self.last_hash = event.hash
            yield self.line, event
        raise InputRejected(
            f"{self.name} ends without its end line: the export is truncated", line=self.line + 1
        )

    def _check_end(self, obj: dict[str, Any]) -> None:
        if obj.get("pmm") != "end":
            raise InputRejected("unexpected pmm header in the middle of the export", line=self.line)
        if obj.get("events") != self.count or obj.get("last_id") != self.last_id:
            raise InputRejected(
                f"end line says {obj.get('events')} events but {self.count} were read",
                line=self.line,
            )
        if self.count and obj.get("head") != self.last_hash:
            raise InputRejected("end line's head hash is not the last event's hash", line=self.line)
        if self._next_line() is not None:
            raise InputRejected("unexpected data after the end line", line=self.line)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_meta(text: str, line: int) -> None:
    if text == "{}":
        return
    try:
        meta = _loads(text)
    except ValueError as exc:
        raise InputRejected(f"meta is not valid JSON ({exc})", line=line) from None
    if not isinstance(meta, dict):
        raise InputRejected("meta must be a JSON object", line=line)
    if any(isinstance(v, float) and not math.isfinite(v) for v in meta.values()):
        raise InputRejected("meta holds a non-finite number", line=line)
