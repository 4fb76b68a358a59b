from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from camera_doubles import RecordingOutput, decode_h264, frame_codes

from agent.camera.base import CameraSettings
from agent.camera.opencv_camera import OpenCVCamera
from agent.camera.overlay import draw_frame_code
from agent.camera.synthetic import MovingPattern
from agent.errors import CameraError


def write_video(path: Path, count: int, width: int = 320, height: int = 240, code_base: int | None = 1000) -> Path:
    """An MJPEG AVI whose frame i carries the frame code ``code_base + i`` (when given)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (width, height))
    assert writer.isOpened()
    pattern = MovingPattern(width, height)
    for index in range(count):
        frame = pattern.render(index).copy()
        if code_base is not None:
            draw_frame_code(frame, code_base + index)
        writer.write(frame)
    writer.release()
    return path


def record_file(camera: OpenCVCamera) -> RecordingOutput:
    output = RecordingOutput()
    camera.start_recording(output)
    assert camera.wait_finished(20)
    camera.stop_recording()
    return output


def test_replays_every_frame_of_a_file_in_order(small_settings: CameraSettings, tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", 40)
    with OpenCVCamera(small_settings, path, realtime=False) as camera:
        output = record_file(camera)
    output.assert_protocol()
    assert camera.frames_captured == len(output.frames) == 40
    assert output.keyframe_indices == [0, 10, 20, 30]
    assert output.timestamps == [i * 1_000_000 // 30 for i in range(40)]
    assert frame_codes(output.data) == [1000 + i for i in range(40)]  # the file's own frames, none skipped


def test_draws_its_own_frame_code_and_scales_other_sizes(small_settings: CameraSettings, tmp_path: Path) -> None:
    path = write_video(tmp_path / "big.avi", 12, width=640, height=480, code_base=None)
    with OpenCVCamera(small_settings, str(path), realtime=False, frame_code=True) as camera:
        output = record_file(camera)
    frames = decode_h264(output.data)
    assert [frame.shape for frame in frames] == [(240, 320, 3)] * 12
    assert frame_codes(output.data) == list(range(12))


def test_loops_a_file_and_stops_at_max_frames(small_settings: CameraSettings, tmp_path: Path) -> None:
    path = write_video(tmp_path / "short.avi", 7)
    with OpenCVCamera(small_settings, path, realtime=False, loop=True, max_frames=20) as camera:
        output = record_file(camera)
    assert frame_codes(output.data) == [1000 + i % 7 for i in range(20)]


def test_realtime_replay_is_paced(small_settings: CameraSettings, tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", 9)
    started = time.monotonic()
    with OpenCVCamera(small_settings, path) as camera:
        output = record_file(camera)
    assert time.monotonic() - started >= 8 / 30 - 0.01
    assert len(output.frames) == 9


def test_a_missing_file_or_device_names_the_source(small_settings: CameraSettings, tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.mp4"
    with pytest.raises(CameraError, match=r"cannot open video file .*nothing-here\.mp4"):
        OpenCVCamera(small_settings, missing)
    with pytest.raises(CameraError, match="cannot open video device 99"):
        OpenCVCamera(small_settings, 99)
    with pytest.raises(CameraError, match="cannot open video device 98"):
        OpenCVCamera(small_settings, "98")


def test_a_file_opencv_cannot_read_fails_clearly(small_settings: CameraSettings, tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CameraError, match=r"cannot open video file .*junk\.avi with OpenCV"):
        OpenCVCamera(small_settings, junk, realtime=False)


def test_a_file_without_frames_is_reported_by_stop_recording(small_settings: CameraSettings, tmp_path: Path) -> None:
    empty = write_video(tmp_path / "empty.avi", 0)
    camera = OpenCVCamera(small_settings, empty, realtime=False)
    output = RecordingOutput()
    camera.start_recording(output)
    assert camera.wait_finished(10)
    with pytest.raises(CameraError, match=r"empty\.avi holds no frame OpenCV can decode"):
        camera.stop_recording()
    assert output.calls == ["start", "_add_stream", "stop"]
    camera.close()
