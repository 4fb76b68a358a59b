"""What the custody tests (test_custody.py, test_custody_view.py) share: the device, its keys, signed acks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from helpers import seeded_key

from agent.evidence.ack import Ack, AckedFile, SignedAck, sign_ack
from agent.evidence.keys import DeviceKey
from agent.evidence.record import SignedRecord

DEVICE = "dev-0001"
KEY = seeded_key(1)
STATION = seeded_key(9)
IMPOSTOR = seeded_key(10)  # another station's key
HOUR_US = 3_600_000_000


def ack_of(
    target: SignedRecord, files: Iterable[AckedFile], *, signer: DeviceKey = STATION, key: DeviceKey = STATION,
    device: str = DEVICE, link: str | None = None,
) -> SignedAck:
    """An ack of record ``target`` (its link unless ``link``) naming ``files``, signed by ``signer`` as ``key``."""
    ack = Ack("station-1", key.fingerprint, device, "session-1", target.seq, link or target.link, tuple(files),
              1_800_000_000_000_000)
    return sign_ack(ack, signer)


def flip_byte(path: Path, at: int, mask: int) -> bytes:
    """Change the byte at ``at`` of a (read-only) file in place; returns the new content."""
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[at] ^= mask
    path.write_bytes(bytes(data))
    return bytes(data)
