"""Passphrase encryption in the age v1 format (scrypt recipient), so ``age -d`` opens pmm's backups.

Implemented here on ``cryptography`` (the spec: https://age-encryption.org/v1) rather than through
an age library, because the limits must not depend on the machine: rage decides the largest work
factor it will decrypt by timing the machine it runs on, so a backup made on a fast or idle machine
could be refused ("wrong passphrase") on a slow or busy one. pmm encrypts at a fixed work factor
(``WORK_FACTOR``, age's own default) and decrypts any up to ``MAX_WORK_FACTOR`` (age's limit).

Both ways stream: the payload is age's STREAM (ChaCha20-Poly1305 over 64 KiB chunks, the last
one flagged), so ``Sealer.encrypt_file`` and ``Sealed.decrypt_into`` hold two chunks at a time
whatever the size of the mind (a binary age file or an ASCII-armored one, decoded as it is read).

The header is checked before any scrypt work: only a single scrypt stanza is accepted, and a work
factor above ``MAX_WORK_FACTOR`` is refused at once instead of costing minutes and gigabytes.
Interoperability with the reference tools is tested both ways (tests/test_backup_and_restore.py).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import os
import re
from collections.abc import Callable
from typing import IO, Protocol

from pmm import errors

MAGIC = b"age-encryption.org/v1\n"
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
WORK_FACTOR = 18  # 2^18 scrypt: about a second and 256 MiB, what age and rage use by default
MAX_WORK_FACTOR = 22  # 2^22 scrypt (4 GiB-seconds of work): age's own default limit
MIN_WORK_FACTOR = 1
CHUNK = 64 * 1024  # STREAM's plaintext chunk
TAG = 16  # ChaCha20-Poly1305's tag
NONCE = 16  # the payload key's nonce, right after the header
_SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
_STANZA = re.compile(rb"-> (\S+)(?: (\S+))?(?: (\S+))?")
_FOOTER = re.compile(rb"--- ([A-Za-z0-9+/]{43})")
_LINE = 1024  # longer than any stanza line pmm can name (a scrypt one is 36 bytes)
_WHITESPACE = b" \t\r\n\v\f"


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class Sealer:
    """The header of a new age file for ``passphrase`` (scrypt at 2^``work_factor``): the
    scrypt work (about a second, and 256 MiB at 2^18) is done here, so a caller can do it while
    it holds little else in memory. One sealer makes one file (one file key per file)."""

    def __init__(self, passphrase: str, work_factor: int = WORK_FACTOR) -> None:
        if not MIN_WORK_FACTOR <= work_factor <= MAX_WORK_FACTOR:
            raise ValueError(f"work factor {work_factor} out of range")
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        self._key, salt = os.urandom(16), os.urandom(16)
        body = ChaCha20Poly1305(_scrypt(passphrase, salt, work_factor)).encrypt(bytes(12), self._key, None)
        header = MAGIC + b"-> scrypt " + _b64(salt) + b" " + str(work_factor).encode() + b"\n" + _b64(body) + b"\n---"
        mac = hmac.new(_hkdf(self._key, b"", b"header"), header, "sha256").digest()
        self._header: bytes | None = header + b" " + _b64(mac) + b"\n"

    def encrypt_file(self, source: _Readable, sink: IO[bytes]) -> int:
        """Encrypt what ``source`` holds into ``sink``, a chunk at a time; the bytes written."""
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        if self._header is None:
            raise ValueError("a sealer makes one file")
        nonce = os.urandom(NONCE)
        payload = ChaCha20Poly1305(_hkdf(self._key, nonce, b"payload"))
        start, self._header = self._header + nonce, None
        sink.write(start)
        written, chunk, index = len(start), _read_full(source, CHUNK), 0
        while True:
            # a chunk is the last one when nothing follows it: a full one may be last, an empty
            # one only when the whole plaintext is empty
            following = _read_full(source, CHUNK) if len(chunk) == CHUNK else b""
            sealed = payload.encrypt(_chunk_nonce(index, not following), chunk, None)
            sink.write(sealed)
            written += len(sealed)
            if not following:
                return written
            chunk, index = following, index + 1


def encrypt(plaintext: bytes, passphrase: str, work_factor: int = WORK_FACTOR) -> bytes:
    """``plaintext`` as a binary age file for ``passphrase`` (scrypt at 2^``work_factor``)."""
    sink = io.BytesIO()
    Sealer(passphrase, work_factor).encrypt_file(io.BytesIO(plaintext), sink)
    return sink.getvalue()


class Sealed:
    """An age passphrase file (binary or armored) whose header has been read and checked: anything
    that is not such a file, or a work factor above the limit, raises ``InputRejected`` (exit 6)
    here, before any scrypt work. ``unlock`` checks the passphrase, then ``decrypt_into`` reads
    the payload."""

    def __init__(self, source: _Readable, name: str) -> None:
        self.name = name
        self._input, stanza, self.work_factor, salt_text = _begin(source, name)
        body_text, footer_line = self._line(), self._line()
        footer = _FOOTER.fullmatch(footer_line)
        self._salt, self._body = _unb64(salt_text, name), _unb64(body_text, name)
        if len(self._salt) != 16 or len(self._body) != 32 or footer is None:
            raise self._damaged()
        self._header = MAGIC + stanza + b"\n" + body_text + b"\n---"
        self._mac = _unb64(footer.group(1), name)
        self._key: bytes | None = None

    def unlock(self, passphrase: str) -> None:
        """Derive the file key from ``passphrase`` (the scrypt work) and check the header's MAC:
        a wrong passphrase or an altered header raises ``InputRejected`` (exit 6)."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        try:
            key = ChaCha20Poly1305(_scrypt(passphrase, self._salt, self.work_factor, self.name)).decrypt(
                bytes(12), self._body, None)
        except InvalidTag:
            raise errors.InputRejected(f"cannot decrypt {self.name}: wrong passphrase, or the file is damaged") from None
        mac = hmac.new(_hkdf(key, b"", b"header"), self._header, "sha256").digest()
        if not hmac.compare_digest(mac, self._mac):
            raise errors.InputRejected(f"cannot decrypt {self.name}: its header was altered")
        self._key = key

    def decrypt_into(self, write: Callable[[bytes], object]) -> int:
        """Decrypt the payload of an unlocked file, handing each checked chunk (64 KiB, the last
        one shorter) to ``write`` in order; the number of plaintext bytes. A damaged, missing or
        added chunk raises ``InputRejected`` (exit 6): what ``write`` was given before that is
        authentic, but the caller must discard it, since the file is not whole."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        if self._key is None:
            raise ValueError("unlock the file first")
        nonce = self._input.read(NONCE)
        piece = self._input.read(CHUNK + TAG)
        if len(nonce) < NONCE or len(piece) < TAG:
            raise errors.InputRejected(f"cannot decrypt {self.name}: it is truncated")
        payload = ChaCha20Poly1305(_hkdf(self._key, nonce, b"payload"))
        total = index = 0
        try:
            while True:
                following = self._input.read(CHUNK + TAG) if len(piece) == CHUNK + TAG else b""
                last = not following
                if len(piece) < TAG or (last and index > 0 and len(piece) == TAG):
                    raise InvalidTag  # cut inside a tag; an empty last chunk is only for an empty file
                plain = payload.decrypt(_chunk_nonce(index, last), piece, None)
                write(plain)
                total += len(plain)
                if last:
                    return total
                piece, index = following, index + 1
        except InvalidTag:
            raise errors.InputRejected(f"cannot decrypt {self.name}: it is damaged or truncated") from None

    def _line(self) -> bytes:
        line = self._input.readline(_LINE)
        if not line.endswith(b"\n"):
            raise self._damaged()
        return line[:-1]

    def _damaged(self) -> errors.InputRejected:
        return errors.InputRejected(f"{self.name} is damaged: its age header is malformed")


def decrypt(ciphertext: bytes, passphrase: str, name: str) -> bytes:
    """The plaintext; a file that is not a passphrase age file, a wrong passphrase or any damage
    raises ``InputRejected`` (exit 6)."""
    out: list[bytes] = []
    sealed = Sealed(io.BytesIO(ciphertext), name)
    sealed.unlock(passphrase)
    sealed.decrypt_into(out.append)
    return b"".join(out)


def work_factor(data: bytes, name: str) -> int:
    """The scrypt work factor (log2 N) of a passphrase-encrypted age file (binary or armored)
    whose first bytes are ``data`` (its first two lines, at least), checked."""
    return _begin(io.BytesIO(data), name)[2]


def _begin(source: _Readable, name: str) -> tuple[_Input, bytes, int, bytes]:
    """Past the magic line and the stanza line of an age file, binary or armored (the reader
    left there), the stanza line, and its checked work factor and salt (as written)."""
    reader = _Input(source)
    if reader.peek_past_whitespace(len(ARMOR_BEGIN)) == ARMOR_BEGIN:
        reader.skip_whitespace()
        reader.read(len(ARMOR_BEGIN))
        reader = _Input(_Dearmored(reader, name))
    if reader.read(len(MAGIC)) != MAGIC:
        raise errors.InputRejected(f"{name} is not an age-encrypted file",
                                   hint="pmm backups start with 'age-encryption.org/v1'")
    stanza = reader.readline(_LINE)
    if not stanza.endswith(b"\n"):
        raise errors.InputRejected(f"{name} is damaged: its age header is malformed")
    factor, salt = _stanza(stanza[:-1], name)
    return reader, stanza[:-1], factor, salt


def _scrypt(passphrase: str, salt: bytes, factor: int, name: str = "the file") -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    try:
        return Scrypt(salt=_SCRYPT_LABEL + salt, length=32, n=2**factor, r=8, p=1).derive(passphrase.encode("utf-8"))
    except MemoryError:  # 2^22 needs 4 GiB: a file may ask for more than this machine gives
        raise errors.InputRejected(
            f"cannot decrypt {name}: its scrypt work factor 2^{factor} needs {2 ** (factor - 10):,} MiB"
            " of memory, more than this machine gives pmm",
            hint="decrypt it with age on a machine with more memory, then restore the plain file") from None


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info).derive(key)


def _chunk_nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes, name: str) -> bytes:
    """age's base64: standard alphabet, no padding, canonical (one encoding per value)."""
    try:
        value = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        value = None
    if value is None or b"=" in text or _b64(value) != text:
        raise errors.InputRejected(f"{name} is damaged: its age header is malformed")
    return value


