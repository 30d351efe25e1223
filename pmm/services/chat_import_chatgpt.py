"""A ChatGPT conversation: the thread the user last saw (``current_node``) of its message tree,
with images, voice and files kept as their text or a placeholder, and what was left out counted."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from pmm.errors import InputRejected
from pmm.services.chat_import_read import ROLE_KINDS, Conversation, Message, epoch_ts, text_of, wrong_format

_AUDIO_PARTS = ("audio_asset_pointer", "real_time_user_audio_video_asset_pointer")


def parse(item: dict[str, Any], where: str) -> Conversation:
    conv_id = text_of(item.get("id") or item.get("conversation_id"))
    if not conv_id:
        raise InputRejected(f"{where} has no 'id' or 'conversation_id'{wrong_format(item, 'chatgpt')}")
    mapping = item.get("mapping")
    if not isinstance(mapping, dict):
        raise InputRejected(f"{where} ({conv_id}) has no 'mapping' object"
                            f"{wrong_format(item, 'chatgpt')}")
    for node_id, node in mapping.items():
        if not isinstance(node, dict):
            raise InputRejected(f"{where} ({conv_id}): mapping node {node_id!r} is not an object")
    skipped: Counter[str] = Counter()
    thread = _thread(mapping, item.get("current_node"), f"{where} ({conv_id})")
    on_thread = set(thread)
    for node_id, node in mapping.items():
        if node_id not in on_thread and _is_chat(node.get("message")):
            skipped["branch_message"] += 1  # a regenerated answer or an edited question not chosen
    messages = []
    for node_id in thread:
        message = _message(node_id, mapping[node_id].get("message"), skipped)
        if message is not None:
            messages.append(message)
    ts = epoch_ts(item.get("create_time")) or next((m.ts for m in messages if m.ts), None)
    return Conversation(conv_id, text_of(item.get("title")), ts, messages, skipped)


def _thread(mapping: dict[str, Any], current: Any, where: str) -> list[str]:
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


def _role(message: dict[str, Any]) -> str | None:
    """The author's role, when it is text (a hostile file may make it anything)."""
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    return role if isinstance(role, str) else None


def _is_chat(message: Any) -> bool:
    """Whether a node holds something the user or the assistant said (not system, tool, hidden)."""
    if not isinstance(message, dict) or _role(message) not in ROLE_KINDS:
        return False
    metadata = message.get("metadata")
    if isinstance(metadata, dict) and metadata.get("is_visually_hidden_from_conversation") is True:
        return False
    return not (_role(message) == "assistant" and message.get("recipient", "all") != "all")


def _message(node_id: str, message: Any, skipped: Counter[str]) -> Message | None:
    """A user or assistant message (its text, and placeholders for what cannot be kept), or None
    for a system, tool or hidden message (counted in ``skipped``) or one with nothing in it."""
    if not isinstance(message, dict):
        return None
    if not _is_chat(message):
        if _role(message) is not None:
            skipped["system_or_tool"] += 1
        return None
    metadata = message.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    content = message.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):  # reasoning ("thoughts"), code for a tool: not an answer
        skipped["system_or_tool"] += 1
        return None
    names = _attachment_names(metadata)
    pieces, used = [], set()
    transcribed = any(isinstance(p, dict) and p.get("content_type") == "audio_transcription"
                      for p in parts)
    for part in parts:
        if isinstance(part, str):
            if part:
                pieces.append(text_of(part))
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("content_type")
        if kind == "audio_transcription":
            if text := text_of(part.get("text")):
                pieces.append(text)
        elif kind == "image_asset_pointer":
            file_id = _pointer_id(part.get("asset_pointer"))
            used.add(file_id)
            pieces.append(f"[image: {names.get(file_id) or file_id or 'image'}]")
            skipped["image"] += 1
        elif kind in _AUDIO_PARTS:
            skipped["audio"] += 1  # the recording itself; its transcription is the text
            if not transcribed:
                pieces.append("[audio]")
        else:
            skipped["other"] += 1
    for file_id, name in names.items():
        if file_id not in used:
            pieces.append(f"[file: {name}]")
            skipped["file"] += 1
    text = "\n".join(pieces)
    role = _role(message)
    if not text.strip() or role is None:
        return None
    model = text_of(metadata.get("model_slug")) or None
    return Message(text_of(message.get("id")) or text_of(node_id), role, text,
                   epoch_ts(message.get("create_time")), model)


def _attachment_names(metadata: dict[str, Any]) -> dict[str, str]:
    """File id -> file name for the files attached to a message (images among them)."""
    found: dict[str, str] = {}
    attachments = metadata.get("attachments")
    for attachment in attachments if isinstance(attachments, list) else []:
        if isinstance(attachment, dict):
            file_id = text_of(attachment.get("id"))
            name = " ".join(text_of(attachment.get("name")).split())
            if file_id or name:
                found[file_id or name] = name or file_id
    return found


def _pointer_id(pointer: Any) -> str:
    """``file-service://file-XYZ`` or ``sediment://file_XYZ`` -> the file id."""
    text = text_of(pointer)
    return " ".join(text.rsplit("/", 1)[-1].split())
