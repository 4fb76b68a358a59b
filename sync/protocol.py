"""The contract between a device's uploader and the station's receiver: topics, messages, size limits.

Everything here is pure (no IO) and shared by both sides; docs/sync-protocol.md is the normative text.

Topics, for a device ``D`` (its MQTT user name is its certificate's common name, which the broker's ACL
binds to ``bodycam/D/...``; the station still checks every record's signature and never trusts a topic):

    bodycam/D/up/hello     device -> station  JSON Hello: opens a sync session, first clock stamp (t1)
    bodycam/D/up/clock     device -> station  JSON ClockReport: t1..t4 of the hello exchange
    bodycam/D/up/records   device -> station  raw ledger lines (one or more, consecutive, byte-exact)
    bodycam/D/up/file      device -> station  JSON FileOffer: "which bytes of this file do you have?"
    bodycam/D/up/chunk     device -> station  chunk header (canonical JSON) + LF + the chunk's bytes
    bodycam/D/up/done      device -> station  JSON Done: every record up to head_seq has been sent
    bodycam/D/up/health    device -> station  the agent's signed health report line (RETAINED; see
                                              agent/health/report.py), forwarded byte-exact
    bodycam/D/down/hello   station -> device  JSON HelloReply: t1..t3 and the stored watermark
    bodycam/D/down/file    station -> device  JSON FileStatus: ranges the station holds, or stored
    bodycam/D/down/ack     station -> device  signed acknowledgement line (see Ack)
    bodycam/D/down/error   station -> device  JSON ErrorNotice: why a message was rejected
    bodycam/D/down/assignment station -> device  the station's signed officer assignment line (RETAINED; see
                                              agent/evidence/assignment.py)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.errors import EncodingError, ProtocolError
from agent.evidence.ack import MAX_ACK_FILES, Ack, AckedFile, SignedAck, parse_ack, sign_ack, verify_ack
from agent.evidence.encoding import GENESIS_PREV, canonical_json, has_type, is_hex64, is_integer, parse_canonical_json

# The sizes the configuration checks against too live in the core (agent/evidence/limits.py); named here as
# part of the contract.
from agent.evidence.limits import MAX_CHUNK_HEADER_BYTES as MAX_CHUNK_HEADER_BYTES
from agent.evidence.limits import PUBLISH_OVERHEAD_BYTES as PUBLISH_OVERHEAD_BYTES
from agent.evidence.record import DEVICE_ID_PATTERN, MAX_FILE_BYTES, STORE_FILE_PATTERN

PROTOCOL_VERSION = 1
TOPIC_ROOT = "bodycam"
UP_KINDS = ("hello", "clock", "records", "file", "chunk", "done", "health")
# Published retained (the broker keeps the newest per device): a station that subscribes later still gets it.
RETAINED_UP_KINDS = ("health",)
DOWN_KINDS = ("hello", "file", "ack", "error", "assignment")
# Published retained by the station: a device that connects later still gets the newest one.
RETAINED_DOWN_KINDS = ("assignment",)

# A control message (everything but records and chunks) is small; anything larger is refused unread.
MAX_CONTROL_BYTES = 64 * 1024
_SESSION = re.compile(r"[A-Za-z0-9-]{1,64}\Z")


def up_topic(device: str, kind: str) -> str:
    return f"{TOPIC_ROOT}/{device}/up/{kind}"


def down_topic(device: str, kind: str) -> str:
    return f"{TOPIC_ROOT}/{device}/down/{kind}"


def up_subscription() -> str:
    """What the station subscribes to: every device's upload topics."""
    return f"{TOPIC_ROOT}/+/up/#"


def down_subscription(device: str) -> str:
    return f"{TOPIC_ROOT}/{device}/down/#"


@dataclass(frozen=True)
class Topic:
    device: str
    direction: str  # "up" or "down"
    kind: str


