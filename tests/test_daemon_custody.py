"""Custody through the agent: the control socket's ``receipt`` and ``purge`` ops (issue 5).

A real daemon (``bodycam-agent run`` with the synthetic camera, as tests/test_daemon.py runs it) records
receipts and purges for an uploader calling AgentCustody, while DirectCustody is refused its ledger. The
socket's size limits and refusals are checked against an in-process ControlServer on a real ledger.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FakeClock, seeded_key, wait_for
from test_daemon import Daemon, daemon_config, raw_request, records, verify

from agent.control_socket import MAX_CUSTODY_REQUEST_BYTES, MAX_REQUEST_BYTES, ControlServer, send_request
from agent.daemon import custody_handler
from agent.errors import LedgerBusyError, VerificationError
from agent.evidence.ack import Ack, AckedFile, SignedAck, sign_ack
from agent.evidence.custody import DirectCustody, RetentionPolicy
from agent.evidence.keys import DeviceKey, public_key_raw
from agent.evidence.ledger import Ledger
from agent.evidence.record import SignedRecord
from agent.evidence.store import read_records, segment_file_name
from firmware_config.device_config import SyncSettings
from sync.uploader.custody_port import AgentCustody

DEVICE = "cam-0001"
STATION = seeded_key(9)
IMPOSTOR = seeded_key(10)


def make_ack(store: Path, files: list[str], signer: DeviceKey = STATION) -> SignedAck:
    """An ack of the store's newest complete record, naming ``files`` with their recorded hashes."""
    found = read_records(store)
    head = found[-1]
    recorded = {str(r.record.body["file"]): r.record.body for r in found if r.record.type in ("segment", "recovered")}
    acked = tuple(AckedFile(n, str(recorded[n]["sha256"]), int(recorded[n]["size"])) for n in files)
    ack = Ack("station-1", STATION.fingerprint, head.record.device, "session-1", head.seq, head.link, acked,
              1_800_000_000_000_000)
    return sign_ack(ack, signer)


def segments(store: Path) -> list[str]:
    return [str(body["file"]) for _, rtype, body in records(store) if rtype in ("segment", "recovered")]


@pytest.fixture
def station_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "station-ack.pub"
    path.write_text(public_key_raw(STATION.public_key).hex() + "\n", encoding="ascii")
    return path


@pytest.fixture
def custody_daemon(tmp_path: Path, short_folder: Path, station_key_file: Path) -> Iterator[Daemon]:
    socket_path = short_folder / "control.sock"
    config = daemon_config(tmp_path, socket_path)
    text = config.read_text(encoding="utf-8")
    for old, new in {'station_key = ""': f'station_key = "{station_key_file}"',
                     "segment_seconds = 10": "segment_seconds = 1"}.items():
        assert text.count(old) == 1, f"device.example.toml changed: {old!r} not found exactly once"
        text = text.replace(old, new)
    config.write_text(text, encoding="utf-8")
    running = Daemon(config, socket_path, tmp_path / "store", tmp_path)
    yield running
    running.stop_if_running()


def test_agent_custody_records_a_receipt_and_purges_through_the_daemon(
    custody_daemon: Daemon, tmp_path: Path
) -> None:
    daemon = custody_daemon
    daemon.start()
    daemon.ok("record")
    wait_for(lambda: len(segments(daemon.store)) >= 3, 30, "three closed segments")
    daemon.ok("stop")
    wait_for(lambda: any(body.get("kind") == "recording-stop" for _, _, body in records(daemon.store)), 10,
             "the recorder's stop")
    files = segments(daemon.store)
    agent = AgentCustody(daemon.socket)
    ledger = daemon.store / "ledger.jsonl"

    # A forged ack is refused by the agent and raised here as what it is; nothing is recorded.
    before = ledger.read_bytes()
    with pytest.raises(VerificationError, match="signature invalid"):
        agent.record_receipt(make_ack(daemon.store, files[:2], signer=IMPOSTOR).to_line())
    assert ledger.read_bytes() == before

    ack = make_ack(daemon.store, files[:2])
    outcome = agent.record_receipt(ack.to_line())
    [receipt] = [(seq, body) for seq, rtype, body in records(daemon.store) if rtype == "receipt"]
    assert outcome == f"ack for seq {ack.ack.seq} recorded as receipt seq {receipt[0]}"
    assert receipt[1]["files"] == [f.sha256 for f in ack.ack.files]

    assert agent.purge_acknowledged() == files[:2]
    assert [name for name in files if (daemon.store / name).exists()] == files[2:]
    assert agent.purge_acknowledged() == []
    # An ack of only the receipt and the purges is no news.
    assert "not recorded" in agent.record_receipt(make_ack(daemon.store, []).to_line())

    # While the agent runs, the uploader cannot open the ledger itself.
    direct = DirectCustody(store=daemon.store, key_path=tmp_path / "identity" / "device.key", device_id=DEVICE,
                           station_key=STATION.public_key,
                           policy=RetentionPolicy(True, 0, 30))
    with pytest.raises(LedgerBusyError, match="control socket"):
        direct.record_receipt(make_ack(daemon.store, files[2:3]).to_line())
    code, _ = daemon.terminate()
    assert code == 0, daemon.output()

    verified, report = verify(daemon.store)
    assert verified == 0 and report["intact"] is True, report["problems"]
    purged = [n["object"] for n in report["notes"] if n["message"].startswith("purged (acknowledged by station")]
    assert purged == [f"segment {name.split('/')[1]}" for name in files[:2]]


