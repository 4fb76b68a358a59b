"""A station receiver on a temporary data folder, driven without MQTT, and a device that syncs a real store.

``Station`` builds the receiver the way ``bodycam-station serve`` does (filesystem store, SQLite index, a
seeded acknowledgement key, a fake clock) and can be restarted on the same folder. ``DeviceSide`` plays the
uploader's part of docs/sync-protocol.md with messages built by sync/protocol.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import DeviceFile, FakeClock, seeded_key, vouched_files

from agent.evidence.ack import SignedAck, parse_ack, verify_ack
from agent.evidence.keys import DeviceKey
from agent.evidence.store import StoreLayout, read_records
from firmware_config.station_config import StationConfig, parse_station_config
from sync.protocol import (
    ChunkHeader,
    ClockReport,
    Done,
    FileOffer,
    FileStatus,
    Hello,
    HelloReply,
    down_topic,
    encode_chunk,
    up_topic,
)
from sync.station.faults import FaultPoints
from sync.station.index import SqliteIndex
from sync.station.model import DeviceRow, Outgoing, ProblemRow
from sync.station.receiver import Receiver
from sync.station.report import enroll_device
from sync.station.store import FilesystemEvidenceStore

STATION_KEY_SEED = 42
# tests/conftest.py's make_store fixture: make_store(seed=1, device_id="dev-0001", seconds=5) -> (root, key)
StoreFactory = Callable[..., tuple[Path, DeviceKey]]
STATION_ID = "station-test"


def station_config(data: Path, **tables: dict[str, Any]) -> StationConfig:
    raw: dict[str, Any] = {"station": {"id": STATION_ID, "data": str(data), "key": str(data.parent / "ack.key")}}
    for table, values in tables.items():
        raw.setdefault(table, {}).update(values)
    return parse_station_config(raw, "test-station.toml")


class Station:
    """A receiver over ``data``; ``restart()`` builds a new one on the same folder (as after a crash)."""

    def __init__(self, data: Path, clock: FakeClock | None = None, faults: FaultPoints | None = None,
                 **tables: dict[str, Any]) -> None:
        self.data = data
        self.config = station_config(data, **tables)
        self.clock = clock or FakeClock(step_us=1000)
        self.ack_key: DeviceKey = seeded_key(STATION_KEY_SEED)
        self.faults = faults
        self.sent: list[Outgoing] = []
        self._open()

    def _open(self) -> None:
        self.store = FilesystemEvidenceStore(self.data)
        self.index = SqliteIndex(self.config.index_path)
        self.receiver = Receiver.open(config=self.config, store=self.store, index=self.index, ack_key=self.ack_key,
                                      clock=self.clock, faults=self.faults)

    def restart(self) -> None:
        self.index.close()
        self._open()

    def close(self) -> None:
        self.index.close()

    def enroll(self, device: str, key: DeviceKey) -> None:
        enroll_device(self.index, device, key.public_key, self.clock.now().wall_us, replace=False)

    def send(self, device: str, kind: str, payload: bytes) -> list[Outgoing]:
        return self.send_topic(up_topic(device, kind), payload)

    def send_topic(self, topic: str, payload: bytes) -> list[Outgoing]:
        out = self.receiver.handle(topic, payload)
        assert self.receiver.fault is None, self.receiver.fault
        self.sent.extend(out)
        return out

    def problems(self, kind: str | None = None) -> list[ProblemRow]:
        return [p for p in self.index.problems() if kind is None or p.kind == kind]

    def device_root(self, device: str) -> Path:
        return self.store.device_root(device)

    def evidence_digest(self) -> str:
        """One hash over every evidence file's path, mode and bytes (objects and device layouts)."""
        digest = hashlib.sha256()
        for top in ("objects", "devices"):
            folder = self.data / top
            if not folder.exists():
                continue
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                digest.update(str(path.relative_to(self.data)).encode() + b"\0")
                digest.update(oct(path.stat().st_mode).encode() + path.read_bytes())
        return digest.hexdigest()

    def acks(self, device: str, out: list[Outgoing] | None = None) -> list[SignedAck]:
        """The acks among ``out`` (default: everything sent), each checked against the station key."""
        result = []
        for message in self.sent if out is None else out:
            if message.topic == down_topic(device, "ack"):
                signed = parse_ack(message.payload)
                verify_ack(signed, self.ack_key.public_key, device)
                result.append(signed)
        return result


