"""The pmm JSONL export format: a header line, one line per event, an end line.

    {"pmm":"export","version":1,"ledger_format":1,"mind_id":"…","since":1}
    {"id":1,"ts":"…","kind":"…","content":"…","meta":"{…}","prev_hash":"…","hash":"…"}
    {"pmm":"end","events":N,"last_id":N,"head":"…"}

``meta`` is carried as the exact canonical text that was hashed (a JSON string), so an export
re-imports to identical hashes without re-serialising anything. The end line makes a file that
was cut at a line boundary detectable.

Export version 2 (of a ledger-format-2 mind) is the same, except that the line of a forgotten
event carries its tombstone as an eighth key, ``"content_digest"``, after an empty content.
A ledger-format-1 mind is exported as version 1, which older pmm versions read.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import IO, Any

from pmm.domain.events import Event
from pmm.domain.ids import is_mind_id
from pmm.errors import InputRejected, quoted
from pmm.ledger.chain import FORMATS

EXPORT_VERSION = 2  # the newest; each ledger format has its own (``VERSION_OF``)
VERSION_OF = {1: 1, 2: 2}  # ledger format -> the export version that carries it
MAX_LINE = 64 * 1024 * 1024
EVENT_KEYS = ("id", "ts", "kind", "content", "meta", "prev_hash", "hash")
TOMBSTONE_KEY = "content_digest"
_EVENT_KEYSET = frozenset(EVENT_KEYS)
_FORGOTTEN_KEYSET = frozenset((*EVENT_KEYS, TOMBSTONE_KEY))


def header_line(mind_id: str, ledger_format: int, since: int) -> str:
    header = {
        "pmm": "export",
        "version": VERSION_OF.get(ledger_format, EXPORT_VERSION),
        "ledger_format": ledger_format,
        "mind_id": mind_id,
        "since": since,
    }
    return json.dumps(header, separators=(",", ":")) + "\n"


_EVENT_LINE = '{"id":%d,"ts":%s,"kind":%s,"content":%s,"meta":%s,"prev_hash":%s,"hash":%s}\n'


_FORGOTTEN_LINE = _EVENT_LINE[:-2] + ',"content_digest":%s}\n'


def event_lines(events: Iterable[Sequence[Any]],
                forgotten: dict[int, str] | None = None) -> Iterator[str]:
    """One line per event (an ``Event`` or a row in its column order); %-formatting is the
    fastest way CPython has to build these, and export speed is one of pmm's bars. An event
    in ``forgotten`` (id -> content digest) carries its tombstone (export version 2)."""
    enc, line = encode_basestring, _EVENT_LINE
    if not forgotten:
        for i, ts, kind, content, meta, prev, digest in events:
            yield line % (i, enc(ts), enc(kind), enc(content), enc(meta), enc(prev), enc(digest))
        return
    for i, ts, kind, content, meta, prev, digest in events:
        tomb = forgotten.get(i)
        if tomb is None:
            yield line % (i, enc(ts), enc(kind), enc(content), enc(meta), enc(prev), enc(digest))
        else:
            yield _FORGOTTEN_LINE % (i, enc(ts), enc(kind), enc(content), enc(meta), enc(prev),
                                     enc(digest), enc(tomb))


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


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


# One strict decoder, reused: NaN, Infinity and overflowing numbers are refused.
_loads = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode


def fast_decoder() -> Callable[[str], Any]:
    """pydantic_core's JSON decoder (about three times the strict one), for event lines only.

    Where it accepts a text holding no number but integers, the strict decoder reads the same
    value (tests/test_import_decoder_agrees_with_the_strict_one.py holds this); it differs in
    refusing a lone surrogate escape (``"\\ud800"``, which the strict one reads and the import
    then refuses by name) and in reading ``1e999`` as infinity, a float no event field may hold.
    So a line it refuses goes to the strict decoder, and what it reads counts only when every
    field has an event's type."""
    from functools import partial

    from pydantic_core import from_json

    return partial(from_json, allow_inf_nan=False, cache_strings="keys")


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
        self.is_export = False  # the first line is a pmm export header (whatever else is wrong)
        self.end_at: int | None = None  # the end line's number, once it is read
        self.end_last_id: Any = None  # the last id the end line claims
        self.version = 0  # the header's export version, once read
        self.forgotten: dict[int, str] = {}  # tombstones read so far: event id -> content digest
        self._pending: list[bytes] = []  # lines read ahead by ``batches`` and handed back, reversed

    def _readline(self, limit: int) -> bytes:
        return self._pending.pop() if self._pending else self.stream.readline(limit)

    def _next_line(self) -> bytes | None:
        raw = self._readline(MAX_LINE + 1)
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
        self.is_export = True
        version = obj.get("version")
        if not _is_int(version) or version not in VERSION_OF.values():
            raise InputRejected(f"unsupported export version {version!r}", line=self.line)
        mind_id, fmt, since = obj.get("mind_id"), obj.get("ledger_format"), obj.get("since")
        if mind_id is None or not (_is_int(fmt) and _is_int(since)):
            raise InputRejected("export header is missing mind_id, ledger_format or since", line=self.line)
        if not is_mind_id(mind_id):
            raise InputRejected(f"export header's mind_id {quoted(mind_id)} is not one pmm makes",
                                hint="a pmm mind id is 32 lowercase hex digits", line=self.line)
        assert isinstance(fmt, int) and isinstance(since, int)
        if since < 1:
            raise InputRejected("export header's since must be 1 or more", line=self.line)
        if fmt not in FORMATS:
            raise InputRejected(f"ledger format {fmt} is not one this pmm reads"
                                f" ({', '.join(map(str, FORMATS))})",
                                hint="upgrade pmm to import it", line=self.line)
        if VERSION_OF[fmt] != version:
            raise InputRejected(f"export version {version} does not carry ledger format {fmt}"
                                f" (export version {VERSION_OF[fmt]} does)", line=self.line)
        self.version = version
        self.last_id = since - 1
        return Header(mind_id, fmt, since)

    def events(self) -> Iterator[tuple[int, Event]]:
        """Yield (line number, event); raises at the end line if counts or head disagree.

        Each line is read by the fast decoder (``fast_decoder``) and, where that one refuses
        it, by the strict one; only a line whose fields are exactly an int id and six strings
        is an event. Whether ``meta`` holds a JSON object of its kind's shape is the chain
        checker's to say (``checks.check_row``, which every import and verify runs on every
        event), so it is not decoded here."""
        readline, loads, fast, limit = self._readline, _loads, fast_decoder(), MAX_LINE + 1
        keyset, make = _EVENT_KEYSET, Event
        tombs = self.forgotten if self.version >= 2 else None
        line = self.line
        while raw := readline(limit):
            line += 1
            self.line = line
            try:
                if len(raw) >= limit:
                    raise ValueError
                text = raw.decode("utf-8")
                try:
                    obj = fast(text)
                except (ValueError, TypeError):  # what the strict decoder reads otherwise, or refuses
                    obj = loads(text)
                event = make(obj["id"], obj["ts"], obj["kind"], obj["content"], obj["meta"],
                             obj["prev_hash"], obj["hash"])
                if obj.keys() != keyset:
                    digest = obj.get(TOMBSTONE_KEY) if tombs is not None else None
                    if obj.keys() != _FORGOTTEN_KEYSET or type(digest) is not str:
                        raise ValueError
                    tombs[obj["id"]] = digest  # type: ignore[index]
                if (type(event.id) is not int or type(event.ts) is not str
                        or type(event.kind) is not str or type(event.content) is not str
                        or type(event.meta_json) is not str or type(event.prev_hash) is not str
                        or type(event.hash) is not str):
                    raise ValueError
            except (ValueError, KeyError, TypeError, AttributeError):
                if isinstance(obj := self._diagnose(raw), dict) and "pmm" in obj:
                    self.end_at, self.end_last_id = line, obj.get("last_id")
                    self._check_end(obj)
                    return
                raise AssertionError("unreachable: _diagnose raises for any bad event line") from None
            self.count += 1
            self.last_id = event.id
            self.last_hash = event.hash
            yield line, event
        raise InputRejected(
            f"{self.name} ends without its end line: the export is truncated", line=self.line + 1
        )

    def batches(self, size: int = 4096) -> Iterator[tuple[int, list[Event]]]:
        """``events()`` in lists of up to ``size``, each with the line number of its first event.

        A run of lines that are each one event object, as pmm writes them, is decoded in one
        call; any other run is read line by line by ``events()``, which refuses it exactly as
        it always does. One call reads what the lines would read one by one: a line ends at
        ``}``, a raw newline cannot be inside a JSON string, and an event is a flat object, so
        no value spans two lines; the decoded values must be one event per line, in order."""
        readline, fast, limit = self.stream.readline, fast_decoder(), MAX_LINE + 1
        make, keys = Event._make, EVENT_KEYS
        while self.end_at is None:
            lines: list[bytes] = []
            for _ in range(size):
                if not (raw := readline(limit)):
                    break
                lines.append(raw)
            if not lines:
                list(self.events())  # raises: the export ends without its end line
            events: list[Event] | None = None
            if all(len(raw) < limit and raw.endswith(b"}\n") for raw in lines):
                try:
                    objs = fast((b"[%b]" % b",".join(lines)).decode("utf-8"))
                    if len(objs) == len(lines) and all(type(obj) is dict and tuple(obj) == keys
                                                       for obj in objs):
                        events = list(map(make, map(dict.values, objs)))
                        # every field's type at once (C loops): each id an int, the rest strs
                        types = list(map(type, itertools.chain.from_iterable(events)))
                        if (types[0::7].count(int) != len(events)
                                or types.count(str) != 6 * len(events)):
                            events = None
                except (ValueError, TypeError, UnicodeDecodeError):
                    events = None
            first = self.line + 1
            if events is None:  # line by line: refusals, odd spellings, the end line
                self._pending = lines[::-1]
                events = [event for _, event in itertools.islice(self.events(), len(lines))]
                if events:
                    yield first, events
                continue
            self.line += len(events)
            self.count += len(events)
            self.last_id, self.last_hash = events[-1].id, events[-1].hash
            yield first, events

    def _diagnose(self, raw: bytes) -> Any:
        """Say exactly what is wrong with a line the fast path refused (or return an end line)."""
        if len(raw) > MAX_LINE:
            raise InputRejected(f"line longer than {MAX_LINE // (1024 * 1024)} MiB", line=self.line)
        obj = self._decode(raw)
        if not isinstance(obj, dict):
            raise InputRejected("expected a JSON object", line=self.line)
        if "pmm" in obj:
            return obj
        keys = _FORGOTTEN_KEYSET if self.version >= 2 and TOMBSTONE_KEY in obj else _EVENT_KEYSET
        if obj.keys() != keys:
            wrong = sorted(keys - obj.keys()) or sorted(obj.keys() - keys)
            raise InputRejected(f"event has missing or unknown fields: {', '.join(wrong)}", line=self.line)
        if not _is_int(obj["id"]) or not all(isinstance(obj[k], str) for k in keys - {"id"}):
            raise InputRejected("event fields have the wrong types", line=self.line)
        raise InputRejected("malformed event", line=self.line)

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
