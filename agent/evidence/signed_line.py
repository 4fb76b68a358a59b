"""A signed one-line message outside the ledger: ``payload TAB signature-hex`` (LF), the payload canonical JSON.

The station's acknowledgement and officer assignment and the device's health report share this form; each
signs under a domain of its own (so none can pass for another or for a ledger record) and checks its own
fields. This is the part they share: the size cap, the split, the signature's spelling (128 lowercase hex
digits, as in a ledger line), the canonical parse and the exact set of fields. Every refusal is a
RecordFormatError that starts with the message's name (``what``).
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from agent.errors import EncodingError, RecordFormatError
from agent.evidence.encoding import parse_canonical_json

_SIGNATURE_HEX = re.compile(rb"[0-9a-f]{128}\Z")


@dataclass(frozen=True)
class SignedLine:
    value: dict[str, Any]  # the payload's object, holding exactly the expected fields
    payload: bytes
    signature: bytes


def parse_signed_line(
    line: bytes, what: str, max_bytes: int, fields: Set[str], *, one_line: bool = False
) -> SignedLine:
    """Split and parse ``line`` (format only: the caller verifies the signature under its domain).

    The final LF is optional, unless ``one_line``: then the line must be exactly one line ending in LF."""
    if len(line) > max_bytes:
        raise RecordFormatError(f"{what}: {len(line)} bytes, more than the {max_bytes} allowed")
    if one_line and (not line.endswith(b"\n") or b"\n" in line[:-1]):
        raise RecordFormatError(f"{what}: not exactly one line ending in LF")
    body = line[:-1] if line.endswith(b"\n") else line
    payload, tab, sig_hex = body.rpartition(b"\t")
    if not tab or len(sig_hex) != 128:
        raise RecordFormatError(f"{what}: not 'payload TAB signature-hex'")
    if not _SIGNATURE_HEX.match(sig_hex):
        raise RecordFormatError(f"{what}: signature is not hex (128 lowercase digits)")
    try:
        value = parse_canonical_json(payload)
    except EncodingError as exc:
        raise RecordFormatError(f"{what}: {exc}") from None
    if not isinstance(value, dict):
        raise RecordFormatError(f"{what}: not a JSON object")
    if set(value) != fields:
        odd = sorted(set(value) ^ fields)[0]
        raise RecordFormatError(f"{what}: field {odd!r} is {'unknown' if odd in value else 'missing'}")
    return SignedLine(value, payload, bytes.fromhex(sig_hex.decode("ascii")))
