"""What the station's parts exchange: rows of the index, problem kinds, and messages to publish.

Plain frozen dataclasses, so that the index (SQLite today, PostgreSQL later) and the evidence store (a
folder today, an object store with object lock later) can be swapped without touching the receiver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Problem kinds (docs/sync-protocol.md, "What the station reports"), plus two of the station's own:
# INCONSISTENT is a finding about a record that is genuine and in its place in the chain (signed by the
# enrolled key, right sequence number and link) but whose content the verifier objects to (monotonic time
# going backwards, a second record for a file, ...): it is stored, because it is what the device holds,
# and reported. STATION_FAULT is the station's own storage failing; nothing is acknowledged after it.
GAP = "gap"
FORK = "fork"
BAD_SIGNATURE = "bad-signature"
WRONG_KEY = "wrong-key"
UNKNOWN_DEVICE = "unknown-device"
SPLICED = "spliced"
MALFORMED = "malformed"
BAD_BYTES = "bad-bytes"
LATE_UPLOAD = "late-upload"
REJECTED_MESSAGE = "rejected-message"
INCONSISTENT = "inconsistent"
STATION_FAULT = "station-fault"
# A device's signed health report says "degraded" or "failed": one open problem per device and failing
# check (its object), resolved by the first report in which that check passes.
DEVICE_FAULT = "device-fault"
# A genuine record claims a file larger than the station receives (limits.max_file_bytes): the record is
# stored, the file refused.
OVERSIZED_FILE = "oversized-file"
# A message on which the receiver itself failed (a bug its content triggered): taken out of the batch, kept
# under DATA/set-aside for a person, settled with the broker so it is not redelivered; the rest goes on.
POISON_MESSAGE = "poison-message"
# The station's filesystem is short of limits.min_free_bytes: chunks are refused (devices keep their copies
# and send them again) until space is freed; records, small, are still taken.
STORAGE_LOW = "storage-low"
# At a hello, the device's ledger ends below what the station holds, on the same chain: it was cut back
# (a restored image, a replaced card). Named with both heads; what the station holds stays.
ROLLBACK = "rollback"
# What the station's own check finds (sync/station/overdue.py), on a timer and at every status: each open
# once per device and object, resolved when the condition clears (the file arrives, the device syncs, the
# case closes).
OVERDUE_FILE = "overdue-file"
DEVICE_UNSEEN = "device-unseen"
CASE_OPEN_TOO_LONG = "case-open-too-long"
CASE_INCOMPLETE = "case-incomplete"
CHECK_KINDS = (OVERDUE_FILE, DEVICE_UNSEEN, CASE_OPEN_TOO_LONG, CASE_INCOMPLETE)
# Found by the scrub (sync/station/scrub.py) in evidence the station had stored: a file or ledger line gone
# from the store, or its bytes no longer those stored.
MISSING_EVIDENCE = "missing-evidence"
ALTERED_EVIDENCE = "altered-evidence"
PROBLEM_KINDS = (GAP, FORK, BAD_SIGNATURE, WRONG_KEY, UNKNOWN_DEVICE, SPLICED, MALFORMED, BAD_BYTES, LATE_UPLOAD,
                 REJECTED_MESSAGE, INCONSISTENT, STATION_FAULT, DEVICE_FAULT, OVERSIZED_FILE, POISON_MESSAGE,
                 STORAGE_LOW, ROLLBACK, *CHECK_KINDS, MISSING_EVIDENCE, ALTERED_EVIDENCE)


@dataclass(frozen=True)
class Outgoing:
    """A message for the MQTT layer to publish (QoS 1)."""

    topic: str
    payload: bytes


@dataclass(frozen=True)
class DeviceRow:
    id: str
    public_key: str  # hex of the raw 32-byte Ed25519 key
    fingerprint: str
    enrolled_us: int
    revoked: bool


@dataclass(frozen=True)
class SessionRow:
    device: str
    id: str
    started_us: int
    t1_us: int | None
    t2_us: int | None
    t3_us: int | None
    t4_us: int | None
    offset_us: int | None
    delay_us: int | None
    records: int
    duplicate_records: int
    chunks_written: int
    duplicate_chunks: int
    files_stored: int
    ended_us: int | None


@dataclass(frozen=True)
class ChainHead:
    """The last record stored with nothing missing before it (0 and the genesis link when none), and where
    the device's ledger copy ends after it."""

    seq: int
    link: str
    ledger_bytes: int


@dataclass(frozen=True)
class RecordRow:
    device: str
    seq: int
    link: str
    type: str
    wall_us: int
    case_id: str | None
    stored_us: int
    offset: int  # where its line starts in the device's ledger copy
    length: int  # the line's length, LF included


@dataclass(frozen=True)
class Claim:
    """A file a verified record vouches for, before or after its bytes arrive."""

    device: str
    name: str
    sha256: str
    size: int
    seq: int
    type: str
    wall_us: int


@dataclass(frozen=True)
class FileRow:
    device: str
    name: str
    sha256: str
    size: int
    seq: int
    stored_us: int


@dataclass(frozen=True)
class HealthRow:
    """A device's newest verified health report (by its ``at_wall_us``), parsed, with the line as received."""

    device: str
    at_wall_us: int  # the device's clock (trusted or not: see clock_trusted)
    boot: str
    state: str
    summary: str
    clock_trusted: bool
    checks: list[dict[str, Any]]  # {"name", "ok", "detail"}
    metrics: dict[str, int | float | None]
    line: bytes
    received_us: int  # the station's clock

    def to_dict(self) -> dict[str, Any]:
        return {
            "at_wall_us": self.at_wall_us, "boot": self.boot, "state": self.state, "summary": self.summary,
            "clock_trusted": self.clock_trusted, "checks": self.checks, "metrics": self.metrics,
            "received_us": self.received_us,
        }


@dataclass(frozen=True)
class AssignmentRow:
    """An officer assignment this station signed and the broker took (``bodycam-station assign``)."""

    device: str
    officer: str
    issued_us: int
    serial: str


@dataclass(frozen=True)
class CaseUpdate:
    """What a case-open, stage or case-close record says about a case."""

    device: str
    case_id: str
    seq: int
    type: str
    body: dict[str, Any]


@dataclass(frozen=True)
class CaseStage:
    stage: str
    status: str
    seq: int  # of the stage record


@dataclass(frozen=True)
class CaseRow:
    """A case as the stored records say: opened (its case-open record), its stages, closed or not."""

    device: str
    case_id: str
    procedure: str
    opened_seq: int
    closed_seq: int | None
    missing: tuple[str, ...]  # the stages the case-close record names as missing
    stages: tuple[CaseStage, ...]


@dataclass(frozen=True)
class ProblemRow:
    id: int
    device: str | None
    seq: int | None
    object: str | None
    kind: str
    reason: str
    topic: str | None
    at_us: int
    last_us: int
    repeats: int
    resolved_us: int | None

    @property
    def text(self) -> str:
        """``device cam-1 seq 41: segments/000041.mp4: signature invalid`` (the house style)."""
        parts = [f"device {self.device}" if self.device else "unknown device"]
        if self.seq is not None:
            parts[0] += f" seq {self.seq}"
        if self.object:
            parts.append(self.object)
        parts.append(self.reason)
        return ": ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "device": self.device, "seq": self.seq, "object": self.object, "kind": self.kind,
            "reason": self.reason, "topic": self.topic, "at_us": self.at_us, "last_us": self.last_us,
            "repeats": self.repeats, "resolved_us": self.resolved_us, "text": self.text,
        }
