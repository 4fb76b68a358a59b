"""The station's acknowledgement: a signed statement that it verified and durably stored a device's
chain up to a sequence number and the files it names.

It lives in the trust core because both sides judge it: the station signs it, the device verifies it
before recording a receipt in its ledger and before purging anything, and an auditor can re-check the
receipt records. Its signature uses its own domain prefix, so it can never pass for a ledger record's.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import RecordFormatError, VerificationError
from agent.evidence.encoding import canonical_json, is_hex64
from agent.evidence.keys import DeviceKey, fingerprint, public_key_raw, verify_signature
from agent.evidence.record import DEVICE_ID_PATTERN, STORE_FILE_PATTERN
from agent.evidence.signed_line import parse_signed_line

ACK_VERSION = 1
ACK_DOMAIN = b"bodycam/station/v1/ack\x00"
# An acknowledgement names at most this many files, so that it (and the device's receipt record that
# carries it) stays well below a ledger line's 64 KiB limit.
MAX_ACK_FILES = 64
MAX_ACK_BYTES = 16 * 1024
_SESSION = re.compile(r"[A-Za-z0-9-]{1,64}\Z")
_FIELDS = frozenset({"v", "type", "station", "key", "device", "session", "seq", "link", "wall_us", "files"})


def _check(ok: bool, where: str, item: Any) -> None:
    if not ok:
        raise RecordFormatError(f"{where}: {str(item)[:80]!r} is not valid")


def _is_count(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool) and item >= 0


@dataclass(frozen=True)
class AckedFile:
    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Ack:
    """The station's signed statement: it verified and durably stored the device's chain up to ``seq``
    (whose link is ``link``) and the files listed. Sent as ``payload TAB signature-hex LF`` like a ledger
    line; the signature (Ed25519, station key) covers ACK_DOMAIN + payload."""

    station: str
    key: str  # fingerprint of the station's public key
    device: str
    session: str
    seq: int
    link: str
    files: tuple[AckedFile, ...]
    wall_us: int

    def to_payload(self) -> bytes:
        return canonical_json({
            "v": ACK_VERSION, "type": "ack", "station": self.station, "key": self.key, "device": self.device,
            "session": self.session, "seq": self.seq, "link": self.link, "wall_us": self.wall_us,
            "files": [asdict(f) for f in self.files],
        })


@dataclass(frozen=True)
class SignedAck:
    ack: Ack
    payload: bytes
    signature: bytes

    def to_line(self) -> bytes:
        return self.payload + b"\t" + self.signature.hex().encode("ascii") + b"\n"


def sign_ack(ack: Ack, key: DeviceKey) -> SignedAck:
    if len(ack.files) > MAX_ACK_FILES:
        raise RecordFormatError(f"ack: {len(ack.files)} files, more than the {MAX_ACK_FILES} allowed")
    payload = ack.to_payload()
    return SignedAck(ack, payload, key.sign(payload, domain=ACK_DOMAIN))


def parse_ack(line: bytes) -> SignedAck:
    """Parse an acknowledgement line (format only; see verify_ack for the signature)."""
    parsed = parse_signed_line(line, "ack", MAX_ACK_BYTES, _FIELDS)
    value = parsed.value
    _check(value["v"] == ACK_VERSION and value["type"] == "ack", "ack: fields 'v'/'type'", value["type"])
    _check(isinstance(value["station"], str) and 0 < len(value["station"]) <= 64, "ack: field 'station'",
           value["station"])
    _check(is_hex64(value["key"]), "ack: field 'key'", value["key"])
    _check(isinstance(value["device"], str) and bool(DEVICE_ID_PATTERN.match(value["device"])),
           "ack: field 'device'", value["device"])
    _check(isinstance(value["session"], str) and bool(_SESSION.match(value["session"])), "ack: field 'session'",
           value["session"])
    _check(_is_count(value["seq"]), "ack: field 'seq'", value["seq"])
    _check(is_hex64(value["link"]), "ack: field 'link'", value["link"])
    _check(isinstance(value["wall_us"], int) and not isinstance(value["wall_us"], bool), "ack: field 'wall_us'",
           value["wall_us"])
    _check(isinstance(value["files"], list), "ack: field 'files'", value["files"])
    files = []
    for index, item in enumerate(value["files"]):
        where = f"ack: files[{index}]"
        if not isinstance(item, dict) or set(item) != {"file", "sha256", "size"}:
            raise RecordFormatError(f"{where}: not an object with file, sha256 and size")
        _check(isinstance(item["file"], str) and bool(STORE_FILE_PATTERN.match(item["file"])), f"{where}.file",
               item["file"])
        _check(is_hex64(item["sha256"]), f"{where}.sha256", item["sha256"])
        _check(_is_count(item["size"]), f"{where}.size", item["size"])
        files.append(AckedFile(item["file"], item["sha256"], item["size"]))
    if len(files) > MAX_ACK_FILES:
        raise RecordFormatError(f"ack: {len(files)} files, more than the {MAX_ACK_FILES} allowed")
    ack = Ack(value["station"], value["key"], value["device"], value["session"], value["seq"], value["link"],
              tuple(files), value["wall_us"])
    return SignedAck(ack, parsed.payload, parsed.signature)


def verify_ack(signed: SignedAck, station_key: Ed25519PublicKey, device: str) -> None:
    """Raise VerificationError unless the ack is signed by ``station_key`` and is about ``device``."""
    if signed.ack.key != fingerprint(public_key_raw(station_key)):
        what = f"ack for seq {signed.ack.seq}"
        raise VerificationError(f"{what}: signed by another station key ({signed.ack.key[:16]}...)")
    if not verify_signature(station_key, signed.payload, signed.signature, domain=ACK_DOMAIN):
        raise VerificationError(f"ack for seq {signed.ack.seq}: signature invalid")
    if signed.ack.device != device:
        raise VerificationError(f"ack for seq {signed.ack.seq}: about device {signed.ack.device!r}, not {device!r}")
