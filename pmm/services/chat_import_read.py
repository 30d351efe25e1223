"""Reading a ChatGPT or Claude conversations.json: the shared shapes (``Message``,
``Conversation``), the top-level list decoded one conversation at a time, and the texts and
times of the exports made safe for the ledger."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pmm.domain import events as ev
from pmm.errors import InputRejected
from pmm.ledger.store import TS_FORMAT

LABELS = {"chatgpt": "ChatGPT", "claude": "Claude"}
ROLE_KINDS = {"user": ev.MESSAGE_RECEIVED.name, "assistant": ev.RESPONSE_SENT.name}
# what an import leaves out of the ledger, by kind (``pmm import`` reports each count)
SKIPPED_KINDS = ("branch_message", "image", "audio", "file", "system_or_tool", "other")


class Message(NamedTuple):
    id: str
    role: str  # "user" or "assistant"
    text: str
    ts: str | None  # original time, in the ledger's timestamp format
    model: str | None


class Conversation(NamedTuple):
    id: str
    title: str
    ts: str | None
    messages: list[Message]
    skipped: Counter[str]  # SKIPPED_KINDS -> how many this conversation left out


# -- reading the file ----------------------------------------------------------------------------


def items(data: bytes, name: str, label: str) -> Iterator[Any]:
    """The elements of the file's top-level JSON list, decoded one at a time.

    Only the text and one raw conversation are held at once: a whole export decoded by
    ``json.loads`` takes about six times the file's size.
    """
    text = _decode(data, name, label)
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    try:
        at = _skip(text, 0)
        if at == len(text):
            raise InputRejected(f"{name} is empty: expected a {label} conversations.json")
        if text[at] != "[":
            value, _ = decoder.raw_decode(text, at)
            found = _JSON_TYPES.get(type(value), "a number")
            raise InputRejected(f"{name} is not a {label} conversations.json: expected a JSON list"
                                f" of conversations, found {found}")
        at = _skip(text, at + 1)
        if text.startswith("]", at):
            at += 1
        else:
            while True:
                value, at = decoder.raw_decode(text, at)
                yield value
                at = _skip(text, at)
                if text.startswith(",", at):
                    at = _skip(text, at + 1)
                elif text.startswith("]", at):
                    at += 1
                    break
                else:
                    raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
        if _skip(text, at) != len(text):
            raise json.JSONDecodeError("Extra data", text, at)
    except json.JSONDecodeError as exc:
        raise InputRejected(f"{name} is not valid JSON: {exc.msg} (column {exc.colno})",
                            line=exc.lineno) from None
    except ValueError as exc:  # NaN / Infinity, or an integer too long to convert
        raise InputRejected(f"{name} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputRejected(f"{name} is nested too deeply to be a {label} export") from None


def _decode(data: bytes, name: str, label: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputRejected(f"{name} is not valid UTF-8 (is it a binary file?)", line=line) from None


_JSON_TYPES = {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, at: int) -> int:
    """The index of the next character in ``text`` that is not JSON whitespace."""
    match = _WHITESPACE.match(text, at)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _reject_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def wrong_format(item: dict[str, Any], fmt: str) -> str:
    """A note for a conversation that looks like the other service's export."""
    if fmt == "chatgpt" and "chat_messages" in item:
        return " (this looks like a Claude export: use --format claude, or leave --format out)"
    if fmt == "claude" and "mapping" in item:
        return " (this looks like a ChatGPT export: use --format chatgpt, or leave --format out)"
    return ""


def text_of(value: Any) -> str:
    """A string from the export, with any lone surrogate (not storable as UTF-8) replaced."""
    if not isinstance(value, str):
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def epoch_ts(value: Any) -> str | None:
    """Seconds since the epoch (ChatGPT) as ledger-format UTC text; None when absent or absurd."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    try:
        return _utc_text(datetime.fromtimestamp(value, UTC))
    except (OverflowError, OSError, ValueError):
        return None


def iso_ts(value: Any) -> str | None:
    """ISO-8601 text (Claude) as ledger-format UTC text; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:  # the exports write UTC; a bare time is taken as UTC too
            moment = moment.replace(tzinfo=UTC)
        return _utc_text(moment.astimezone(UTC))
    except (OverflowError, ValueError):
        return None


def _utc_text(moment: datetime) -> str | None:
    return moment.strftime(TS_FORMAT) if moment.year >= 1000 else None  # keep the width fixed


