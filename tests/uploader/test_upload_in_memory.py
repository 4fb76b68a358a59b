"""The uploader's session logic against the station's real receiver, in memory (no broker, no threads).

The transport port (sync/uploader/transport.py) lets the session run over tests/uploader/memory_transport.py:
every record and file reaches the receiver, the acks it signs come back and are checked, and a connection
lost in the middle of a file is resumed by the next session from the station's have-ranges. The real-broker
tests (test_upload_session.py, tests/sync) keep the MQTT wiring.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import FakeClock, seeded_key
from memory_transport import MemoryTransport
from upload_helpers import DEVICE, RecordingCustody, segment_bytes, write_device_store, write_key_files

from agent.evidence.ack import parse_ack, verify_ack
from agent.evidence.store import StoredFile, read_records
from firmware_config.device_config import SyncSettings, parse_device_config
from firmware_config.station_config import parse_station_config
from sync.protocol import decode_chunk, parse_topic
from sync.station.index import SqliteIndex
from sync.station.receiver import Receiver
from sync.station.report import enroll_device
from sync.station.store import FilesystemEvidenceStore
from sync.uploader.custody_port import AckSpool
from sync.uploader.runner import Uploader

KIB = 1024
STATION_KEY_SEED = 42


@dataclass
class World:
    receiver: Receiver
    index: SqliteIndex
    data: Path
    store: Path
    files: list[StoredFile]
    custody: RecordingCustody
    transports: list[MemoryTransport]

    def uploader(self, tmp_path: Path, drops: list[int | None]) -> Uploader:
        """An uploader whose n-th connection drops after ``drops[n]`` publishes (None: never)."""
        device_key, station_key = seeded_key(1), seeded_key(STATION_KEY_SEED)
        key_path, station_pub = write_key_files(tmp_path / "keys", device_key, station_key)
        tables = {"device": {"id": DEVICE, "officer": "o-1", "store": str(self.store), "key": str(key_path)},
                  "control_socket": {"path": str(tmp_path / "no-agent.sock")},
                  "sync": {"broker_host": "in-memory", "broker_port": 8883, "ca": "ca.pem", "cert": "c.pem",
                           "key": "c.key", "station_key": str(station_pub), "reply_timeout_seconds": 2,
                           "retry_seconds": 0.1, "scan_seconds": 0.1, "chunk_kib": 16, "window_chunks": 4,
                           "batch_kib": 4}}
        config = parse_device_config(tables, "test-config")

        def connect(_settings: SyncSettings, device: str) -> MemoryTransport:
            drop = drops[len(self.transports)] if len(self.transports) < len(drops) else None
            transport = MemoryTransport(self.receiver, device, drop_after=drop)
            self.transports.append(transport)
            return transport

        return Uploader(config=config, custody=self.custody, station_key=station_key.public_key, stop=threading.Event(),
                        spool=AckSpool(tmp_path / "spool"), connect=connect)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    data = tmp_path / "station"
    config = parse_station_config({"station": {"id": "station-test", "data": str(data),
                                               "key": str(tmp_path / "ack.key")}}, "test-station.toml")
    clock = FakeClock(step_us=1000)
    index = SqliteIndex(config.index_path)
    enroll_device(index, DEVICE, seeded_key(1).public_key, clock.now().wall_us, replace=False)
    receiver = Receiver.open(config=config, store=FilesystemEvidenceStore(data), index=index,
                             ack_key=seeded_key(STATION_KEY_SEED), clock=clock)
    store = tmp_path / "store"
    files = write_device_store(store, seeded_key(1), [100 * KIB, 5 * KIB, 0, 40 * KIB], long_term={4})
    yield World(receiver, index, data, store, files, RecordingCustody(), [])
    index.close()


def test_a_session_in_memory_stores_everything_and_checks_the_stations_acks(world: World, tmp_path: Path) -> None:
    uploader = world.uploader(tmp_path, [])
    assert uploader.run_once(30)
    records = read_records(world.store)
    assert world.index.head(DEVICE).seq == records[-1].seq
    copy = world.data / "devices" / DEVICE / "ledger.jsonl"
    assert copy.read_bytes() == (world.store / "ledger.jsonl").read_bytes()
    for number, file in enumerate(world.files, start=1):
        assert world.index.stored_file(DEVICE, file.name) is not None, file.name
        assert (world.data / "devices" / DEVICE / file.name).read_bytes() == segment_bytes(number, file.size)
    # Every ack the receiver signed went to the custody, checked; the last names every file.
    acks = [parse_ack(line) for line in world.custody.receipts]
    for ack in acks:
        verify_ack(ack, seeded_key(STATION_KEY_SEED).public_key, DEVICE)
    assert {f.file for a in acks for f in a.ack.files} == {f.name for f in world.files}
    [stats] = uploader.sessions
    assert stats.error is None and stats.files_acked == len(world.files)
    kinds = [parse_topic(t).kind for t, _ in world.transports[0].published]
    assert kinds[0] == "hello" and kinds[-1] == "done"
    # Long-term footage first (segment 4), then oldest first.
    order = list(dict.fromkeys(decode_chunk(p)[0].file for t, p in world.transports[0].published
                               if parse_topic(t).kind == "chunk"))
    assert order == ["segments/000004.mp4", "segments/000001.mp4", "segments/000002.mp4"]  # 000003 is empty


def test_a_connection_lost_mid_file_is_resumed_from_the_stations_have_ranges(world: World, tmp_path: Path) -> None:
    uploader = world.uploader(tmp_path, [12])  # the first connection drops after 12 messages
    assert uploader.run_once(30)
    assert len(world.transports) == 2 and uploader.sessions[0].error is not None
    # What reached the station: every byte once (the chunk lost with the connection is sent again, nothing else).
    delivered = [decode_chunk(p)[0] for transport in world.transports for t, p in transport.published
                 if parse_topic(t).kind == "chunk"]
    first, second = ({parse_topic(t).kind for t, _ in transport.published} for transport in world.transports)
    assert "chunk" in first and "chunk" in second  # the drop came in the middle of the files
    assert len({(h.file, h.offset) for h in delivered}) == len(delivered)
    assert sum(h.length for h in delivered) == sum(f.size for f in world.files)
    for number, file in enumerate(world.files, start=1):
        assert (world.data / "devices" / DEVICE / file.name).read_bytes() == segment_bytes(number, file.size)
    assert "bad-bytes" not in [p.kind for p in world.index.problems()]