def _stanza(stanza: bytes, name: str) -> tuple[int, bytes]:
    """The checked work factor and the salt (as written) of the header's one scrypt stanza line."""
    match = _STANZA.fullmatch(stanza)
    if match is None:
        raise errors.InputRejected(f"{name} is damaged: its age header is malformed")
    kind, salt, factor = match.groups()
    if kind != b"scrypt":
        raise errors.InputRejected(
            f"{name} is encrypted to a {kind.decode(errors='replace')} recipient, not with a passphrase",
            hint="decrypt it with age and your identity file, then restore the plain file")
    if factor is None or not factor.isdigit() or len(factor) > 2 or factor != str(int(factor)).encode():
        raise errors.InputRejected(f"{name} is damaged: its scrypt work factor is malformed")
    value = int(factor)
    if value < MIN_WORK_FACTOR:
        raise errors.InputRejected(f"{name} is damaged: its scrypt work factor is malformed")
    if value > MAX_WORK_FACTOR:
        raise errors.InputRejected(
            f"{name} asks for an scrypt work factor of 2^{value}, above the limit of 2^{MAX_WORK_FACTOR}",
            hint="pmm refuses it rather than spend minutes and gigabytes; a pmm backup uses less")
    return value, salt or b""


def _read_full(source: _Readable, size: int) -> bytes:
    """``size`` bytes of ``source``, fewer only at its end (a pipe may return less per read)."""
    data = source.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    left = size - len(data)
    while left and (more := source.read(left)):
        parts.append(more)
        left -= len(more)
    return b"".join(parts)


