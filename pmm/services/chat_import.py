"""``pmm import --format chatgpt|claude``: a ChatGPT or Claude data export's conversations.json.

The whole file is read and checked before the mind is opened, and every new session and message
is appended in one transaction, so a bad file writes nothing. Sessions and messages already
imported from the same service (same original id) are skipped: importing a newer export of the
same account adds only what is new.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

from pmm.domain import events as ev
from pmm.domain.events import Draft
from pmm.errors import InputRejected, UsageError
from pmm.ledger import lookup
from pmm.ledger.store import TS_FORMAT
from pmm.services import opening
from pmm.services.portability import ImportResult

LABELS = {"chatgpt": "ChatGPT", "claude": "Claude"}
IMPORTED_KINDS = (ev.SESSION_STARTED.name, ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)
ROLE_KINDS = {"user": ev.MESSAGE_RECEIVED.name, "assistant": ev.RESPONSE_SENT.name}
CLAUDE_ROLES = {"human": "user", "assistant": "assistant"}


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


def import_conversations(path: Path, stream: IO[bytes], name: str, fmt: str, *,
                         notify: Callable[[str], None]) -> ImportResult:
    """Parse the export whole, then append what the mind does not hold yet in one transaction."""
    if fmt not in LABELS:
        raise UsageError(f"unknown conversation format {fmt!r}: use chatgpt or claude")
    conversations = read_conversations(stream, name, fmt)
    if path.exists():
        with opening.open_read(path) as mind:
            drafts, present = plan(conversations, fmt, lookup.source_ids(mind, fmt, IMPORTED_KINDS))
            if not drafts:  # nothing new: a writer's open would still touch the file, so don't
                return ImportResult(0, present, False, mind.mind_id, mind.head()[0])
    created = not path.exists()
    with opening.open_write(path, notify) as mind:
        # planned again on the writer's view, in case another process appended meanwhile
        drafts, present = plan(conversations, fmt, lookup.source_ids(mind, fmt, IMPORTED_KINDS))
        del conversations
        appended = mind.append(drafts) if drafts else []
        head_id = appended[-1].id if appended else mind.head()[0]
        return ImportResult(len(appended), present, created, mind.mind_id, head_id)


def read_conversations(stream: IO[bytes], name: str, fmt: str) -> list[Conversation]:
    """Every conversation that has at least one message, oldest first; raises ``InputRejected``."""
    parse = _chatgpt if fmt == "chatgpt" else _claude
    conversations = []
    for number, item in enumerate(_items(stream, name, LABELS[fmt]), 1):
        if not isinstance(item, dict):
            raise InputRejected(f"{name}: conversation {number} is not a JSON object")
        conversation = parse(item, f"{name}: conversation {number}")
        if conversation.messages:
            conversations.append(conversation)
    conversations.sort(key=lambda c: (c.ts is None, c.ts or ""))  # stable: ties keep file order
    return conversations


def plan(conversations: list[Conversation], source: str, seen: set[tuple[str, str]]
         ) -> tuple[list[Draft], int]:
    """Drafts for what ``seen`` lacks, and how many sessions and messages it already holds.

    ``seen`` holds ("", conversation id) for sessions and (conversation id, message id) for
    messages, as ``Ledger.source_ids`` returns them; it is updated so repeats in the file count once.
    """
    drafts: list[Draft] = []
    present = 0
    for conv in conversations:
        if ("", conv.id) in seen:
            present += 1
        else:
            seen.add(("", conv.id))
            meta: dict[str, Any] = {"source": source, "source_id": conv.id}
            if conv.ts:
                meta["original_ts"] = conv.ts
            if conv.title:
                meta["title"] = conv.title
            drafts.append(Draft(ev.SESSION_STARTED.name, conv.title, meta))
        for msg in conv.messages:
            if (conv.id, msg.id) in seen:
                present += 1
                continue
            seen.add((conv.id, msg.id))
            meta = {"source": source, "source_id": msg.id, "session": conv.id}
            if msg.ts:
                meta["original_ts"] = msg.ts
            if msg.model and msg.role == "assistant":
                meta["model"] = msg.model
            drafts.append(Draft(ROLE_KINDS[msg.role], msg.text, meta))
    return drafts, present


# -- reading the file ----------------------------------------------------------------------------


def _items(stream: IO[bytes], name: str, label: str) -> Iterator[Any]:
    """The elements of the file's top-level JSON list, decoded one at a time.

    Only the text and one raw conversation are held at once: a whole export decoded by
    ``json.loads`` takes about six times the file's size.
    """
    text = _decode(stream.read(), name, label)
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
    if data.startswith(b"PK\x03\x04"):
        raise InputRejected(f"{name} is a zip archive: unzip the {label} export and import its"
                            " conversations.json")
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


def _wrong_format(item: dict[str, Any], fmt: str) -> str:
    """A note for a conversation that looks like the other service's export."""
    if fmt == "chatgpt" and "chat_messages" in item:
        return " (this looks like a Claude export: use --format claude)"
    if fmt == "claude" and "mapping" in item:
        return " (this looks like a ChatGPT export: use --format chatgpt)"
    return ""


