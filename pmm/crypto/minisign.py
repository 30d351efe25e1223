"""minisign signatures (prehashed ``ED``), byte-compatible with ``minisign -V``.

A signature file is four lines::

    untrusted comment: <free text, not signed>
    base64("ED" || key id (8) || Ed25519(BLAKE2b-512(message)))
    trusted comment: <text>
    base64(Ed25519(signature || trusted comment))

The second signature makes the trusted comment tamper-evident; pmm puts the checkpoint in it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pmm import errors
from pmm.crypto import keys

PREHASHED = b"ED"
UNTRUSTED = "untrusted comment: "
TRUSTED = "trusted comment: "
MAX_TRUSTED = 8192  # minisign's limit on a trusted comment


@dataclass(frozen=True)
class Signature:
    key_id: bytes
    signature: bytes
    trusted_comment: str
    global_signature: bytes


def sign(key: Ed25519PrivateKey, message: bytes, trusted_comment: str, untrusted_comment: str) -> str:
    if "\n" in trusted_comment or "\n" in untrusted_comment or len(trusted_comment) > MAX_TRUSTED:
        raise ValueError("comments are single lines")
    kid = keys.public_of(key).key_id
    signature = key.sign(_prehash(message))
    global_signature = key.sign(signature + trusted_comment.encode())
    return (f"{UNTRUSTED}{untrusted_comment}\n"
            f"{base64.b64encode(PREHASHED + kid + signature).decode()}\n"
            f"{TRUSTED}{trusted_comment}\n"
            f"{base64.b64encode(global_signature).decode()}\n")


def parse(text: str) -> Signature:
    """The parts of a minisign signature file; a damaged one raises ``IntegrityError``."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != 4 or not lines[0].startswith(UNTRUSTED) or not lines[2].startswith(TRUSTED):
        raise errors.IntegrityError("the signature file is damaged: it is not a minisign signature "
                                    "(four lines: comment, signature, trusted comment, signature)")
    blob = _b64(lines[1], "signature")
    if len(blob) != 74:
        raise errors.IntegrityError("the signature file is damaged: the signature line is cut or padded")
    if blob[:2] != PREHASHED:
        raise errors.IntegrityError(
            f"unsupported minisign algorithm {blob[:2]!r}: pmm signs and verifies prehashed (ED) signatures")
    global_signature = _b64(lines[3], "trusted comment signature")
    if len(global_signature) != 64:
        raise errors.IntegrityError("the signature file is damaged: the trusted comment's signature is cut")
    return Signature(blob[2:10], blob[10:], lines[2][len(TRUSTED):], global_signature)


def verify_comment(public: keys.PublicKey, sig: Signature) -> None:
    """The signature was made by ``public`` and its trusted comment is as signed."""
    if sig.key_id != public.key_id:
        raise errors.IntegrityError(
            f"signed with another key: the signature names key {keys.key_id_text(sig.key_id)}, "
            f"the public key is {public.key_id_text}")
    if not public.verify(sig.global_signature, sig.signature + sig.trusted_comment.encode()):
        raise errors.IntegrityError("the trusted comment was edited or its signature is damaged")


def verify_message(public: keys.PublicKey, sig: Signature, message: bytes) -> None:
    if not public.verify(sig.signature, _prehash(message)):
        raise errors.IntegrityError("the signature does not match the checkpoint it names")


def _prehash(message: bytes) -> bytes:
    return hashlib.blake2b(message, digest_size=64).digest()


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise errors.IntegrityError(f"the signature file is damaged: the {what} is not base64") from None
