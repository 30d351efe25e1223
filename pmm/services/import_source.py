"""What ``pmm import FILE`` was given: a pmm JSONL export, a ChatGPT or Claude conversations.json,
or the .zip a service sends (its conversations.json read in memory: a member's path never
names a file here, and its size is bounded against zip bombs). ``import_any`` picks the importer.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pmm.errors import InputRejected
from pmm.services.portability import ImportResult, Progress

if TYPE_CHECKING:
    from zipfile import ZipFile, ZipInfo

SNIFF_LIMIT = 1 << 20  # leading whitespace read to find the first character, at most
MAX_MEMBER = 512 << 20  # a conversations.json inside a zip, uncompressed, at most 512 MiB
MAX_RATIO = 30  # and at most 30:1 past RATIO_FROM (JSON deflates 5-10:1): a small zip cannot fill memory
RATIO_FROM = 8 << 20
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_WHITESPACE = b" \t\r\n"


def sniff(stream: IO[bytes]) -> tuple[str, IO[bytes]]:
    """``("zip" | "json" | "jsonl", stream)``: a zip archive, a JSON list (a service's
    conversations.json), or anything else (a pmm JSONL, or what its reader refuses). The stream
    returned reads from the start: the same one when it can seek, else a replay of it."""
    head = b""
    while len(head) < SNIFF_LIMIT:
        chunk = stream.read(4096)
        if not chunk:
            break
        head += chunk
        if head.removeprefix(b"\xef\xbb\xbf").lstrip(_WHITESPACE):
            break
    try:
        seekable = stream.seekable()
    except (AttributeError, OSError):
        seekable = False
    if seekable:
        stream.seek(0)
        replay = stream
    else:
        replay = io.BufferedReader(_Replay(head, stream))
    if head.startswith(_ZIP_MAGIC):
        return "zip", replay
    if head.removeprefix(b"\xef\xbb\xbf").lstrip(_WHITESPACE).startswith(b"["):
        return "json", replay
    return "jsonl", replay


class _Replay(io.RawIOBase):
    """The bytes already read from a pipe, then the rest of the pipe."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def conversations_in_zip(stream: IO[bytes], name: str) -> bytes:
    """The conversations.json of a ChatGPT or Claude .zip export, read in memory, bounded."""
    import shutil
    import tempfile
    import zipfile
    import zlib

    with tempfile.TemporaryFile() as spooled:
        try:
            seekable = stream.seekable()
        except (AttributeError, OSError):
            seekable = False
        if not seekable:
            shutil.copyfileobj(stream, spooled, 1 << 20)
            spooled.seek(0)
            stream = spooled
        try:
            with zipfile.ZipFile(stream) as archive:
                member = _member(archive, name)
                return _read_member(archive, member, name)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
            raise InputRejected(f"{name} is not a readable zip archive ({exc})") from None


def _member(archive: ZipFile, name: str) -> ZipInfo:
    found = [info for info in archive.infolist() if not info.is_dir()
             and info.filename.replace("\\", "/").rsplit("/", 1)[-1] == "conversations.json"]
    if len(found) > 1:  # the export's own is at the top; one in a folder is something else's
        found = [info for info in found if "/" not in info.filename.replace("\\", "/")] or found
    if not found:
        raise InputRejected(f"{name} is a zip archive without a conversations.json",
                            hint="import a ChatGPT or Claude data export (.zip or its"
                                 " conversations.json), or a pmm JSONL export")
    if len(found) > 1:
        raise InputRejected(f"{name} holds {len(found)} files named conversations.json: which one"
                            " is the export is not clear",
                            hint="unzip it and import the conversations.json you mean")
    return found[0]


def _read_member(archive: ZipFile, info: ZipInfo, name: str) -> bytes:
    if info.flag_bits & 0x1:
        raise InputRejected(f"{name}: its conversations.json is encrypted")
    too_big = InputRejected(
        f"{name}: its conversations.json would unpack to more than {MAX_MEMBER >> 20} MiB"
        f" or {MAX_RATIO} times its packed size (a zip bomb?)",
        hint="unzip it with a tool you trust and import the conversations.json")
    if info.file_size > MAX_MEMBER or (info.file_size > RATIO_FROM
                                       and info.file_size > MAX_RATIO * max(info.compress_size, 1)):
        raise too_big
    chunks, total = [], 0
    with archive.open(info) as member:  # the declared sizes may lie: count what comes out
        while chunk := member.read(1 << 20):
            total += len(chunk)
            if total > MAX_MEMBER or (total > RATIO_FROM
                                      and total > MAX_RATIO * max(info.compress_size, 1)):
                raise too_big
            chunks.append(chunk)
    return b"".join(chunks)


def import_any(path: Path, stream: IO[bytes], name: str, fmt: str | None, *,
               notify: Callable[[str], None], on_progress: Progress | None = None) -> ImportResult:
    """Import ``stream`` as ``fmt`` (jsonl, chatgpt, claude), or as what it is when ``fmt`` is None."""
    from pmm.services import chat_import, portability

    kind, stream = sniff(stream)
    if fmt == "jsonl" or (fmt is None and kind == "jsonl"):
        return portability.import_pmm(path, stream, name, notify=notify, on_progress=on_progress)
    data = conversations_in_zip(stream, name) if kind == "zip" else stream.read()
    if fmt is None:
        fmt = chat_import.service_of(data, name)
    return chat_import.import_conversations(path, data, name, fmt, notify=notify)