def _text(value: Any) -> str:
    """A string from the export, with any lone surrogate (not storable as UTF-8) replaced."""
    if not isinstance(value, str):
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def _epoch_ts(value: Any) -> str | None:
    """Seconds since the epoch (ChatGPT) as ledger-format UTC text; None when absent or absurd."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    try:
        return _utc_text(datetime.fromtimestamp(value, UTC))
    except (OverflowError, OSError, ValueError):
        return None


def _iso_ts(value: Any) -> str | None:
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


# -- ChatGPT ---------------------------------------------------------------------------------------


def _chatgpt(item: dict[str, Any], where: str) -> Conversation:
    conv_id = _text(item.get("id") or item.get("conversation_id"))
    if not conv_id:
        raise InputRejected(f"{where} has no 'id' or 'conversation_id'{_wrong_format(item, 'chatgpt')}")
    mapping = item.get("mapping")
    if not isinstance(mapping, dict):
        raise InputRejected(f"{where} ({conv_id}) has no 'mapping' object"
                            f"{_wrong_format(item, 'chatgpt')}")
    for node_id, node in mapping.items():
        if not isinstance(node, dict):
            raise InputRejected(f"{where} ({conv_id}): mapping node {node_id!r} is not an object")
    messages = []
    for node_id in _chatgpt_thread(mapping, item.get("current_node"), f"{where} ({conv_id})"):
        message = _chatgpt_message(node_id, mapping[node_id].get("message"))
        if message is not None:
            messages.append(message)
    ts = _epoch_ts(item.get("create_time")) or next((m.ts for m in messages if m.ts), None)
    return Conversation(conv_id, _text(item.get("title")), ts, messages)


def _chatgpt_thread(mapping: dict[str, Any], current: Any, where: str) -> list[str]:
    """The node ids from the root down to ``current`` (the branch the user last saw)."""
    if not isinstance(current, str) or current not in mapping:
        current = _latest_leaf(mapping)
    thread: list[str] = []
    visited: set[str] = set()
    node_id = current
    while isinstance(node_id, str) and node_id in mapping:  # a missing parent ends the walk
        if node_id in visited:
            raise InputRejected(f"{where}: the message tree has a cycle at node {node_id!r}")
        visited.add(node_id)
        thread.append(node_id)
        node_id = mapping[node_id].get("parent")
    thread.reverse()
    return thread


def _latest_leaf(mapping: dict[str, Any]) -> str | None:
    """Without a usable ``current_node``: the most recent node that has no children."""
    best: tuple[float, int] | None = None
    best_id = None
    for index, (node_id, node) in enumerate(mapping.items()):
        if node.get("children"):
            continue
        message = node.get("message")
        created = message.get("create_time") if isinstance(message, dict) else None
        key = (created if isinstance(created, (int, float)) and math.isfinite(created) else 0.0, index)
        if best is None or key > best:
            best, best_id = key, node_id
    return best_id


def _chatgpt_message(node_id: str, message: Any) -> Message | None:
    """A user or assistant message with text, or None (system, tool, hidden, no text)."""
    if not isinstance(message, dict):
        return None
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    if role not in ROLE_KINDS:
        return None
    metadata = message.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    if metadata.get("is_visually_hidden_from_conversation") is True:
        return None  # e.g. the custom-instructions preamble
    if role == "assistant" and message.get("recipient", "all") != "all":
        return None  # a call to a tool (python, browser, dalle), not an answer to the user
    content = message.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return None
    text = "\n".join(_text(p) for p in parts if isinstance(p, str) and p)
    if not text.strip():
        return None
    model = _text(metadata.get("model_slug")) or None
    return Message(_text(message.get("id")) or _text(node_id), role, text,
                   _epoch_ts(message.get("create_time")), model)


# -- Claude ----------------------------------------------------------------------------------------


def _claude(item: dict[str, Any], where: str) -> Conversation:
    conv_id = _text(item.get("uuid"))
    if not conv_id:
        raise InputRejected(f"{where} has no 'uuid'{_wrong_format(item, 'claude')}")
    chat = item.get("chat_messages")
    if not isinstance(chat, list):
        raise InputRejected(f"{where} ({conv_id}) has no 'chat_messages' list"
                            f"{_wrong_format(item, 'claude')}")
    conv_model = _text(item.get("model")) or None
    messages = []
    for number, raw in enumerate(chat, 1):
        if not isinstance(raw, dict):
            raise InputRejected(f"{where} ({conv_id}): message {number} is not a JSON object")
        msg_id = _text(raw.get("uuid"))
        if not msg_id:
            raise InputRejected(f"{where} ({conv_id}): message {number} has no 'uuid'")
        sender = raw.get("sender")
        role = CLAUDE_ROLES.get(sender) if isinstance(sender, str) else None
        text = _claude_text(raw)
        if role is None or not text.strip():
            continue
        model = _text(raw.get("model")) or conv_model
        messages.append(Message(msg_id, role, text, _iso_ts(raw.get("created_at")), model))
    ts = _iso_ts(item.get("created_at")) or next((m.ts for m in messages if m.ts), None)
    return Conversation(conv_id, _text(item.get("name")), ts, messages)


def _claude_text(message: dict[str, Any]) -> str:
    """The text blocks of ``content`` when there are blocks (``text`` holds placeholders for
    tool use there), else the older exports' ``text``."""
    blocks = message.get("content")
    if isinstance(blocks, list) and blocks:
        texts = (_text(b.get("text")) for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        return "\n\n".join(t for t in texts if t)
    return _text(message.get("text"))
