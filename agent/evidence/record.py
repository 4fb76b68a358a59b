"""Ledger records: the fields every record carries, the bodies of each type, and the line format.

A ledger line is ``payload TAB signature-hex LF``; the payload is the canonical encoding of the record
and the signature covers exactly those bytes (see docs/ledger-format.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.errors import EncodingError, RecordFormatError
from agent.evidence.encoding import (
    FORMAT_VERSION,
    MAX_LINE_BYTES,
    MAX_SAFE_INTEGER,
    canonical_json,
    has_type,
    is_hex64,
    is_integer,
    parse_canonical_json,
    record_link,
)

SIGNATURE_HEX_CHARS = 128
DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
BOOT_ID_PATTERN = re.compile(r"[0-9a-f-]{1,64}\Z")
# A stored file is named relative to the store root, below one of these folders, without "..".
# The largest file a record may vouch for and a device may offer (docs/sync-protocol.md): far above any
# segment a device makes (50 Mbit/s for 600 s is 3.75 GB), far below what a filesystem refuses (ext4: 16
# TiB). A station's own limit (limits.max_file_bytes) is at most this.
MAX_FILE_BYTES = 64 * 1024**3
STORE_FILE_PATTERN = re.compile(r"(segments|quarantine)/[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SEGMENT_FILE = re.compile(r"segments/[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_QUARANTINE_FILE = re.compile(r"quarantine/[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_HEX64 = "hex64"

# Required body fields per record type: name -> expected kind. Extra body fields are allowed so that a
# later version can add information without breaking an older verifier; these are the ones checked.
BODY_FIELDS: dict[str, dict[str, Any]] = {
    # The first record of every daemon start; carries the public key so a store describes itself.
    "boot": {"public_key": _HEX64, "software": str, "reason": str},
    # A torn tail found at open, moved aside into quarantine/ rather than deleted.
    "recovery": {"offset": int, "length": int, "sha256": _HEX64, "file": _QUARANTINE_FILE},
    # A closed segment file: its hash and size.
    "segment": {"file": _SEGMENT_FILE, "sha256": _HEX64, "size": int},
    # A segment file found at open without its record (a crash between the file and its record):
    # recorded so it is not lost, and marked as recovered rather than recorded in the normal way.
    "recovered": {"file": _SEGMENT_FILE, "sha256": _HEX64, "size": int, "reason": str},
    # The bytes of an open segment file written since the previous checkpoint (about one GOP), signed
    # so that at most about a second of footage is ever unsigned.
    "checkpoint": {"file": _SEGMENT_FILE, "offset": int, "length": int, "sha256": _HEX64, "frames": int},
    # An interval with no footage that should have had some (a crash or power loss while recording).
    "gap": {"from_wall_us": int, "to_wall_us": int, "reason": str},
    # Recording stopped cleanly because the storage reached its floor or a write failed.
    "storage-full": {"free_bytes": int, "reason": str},
    # Something that happened (button press, bookmark, warning); ``kind`` says what.
    "event": {"kind": str},
    # A segment deleted after the station acknowledged it; the file named must have a segment record.
    "purge": {"file": _SEGMENT_FILE, "sha256": _HEX64, "reason": str},
    # The station's signed acknowledgement (``ack``: its line, payload TAB signature, as received) that it
    # verified and stored this chain up to ``seq`` and the files whose hashes are in ``files``.
    "receipt": {"station": str, "station_key": _HEX64, "seq": int, "link": _HEX64, "files": list, "ack": str},
    # The field workflow (agent/workflow/): a case opened with a procedure profile (its stage list rides along
    # in ``stages``), each stage done or skipped, the case closed with the required stages it lacks.
    "case-open": {"case_id": str, "procedure": str, "officer": str},
    "stage": {"case_id": str, "stage": str, "status": str, "officer": str},
    "case-close": {"case_id": str, "officer": str, "missing": list},
    # The stop guard: the reason confirmed before a recording stopped inside a case (code 0: free text).
    "stop-reason": {"case_id": str, "code": int, "reason": str, "officer": str},
    # Footage (and the case in ``case_id``, when one is open) flagged for a retention class (art. 19).
    "retention": {"retention_class": str, "reason": str, "officer": str},
}
RECORD_TYPES = frozenset(BODY_FIELDS)
# The groups of record types that readers of a ledger (the device's custody, the uploader, the station)
# share; one definition each so that a new type is added to every reader at once.
# A segment file in segments/: closed in the normal way or found at open without its record. Footage.
SEGMENT_TYPES = ("segment", "recovered")
# A body naming a file in the store that the station must receive: footage and torn tails in quarantine/.
FILE_RECORD_TYPES = (*SEGMENT_TYPES, "recovery")
# The field workflow's records of a case.
CASE_TYPES = ("case-open", "stage", "case-close")
# What the incremental readers of a ledger (agent/evidence/follower.py) keep in memory: the records their
# decisions read; checkpoints, the bulk of a ledger, are not kept. Custody's purge decisions; the uploader
# also offers torn tails (``recovery``).
CUSTODY_KEPT_TYPES = frozenset({*SEGMENT_TYPES, "receipt", "purge", "retention", "case-open", "case-close"})
UPLOAD_KEPT_TYPES = CUSTODY_KEPT_TYPES | {"recovery"}
# An officer id (``device.officer``, the workflow's ``officer_id``, a station's assignment) is at most this long.
MAX_OFFICER_CHARS = 64


def officer_problem(officer: object) -> str | None:
    """Why ``officer`` is not a usable officer id, or None: non-empty printable text of 1-64 characters."""
    if not isinstance(officer, str):
        return "the officer id must be text"
    if not officer.strip() or not officer.isprintable() or len(officer) > MAX_OFFICER_CHARS:
        return f"the officer id {officer[:80]!r} is not printable text of 1-{MAX_OFFICER_CHARS} characters"
    return None


HEADER_FIELDS: dict[str, type] = {
    "v": int,
    "seq": int,
    "prev": str,
    "type": str,
    "device": str,
    "key": str,
    "wall_us": int,
    "mono_us": int,
    "boot": str,
    "body": dict,
}


@dataclass(frozen=True)
class Record:
    """One ledger record before signing."""

    seq: int
    prev: str
    type: str
    device: str
    key: str
    wall_us: int
    mono_us: int
    boot: str
    body: Mapping[str, Any] = field(default_factory=dict)

    def to_payload(self) -> bytes:
        return canonical_json(
            {
                "v": FORMAT_VERSION,
                "seq": self.seq,
                "prev": self.prev,
                "type": self.type,
                "device": self.device,
                "key": self.key,
                "wall_us": self.wall_us,
                "mono_us": self.mono_us,
                "boot": self.boot,
                "body": dict(self.body),
            }
        )


@dataclass(frozen=True)
class SignedRecord:
    """A record as it stands in the ledger: its exact payload bytes and signature."""

    record: Record
    payload: bytes
    signature: bytes

    @property
    def link(self) -> str:
        return record_link(self.payload)

    @property
    def seq(self) -> int:
        return self.record.seq

    def to_line(self) -> bytes:
        return self.payload + b"\t" + self.signature.hex().encode("ascii") + b"\n"


def validate_record_fields(record: Record) -> None:
    """Raise RecordFormatError when a header field or the body of a known type is wrong."""
    if not DEVICE_ID_PATTERN.match(record.device):
        raise RecordFormatError(f"device id {record.device!r} is not [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    if record.seq < 1:
        raise RecordFormatError(f"seq {record.seq} is below 1")
    if not is_hex64(record.prev):
        raise RecordFormatError("prev is not 64 lowercase hex digits")
    if not is_hex64(record.key):
        raise RecordFormatError("key is not 64 lowercase hex digits")
    if not BOOT_ID_PATTERN.match(record.boot):
        raise RecordFormatError(f"boot id {record.boot!r} is malformed")
    if record.wall_us < 0 or record.mono_us < 0:
        raise RecordFormatError("times must not be negative")
    if record.type not in BODY_FIELDS:
        raise RecordFormatError(f"unknown record type {record.type!r}")
    for name, kind in BODY_FIELDS[record.type].items():
        _check_body_field(record.type, record.body, name, kind)


def _check_body_field(rtype: str, body: Mapping[str, Any], name: str, kind: Any) -> None:
    where = f"{rtype} body field {name!r}"
    if name not in body:
        raise RecordFormatError(f"{where} is missing")
    value = body[name]
    if kind == _HEX64:
        ok = is_hex64(value)
    elif isinstance(kind, re.Pattern):
        ok = isinstance(value, str) and bool(kind.match(value))
    elif kind is int:
        ok = is_integer(value) and 0 <= value <= MAX_SAFE_INTEGER
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise RecordFormatError(f"{where} has a wrong value")


def parse_line(line: bytes) -> SignedRecord:
    """Parse one ledger line (with or without its LF); raise RecordFormatError saying what is wrong."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if len(line) + 1 > MAX_LINE_BYTES:
        raise RecordFormatError(f"line is longer than {MAX_LINE_BYTES} bytes")
    payload, tab, sig_hex = line.rpartition(b"\t")
    if not tab:
        raise RecordFormatError("no tab between payload and signature")
    if len(sig_hex) != SIGNATURE_HEX_CHARS or not re.fullmatch(rb"[0-9a-f]+", sig_hex):
        raise RecordFormatError("signature is not 128 lowercase hex digits")
    try:
        value = parse_canonical_json(payload)
    except EncodingError as exc:
        raise RecordFormatError(str(exc)) from None
    if not isinstance(value, dict):
        raise RecordFormatError("payload is not a JSON object")
    if set(value) != set(HEADER_FIELDS):
        missing = sorted(set(HEADER_FIELDS) - set(value))
        extra = sorted(set(value) - set(HEADER_FIELDS))
        raise RecordFormatError(f"payload fields wrong (missing {missing}, unexpected {extra})")
    for name, kind in HEADER_FIELDS.items():
        if not has_type(value[name], kind):
            raise RecordFormatError(f"field {name!r} has the wrong type")
    if value["v"] != FORMAT_VERSION:
        raise RecordFormatError(f"format version {value['v']} is not {FORMAT_VERSION}")
    record = Record(
        seq=value["seq"],
        prev=value["prev"],
        type=value["type"],
        device=value["device"],
        key=value["key"],
        wall_us=value["wall_us"],
        mono_us=value["mono_us"],
        boot=value["boot"],
        body=value["body"],
    )
    validate_record_fields(record)
    return SignedRecord(record=record, payload=payload, signature=bytes.fromhex(sig_hex.decode("ascii")))