class _Input:
    """Exact reads and bounded line reads over a stream, with a little look-ahead."""

    def __init__(self, source: _Readable) -> None:
        self._source = source
        self._ahead = b""

    def read(self, size: int) -> bytes:
        if self._ahead:
            data, self._ahead = self._ahead[:size], self._ahead[size:]
            return data + self._fill(size - len(data)) if len(data) < size else data
        return self._fill(size)

    def _fill(self, size: int) -> bytes:
        return _read_full(self._source, size) if size else b""

    def readline(self, limit: int) -> bytes:
        """Up to and including the next newline, or ``limit`` bytes if none comes sooner."""
        line = b""
        while len(line) < limit:
            chunk = self.read(min(64, limit - len(line)))
            if not chunk:
                break
            end = chunk.find(b"\n")
            if end >= 0:
                self._ahead = chunk[end + 1:] + self._ahead
                return line + chunk[:end + 1]
            line += chunk
        return line

    def peek_past_whitespace(self, size: int) -> bytes:
        """The first ``size`` bytes after any leading whitespace, without consuming anything
        (armor may follow blank lines; a binary file starts at once)."""
        while True:
            stripped = self._ahead.lstrip(_WHITESPACE)
            if len(stripped) >= size or len(self._ahead) > 1 << 20:
                return stripped[:size]
            more = self._fill(4096)
            if not more:
                return stripped[:size]
            self._ahead += more

    def skip_whitespace(self) -> None:
        """Drop the whitespace ``peek_past_whitespace`` looked past."""
        self._ahead = self._ahead.lstrip(_WHITESPACE)


