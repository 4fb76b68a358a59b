from __future__ import annotations

import time

import numpy as np
import pytest
from camera_doubles import RecordingOutput, decode_h264, frame_codes, overlay_reading

from agent.camera.base import CameraSettings
from agent.camera.encoder import SoftwareH264Encoder
from agent.camera.overlay import (
    CODE_BITS,
    draw_frame_code,
    draw_overlay,
    format_wall_time,
    read_frame_code,
)
from agent.camera.synthetic import MovingPattern
from agent.errors import CameraError

WALL_US = 1_700_000_000_250_000  # 2023-11-14T22:13:20.25Z


def grey(height: int = 360, width: int = 640, channels: int = 3) -> np.ndarray:
    return np.full((height, width, channels), 128, dtype=np.uint8)


def test_wall_time_is_utc_to_the_second() -> None:
    assert format_wall_time(WALL_US) == "2023-11-14T22:13:20Z"


def test_overlay_draws_a_box_top_left_and_nothing_elsewhere() -> None:
    frame = grey()
    draw_overlay(frame, WALL_US, "cam-01", "officer-42", True, 7)
    changed = np.any(frame != 128, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 2000
    assert ys.max() < 360 // 3 and xs.max() < 640 * 3 // 4  # a box in the top-left corner
    assert frame[0, 0].tolist() == [0, 0, 0]  # the box is black...
    assert (frame[: ys.max(), : xs.max()] == 255).any()  # ...with white text


def test_overlay_says_clock_not_set_when_the_clock_is_not_trusted() -> None:
    trusted, untrusted = grey(), grey()
    draw_overlay(trusted, WALL_US, "cam-01", "officer-42", True, 7)
    draw_overlay(untrusted, WALL_US, "cam-01", "officer-42", False, 7)
    assert not np.array_equal(trusted, untrusted)
    # The time is not printed at all: another wall time draws the same untrusted picture.
    other = grey()
    draw_overlay(other, WALL_US + 3_600_000_000, "cam-01", "officer-42", False, 7)
    assert np.array_equal(untrusted, other)


def test_overlay_text_changes_with_time_ids_and_frame_number() -> None:
    base = grey()
    draw_overlay(base, WALL_US, "cam-01", "officer-42", True, 7)
    for args in [
        (WALL_US + 1_000_000, "cam-01", "officer-42", True, 7),
        (WALL_US, "cam-02", "officer-42", True, 7),
        (WALL_US, "cam-01", "officer-43", True, 7),
        (WALL_US, "cam-01", "officer-42", True, 8),
    ]:
        frame = grey()
        draw_overlay(frame, *args)
        assert not np.array_equal(frame, base), args


def test_overlay_survives_long_and_non_ascii_ids_on_a_small_frame() -> None:
    frame = grey(240, 320)
    draw_overlay(frame, WALL_US, "Überwachung-" * 10, "警官" * 20, True, 123456)
    assert np.any(frame != 128)


def test_drawing_works_on_padded_views_and_four_channels() -> None:
    # picamera2's MappedArray: rows padded to the stride, the padding sliced off (not contiguous).
    height, width, stride = 240, 320, 1024
    buffer = np.zeros(height * stride, dtype=np.uint8)
    view = buffer.reshape(height, stride)[:, : width * 3].reshape(height, width, 3)
    assert not view.flags.c_contiguous and np.shares_memory(view, buffer)
    draw_overlay(view, WALL_US, "cam", "off", True, 1)
    draw_frame_code(view, 0xDEADBEEF)
    assert read_frame_code(view) == 0xDEADBEEF
    assert buffer.reshape(height, stride)[:, width * 3 :].max() == 0  # padding untouched
    four = grey(240, 320, 4)
    draw_overlay(four, WALL_US, "cam", "off", False, 1)
    draw_frame_code(four, 77)
    assert read_frame_code(four) == 77


@pytest.mark.parametrize("n", [0, 1, 2, 0x5555AAAA, 123_456_789, (1 << CODE_BITS) - 1])
def test_frame_code_round_trips_on_raw_frames(n: int) -> None:
    for height, width in [(240, 320), (360, 640), (1080, 1920)]:
        frame = grey(height, width)
        draw_frame_code(frame, n)
        assert read_frame_code(frame) == n


def test_frame_code_is_absent_from_an_unmarked_frame_and_refuses_bad_input() -> None:
    assert read_frame_code(grey()) is None
    assert read_frame_code(np.zeros((360, 640, 3), np.uint8)) is None
    assert read_frame_code(grey(32, 64)) is None
    with pytest.raises(CameraError, match="does not fit"):
        draw_frame_code(grey(), 1 << CODE_BITS)
    with pytest.raises(CameraError, match="too small"):
        draw_frame_code(grey(32, 200), 1)


def test_frame_code_refuses_to_guess_when_a_block_is_ambiguous() -> None:
    frame = grey()
    draw_frame_code(frame, 0)
    frame[frame.shape[0] - 40 : frame.shape[0] - 20, 16 + 16 * 5 : 16 + 16 * 6] = 128  # a grey data block
    assert read_frame_code(frame) is None


def test_frame_code_survives_libx264_at_one_megabit() -> None:
    """300 frames of 640x360 at 1 Mbit/s with overlay and a busy moving picture: every counter reads back."""
    settings = CameraSettings(width=640, height=360, fps=30, bitrate=1_000_000, keyframe_interval=30)
    pattern = MovingPattern(640, 360)
    encoder = SoftwareH264Encoder(settings)
    output = RecordingOutput()
    encoder.start(output)
    for index in range(300):
        frame = pattern.render(index)
        draw_overlay(frame, WALL_US + index * 33_333, "cam-01", "officer-42", True, index)
        draw_frame_code(frame, index)
        encoder.encode(frame, index * 33_333)
    encoder.stop()
    bits_per_second = len(output.data) * 8 / 10
    assert bits_per_second < 1_300_000  # the bitrate is honoured (VBV), so this really is a starved stream
    assert frame_codes(output.data) == list(range(300))


@pytest.mark.parametrize("bitrate", [4_000_000, 8_000_000])
def test_the_officer_reads_right_after_h264_at_1080p(bitrate: int) -> None:
    """What a person checks on the played-back footage: the officer field says C0001, not an id one character
    away, on every frame of a busy moving 1080p picture encoded by libx264 at an agency's bitrates."""
    settings = CameraSettings(width=1920, height=1080, fps=30, bitrate=bitrate, keyframe_interval=30)
    pattern = MovingPattern(1920, 1080)
    encoder = SoftwareH264Encoder(settings)
    output = RecordingOutput()
    encoder.start(output)
    frames = 12
    for index in range(frames):
        frame = pattern.render(index)
        draw_overlay(frame, WALL_US + index * 33_333, "cam-0001", "C0001", True, index)
        encoder.encode(frame, index * 33_333)
    encoder.stop()
    decoded = decode_h264(output.data)
    assert len(decoded) == frames
    lookalikes = ["C0001", "T0001", "C0007", "G0001", "O0001"]
    for index, frame in enumerate(decoded):
        args = (WALL_US + index * 33_333, "cam-0001", True, index)
        assert overlay_reading(frame[:120, :800], (1080, 1920), args, lookalikes) == "C0001", index


def test_overlay_text_is_crisp_white_on_black() -> None:
    # Two levels in the box on every OpenCV (5.x anti-aliases even LINE_8 text): see agent/camera/overlay.py.
    frame = grey(1080, 1920)
    draw_overlay(frame, WALL_US, "cam-01", "officer-42", True, 7)
    box = frame[np.any(frame != 128, axis=2)]
    assert set(np.unique(box).tolist()) == {0, 255}


def test_overlay_and_code_are_fast_enough_for_the_camera_lock() -> None:
    frame = grey(1080, 1920)
    start = time.perf_counter()
    for index in range(50):
        draw_overlay(frame, WALL_US, "cam-01", "officer-42", True, index)
        draw_frame_code(frame, index)
    per_frame = (time.perf_counter() - start) / 50
    assert per_frame < 0.005  # measured about 0.3 ms; 5 ms would still leave a 30 fps camera 28 ms
