"""Shared by the uploader tests: real device stores, configs, a minimal station on a raw paho client, fakes.

No pytest import here (helpers only).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker_fixture import MosquittoBroker, connect
from helpers import FakeClock, seeded_key

from agent.evidence.ack import Ack, AckedFile, sign_ack
from agent.evidence.encoding import GENESIS_PREV
from agent.evidence.keys import DeviceKey, fingerprint, public_key_pem
from agent.evidence.ledger import Ledger
from agent.evidence.record import parse_line
from agent.evidence.store import StoredFile, segment_file_name
from firmware_config.device_config import DeviceConfig, parse_device_config
from sync.protocol import (
    ChunkHeader,
    ClockReport,
    Done,
    FileOffer,
    FileStatus,
    Hello,
    HelloReply,
    decode_chunk,
    down_topic,
    parse_topic,
    split_lines,
    up_subscription,
)
from sync.uploader.plan import normalize_ranges

DEVICE = "dev-a"
BrokerFactory = Callable[..., MosquittoBroker]  # the ``broker_factory`` fixture (tests/uploader/conftest.py)
STATION_ID = "station-test"


def segment_bytes(index: int, size: int) -> bytes:
    return hashlib.shake_256(f"segment {index}".encode()).digest(size)


def write_device_store(store: Path, key: DeviceKey, sizes: list[int], device: str = DEVICE,
                       long_term: set[int] | None = None) -> list[StoredFile]:
    """A real store: boot, an event, then per size a segment file and its ``segment`` record as the recorder
    writes it; segments whose index is in ``long_term`` are recorded inside a case flagged long-term."""
    long_term = long_term or set()
    stored: list[StoredFile] = []
    with Ledger.open(store, key, device, FakeClock(), boot_reason="test") as ledger:
        ledger.append("event", {"kind": "recording-start"})
        for index, size in enumerate(sizes, start=1):
            case = f"case-{index}"
            if index in long_term:
                ledger.append("case-open", {"case_id": case, "procedure": "inspection", "officer": "o-1"})
                ledger.append("retention", {"retention_class": "long-term", "reason": "test", "officer": "o-1",
                                            "case_id": case})
            item = ledger.layout.write_segment(segment_file_name(index, "mp4"), segment_bytes(index, size))
            ledger.append("segment", {"file": item.name, "sha256": item.sha256, "size": item.size, "frames": 30,
                                      "first_ts_us": index * 1_000_000, "last_ts_us": index * 1_000_000 + 999_000})
            if index in long_term:
                ledger.append("case-close", {"case_id": case, "officer": "o-1", "missing": []})
            stored.append(item)
        ledger.append("event", {"kind": "recording-stop", "reason": "test"})
    return stored


def write_key_files(folder: Path, device_key: DeviceKey, station_key: DeviceKey) -> tuple[Path, Path]:
    """(device private key file 0600, station public key PEM)."""
    folder.mkdir(parents=True, exist_ok=True)
    device_path = folder / "device.key"
    device_path.write_bytes(device_key.private_pem())
    device_path.chmod(0o600)
    station_path = folder / "station.pub"
    station_path.write_text(public_key_pem(station_key.public_key))
    return device_path, station_path


def sync_table(broker: MosquittoBroker, station_pub: Path, device: str = DEVICE, **overrides: Any) -> dict[str, Any]:
    ca, cert, key = broker.client_tls(device)
    table: dict[str, Any] = {
        "broker_host": broker.host, "broker_port": broker.port, "ca": str(ca), "cert": str(cert), "key": str(key),
        "station_key": str(station_pub), "reply_timeout_seconds": 2, "retry_seconds": 0.2, "scan_seconds": 0.2,
        "chunk_kib": 64, "window_chunks": 8, "batch_kib": 4,
    }
    table.update(overrides)
    return table


@dataclass
class SyncDevice:
    """Device "dev-a" (key seed 1) with a real store, its key files and its config as TOML tables (no agent:
    the control socket does not exist); ``station_key`` (seed 9) is the station's, which signs the acks."""

    tables: dict[str, Any]
    store: Path
    files: list[StoredFile]
    station_key: DeviceKey

    @property
    def config(self) -> DeviceConfig:
        return parse_device_config(self.tables, "test-config")


