"""The device takes an officer assignment: a verifying signed record, the overlay of every later frame, the
workflow's records, a restart; duplicates, older and forged assignments, and an open case, change nothing.

In process: a real ledger, the synthetic camera really encoding, the real Device and control socket; the
overlay is watched by wrapping ``draw_overlay`` where the capture thread calls it (the real one still draws).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from camera_doubles import overlay_reading
from helpers import seeded_key, wait_for

import agent.camera.threaded as threaded
from agent.camera.base import CameraSettings
from agent.camera.overlay import draw_overlay
from agent.camera.synthetic import SyntheticCamera
from agent.control_socket import ControlServer, send_request
from agent.device import Device, assignment_handler
from agent.errors import RefusedError, VerificationError
from agent.evidence.assignment import Assignment, SignedAssignment, officer_in_store, sign_assignment
from agent.evidence.keys import DeviceKey, public_key_raw
from agent.evidence.ledger import Ledger
from agent.evidence.store import read_records
from agent.evidence.verify import verify_store
from agent.recorder.segmenter import SegmenterSettings
from agent.recorder.session import RecordingSession
from agent.workflow.events import CloseCase, OpenCase
from agent.workflow.state import WorkflowConfig
from firmware_config.profiles import load_profiles

DEVICE, DEFAULT_OFFICER = "cam-0001", "T0001"
STATION, IMPOSTOR = seeded_key(9), seeded_key(10)
T0 = 1_800_000_000_000_000
SETTINGS = CameraSettings(width=320, height=192, fps=10, bitrate=300_000, keyframe_interval=10, device_id=DEVICE,
                          officer_id=DEFAULT_OFFICER)


def station_assignment(officer: str, issued: int, serial: str, signer: DeviceKey = STATION) -> SignedAssignment:
    return sign_assignment(Assignment("station-1", STATION.fingerprint, DEVICE, officer, issued, serial), signer)


@dataclass
class Drawn:
    """What the capture thread drew: per frame, the officer and a copy of the overlay box with its arguments."""

    frames: list[tuple[str, np.ndarray, tuple[Any, ...]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def draw(self, frame: np.ndarray, wall_us: int, device_id: str, officer_id: str, trusted: bool, n: int) -> None:
        draw_overlay(frame, wall_us, device_id, officer_id, trusted, n)
        with self.lock:
            self.frames.append((officer_id, frame[:60, :320].copy(), (wall_us, device_id, trusted, n)))

    def count(self) -> int:
        with self.lock:
            return len(self.frames)

    def since(self, start: int) -> list[tuple[str, np.ndarray, tuple[Any, ...]]]:
        with self.lock:
            return self.frames[start:]


class Harness:
    def __init__(self, store: Path, drawn: Drawn) -> None:
        self.store = store
        self.drawn = drawn
        self.ledger: Ledger | None = None
        self.device: Device | None = None
        self.camera: SyntheticCamera | None = None

    def start(self) -> Device:
        self.ledger = Ledger.open(self.store, seeded_key(1), DEVICE, boot_reason="test")
        self.camera = SyntheticCamera(SETTINGS, realtime=True, frame_code=False)
        session = RecordingSession(ledger=self.ledger, camera=self.camera, settings=SegmenterSettings(
            segment_seconds=2, prebuffer_seconds=1, width=320, height=192, fps=10))
        config = WorkflowConfig(procedures=load_profiles(), device_id=DEVICE, officer_id=DEFAULT_OFFICER)
        self.device = Device(ledger=self.ledger, session=session, config=config)
        self.device.start()
        return self.device

    def stop(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None

    def assignments(self) -> list[dict[str, Any]]:
        return [dict(r.record.body) for r in read_records(self.store)
                if r.record.type == "event" and r.record.body.get("kind") == "officer-assigned"]

    def ledger_bytes(self) -> bytes:
        return (self.store / "ledger.jsonl").read_bytes()


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    drawn = Drawn()
    monkeypatch.setattr(threaded, "draw_overlay", drawn.draw)
    running = Harness(tmp_path / "store", drawn)
    yield running
    running.stop()


def frames_show(drawn: Drawn, start: int, officer: str, old: str) -> None:
    """Every frame drawn from ``start`` on shows ``officer``: its overlay reads as ``officer``'s, not ``old``'s."""
    wait_for(lambda: drawn.count() >= start + 3, 15, "three more frames")
    later = drawn.since(start)
    assert {name for name, _box, _args in later} == {officer}
    _name, box, args = later[-1]
    assert overlay_reading(box, (SETTINGS.height, SETTINGS.width), args, [officer, old]) == officer


def test_a_station_assignment_is_recorded_burnt_in_and_used_by_the_workflow(harness: Harness) -> None:
    device = harness.start()
    wait_for(lambda: harness.drawn.count() >= 2, 15, "frames with the configured officer")
    assert {name for name, _b, _a in harness.drawn.since(0)} == {DEFAULT_OFFICER}
    assert device.status()["officer"] == DEFAULT_OFFICER

    first = station_assignment("B5678", T0, "1" * 32)
    result = device.assign_station(first, STATION.public_key)
    assert result["outcome"] == "recorded" and result["officer"] == "B5678"
    after = harness.drawn.count() + 1  # a frame being drawn right now may still show the previous officer
    [body] = harness.assignments()
    assert body["officer"] == "B5678" and body["previous_officer"] == DEFAULT_OFFICER
    assert body["by"] == "station station-1" and body["assignment"] == first.text()
    frames_show(harness.drawn, after, "B5678", DEFAULT_OFFICER)
    assert device.status()["officer"] == "B5678" and device.status()["officer_by"] == "station station-1"

    # The same retained message again, and an older one: nothing recorded, nothing changes.
    before = harness.ledger_bytes()
    assert device.assign_station(first, STATION.public_key)["outcome"] == "in-effect"
    assert device.assign_station(station_assignment("A0", T0 - 1, "0" * 32), STATION.public_key)["outcome"] == "older"
    # Forged (another key) and about another device: refused, nothing recorded.
    with pytest.raises(VerificationError, match="signature invalid"):
        device.assign_station(station_assignment("EVIL", T0 + 5, "5" * 32, signer=IMPOSTOR), STATION.public_key)
    other = sign_assignment(Assignment("station-1", STATION.fingerprint, "cam-0002", "X1", T0 + 6, "6" * 32), STATION)
    with pytest.raises(VerificationError, match="about device 'cam-0002'"):
        device.assign_station(other, STATION.public_key)
    assert harness.ledger_bytes() == before and device.officer == "B5678"

    # The workflow's records name the new officer; while the case is open no assignment takes effect.
    assert device.command(OpenCase())[0] is None
    with pytest.raises(RefusedError, match="case cam-0001-00001 is open"):
        device.assign_station(station_assignment("B9999", T0 + 10, "a" * 32), STATION.public_key)
    with pytest.raises(RefusedError, match="is open"):
        device.assign_dock("C0001")
    assert device.command(CloseCase("end of shift"))[0] is None
    bodies = {r.record.type: dict(r.record.body) for r in read_records(harness.store)}
    assert bodies["case-open"]["officer"] == "B5678" and bodies["case-close"]["officer"] == "B5678"
    assert len(harness.assignments()) == 1

    # After the case: the pending station assignment goes through, then one from the dock.
    assert device.assign_station(station_assignment("B9999", T0 + 10, "a" * 32), STATION.public_key)["seq"]
    result = device.assign_dock("C0001")
    assert result["outcome"] == "recorded" and result["by"] == "dock"
    assert device.assign_dock("C0001")["outcome"] == "in-effect"
    assert [(b["officer"], b["previous_officer"], b["by"]) for b in harness.assignments()] == [
        ("B5678", DEFAULT_OFFICER, "station station-1"), ("B9999", "B5678", "station station-1"),
        ("C0001", "B9999", "dock")]
    after = harness.drawn.count() + 1
    frames_show(harness.drawn, after, "C0001", "B9999")
    harness.stop()

    report = verify_store(harness.store, seeded_key(1).public_key)
    assert report.intact, report.problems
    # What the daemon sets on the camera before its self-test arms it (only assignment lines are parsed).
    assert officer_in_store(harness.store, DEFAULT_OFFICER) == "C0001"
    assert officer_in_store(harness.store.parent / "no-store", DEFAULT_OFFICER) == DEFAULT_OFFICER

    # A restart takes the officer from the ledger, not from the config, from the very first frame.
    start = harness.drawn.count()
    device = harness.start()
    assert device.officer == "C0001" and harness.camera is not None
    assert harness.camera.settings.officer_id == "C0001"
    frames_show(harness.drawn, start, "C0001", DEFAULT_OFFICER)
    # The station's retained message of before comes again: older than the newest station assignment.
    assert device.assign_station(station_assignment("B9999", T0 + 10, "a" * 32), STATION.public_key)["outcome"] \
        == "in-effect"
    assert device.officer == "C0001"


def test_the_control_socket_assign_op(harness: Harness, short_folder: Path, tmp_path: Path) -> None:
    device = harness.start()
    key_file = tmp_path / "station.pub"
    key_file.write_text(public_key_raw(STATION.public_key).hex() + "\n")
    socket_path = short_folder / "c.sock"
    server = ControlServer(path=socket_path, group="nogroup-bodycam-test", handle=device.command, status=device.status,
                           assign=assignment_handler(device, key_file))
    server.start()
    try:
        line = station_assignment("B5678", T0, "1" * 32).text()
        reply = send_request(socket_path, {"op": "assign", "assignment": line})
        assert reply["ok"] is True and reply["result"]["outcome"] == "recorded", reply
        assert send_request(socket_path, {"op": "assign", "assignment": line})["result"]["outcome"] == "in-effect"
        forged = station_assignment("EVIL", T0 + 1, "2" * 32, signer=IMPOSTOR).text()
        reply = send_request(socket_path, {"op": "assign", "assignment": forged})
        assert reply["ok"] is False and reply["error_type"] == "VerificationError"
        reply = send_request(socket_path, {"op": "assign", "officer": "C0001"})
        assert reply["ok"] is True and reply["result"]["by"] == "dock"
        before = harness.ledger_bytes()
        for bad in ({"op": "assign"}, {"op": "assign", "officer": "A", "assignment": line},
                    {"op": "assign", "officer": 5}, {"op": "assign", "officer": "x", "note": "n"},
                    {"op": "assign", "officer": "bad\nname"}, {"op": "assign", "assignment": "not a line"}):
            reply = send_request(socket_path, bad)
            assert reply["ok"] is False and reply["error"], bad
        assert harness.ledger_bytes() == before
        assert send_request(socket_path, {"op": "status"})["status"]["officer"] == "C0001"
    finally:
        server.close()
    # Without sync.station_key a station assignment cannot be checked: refused, the dock still works.
    server = ControlServer(path=socket_path, group="nogroup-bodycam-test", handle=device.command, status=device.status,
                           assign=assignment_handler(device, None))
    server.start()
    try:
        line = station_assignment("B1", T0 + 9, "9" * 32).text()
        reply = send_request(socket_path, {"op": "assign", "assignment": line})
        assert reply["ok"] is False and "station_key" in reply["error"]
    finally:
        server.close()