class _Dearmored:
    """age's ASCII armor (``age -a``) decoded as it is read: base64 lines between the BEGIN and
    END lines, whitespace anywhere, nothing but whitespace after the END line."""

    def __init__(self, source: _Input, name: str) -> None:
        self._source, self._name = source, name
        self._text = b""  # base64 not yet decoded (fewer than 4 characters between reads)
        self._decoded = b""
        self._ended = self._padded = False

    def read(self, size: int) -> bytes:
        while len(self._decoded) < size and not self._ended:
            self._decode(self._source.read(1 << 16))
        data, self._decoded = self._decoded[:size], self._decoded[size:]
        return data

    def _decode(self, block: bytes) -> None:
        if not block:
            raise errors.InputRejected(f"{self._name} is damaged: its age armor has no end line")
        end = block.find(b"-")  # not in base64's alphabet: the END line begins
        if end >= 0:
            self._finish(block[end:])
            block = block[:end]
        text = self._text + block.translate(None, _WHITESPACE)
        whole = len(text) - len(text) % 4 if end < 0 else len(text)
        self._text = text[whole:]
        if not whole:
            return
        if self._padded:  # base64 after the padding that ends it
            raise self._not_base64()
        try:
            self._decoded += base64.b64decode(text[:whole], validate=True)
        except (binascii.Error, ValueError):
            raise self._not_base64() from None
        self._padded = text[:whole].endswith(b"=")

    def _finish(self, tail: bytes) -> None:
        """The END line, then nothing but whitespace to the end of the file."""
        while len(tail) < len(ARMOR_END) and (more := self._source.read(1 << 10)):
            tail += more
        if not tail.startswith(ARMOR_END):
            raise errors.InputRejected(f"{self._name} is damaged: its age armor has no end line")
        rest = tail[len(ARMOR_END):]
        while rest:
            if rest.strip(_WHITESPACE):
                raise errors.InputRejected(f"{self._name} is damaged: something follows its age armor's end line")
            rest = self._source.read(1 << 16)
        self._ended = True

    def _not_base64(self) -> errors.InputRejected:
        return errors.InputRejected(f"{self._name} is damaged: its age armor is not base64")