def sync_device(tmp_path: Path, broker: MosquittoBroker, sizes: list[int], long_term: set[int] | None = None,
                **sync: Any) -> SyncDevice:
    """``sizes``, ``long_term``: as for write_device_store; ``sync``: overrides of sync_table."""
    device_key, station_key = seeded_key(1), seeded_key(9)
    store = tmp_path / "store"
    files = write_device_store(store, device_key, sizes, long_term=long_term)
    key_path, station_pub = write_key_files(tmp_path / "keys", device_key, station_key)
    tables = {"device": {"id": DEVICE, "officer": "o-1", "store": str(store), "key": str(key_path)},
              "control_socket": {"path": str(tmp_path / "no-agent.sock")},
              "sync": sync_table(broker, station_pub, **sync)}
    return SyncDevice(tables, store, files, station_key)


class RecordingCustody:
    """A custody that writes nothing: records the calls."""

    def __init__(self) -> None:
        self.receipts: list[bytes] = []
        self.purges = 0

    def record_receipt(self, ack_line: bytes) -> str:
        self.receipts.append(ack_line)
        return f"fake receipt {len(self.receipts)}"

    def purge_acknowledged(self) -> list[str]:
        self.purges += 1
        return []


@dataclass
class _Staging:
    size: int
    sha256: str
    data: bytearray
    have: list[tuple[int, int]] = field(default_factory=list)
    announced: list[tuple[int, int]] = field(default_factory=list)  # ranges a FileStatus told the device


@dataclass
class ChunkSeen:
    file: str
    offset: int
    length: int
    already_confirmed: bool  # a FileStatus had already told the device the station holds these bytes
    payload_bytes: int


