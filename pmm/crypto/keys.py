"""Ed25519 keys: make one, write it as PEM, read private and public keys in the formats people
already have (PEM from ``pmm keygen`` or ``openssl genpkey``, OpenSSH, minisign public keys)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pmm import errors

Passphrase = Callable[[], bytes]
MINISIGN_KEY_ALG = b"Ed"


@dataclass(frozen=True)
class PublicKey:
    raw: bytes  # the 32-byte Ed25519 public key
    kid: bytes = b""  # a minisign key id read from a minisign public key file

    @property
    def key_id(self) -> bytes:
        """minisign's 8-byte key id. pmm derives it from the key, so every copy of a pmm key in
        any format names the same id; a minisign key file keeps the (random) id it carries."""
        return self.kid or key_id(self.raw)

    @property
    def key_id_text(self) -> str:
        return key_id_text(self.key_id)

    def verify(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def key_id(raw_public: bytes) -> bytes:
    return hashlib.blake2b(raw_public, digest_size=8).digest()


def key_id_text(kid: bytes) -> str:
    """How minisign prints a key id: the little-endian 64-bit number in upper-case hex."""
    return kid[::-1].hex().upper()


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_of(key: Ed25519PrivateKey) -> PublicKey:
    return PublicKey(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw))


def private_pem(key: Ed25519PrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def public_pem(public: PublicKey) -> bytes:
    return Ed25519PublicKey.from_public_bytes(public.raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def minisign_public(public: PublicKey) -> str:
    blob = base64.b64encode(MINISIGN_KEY_ALG + public.key_id + public.raw).decode()
    return f"untrusted comment: minisign public key {public.key_id_text}\n{blob}\n"


def openssh_public(public: PublicKey, comment: str = "pmm") -> str:
    line = Ed25519PublicKey.from_public_bytes(public.raw).public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}\n"


def load_private(data: bytes, name: str, passphrase: Passphrase) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8, encrypted or not) or an OpenSSH private key.
    ``passphrase`` is only called when the key is encrypted."""
    text = data.strip()
    openssh = text.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    if not (openssh or text.startswith(b"-----BEGIN") and b"PRIVATE KEY-----" in text[:60]):
        raise errors.InputRejected(f"{name} is not a PEM or OpenSSH private key",
                                   hint="make one with `pmm keygen`")
    encrypted = b"ENCRYPTED" in text[:60] or (openssh and _openssh_encrypted(text))
    secret = passphrase() if encrypted else None
    key: object
    try:
        if openssh:
            key = serialization.load_ssh_private_key(text, secret)
        else:
            key = serialization.load_pem_private_key(text, secret)
    except TypeError:  # cryptography's "password was not given / key is not encrypted"
        raise errors.InputRejected(f"{name}: cannot read the key (is it encrypted?)") from None
    except ValueError:
        if encrypted:
            raise errors.InputRejected(f"wrong passphrase for {name} (or the key is damaged)") from None
        raise errors.InputRejected(f"{name} is not a readable private key (damaged?)") from None
    except Exception as exc:  # cryptography reports some malformed keys with other types
        raise errors.InputRejected(f"{name} is not a readable private key: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise errors.InputRejected(f"{name} is not an Ed25519 key",
                                   hint="pmm signs with Ed25519: `pmm keygen` or "
                                        "`openssl genpkey -algorithm ed25519`")
    return key


def _openssh_encrypted(text: bytes) -> bool:
    body = b"".join(text.splitlines()[1:-1])
    try:
        blob = base64.b64decode(body)
    except (binascii.Error, ValueError):
        return False
    return b"aes" in blob[:64] or b"bcrypt" in blob[:64]


def load_public(data: bytes, name: str) -> PublicKey:
    """A public key from PEM, a minisign public key file, or an OpenSSH ``ssh-ed25519`` line."""
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise errors.InputRejected(f"{name} is not a public key file (binary data)") from None
    if text.startswith("-----BEGIN PUBLIC KEY-----"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise errors.InputRejected(f"{name}: the PEM public key is damaged") from None
        if not isinstance(key, Ed25519PublicKey):
            raise errors.InputRejected(f"{name} is not an Ed25519 public key")
        return PublicKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    if text.startswith("-----BEGIN") and "PRIVATE KEY" in text[:60]:
        raise errors.InputRejected(f"{name} is a private key; give the public key",
                                   hint="`pmm keygen` wrote it beside the private key (*.pub.pem)")
    if text.startswith("ssh-ed25519 "):
        try:
            key = serialization.load_ssh_public_key(text.encode())
        except (ValueError, TypeError, binascii.Error):
            raise errors.InputRejected(f"{name}: the OpenSSH public key is damaged") from None
        return PublicKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    lines = [line for line in text.splitlines() if not line.startswith("untrusted comment:")]
    if len(lines) == 1:
        try:
            blob = base64.b64decode(lines[0], validate=True)
        except (binascii.Error, ValueError):
            blob = b""
        if len(blob) == 42 and blob[:2] == MINISIGN_KEY_ALG:
            return PublicKey(blob[10:], blob[2:10])
    raise errors.InputRejected(f"{name} is not a public key (PEM, minisign or ssh-ed25519)")
