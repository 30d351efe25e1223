"""Age passphrase files made here with a small scrypt work factor, for tests that need a backup
file but not the cost of one: `pyrage.passphrase.encrypt` picks a work factor that takes about
a second on an idle machine (tens of seconds on a loaded one), and the restore pays it again.

The format is age v1 (https://age-encryption.org/v1): one scrypt stanza wrapping the file key,
the header MAC, then the STREAM payload. test_hostile_storage_is_refused.py checks that
pyrage (rage, the reference's sibling) opens what this writes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CHUNK = 64 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def seal(data: bytes, passphrase: str, log_n: int = 10) -> bytes:
    """``data`` encrypted to ``passphrase`` as an age file whose scrypt work factor is 2^log_n."""
    file_key, salt, nonce = os.urandom(16), os.urandom(16), os.urandom(16)
    wrap_key = hashlib.scrypt(passphrase.encode(), salt=b"age-encryption.org/v1/scrypt" + salt,
                              n=2**log_n, r=8, p=1, dklen=32, maxmem=2**30)
    body = ChaCha20Poly1305(wrap_key).encrypt(b"\x00" * 12, file_key, None)
    header = f"age-encryption.org/v1\n-> scrypt {_b64(salt)} {log_n}\n{_b64(body)}\n---".encode()
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    stream = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    payload = b"".join(
        stream.encrypt(i.to_bytes(11, "big") + (b"\x01" if i == len(chunks) - 1 else b"\x00"), chunk, None)
        for i, chunk in enumerate(chunks))
    return header + b" " + _b64(mac).encode() + b"\n" + nonce + payload