class FakeStation:
    """A minimal station on a raw paho client: answers hello, stores records in order and acks them, keeps
    staging per file, answers offers and chunks with FileStatus, acks stored files (signed with ``ack_key``).

    Knobs: ``check_bytes`` False: trust chunks unhashed and keep no bytes (a station that costs next to no
    CPU, for throughput measurements); ``tamper_ack(line) -> line``; ``wrong_link``: acks name a link the
    device does not have; ``stall_after_chunks``: after that many chunks, ignore everything until the next
    hello (a station that hangs, once); ``on_chunk(count)``: called after each chunk stored;
    ``preset(file, data, ranges)``: staging the station already holds.
    """

    def __init__(self, broker: MosquittoBroker, ack_key: DeviceKey, device: str = DEVICE,
                 check_bytes: bool = True) -> None:
        self.ack_key = ack_key
        self.check_bytes = check_bytes
        self.device = device
        self.tamper_ack: Callable[[bytes], bytes] | None = None
        self.wrong_link = False  # sign acks that name a link the device does not have
        self.on_chunk: Callable[[int], None] | None = None  # called with the number of chunks stored so far
        self.stall_after_chunks: int | None = None
        self.seq, self.link = 0, GENESIS_PREV
        self.lines: list[bytes] = []
        self.staging: dict[str, _Staging] = {}
        self.stored: dict[str, bytes] = {}
        self.chunks: list[ChunkSeen] = []
        self.chunk_times: list[float] = []  # monotonic time each chunk arrived
        self.hellos: list[Hello] = []
        self.clocks: list[ClockReport] = []
        self.dones: list[Done] = []
        self.acks_sent: list[bytes] = []
        self.records_messages: list[bytes] = []
        self._stalled = False
        self._session_chunks = 0
        self._lock = threading.Lock()
        self.client = connect(broker, "station", client_id=f"fake-station-{time.monotonic_ns()}")
        # Handled in paho's network thread: a second thread taking messages from a queue costs this station
        # more CPU than the uploader it measures (GIL hand-offs), and it would be the bottleneck.
        self.client.on_message = self._on_message
        self._nodelay()
        self.client.subscribe_wait(up_subscription())
        # After a broker restart paho reconnects by itself; a clean session has no subscription: renew it.
        connack = self.client.on_connect

        def reconnected(*args: Any) -> None:
            connack(*args)
            self._nodelay()
            self.client.subscribe(up_subscription(), qos=1)

        self.client.on_connect = reconnected

    def _nodelay(self) -> None:
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def preset(self, file: str, data: bytes, ranges: list[tuple[int, int]]) -> None:
        staging = _Staging(len(data), hashlib.sha256(data).hexdigest(), bytearray(len(data)))
        for offset, length in ranges:
            staging.data[offset:offset + length] = data[offset:offset + length]
        staging.have = normalize_ranges(ranges, len(data))
        self.staging[file] = staging

    def close(self) -> None:
        self.client.close()

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        with self._lock:
            self._handle(parse_topic(message.topic).kind, bytes(message.payload))

    def _publish(self, kind: str, payload: bytes) -> None:
        self.client.publish(down_topic(self.device, kind), payload, qos=1)

    def _handle(self, kind: str, payload: bytes) -> None:
        if kind == "hello":
            hello = Hello.decode(payload)
            self.hellos.append(hello)
            self._stalled, self._session_chunks = False, 0
            t2 = time.time_ns() // 1000
            self._publish("hello", HelloReply(hello.session, hello.t1_us, t2, time.time_ns() // 1000, self.seq,
                                              self.link).encode())
        elif self._stalled:
            return
        elif kind == "clock":
            self.clocks.append(ClockReport.decode(payload))
        elif kind == "records":
            self.records_messages.append(payload)
            self._records(payload)
        elif kind == "file":
            self._offer(FileOffer.decode(payload))
        elif kind == "chunk":
            self._chunk(payload)
        elif kind == "done":
            self.dones.append(Done.decode(payload))

    def _records(self, payload: bytes) -> None:
        for line in split_lines(payload, 1 << 20):
            signed = parse_line(line)
            if signed.seq == self.seq + 1 and signed.record.prev == self.link:
                self.lines.append(line)
                self.seq, self.link = signed.seq, signed.link
        self._ack([], self.hellos[-1].session if self.hellos else "s")

    def _ack(self, files: list[AckedFile], session: str = "s") -> None:
        link = "f" * 64 if self.wrong_link else self.link
        ack = Ack(STATION_ID, fingerprint(self.ack_key.public_raw), self.device, session, self.seq, link,
                  tuple(files), time.time_ns() // 1000)
        line = sign_ack(ack, self.ack_key).to_line()
        if self.tamper_ack is not None:
            line = self.tamper_ack(line)
        self.acks_sent.append(line)
        self._publish("ack", line)

    def _status(self, session: str, file: str, sha256: str) -> None:
        if file in self.stored:
            self._publish("file", FileStatus(session, file, sha256, True, []).encode())
            return
        staging = self.staging[file]
        staging.announced = list(staging.have)
        self._publish("file", FileStatus(session, file, sha256, False, [list(r) for r in staging.have]).encode())

    def _offer(self, offer: FileOffer) -> None:
        if offer.file not in self.stored and offer.file not in self.staging:
            self.staging[offer.file] = _Staging(offer.size, offer.sha256, bytearray(offer.size))
        self._status(offer.session, offer.file, offer.sha256)
        if offer.file in self.stored:
            self._ack([AckedFile(offer.file, offer.sha256, offer.size)], offer.session)

    def _chunk(self, payload: bytes) -> None:
        self.chunk_times.append(time.monotonic())
        if self.check_bytes:
            header, data = decode_chunk(payload)
        else:
            end = payload.index(b"\n")
            header, data = ChunkHeader(**{k: v for k, v in json.loads(payload[:end]).items() if k != "v"}), b""
        self._session_chunks += 1
        if self.stall_after_chunks is not None and self._session_chunks > self.stall_after_chunks:
            self._stalled, self.stall_after_chunks = True, None  # once: the next session is served
            return
        if header.file in self.stored:
            return
        staging = self.staging[header.file]
        confirmed = any(s <= header.offset and header.offset + header.length <= s + n for s, n in staging.announced)
        self.chunks.append(ChunkSeen(header.file, header.offset, header.length, confirmed, len(payload)))
        if self.on_chunk is not None:
            self.on_chunk(len(self.chunks))
        if self.check_bytes:
            staging.data[header.offset:header.offset + header.length] = data
        staging.have = normalize_ranges([*staging.have, (header.offset, header.length)], staging.size)
        session = self.hellos[-1].session
        complete = staging.have == [(0, staging.size)] or staging.size == 0
        if complete and (not self.check_bytes or hashlib.sha256(staging.data).hexdigest() == staging.sha256):
                self.stored[header.file] = bytes(staging.data)
                del self.staging[header.file]
                self._status(session, header.file, header.sha256)
                self._ack([AckedFile(header.file, header.sha256, header.size)], session)
                return
        self._status(session, header.file, header.sha256)