def statuses(out: list[Outgoing], device: str) -> list[FileStatus]:
    return [FileStatus.decode(m.payload) for m in out if m.topic == down_topic(device, "file")]


def hello_reply(out: list[Outgoing], device: str) -> HelloReply:
    [reply] = [HelloReply.decode(m.payload) for m in out if m.topic == down_topic(device, "hello")]
    return reply


@dataclass
class DeviceSide:
    """The uploader's side for the store at ``root`` (a real ledger made by agent.evidence.ledger)."""

    station: Station
    root: Path
    device: str
    session: str = "s1"
    chunk_bytes: int = 16 * 1024
    batch_lines: int = 4
    device_clock_us: int = 1_700_000_000_000_000
    replies: list[Outgoing] = field(default_factory=list)

    def lines(self) -> list[bytes]:
        return StoreLayout(self.root).ledger_path.read_bytes().splitlines(keepends=True)

    def files(self) -> list[DeviceFile]:
        return vouched_files(self.root)

    def send(self, kind: str, payload: bytes) -> list[Outgoing]:
        out = self.station.send(self.device, kind, payload)
        self.replies.extend(out)
        return out

    def hello(self) -> HelloReply:
        return hello_reply(self.send("hello", Hello(self.session, self.device_clock_us).encode()), self.device)

    def clock(self, reply: HelloReply, t4_us: int) -> None:
        self.send("clock", ClockReport(self.session, reply.t1_us, reply.t2_us, reply.t3_us, t4_us).encode())

    def records(self, lines: list[bytes]) -> list[Outgoing]:
        out = []
        for start in range(0, len(lines), self.batch_lines):
            out.extend(self.send("records", b"".join(lines[start:start + self.batch_lines])))
        return out

    def offer(self, file: DeviceFile) -> FileStatus:
        [status] = statuses(self.send("file", FileOffer(self.session, file.name, file.sha256, file.size).encode()),
                            self.device)
        return status

    def chunk(self, file: DeviceFile, offset: int, data: bytes | None = None) -> list[Outgoing]:
        content = (self.root / file.name).read_bytes()
        part = content[offset:offset + self.chunk_bytes] if data is None else data
        header = ChunkHeader(file.name, file.sha256, file.size, offset, len(part), hashlib.sha256(part).hexdigest())
        return self.send("chunk", encode_chunk(header, part))

    def upload(self, file: DeviceFile) -> FileStatus:
        """Offer the file and send the chunks the station lacks; the last status received."""
        status = self.offer(file)
        held = [(o, n) for o, n in status.have]
        offset = 0
        while not status.stored and offset < file.size:
            if not any(start <= offset < start + span for start, span in held):
                [status] = statuses(self.chunk(file, offset), self.device)
            offset += self.chunk_bytes
        return status

    def done(self, head_seq: int, head_link: str) -> list[Outgoing]:
        return self.send("done", Done(self.session, head_seq, head_link).encode())

    def sync(self) -> HelloReply:
        """A whole session: hello, clock, records after the watermark, every file, done."""
        reply = self.hello()
        self.clock(reply, self.device_clock_us + 2000)
        lines = self.lines()
        self.records(lines[reply.seq:])
        for file in self.files():
            assert self.upload(file).stored, file
        last = read_records(self.root)[-1]
        self.done(last.seq, last.link)
        return reply


def enrolled_row(station: Station, device: str) -> DeviceRow:
    row = station.index.device(device)
    assert row is not None
    return row
