"""The station's acknowledgement: a signed statement that it verified and durably stored a device's
chain up to a sequence number and the files it names.

It lives in the trust core because both sides judge it: the station signs it, the device verifies it
before recording a receipt in its ledger and before purging anything, and an auditor can re-check the
receipt records. Its signature uses its own domain prefix, so it can never pass for a ledger record's.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.evidence.keys import DeviceKey
from agent.evidence.record import STORE_FILE_PATTERN
from agent.evidence.signed_message import (
    COUNT,
    DEVICE_ID,
    HEX64,
    INTEGER,
    LineForm,
    MessageFormat,
    SignedLine,
    kind,
    list_of,
    object_of,
    text,
)

ACK_VERSION = 1
ACK_DOMAIN = b"bodycam/station/v1/ack\x00"
# An acknowledgement names at most this many files, so that it (and the device's receipt record that
# carries it) stays well below a ledger line's 64 KiB limit.
MAX_ACK_FILES = 64
MAX_ACK_BYTES = 16 * 1024
_SESSION = re.compile(r"[A-Za-z0-9-]{1,64}\Z")
_FILE = object_of({
    "file": text(STORE_FILE_PATTERN, "a store file name"), "sha256": HEX64, "size": COUNT,
})  # fmt: skip
ACK_FORMAT = MessageFormat(
    "ack", ACK_DOMAIN, {"v": ACK_VERSION, "type": "ack"},
    {
        "station": kind("1-64 characters of text", lambda v: isinstance(v, str) and 0 < len(v) <= 64),
        "key": HEX64, "device": DEVICE_ID, "session": text(_SESSION, "[A-Za-z0-9-]{1,64}"), "seq": COUNT,
        "link": HEX64, "wall_us": INTEGER, "files": list_of(_FILE, MAX_ACK_FILES, "files"),
    },
    max_bytes=MAX_ACK_BYTES,
)  # fmt: skip


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

    def body(self) -> dict[str, object]:
        """The signed fields but the header (what the format checks and encodes)."""
        return {
            "station": self.station, "key": self.key, "device": self.device, "session": self.session,
            "seq": self.seq, "link": self.link, "wall_us": self.wall_us, "files": [asdict(f) for f in self.files],
        }  # fmt: skip


@dataclass(frozen=True)
class SignedAck(LineForm):
    ack: Ack
    payload: bytes
    signature: bytes


def sign_ack(ack: Ack, key: DeviceKey) -> SignedAck:
    signed = ACK_FORMAT.sign(ack.body(), key)
    return SignedAck(ack, signed.payload, signed.signature)


def parse_ack(line: bytes) -> SignedAck:
    """Parse an acknowledgement line (format only; see verify_ack for the signature)."""
    parsed = ACK_FORMAT.parse(line)
    value = parsed.value
    files = tuple(AckedFile(item["file"], item["sha256"], item["size"]) for item in value["files"])
    ack = Ack(value["station"], value["key"], value["device"], value["session"], value["seq"], value["link"],
              files, value["wall_us"])
    return SignedAck(ack, parsed.payload, parsed.signature)


def verify_ack(signed: SignedAck, station_key: Ed25519PublicKey, device: str) -> None:
    """Raise VerificationError unless the ack is signed by ``station_key`` and is about ``device``."""
    ACK_FORMAT.verify(SignedLine(signed.ack.body(), signed.payload, signed.signature), station_key, device,
                      what=f"ack for seq {signed.ack.seq}", signer="station key")
