from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from camera_doubles import RecordingOutput, frame_codes
from helpers import FakeClock

import agent.camera.threaded as threaded
from agent.camera.base import Camera, CameraSettings
from agent.camera.synthetic import SyntheticCamera
from agent.errors import CameraError


def record_fast(camera: SyntheticCamera, output: RecordingOutput | None = None) -> RecordingOutput:
    output = output or RecordingOutput()
    camera.start_recording(output)
    assert camera.wait_finished(20)
    camera.stop_recording()
    return output


def test_it_is_a_camera(small_settings: CameraSettings) -> None:
    camera: Camera = SyntheticCamera(small_settings)
    assert camera.settings is small_settings and camera.frames_captured == 0 and camera.origin_mono_us is None


def test_fast_mode_records_exact_frames_keyframes_and_timestamps(small_settings: CameraSettings) -> None:
    clock = FakeClock(mono_us=5_000_000)
    camera = SyntheticCamera(small_settings, realtime=False, max_frames=45, clock=clock)
    output = record_fast(camera)
    output.assert_protocol()
    assert output.streams == [("video", "h264", {"rate": 30, "width": 320, "height": 240})]
    assert camera.frames_captured == len(output.frames) == 45
    assert output.keyframe_indices == [0, 10, 20, 30, 40]
    assert output.timestamps == [i * 1_000_000 // 30 for i in range(45)]
    gaps = [b - a for a, b in zip(output.timestamps, output.timestamps[1:], strict=False)]
    assert all(abs(gap - 1_000_000 / 30) <= 1 for gap in gaps)
    assert camera.origin_mono_us == 5_000_000 + clock.step_us  # the clock's monotonic time at frame 0
    assert frame_codes(output.data) == list(range(45))
    assert camera.frames_dropped == 0


def test_fast_mode_records_a_minute_in_seconds() -> None:
    settings = CameraSettings(width=320, height=240, fps=10, bitrate=300_000, keyframe_interval=10)
    camera = SyntheticCamera(settings, realtime=False, max_frames=600)
    started = time.monotonic()
    output = record_fast(camera)
    assert time.monotonic() - started < 15
    assert len(output.frames) == 600
    assert output.timestamps[-1] == 59_900_000
    assert len(output.keyframe_indices) == 60


def test_overlay_gets_the_clock_the_ids_and_the_trust_flag(
    small_settings: CameraSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, ...]] = []
    real = threaded.draw_overlay

    def spy(frame: Any, *args: Any) -> None:
        seen.append(args)
        real(frame, *args)

    monkeypatch.setattr(threaded, "draw_overlay", spy)
    clock = FakeClock(wall_us=1_700_000_000_000_000)
    camera = SyntheticCamera(small_settings, realtime=False, max_frames=3, clock=clock, clock_trusted=False)
    record_fast(camera)
    wall0 = 1_700_000_000_000_000 + clock.step_us
    assert seen == [(wall0 + i * 1_000_000 // 30, "cam-test-01", "officer-42", False, i) for i in range(3)]


def test_realtime_mode_paces_to_the_frame_rate(small_settings: CameraSettings) -> None:
    camera = SyntheticCamera(small_settings, realtime=True, max_frames=12)
    before = threaded.monotonic_us()
    started = time.monotonic()
    output = record_fast(camera)
    assert time.monotonic() - started >= 11 / 30 - 0.01
    assert camera.origin_mono_us is not None and camera.origin_mono_us >= before
    # On the frame grid (a slow machine may drop frames, never shift them).
    slots = [round(ts * 30 / 1_000_000) for ts in output.timestamps]
    assert output.timestamps == [slot * 1_000_000 // 30 for slot in slots]
    assert slots == sorted(set(slots)) and len(slots) == 12


def test_stop_recording_ends_an_endless_run(small_settings: CameraSettings) -> None:
    camera = SyntheticCamera(small_settings, realtime=True)
    output = RecordingOutput()
    camera.start_recording(output)
    time.sleep(0.25)
    camera.stop_recording()
    output.assert_protocol()
    assert len(output.frames) == camera.frames_captured >= 3
    assert frame_codes(output.data) == list(range(camera.frames_captured))
    assert output.frames[0].thread == "synthetic-capture"
    camera.stop_recording()  # idle: a no-op
    camera.close()


def test_a_failing_output_is_reported_by_stop_recording(
    small_settings: CameraSettings, caplog: pytest.LogCaptureFixture
) -> None:
    camera = SyntheticCamera(small_settings, realtime=False, max_frames=50)
    output = RecordingOutput(fail_at=5)
    camera.start_recording(output)
    assert camera.wait_finished(10)
    assert isinstance(camera.error, OSError)
    with caplog.at_level(logging.ERROR), pytest.raises(CameraError, match="failed after 5 frames") as info:
        camera.stop_recording()
    assert isinstance(info.value.__cause__, OSError)
    assert output.calls[-1] == "stop" and len(output.frames) == 5  # stopped, no flush into a broken output
    assert not camera.recording
    camera.close()


def test_a_failing_output_start_propagates_unchanged(small_settings: CameraSettings) -> None:
    camera = SyntheticCamera(small_settings, realtime=False, max_frames=5)
    with pytest.raises(OSError, match="cannot open the segment"):
        camera.start_recording(RecordingOutput(fail_start=True))
    assert not camera.recording
    record_fast(camera)  # and the camera still works


def test_runs_restart_at_timestamp_zero_and_states_are_checked(small_settings: CameraSettings) -> None:
    camera = SyntheticCamera(small_settings, realtime=False, max_frames=5)
    first = RecordingOutput()
    camera.start_recording(first)
    with pytest.raises(CameraError, match="already recording"):
        camera.start_recording(RecordingOutput())
    assert camera.wait_finished(10)
    camera.stop_recording()
    second = record_fast(camera)
    assert first.timestamps == second.timestamps == [i * 1_000_000 // 30 for i in range(5)]
    camera.close()
    camera.close()
    with pytest.raises(CameraError, match="closed"):
        camera.start_recording(RecordingOutput())


def test_close_stops_a_running_recording(small_settings: CameraSettings) -> None:
    output = RecordingOutput()
    with SyntheticCamera(small_settings, realtime=True) as camera:
        camera.start_recording(output)
        time.sleep(0.1)
    assert output.calls[-1] == "stop"
    assert not any(t.name == "synthetic-capture" for t in threading.enumerate())
