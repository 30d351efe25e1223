"""``pmm import`` of a ChatGPT or Claude data export (its conversations.json, or the .zip the
service sends), and how ``pmm import FILE`` tells the formats apart without ``--format``.

The whole file is read and checked before the mind is opened, and every new session and message
is appended in one transaction, so a bad file writes nothing. Sessions and messages already
imported from the same service (same original id) are skipped: importing a newer export of the
same account adds only what is new. What the ledger cannot hold (an image, a recording, a
regenerated answer the user moved away from) is counted in the result's ``skipped``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pmm.domain import events as ev
from pmm.domain.events import Draft
from pmm.errors import InputRejected, UsageError
from pmm.ledger import lookup
from pmm.services import opening
from pmm.services.chat_import_read import LABELS, ROLE_KINDS, SKIPPED_KINDS, Conversation, items
from pmm.services.portability import ImportResult

IMPORTED_KINDS = (ev.SESSION_STARTED.name, ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)


def import_conversations(path: Path, data: bytes, name: str, fmt: str, *,
                         notify: Callable[[str], None]) -> ImportResult:
    """Parse the export whole, then append what the mind does not hold yet in one transaction."""
    if fmt not in LABELS:
        raise UsageError(f"unknown conversation format {fmt!r}: use chatgpt or claude")
    conversations = read_conversations(data, name, fmt)
    skipped: Counter[str] = Counter()
    for conversation in conversations:
        skipped.update(conversation.skipped)
    counts = {kind: skipped[kind] for kind in SKIPPED_KINDS}
    if path.exists():
        with opening.open_read(path) as mind:
            drafts, present = plan(conversations, fmt, lookup.source_ids(mind, fmt, IMPORTED_KINDS))
            if not drafts:  # nothing new: a writer's open would still touch the file, so don't
                return ImportResult(0, present, False, mind.mind_id, mind.head()[0], fmt, counts)
    created = not path.exists()
    with opening.open_write(path, notify) as mind:
        # planned again on the writer's view, in case another process appended meanwhile
        drafts, present = plan(conversations, fmt, lookup.source_ids(mind, fmt, IMPORTED_KINDS))
        del conversations
        appended = mind.append(drafts) if drafts else []
        head_id = appended[-1].id if appended else mind.head()[0]
        return ImportResult(len(appended), present, created, mind.mind_id, head_id, fmt, counts)


def read_conversations(data: bytes, name: str, fmt: str) -> list[Conversation]:
    """Every conversation that has at least one message, oldest first; raises ``InputRejected``."""
    from pmm.services import chat_import_chatgpt, chat_import_claude

    parse = chat_import_chatgpt.parse if fmt == "chatgpt" else chat_import_claude.parse
    conversations = []
    for number, item in enumerate(items(data, name, LABELS[fmt]), 1):
        if not isinstance(item, dict):
            raise InputRejected(f"{name}: conversation {number} is not a JSON object")
        conversation = parse(item, f"{name}: conversation {number}")
        if conversation.messages:
            conversations.append(conversation)
    conversations.sort(key=lambda c: (c.ts is None, c.ts or ""))  # stable: ties keep file order
    return conversations


def service_of(data: bytes, name: str) -> str:
    """Which service's conversations.json ``data`` (a JSON list) is, from its first conversation."""
    first = next(items(data, name, "ChatGPT or Claude"), None)
    if first is None:
        return "chatgpt"  # an empty list: nothing to import either way
    if isinstance(first, dict):
        if "mapping" in first or "current_node" in first or "conversation_id" in first:
            return "chatgpt"
        if "chat_messages" in first or "uuid" in first:
            return "claude"
    raise InputRejected(f"{name} is a JSON list but not a ChatGPT or Claude conversations.json"
                        " (its first conversation has neither 'mapping' nor 'chat_messages')",
                        hint="name the format with --format jsonl|chatgpt|claude")


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


_SAID = {
    "branch_message": ("message on another branch", "messages on other branches",
                       " (regenerated or edited, not the thread the user kept)"),
    "image": ("image", "images", " (kept as [image: NAME])"),
    "audio": ("voice recording", "voice recordings", " (their transcripts kept)"),
    "file": ("file", "files", " (kept as [file: NAME]; the export holds no content)"),
    "system_or_tool": ("system or tool message", "system or tool messages", ""),
    "other": ("part of an unknown kind", "parts of unknown kinds", ""),
}


def skipped_line(skipped: dict[str, int]) -> str | None:
    """``Left out: 2 messages on other branches (...), 1 image (...)``, or None for nothing."""
    said = []
    for kind in SKIPPED_KINDS:
        count = skipped.get(kind, 0)
        if count:
            one, many, note = _SAID[kind]
            said.append(f"{count:,} {one if count == 1 else many}{note}")
    return "Left out: " + ", ".join(said) if said else None
