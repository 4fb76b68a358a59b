"""The uploader against a real Mosquitto (mutual TLS, the station's ACL) and a minimal station on raw paho."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from broker_fixture import MosquittoBroker
from helpers import FakeClock, seeded_key, wait_for
from upload_helpers import (
    DEVICE,
    BrokerFactory,
    FakeStation,
    RecordingCustody,
    segment_bytes,
    sync_device,
)

from agent.evidence.assignment import Assignment, sign_assignment
from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.evidence.store import StoredFile
from sync.protocol import MAX_CHUNK_HEADER_BYTES, PUBLISH_OVERHEAD_BYTES, down_topic
from sync.uploader import session as session_module
from sync.uploader.assignment import AssignmentInbox
from sync.uploader.custody_port import AckSpool
from sync.uploader.runner import Uploader

KIB = 1024


@dataclass
class Rig:
    broker: MosquittoBroker
    station: FakeStation
    store: Path
    files: list[StoredFile]
    custody: RecordingCustody
    uploader: Uploader
    station_key: DeviceKey


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[object]:
    made: list[Rig] = []

    def factory(broker: MosquittoBroker, sizes: list[int], *, long_term: set[int] | None = None,
                ack_key: DeviceKey | None = None, **sync: object) -> Rig:
        device = sync_device(tmp_path, broker, sizes, long_term=long_term, **sync)
        station = FakeStation(broker, ack_key or device.station_key)
        custody = RecordingCustody()
        uploader = Uploader(config=device.config, custody=custody, station_key=device.station_key.public_key,
                            stop=threading.Event(),
                            spool=AckSpool(tmp_path / "spool"))
        rig = Rig(broker, station, device.store, device.files, custody, uploader, device.station_key)
        made.append(rig)
        return rig

    yield factory
    for rig in made:
        rig.uploader.close()
        rig.station.close()


def ledger_lines(store: Path) -> list[bytes]:
    return (store / "ledger.jsonl").read_bytes().splitlines(keepends=True)


def test_once_uploads_every_record_and_file_byte_exact(mosquitto: MosquittoBroker, rig_factory) -> None:
    rig = rig_factory(mosquitto, [150 * KIB, 10 * KIB, 0, 300 * KIB], long_term={4})
    assert rig.uploader.run_once(30)
    station = rig.station
    assert station.lines == ledger_lines(rig.store)
    assert station.stored == {f.name: segment_bytes(i, f.size) for i, f in enumerate(rig.files, start=1)}
    # Long-term footage first, then oldest first; every chunk sent once.
    order = list(dict.fromkeys(c.file for c in station.chunks))
    assert order == ["segments/000004.mp4", "segments/000001.mp4", "segments/000002.mp4", "segments/000003.mp4"]
    assert sum(c.length for c in station.chunks) == sum(f.size for f in rig.files)
    # Each valid ack went to the custody; the session said what it sent and ended with done.
    assert rig.custody.receipts == station.acks_sent
    assert wait_for(lambda: station.dones, 5.0, "the station's done")[-1].head_seq == station.seq
    assert station.clocks and station.clocks[-1].session == station.hellos[-1].session
    stats = rig.uploader.sessions[0]
    assert (stats.records_sent, stats.chunks_sent, stats.bytes_sent) == (
        len(station.lines), len(station.chunks), sum(f.size for f in rig.files))
    assert stats.files_acked == len(rig.files) and stats.error is None


def test_resumes_from_the_stations_have_ranges_without_resending_confirmed_chunks(
        mosquitto: MosquittoBroker, rig_factory) -> None:
    rig = rig_factory(mosquitto, [40 * 64 * KIB, 64 * KIB], chunk_kib=64, window_chunks=4, reply_timeout_seconds=1)
    first = rig.files[0]
    data = segment_bytes(1, first.size)
    # The station already holds odd pieces of the first file (overlapping, unsorted, past the end) ...
    held = [(10 * 64 * KIB, 3 * 64 * KIB), (0, 100 * KIB), (50 * KIB, 20 * KIB), (39 * 64 * KIB, 5 * 64 * KIB)]
    rig.station.preset(first.name, data, held)
    # ... and hangs after 5 more chunks: the session ends on its silence and the next one resumes.
    rig.station.stall_after_chunks = 5
    assert rig.uploader.run_once(30)
    station = rig.station
    assert station.stored[first.name] == data
    assert len(station.hellos) >= 2 and rig.uploader.sessions[0].error is not None
    assert "silent" in rig.uploader.sessions[0].error
    assert not [c for c in station.chunks if c.already_confirmed], "a chunk the station had confirmed was sent again"
    sent = sorted((c.offset, c.length) for c in station.chunks if c.file == first.name)
    # Exactly the bytes it lacked: nothing twice, nothing it held.
    held_bytes = 100 * KIB + 3 * 64 * KIB + 64 * KIB
    assert sum(length for _, length in sent) == first.size - held_bytes
    assert all(b[0] >= a[0] + a[1] for a, b in itertools.pairwise(sent))
    assert not any(o < 100 * KIB or (10 * 64 * KIB <= o < 13 * 64 * KIB) or o >= 39 * 64 * KIB for o, _ in sent)


def test_chunks_fit_the_brokers_maximum_packet_size(broker_factory: BrokerFactory, rig_factory) -> None:
    broker = broker_factory(max_packet_bytes=48 * KIB)
    rig = rig_factory(broker, [200 * KIB], chunk_kib=256, batch_kib=256)
    assert rig.uploader.run_once(30)
    station = rig.station
    assert station.stored[rig.files[0].name] == segment_bytes(1, 200 * KIB)
    room = 48 * KIB - PUBLISH_OVERHEAD_BYTES - MAX_CHUNK_HEADER_BYTES
    assert max(c.length for c in station.chunks) == room
    assert all(c.payload_bytes <= 48 * KIB - PUBLISH_OVERHEAD_BYTES for c in station.chunks)
    assert all(len(m) <= 48 * KIB - PUBLISH_OVERHEAD_BYTES for m in station.records_messages)


def test_an_ack_with_a_bad_signature_records_nothing(mosquitto: MosquittoBroker, rig_factory,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory(mosquitto, [64 * KIB], reply_timeout_seconds=1)

    def flip_last_hex_digit(line: bytes) -> bytes:
        return line[:-2] + (b"0" if line[-2:-1] != b"0" else b"1") + b"\n"

    rig.station.tamper_ack = flip_last_hex_digit
    with caplog.at_level(logging.ERROR):
        assert not rig.uploader.run_once(3)
    assert rig.station.acks_sent and rig.custody.receipts == []
    assert rig.custody.purges <= 1 and rig.uploader.state.acked_sha256 == set()
    assert "signature invalid" in caplog.text


def test_an_ack_naming_a_link_this_ledger_lacks_records_nothing(mosquitto: MosquittoBroker, rig_factory,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory(mosquitto, [64 * KIB], reply_timeout_seconds=1)
    rig.station.wrong_link = True
    with caplog.at_level(logging.ERROR):
        assert not rig.uploader.run_once(3)
    assert rig.custody.receipts == []
    assert "station acknowledged seq" in caplog.text and "with a link this ledger does not have" in caplog.text


def test_an_ack_signed_by_another_station_key_records_nothing(mosquitto: MosquittoBroker, rig_factory,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory(mosquitto, [64 * KIB], reply_timeout_seconds=1, ack_key=seeded_key(33))
    with caplog.at_level(logging.ERROR):
        assert not rig.uploader.run_once(3)
    assert rig.custody.receipts == [] and "signed by another station key" in caplog.text


def test_a_broker_restart_mid_transfer_resumes_where_the_station_stands(mosquitto: MosquittoBroker,
                                                                         rig_factory) -> None:
    rig = rig_factory(mosquitto, [48 * 64 * KIB], chunk_kib=64, window_chunks=4, reply_timeout_seconds=2)
    restarted = threading.Event()

    def restart_once(count: int) -> None:
        if count == 10 and not restarted.is_set():
            restarted.set()
            threading.Thread(target=mosquitto.restart, daemon=True).start()  # not from paho's own thread

    rig.station.on_chunk = restart_once
    assert rig.uploader.run_once(60)
    assert restarted.is_set() and len(rig.uploader.sessions) >= 2
    assert rig.station.stored[rig.files[0].name] == segment_bytes(1, 48 * 64 * KIB)
    assert not [c for c in rig.station.chunks if c.already_confirmed]


def test_a_long_backlog_is_read_and_sent_a_slice_at_a_time(mosquitto: MosquittoBroker, rig_factory,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "READ_SLICE_BYTES", 3000)
    monkeypatch.setattr(session_module, "RECORDS_IN_FLIGHT_BYTES", 2500)
    rig = rig_factory(mosquitto, [10 * KIB] * 40, batch_kib=1)
    assert rig.uploader.run_once(30)
    assert rig.station.lines == ledger_lines(rig.store)
    assert len(rig.station.records_messages) > len(ledger_lines(rig.store)) // 4
    assert all(len(m) <= 1024 or m.count(b"\n") == 1 for m in rig.station.records_messages)


def test_a_line_longer_than_the_batch_target_goes_alone(mosquitto: MosquittoBroker, rig_factory) -> None:
    rig = rig_factory(mosquitto, [10 * KIB], batch_kib=1)
    with Ledger.open(rig.store, seeded_key(1), DEVICE, FakeClock(), boot_reason="test") as ledger:
        ledger.append("event", {"kind": "note", "text": "x" * 3000})  # one line of about 3.3 KiB
    long_lines = [line for line in ledger_lines(rig.store) if len(line) > 1024]
    assert long_lines
    assert rig.uploader.run_once(30)
    assert rig.station.lines == ledger_lines(rig.store)
    assert all(line in rig.station.records_messages for line in long_lines)  # each alone in its message


def test_a_damaged_line_is_sent_alone_and_once_gives_up(mosquitto: MosquittoBroker, rig_factory,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory(mosquitto, [10 * KIB, 10 * KIB])
    lines = ledger_lines(rig.store)
    damaged = b"this is not a record\n"
    (rig.store / "ledger.jsonl").write_bytes(b"".join(lines[:3]) + damaged + b"".join(lines[4:]))
    with caplog.at_level(logging.ERROR):
        assert not rig.uploader.run_once(20)
    assert rig.station.lines == lines[:3]
    assert rig.station.records_messages[-1] == damaged
    assert "ledger line 4 does not parse" in caplog.text and "bodycam-verify" in caplog.text
    assert rig.uploader.sessions[-1].error is None  # it gave up at once rather than at its timeout


def test_a_file_missing_from_the_store_makes_once_give_up_naming_it(mosquitto: MosquittoBroker, rig_factory,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory(mosquitto, [10 * KIB, 10 * KIB])
    missing = rig.store / rig.files[0].name
    missing.chmod(0o644)
    missing.unlink()
    with caplog.at_level(logging.ERROR):
        assert not rig.uploader.run_once(20)
    assert rig.station.stored == {rig.files[1].name: segment_bytes(2, 10 * KIB)}
    assert f"{rig.files[0].name}: cannot be read" in caplog.text and "could not be sent" in caplog.text


def test_a_station_holding_another_chain_gets_nothing(mosquitto: MosquittoBroker, rig_factory,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    rig = rig_factory(mosquitto, [10 * KIB])
    rig.station.seq, rig.station.link = 2, "e" * 64
    assert not rig.uploader.run_once(2)
    assert rig.station.records_messages == [] and rig.station.chunks == []
    assert "has another link than this ledger's (a fork)" in (rig.uploader.sessions[0].error or "")


def test_between_sessions_an_assignment_is_taken_and_a_lost_connection_let_go(mosquitto: MosquittoBroker,
                                                                                rig_factory) -> None:
    rig = rig_factory(mosquitto, [10 * KIB])
    assert rig.uploader.run_once(30)
    taken: list[bytes] = []

    class Device:
        def assign(self, line: bytes) -> str:
            taken.append(line)
            return "recorded"

    rig.uploader.assignments = AssignmentInbox(device_id=DEVICE, station_key=rig.station_key.public_key, port=Device())
    line = sign_assignment(Assignment("station-1", rig.station_key.fingerprint, DEVICE, "B5678",
                                      1_800_000_000_000_000, "1" * 32), rig.station_key).to_line()
    conn = rig.uploader.conn
    assert conn is not None
    rig.station.client.publish(down_topic(DEVICE, "assignment"), line, qos=1)
    wait_for(lambda: not conn.events.empty(), 5.0, "a connection event")
    result = rig.uploader.run_pass()
    assert not result.ran_session and taken == [line]
    # The connection drops while idle: the next pass lets it go (the idle listen then opens a new one).
    conn._client.disconnect()
    wait_for(lambda: not conn.events.empty(), 5.0, "a connection event")
    rig.uploader.run_pass()
    assert rig.uploader.conn is None and conn.closed
