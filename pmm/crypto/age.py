"""Passphrase encryption in the age v1 format (scrypt recipient), so ``age -d`` opens pmm's backups.

Implemented here on ``cryptography`` (the spec: https://age-encryption.org/v1) rather than through
an age library, because the limits must not depend on the machine: rage decides the largest work
factor it will decrypt by timing the machine it runs on, so a backup made on a fast or idle machine
could be refused ("wrong passphrase") on a slow or busy one. pmm encrypts at a fixed work factor
(``WORK_FACTOR``, age's own default) and decrypts any up to ``MAX_WORK_FACTOR`` (age's limit).

The header is checked before any scrypt work: only a single scrypt stanza is accepted, and a work
factor above ``MAX_WORK_FACTOR`` is refused at once instead of costing minutes and gigabytes.
Interoperability with the reference tools is tested both ways (tests/test_backup_and_restore.py).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re

from pmm import errors

MAGIC = b"age-encryption.org/v1\n"
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
WORK_FACTOR = 18  # 2^18 scrypt: about a second and 256 MiB, what age and rage use by default
MAX_WORK_FACTOR = 22  # 2^22 scrypt (4 GiB-seconds of work): age's own default limit
MIN_WORK_FACTOR = 1
CHUNK = 64 * 1024  # STREAM's plaintext chunk
TAG = 16  # ChaCha20-Poly1305's tag
_SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
_STANZA = re.compile(rb"-> (\S+)(?: (\S+))?(?: (\S+))?")
_FOOTER = re.compile(rb"--- ([A-Za-z0-9+/]{43})\n")


def encrypt(plaintext: bytes, passphrase: str, work_factor: int = WORK_FACTOR) -> bytes:
    """``plaintext`` as a binary age file for ``passphrase`` (scrypt at 2^``work_factor``)."""
    if not MIN_WORK_FACTOR <= work_factor <= MAX_WORK_FACTOR:
        raise ValueError(f"work factor {work_factor} out of range")
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    file_key, salt, nonce = os.urandom(16), os.urandom(16), os.urandom(16)
    wrap = _scrypt(passphrase, salt, work_factor)
    body = ChaCha20Poly1305(wrap).encrypt(bytes(12), file_key, None)
    header = MAGIC + b"-> scrypt " + _b64(salt) + b" " + str(work_factor).encode() + b"\n" + _b64(body) + b"\n---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, "sha256").digest()
    payload = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    chunks = [plaintext[i:i + CHUNK] for i in range(0, len(plaintext), CHUNK)] or [b""]
    out = [header, b" ", _b64(mac), b"\n", nonce]
    for index, chunk in enumerate(chunks):
        out.append(payload.encrypt(_chunk_nonce(index, index == len(chunks) - 1), chunk, None))
    return b"".join(out)


def decrypt(ciphertext: bytes, passphrase: str, name: str) -> bytes:
    """The plaintext; a file that is not a passphrase age file, a wrong passphrase or any damage
    raises ``InputRejected`` (exit 6)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    data = _dearmor(ciphertext, name) if ciphertext.lstrip().startswith(ARMOR_BEGIN) else ciphertext
    factor, salt_text = _stanza(data, name)
    damaged = f"{name} is damaged: its age header is malformed"
    lines = data[len(MAGIC):].split(b"\n", 3)
    if len(lines) < 4:
        raise errors.InputRejected(damaged)
    salt = _unb64(salt_text, name)
    body = _unb64(lines[1], name)
    footer = _FOOTER.match(lines[2] + b"\n")
    if len(salt) != 16 or len(body) != 32 or footer is None or len(lines[2]) != 47:
        raise errors.InputRejected(damaged)
    header = data[:len(MAGIC) + len(lines[0]) + len(lines[1]) + 2] + b"---"
    rest = lines[3]
    try:
        file_key = ChaCha20Poly1305(_scrypt(passphrase, salt, factor, name)).decrypt(bytes(12), body, None)
    except InvalidTag:
        raise errors.InputRejected(f"cannot decrypt {name}: wrong passphrase, or the file is damaged") from None
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, "sha256").digest()
    if not hmac.compare_digest(mac, _unb64(footer.group(1), name)):
        raise errors.InputRejected(f"cannot decrypt {name}: its header was altered")
    if len(rest) < 16 + TAG:
        raise errors.InputRejected(f"cannot decrypt {name}: it is truncated")
    payload = ChaCha20Poly1305(_hkdf(file_key, rest[:16], b"payload"))
    sealed = rest[16:]
    step = CHUNK + TAG
    pieces = [sealed[i:i + step] for i in range(0, len(sealed), step)]
    out = []
    try:
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            if len(piece) == TAG and index > 0:
                raise InvalidTag  # an empty last chunk is only allowed for an empty file
            out.append(payload.decrypt(_chunk_nonce(index, last), piece, None))
    except InvalidTag:
        raise errors.InputRejected(f"cannot decrypt {name}: it is damaged or truncated") from None
    return b"".join(out)


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


def work_factor(data: bytes, name: str) -> int:
    """The scrypt work factor (log2 N) of a passphrase-encrypted age file (binary or armored),
    checked."""
    if data.lstrip().startswith(ARMOR_BEGIN):
        data = _dearmor(data, name)
    return _stanza(data, name)[0]


def _stanza(data: bytes, name: str) -> tuple[int, bytes]:
    """The checked work factor and the salt (as written) of a binary age file's one scrypt stanza."""
    if not data.startswith(MAGIC):
        raise errors.InputRejected(f"{name} is not an age-encrypted file",
                                   hint="pmm backups start with 'age-encryption.org/v1'")
    stanza = data[len(MAGIC):].split(b"\n", 1)[0]
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


def _dearmor(data: bytes, name: str) -> bytes:
    body = data.strip()
    if not body.endswith(ARMOR_END):
        raise errors.InputRejected(f"{name} is damaged: its age armor has no end line")
    inner = body[len(ARMOR_BEGIN):-len(ARMOR_END)]
    try:
        return base64.b64decode(b"".join(inner.split()), validate=True)
    except (binascii.Error, ValueError):
        raise errors.InputRejected(f"{name} is damaged: its age armor is not base64") from None
