"""A Claude conversation: the active thread of its messages (``parent_message_uuid`` followed
back from the newest leaf, so a regenerated or edited sibling is left out), with attachments'
extracted text kept under their file names and files recorded as placeholders."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pmm.errors import InputRejected
from pmm.services.chat_import_read import Conversation, Message, iso_ts, text_of, wrong_format

ROLES = {"human": "user", "assistant": "assistant"}


def parse(item: dict[str, Any], where: str) -> Conversation:
    conv_id = text_of(item.get("uuid"))
    if not conv_id:
        raise InputRejected(f"{where} has no 'uuid'{wrong_format(item, 'claude')}")
    chat = item.get("chat_messages")
    if not isinstance(chat, list):
        raise InputRejected(f"{where} ({conv_id}) has no 'chat_messages' list"
                            f"{wrong_format(item, 'claude')}")
    for number, raw in enumerate(chat, 1):
        if not isinstance(raw, dict):
            raise InputRejected(f"{where} ({conv_id}): message {number} is not a JSON object")
        if not text_of(raw.get("uuid")):
            raise InputRejected(f"{where} ({conv_id}): message {number} has no 'uuid'")
    skipped: Counter[str] = Counter()
    thread = _thread(chat, item.get("current_leaf_message_uuid"), f"{where} ({conv_id})")
    skipped["branch_message"] += len(chat) - len(thread)
    conv_model = text_of(item.get("model")) or None
    messages = []
    for raw in thread:
        sender = raw.get("sender")
        role = ROLES.get(sender) if isinstance(sender, str) else None
        if role is None:
            skipped["system_or_tool"] += 1
            continue
        text = _text(raw, skipped)
        if not text.strip():
            continue
        model = text_of(raw.get("model")) or conv_model
        messages.append(Message(text_of(raw["uuid"]), role, text, iso_ts(raw.get("created_at")), model))
    ts = iso_ts(item.get("created_at")) or next((m.ts for m in messages if m.ts), None)
    return Conversation(conv_id, text_of(item.get("name")), ts, messages, skipped)


def _thread(chat: list[dict[str, Any]], current: Any, where: str) -> list[dict[str, Any]]:
    """The active thread, root first. Without ``parent_message_uuid`` on every message (older
    exports) the list is the thread; else the walk starts at ``current_leaf_message_uuid`` when
    the export names one, else at the newest message that no other message answers."""
    by_id = {text_of(m["uuid"]): m for m in chat}
    parents = [m.get("parent_message_uuid") for m in chat]
    if not chat or not all(isinstance(p, str) for p in parents):
        return chat
    leaf_id = text_of(current) if text_of(current) in by_id else None
    if leaf_id is None:
        answered = set(parents)
        leaves = [(iso_ts(m.get("created_at")) or "", index, text_of(m["uuid"]))
                  for index, m in enumerate(chat) if text_of(m["uuid"]) not in answered]
        if not leaves:  # every message answers another: a cycle, caught below
            leaves = [("", 0, text_of(chat[0]["uuid"]))]
        leaf_id = max(leaves)[2]
    thread: list[dict[str, Any]] = []
    seen: set[str] = set()
    node: str | None = leaf_id
    while node is not None and node in by_id:  # the root's parent (all zeros) ends the walk
        if node in seen:
            raise InputRejected(f"{where}: parent_message_uuid makes a cycle at message {node!r}")
        seen.add(node)
        thread.append(by_id[node])
        parent = by_id[node].get("parent_message_uuid")
        node = parent if isinstance(parent, str) else None
    thread.reverse()
    return thread


def _text(message: dict[str, Any], skipped: Counter[str]) -> str:
    """The message's text, then each attachment's extracted text under its file name, then a
    placeholder for each file whose content the export does not hold."""
    pieces = [_body(message, skipped)]
    attachments = message.get("attachments")
    for attachment in attachments if isinstance(attachments, list) else []:
        if not isinstance(attachment, dict):
            continue
        name = _name(attachment) or "attachment"
        extracted = text_of(attachment.get("extracted_content"))
        if extracted.strip():
            pieces.append(f"[attachment: {name}]\n{extracted}")
        else:
            pieces.append(f"[file: {name}]")
            skipped["file"] += 1
    seen: set[str] = set()
    for key in ("files_v2", "files"):  # newer exports list a file in both (v2 says its kind)
        files = message.get(key)
        for file in files if isinstance(files, list) else []:
            if not isinstance(file, dict):
                continue
            name = _name(file) or "file"
            ident = text_of(file.get("file_uuid")) or name
            if ident in seen or name in seen:
                continue
            seen.update((ident, name))
            kind = "image" if file.get("file_kind") == "image" else "file"
            pieces.append(f"[{kind}: {name}]")
            skipped[kind] += 1
    return "\n\n".join(p for p in pieces if p)


def _name(entry: dict[str, Any]) -> str:
    return " ".join(text_of(entry.get("file_name")).split())


def _body(message: dict[str, Any], skipped: Counter[str]) -> str:
    """The text blocks of ``content`` when there are blocks (``text`` holds placeholders for
    tool use there), else the older exports' ``text``."""
    blocks = message.get("content")
    if isinstance(blocks, list) and blocks:
        texts = []
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "text":
                texts.append(text_of(block.get("text")))
            elif isinstance(block, dict):
                skipped["system_or_tool"] += 1  # tool use and results, thinking
        return "\n\n".join(t for t in texts if t)
    return text_of(message.get("text"))
