"""The device's Ed25519 identity: create once (mode 0600), load, sign; public keys and fingerprints.

The private key never leaves :class:`DeviceKey`: its repr shows only the fingerprint, and no function
here prints or logs key material.
"""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.errors import KeyFileError
from agent.evidence.encoding import SIGNATURE_DOMAIN
from agent.evidence.fsutil import display_path, fsync_dir, write_file_durably

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_HEX_PUBLIC_KEY = re.compile(r"[0-9a-fA-F]{64}\Z")


def fingerprint(public_key_raw: bytes) -> str:
    """Hex SHA-256 of the raw 32-byte public key; what every record's ``key`` field carries."""
    return hashlib.sha256(public_key_raw).hexdigest()


def public_key_raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def verify_signature(
    public_key: Ed25519PublicKey, payload: bytes, signature: bytes, domain: bytes = SIGNATURE_DOMAIN
) -> bool:
    """True when ``signature`` is the key's signature over ``domain + payload``.

    The domain is the ledger's record-signature prefix unless another statement (the station's
    acknowledgement) names its own, so a signature of one kind can never pass for the other."""
    try:
        public_key.verify(signature, domain + payload)
    except InvalidSignature:
        return False
    return True


class DeviceKey:
    """A device's signing key. Holds the private key; shows only its fingerprint."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.public_raw = public_key_raw(self.public_key)
        self.fingerprint = fingerprint(self.public_raw)

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> DeviceKey:
        """A deterministic key, for known-answer test files only."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, payload: bytes, domain: bytes = SIGNATURE_DOMAIN) -> bytes:
        return self._private_key.sign(domain + payload)

    def private_pem(self) -> bytes:
        return self._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def __repr__(self) -> str:
        return f"DeviceKey(fingerprint={self.fingerprint[:16]}...)"


def load_device_key(path: Path) -> DeviceKey:
    """Load a private key file, refusing one that others can read."""
    name = display_path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {name}: not found") from None
    except OSError as exc:
        raise KeyFileError(f"key file {name}: cannot read ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {name}: mode {stat.S_IMODE(mode):04o} lets others read it; must be 0600")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"key file {name}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {name}: not an Ed25519 key")
    return DeviceKey(key)


def load_or_create_device_key(path: Path) -> DeviceKey:
    """Load the key at ``path``, creating it (0600, durably, in a 0700 folder) on first use."""
    if path.exists():
        return load_device_key(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = DeviceKey.generate()
        write_file_durably(path, key.private_pem(), mode=0o600, exclusive=True)
        fsync_dir(path.parent)
    except FileExistsError:
        # Another process created it between our check and our write: use theirs.
        return load_device_key(path)
    except OSError as exc:
        raise KeyFileError(f"key file {display_path(path)}: cannot create ({exc.strerror})") from None
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a public key from a PEM file, a file holding 64 hex digits, or a raw 32-byte file."""
    name = display_path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"public key file {name}: not found") from None
    except OSError as exc:
        raise KeyFileError(f"public key file {name}: cannot read ({exc.strerror})") from None
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text)
        except ValueError:
            raise KeyFileError(f"public key file {name}: malformed PEM") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"public key file {name}: not an Ed25519 public key")
        return key
    if _HEX_PUBLIC_KEY.match(text.decode("ascii", "replace")):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode("ascii")))
    if len(data) == PUBLIC_KEY_BYTES:
        return Ed25519PublicKey.from_public_bytes(data)
    raise KeyFileError(f"public key file {name}: not a PEM, hex or raw Ed25519 public key")


def public_key_from_hex(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))

