"""Passphrase encryption in the age format (through pyrage), so ``age -d`` opens pmm's backups.

The header is checked before pyrage sees the file: only a single scrypt stanza is accepted, and a
work factor above ``MAX_WORK_FACTOR`` is refused at once instead of costing minutes and gigabytes.
"""

from __future__ import annotations

import base64
import binascii
import re

from pmm import errors

MAGIC = b"age-encryption.org/v1\n"
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
MAX_WORK_FACTOR = 22  # 2^22 scrypt (4 GiB-seconds of work): age's own default limit
_STANZA = re.compile(rb"-> (\S+)(?: (\S+))?(?: (\S+))?")


def encrypt(plaintext: bytes, passphrase: str) -> bytes:
    import pyrage

    return bytes(pyrage.passphrase.encrypt(plaintext, passphrase))


def decrypt(ciphertext: bytes, passphrase: str, name: str) -> bytes:
    """The plaintext; a file that is not a passphrase age file, a wrong passphrase or any damage
    raises ``InputRejected`` (exit 6)."""
    import pyrage

    data = _dearmor(ciphertext, name) if ciphertext.lstrip().startswith(ARMOR_BEGIN) else ciphertext
    work_factor(data, name)
    try:
        return bytes(pyrage.passphrase.decrypt(data, passphrase))
    except pyrage.DecryptError:
        raise errors.InputRejected(f"cannot decrypt {name}: wrong passphrase, or the file is damaged") from None
    except Exception as exc:  # pyrage raises plain exceptions for malformed headers
        raise errors.InputRejected(f"cannot decrypt {name}: {exc}") from None


def work_factor(data: bytes, name: str) -> int:
    """The scrypt work factor (log2 N) of a passphrase-encrypted age file, checked."""
    if not data.startswith(MAGIC):
        raise errors.InputRejected(f"{name} is not an age-encrypted file",
                                   hint="pmm backups start with 'age-encryption.org/v1'")
    stanza = data[len(MAGIC):].split(b"\n", 1)[0]
    match = _STANZA.fullmatch(stanza)
    if match is None:
        raise errors.InputRejected(f"{name} is damaged: its age header is malformed")
    kind, _salt, factor = match.groups()
    if kind != b"scrypt":
        raise errors.InputRejected(
            f"{name} is encrypted to a {kind.decode(errors='replace')} recipient, not with a passphrase",
            hint="decrypt it with age and your identity file, then restore the plain file")
    if factor is None or not factor.isdigit() or factor != str(int(factor)).encode():
        raise errors.InputRejected(f"{name} is damaged: its scrypt work factor is malformed")
    value = int(factor)
    if value > MAX_WORK_FACTOR:
        raise errors.InputRejected(
            f"{name} asks for an scrypt work factor of 2^{value}, above the limit of 2^{MAX_WORK_FACTOR}",
            hint="pmm refuses it rather than spend minutes and gigabytes; a pmm backup uses less")
    return value


def _dearmor(data: bytes, name: str) -> bytes:
    body = data.strip()
    if not body.endswith(ARMOR_END):
        raise errors.InputRejected(f"{name} is damaged: its age armor has no end line")
    inner = body[len(ARMOR_BEGIN):-len(ARMOR_END)]
    try:
        return base64.b64decode(b"".join(inner.split()), validate=True)
    except (binascii.Error, ValueError):
        raise errors.InputRejected(f"{name} is damaged: its age armor is not base64") from None
