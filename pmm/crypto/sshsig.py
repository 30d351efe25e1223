"""SSH signatures (SSHSIG, as ``ssh-keygen -Y sign`` makes them) over Ed25519 keys.

Verifiable with ``ssh-keygen -Y verify -n NAMESPACE``. The signed blob is
``"SSHSIG" || string(namespace) || string("") || string("sha512") || string(SHA-512(message))``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pmm import errors
from pmm.crypto import keys

MAGIC = b"SSHSIG"
VERSION = 1
HASH = "sha512"
KEY_TYPE = b"ssh-ed25519"
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"


def sign(key: Ed25519PrivateKey, message: bytes, namespace: str) -> str:
    """The armored signature, wrapped at 70 columns like ssh-keygen's."""
    raw_public = keys.public_of(key).raw
    signature = key.sign(_signed_blob(namespace, message))
    blob = (MAGIC + struct.pack(">I", VERSION) + _string(_string(KEY_TYPE) + _string(raw_public))
            + _string(namespace.encode()) + _string(b"") + _string(HASH.encode())
            + _string(_string(KEY_TYPE) + _string(signature)))
    body = base64.b64encode(blob).decode()
    lines = [body[i:i + 70] for i in range(0, len(body), 70)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def verify(public: keys.PublicKey, armored: str, message: bytes, namespace: str) -> None:
    """Raise ``IntegrityError`` unless ``armored`` is ``public``'s signature of ``message``."""
    begin, end = armored.find(BEGIN), armored.find(END)
    if begin < 0 or end < begin:
        raise errors.IntegrityError("the signature file is damaged: no complete SSH SIGNATURE block")
    try:
        blob = base64.b64decode("".join(armored[begin + len(BEGIN):end].split()), validate=True)
    except (binascii.Error, ValueError):
        raise errors.IntegrityError("the signature file is damaged: the SSH signature is not base64") from None
    reader = _Reader(blob)
    if reader.take(6) != MAGIC or reader.uint32() != VERSION:
        raise errors.IntegrityError("the signature file is damaged: not an SSHSIG version 1 signature")
    key_blob = _Reader(reader.string())
    if key_blob.string() != KEY_TYPE:
        raise errors.IntegrityError("the SSH signature is not made with an Ed25519 key")
    signer = key_blob.string()
    signed_namespace = reader.string().decode(errors="replace")
    reader.string()  # reserved
    hash_name = reader.string().decode(errors="replace")
    sig_blob = _Reader(reader.string())
    if sig_blob.string() != KEY_TYPE:
        raise errors.IntegrityError("the SSH signature is not an Ed25519 signature")
    signature = sig_blob.string()
    if signed_namespace != namespace:
        raise errors.IntegrityError(f"the SSH signature is for namespace {signed_namespace!r}, not {namespace!r}")
    if hash_name != HASH:
        raise errors.IntegrityError(f"unsupported SSH signature hash {hash_name!r}")
    if signer != public.raw:
        raise errors.IntegrityError("signed with another key: the SSH signature names a different key")
    if not public.verify(signature, _signed_blob(namespace, message)):
        raise errors.IntegrityError("the SSH signature does not match the checkpoint it names")


def _signed_blob(namespace: str, message: bytes) -> bytes:
    return (MAGIC + _string(namespace.encode()) + _string(b"") + _string(HASH.encode())
            + _string(hashlib.sha512(message).digest()))


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise errors.IntegrityError("the signature file is damaged: the SSH signature is cut")
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())