# --- the socket: limits and refusals, in process ------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "store", seeded_key(1), DEVICE, FakeClock()) as opened:
        yield opened


def _serve(short_folder: Path, ledger: Ledger, sync: SyncSettings) -> ControlServer:
    server = ControlServer(path=short_folder / "c.sock", group="nogroup-bodycam-test", handle=lambda _c: (None, {}),
                           status=dict, custody=custody_handler(ledger, sync))
    server.start()
    return server


def _segments(ledger: Ledger, count: int) -> list[SignedRecord]:
    made = []
    for index in range(1, count + 1):
        stored = ledger.layout.write_segment(segment_file_name(index, "bin"), b"frame %d" % index)
        made.append(ledger.append("segment", {"file": stored.name, "sha256": stored.sha256, "size": stored.size}))
    return made


def test_without_a_station_key_the_custody_ops_are_refused(ledger: Ledger, short_folder: Path) -> None:
    _segments(ledger, 2)
    server = _serve(short_folder, ledger, SyncSettings())
    try:
        before = ledger.layout.ledger_path.read_bytes()
        line = make_ack(ledger.layout.root, ["segments/000001.bin"]).to_line().decode().rstrip("\n")
        for request in ({"op": "receipt", "ack": line}, {"op": "purge"}):
            reply = send_request(server.path, request)
            assert reply["ok"] is False and reply["error_type"] == "ConfigError", reply
            assert "sync.station_key is not configured" in reply["error"]
        assert ledger.layout.ledger_path.read_bytes() == before
    finally:
        server.close()


def test_a_receipt_may_be_long_other_requests_may_not(
    ledger: Ledger, short_folder: Path, station_key_file: Path
) -> None:
    made = _segments(ledger, 64)
    server = _serve(short_folder, ledger, SyncSettings(station_key=station_key_file))
    try:
        files = [str(r.record.body["file"]) for r in made]
        line = make_ack(ledger.layout.root, files).to_line().decode().rstrip("\n")
        request = {"op": "receipt", "ack": line}
        assert MAX_REQUEST_BYTES < len(json.dumps(request)) < MAX_CUSTODY_REQUEST_BYTES
        reply = send_request(server.path, request)
        assert reply["ok"] is True and "recorded as receipt" in reply["result"]["outcome"], reply

        refusals: list[tuple[bytes, str]] = [
            (json.dumps({"op": "stage", "note": "a" * 6000}).encode() + b"\n", f"longer than {MAX_REQUEST_BYTES}"),
            (json.dumps({"op": "receipt", "ack": "a" * 70_000}).encode() + b"\n",
             f"longer than {MAX_CUSTODY_REQUEST_BYTES}"),
            (b'{"op": "purge", "all": true}\n', "unknown field 'all'"),
            (b'{"op": "receipt"}\n', "'ack'"),
            (b'{"op": "receipt", "ack": "not an ack"}\n', "ack: not 'payload TAB signature-hex'"),
        ]
        before = ledger.layout.ledger_path.read_bytes()
        for data, message in refusals:
            refused: dict[str, Any] = raw_request(server.path, data)
            assert refused["ok"] is False and message in refused["error"], (data[:40], refused)
        assert ledger.layout.ledger_path.read_bytes() == before

        reply = send_request(server.path, {"op": "purge"})
        assert reply["ok"] is True and reply["result"] == {"purged": files, "refused": []}, reply
        assert list(ledger.layout.segments_dir.iterdir()) == []
    finally:
        server.close()
