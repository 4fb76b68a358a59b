"""The Pi backend (through the fake picamera2) switches the officer in its overlay while recording, as the
software backends do (tests/assignment/test_assignment_device.py draws through the synthetic camera)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from camera_doubles import RecordingOutput
from helpers import wait_for

import agent.camera.picamera2_camera as backend
from agent.camera import fake_picamera2
from agent.camera.base import CameraSettings
from agent.camera.picamera2_camera import Picamera2Camera


def test_picamera2_draws_the_new_officer_from_the_next_frame_on(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = CameraSettings(width=320, height=240, fps=30, bitrate=600_000, keyframe_interval=10,
                              device_id="cam-0001", officer_id="T0001")
    fake = fake_picamera2.load(fast=False, max_frames=30, stride_align=256)
    camera = Picamera2Camera(settings, module_loader=lambda: fake)
    officers: list[str] = []
    lock = threading.Lock()

    def spy(frame: Any, wall_us: int, device_id: str, officer_id: str, trusted: bool, n: int) -> None:
        with lock:
            officers.append(officer_id)

    monkeypatch.setattr(backend, "draw_overlay", spy)
    camera.start_recording(RecordingOutput())
    wait_for(lambda: len(officers) >= 5, 10, "the first frames")
    camera.set_officer("B5678")
    with lock:
        switched_at = len(officers)
    assert fake.cameras[0].finished.wait(20)
    camera.stop_recording()
    camera.close()
    first_new = officers.index("B5678")
    assert set(officers[:first_new]) == {"T0001"} and set(officers[first_new:]) == {"B5678"}
    assert first_new <= switched_at + 1 and len(officers) == 30