def parse_topic(topic: str) -> Topic:
    """Split a topic into device, direction and kind; refuse anything outside the contract."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT or parts[2] not in ("up", "down"):
        raise ProtocolError(f"topic {topic!r}: not bodycam/<device>/up|down/<kind>")
    device, direction, kind = parts[1], parts[2], parts[3]
    if not DEVICE_ID_PATTERN.match(device):
        raise ProtocolError(f"topic {topic!r}: device id {device!r} is not allowed")
    if kind not in (UP_KINDS if direction == "up" else DOWN_KINDS):
        raise ProtocolError(f"topic {topic!r}: unknown message kind {kind!r}")
    return Topic(device, direction, kind)


# ---------------------------------------------------------------- JSON messages


def _decode_object(payload: bytes, what: str, limit: int = MAX_CONTROL_BYTES) -> dict[str, Any]:
    if len(payload) > limit:
        raise ProtocolError(f"{what}: {len(payload)} bytes, more than the {limit} allowed")
    try:
        value = parse_canonical_json(payload)
    except EncodingError as exc:
        raise ProtocolError(f"{what}: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: not a JSON object")
    return value


def _fields(value: Mapping[str, Any], what: str, spec: Mapping[str, Any]) -> None:
    """Check that ``value`` has exactly the fields of ``spec`` (name -> kind) and the protocol version."""
    if value.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"{what}: field 'v': {value.get('v')!r} is not protocol version {PROTOCOL_VERSION}")
    expected = {"v", *spec}
    extra = sorted(set(value) - expected)
    if extra:
        raise ProtocolError(f"{what}: unknown field {extra[0]!r}")
    for name, kind in spec.items():
        if name not in value:
            raise ProtocolError(f"{what}: field {name!r} is missing")
        _check_kind(value[name], kind, f"{what}: field {name!r}")


def _check_kind(item: Any, kind: Any, where: str) -> None:
    ok: bool
    if kind == "hex64":
        ok = is_hex64(item)
    elif kind == "count":
        ok = is_integer(item) and item >= 0
    elif kind == "file_size":
        ok = is_integer(item) and 0 <= item <= MAX_FILE_BYTES
    elif kind == "session":
        ok = isinstance(item, str) and bool(_SESSION.match(item))
    elif kind == "file":
        ok = isinstance(item, str) and bool(STORE_FILE_PATTERN.match(item))
    elif kind == "ranges":
        ok = isinstance(item, list) and all(
            isinstance(r, list) and len(r) == 2 and all(is_integer(n) and n >= 0 for n in r) for r in item)
    else:
        ok = has_type(item, kind)
    if not ok and kind == "file_size" and isinstance(item, int) and item > MAX_FILE_BYTES:
        raise ProtocolError(f"{where}: {item} bytes, more than the protocol's largest file ({MAX_FILE_BYTES})")
    if not ok:
        raise ProtocolError(f"{where}: {str(item)[:80]!r} is not a valid {getattr(kind, '__name__', kind)}")


def _encode(message: Any) -> bytes:
    return canonical_json({"v": PROTOCOL_VERSION, **asdict(message)})


@dataclass(frozen=True)
class Hello:
    """Opens a sync session; ``t1_us`` is the device's wall clock when it sent this (NTP's t1).

    ``head_seq``/``head_link``: the last record of the device's ledger as the session opens, so the station
    sees at every session a ledger cut back below what it holds (a rollback) or gone another way (a fork).
    Both or neither (a hello from an uploader older than them)."""

    session: str
    t1_us: int
    head_seq: int | None = None
    head_link: str | None = None

    def encode(self) -> bytes:
        value: dict[str, Any] = {"v": PROTOCOL_VERSION, "session": self.session, "t1_us": self.t1_us}
        if self.head_seq is not None and self.head_link is not None:
            value.update(head_seq=self.head_seq, head_link=self.head_link)
        return canonical_json(value)

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        value = _decode_object(payload, "hello")
        spec: dict[str, Any] = {"session": "session", "t1_us": int}
        if "head_seq" in value or "head_link" in value:
            spec.update(head_seq="count", head_link="hex64")
        _fields(value, "hello", spec)
        return cls(value["session"], value["t1_us"], value.get("head_seq"), value.get("head_link"))


@dataclass(frozen=True)
class HelloReply:
    """The station's answer: its clock stamps (t2 on receipt, t3 on sending) and what it has stored.

    ``seq``/``link`` are the last record of the device's chain the station holds verified and stored
    without a hole before it (0 and the genesis value when it holds none): the device sends what follows.
    """

    session: str
    t1_us: int
    t2_us: int
    t3_us: int
    seq: int
    link: str

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, payload: bytes) -> HelloReply:
        value = _decode_object(payload, "hello reply")
        _fields(value, "hello reply", {"session": "session", "t1_us": int, "t2_us": int, "t3_us": int,
                                       "seq": "count", "link": "hex64"})
        return cls(value["session"], value["t1_us"], value["t2_us"], value["t3_us"], value["seq"], value["link"])


@dataclass(frozen=True)
class ClockReport:
    """The four stamps of the hello exchange; t4 is the device's clock when the reply arrived."""

    session: str
    t1_us: int
    t2_us: int
    t3_us: int
    t4_us: int

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, payload: bytes) -> ClockReport:
        value = _decode_object(payload, "clock")
        _fields(value, "clock", {"session": "session", "t1_us": int, "t2_us": int, "t3_us": int, "t4_us": int})
        return cls(value["session"], value["t1_us"], value["t2_us"], value["t3_us"], value["t4_us"])

    @property
    def offset_us(self) -> int:
        """Station clock minus device clock, as NTP estimates it (positive: the device is behind)."""
        return ((self.t2_us - self.t1_us) + (self.t3_us - self.t4_us)) // 2

    @property
    def delay_us(self) -> int:
        """Round-trip time spent on the network (the station's own processing time excluded)."""
        return (self.t4_us - self.t1_us) - (self.t3_us - self.t2_us)


@dataclass(frozen=True)
class FileOffer:
    """The device offers a file that a verified record of its chain vouches for."""

    session: str
    file: str
    sha256: str
    size: int

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, payload: bytes) -> FileOffer:
        value = _decode_object(payload, "file offer")
        _fields(value, "file offer", {"session": "session", "file": "file", "sha256": "hex64",
                                      "size": "file_size"})
        return cls(value["session"], value["file"], value["sha256"], value["size"])


@dataclass(frozen=True)
class FileStatus:
    """What the station holds of a file: ``stored`` (verified, durable, acknowledged) or the byte ranges
    ``[offset, length]`` it holds durably in staging. Sent in reply to an offer and after each chunk."""

    session: str
    file: str
    sha256: str
    stored: bool
    have: list[list[int]] = field(default_factory=list)

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, payload: bytes) -> FileStatus:
        value = _decode_object(payload, "file status")
        _fields(value, "file status", {"session": "session", "file": "file", "sha256": "hex64", "stored": bool,
                                       "have": "ranges"})
        return cls(value["session"], value["file"], value["sha256"], value["stored"], value["have"])


@dataclass(frozen=True)
class Done:
    """The device has sent every record up to ``head_seq`` (its ledger's head when the session began)."""

    session: str
    head_seq: int
    head_link: str

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, payload: bytes) -> Done:
        value = _decode_object(payload, "done")
        _fields(value, "done", {"session": "session", "head_seq": "count", "head_link": "hex64"})
        return cls(value["session"], value["head_seq"], value["head_link"])


@dataclass(frozen=True)
class ErrorNotice:
    """Why the station rejected a message (for the device's log; nothing is stored from it)."""

    topic: str
    reason: str

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, payload: bytes) -> ErrorNotice:
        value = _decode_object(payload, "error notice")
        _fields(value, "error notice", {"topic": str, "reason": str})
        return cls(value["topic"], value["reason"])


# ---------------------------------------------------------------- chunks


@dataclass(frozen=True)
class ChunkHeader:
    """Where a chunk belongs: the file (name, whole-file SHA-256 and size) and its own offset and hash."""

    file: str
    sha256: str
    size: int
    offset: int
    length: int
    chunk_sha256: str


def encode_chunk(header: ChunkHeader, data: bytes) -> bytes:
    if len(data) != header.length:
        raise ProtocolError(f"chunk of {header.file}: {len(data)} bytes, header says {header.length}")
    return _encode(header) + b"\n" + data


def decode_chunk(payload: bytes) -> tuple[ChunkHeader, bytes]:
    """Split and check a chunk message: header fields, bounds, the chunk's length and SHA-256."""
    end = payload.find(b"\n", 0, MAX_CHUNK_HEADER_BYTES + 1)
    if end < 0:
        raise ProtocolError(f"chunk: no header line within the first {MAX_CHUNK_HEADER_BYTES} bytes")
    value = _decode_object(payload[:end], "chunk header", MAX_CHUNK_HEADER_BYTES)
    _fields(value, "chunk header", {"file": "file", "sha256": "hex64", "size": "file_size", "offset": "count",
                                    "length": "count", "chunk_sha256": "hex64"})
    header = ChunkHeader(value["file"], value["sha256"], value["size"], value["offset"], value["length"],
                         value["chunk_sha256"])
    data = payload[end + 1:]
    what = f"chunk {header.file} @{header.offset}"
    if len(data) != header.length:
        raise ProtocolError(f"{what}: {len(data)} bytes, header says {header.length} (truncated?)")
    if header.length == 0 and header.size != 0:
        raise ProtocolError(f"{what}: empty chunk")
    if header.offset + header.length > header.size:
        raise ProtocolError(f"{what}: ends at byte {header.offset + header.length}, past the file's {header.size}")
    if hashlib.sha256(data).hexdigest() != header.chunk_sha256:
        raise ProtocolError(f"{what}: sha256 mismatch")
    return header, data


def chunk_size_for(configured: int, max_packet_bytes: int | None) -> int:
    """The chunk size to use: the configured size, shrunk to fit the broker's maximum packet size."""
    if max_packet_bytes is None:
        return configured
    room = max_packet_bytes - PUBLISH_OVERHEAD_BYTES - MAX_CHUNK_HEADER_BYTES
    if room < 4096:
        raise ProtocolError(f"broker's maximum packet size {max_packet_bytes} leaves no room for chunks")
    return min(configured, room)


# ---------------------------------------------------------------- records


def split_lines(payload: bytes, limit: int) -> list[bytes]:
    """The ledger lines of a records message, each with its LF; refuses a partial last line."""
    if len(payload) > limit:
        raise ProtocolError(f"records: {len(payload)} bytes, more than the {limit} allowed")
    if not payload or not payload.endswith(b"\n"):
        raise ProtocolError("records: empty or the last line is not terminated (truncated?)")
    # Split at LF only (bytes.splitlines also splits at CR and others): device and station must cut a
    # damaged line in the same place.
    return [line + b"\n" for line in payload[:-1].split(b"\n")]


NO_RECORDS = (0, GENESIS_PREV)

__all__ = ["MAX_ACK_FILES", "Ack", "AckedFile", "SignedAck", "parse_ack", "sign_ack", "verify_ack"]
