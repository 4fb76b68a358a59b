from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from camera_doubles import RecordingOutput, decode_h264, frame_codes, nal_types

from agent.camera.base import CameraSettings
from agent.camera.encoder import SoftwareH264Encoder
from agent.camera.overlay import draw_frame_code
from agent.camera.synthetic import MovingPattern
from agent.errors import CameraError


def encode_frames(
    settings: CameraSettings, count: int, start_us: int = 0
) -> tuple[RecordingOutput, SoftwareH264Encoder]:
    pattern = MovingPattern(settings.width, settings.height)
    encoder = SoftwareH264Encoder(settings)
    output = RecordingOutput()
    encoder.start(output)
    for index in range(count):
        frame = pattern.render(index)
        draw_frame_code(frame, index)
        encoder.encode(frame, start_us + index * 1_000_000 // settings.fps)
    encoder.stop()
    return output, encoder


def test_drives_the_output_in_picamera2_order(small_settings: CameraSettings) -> None:
    output, encoder = encode_frames(small_settings, 25)
    output.assert_protocol()
    assert output.streams == [("video", "h264", {"rate": 30, "width": 320, "height": 240})]
    assert len(output.frames) == encoder.frames_encoded == encoder.packets_sent == 25
    assert all(not frame.audio and frame.packet is None for frame in output.frames)


def test_keyframes_every_interval_each_carrying_sps_and_pps(small_settings: CameraSettings) -> None:
    output, _ = encode_frames(small_settings, 35)
    assert output.keyframe_indices == [0, 10, 20, 30]
    for index, frame in enumerate(output.frames):
        types = nal_types(frame.data)
        if frame.keyframe:
            assert {7, 8, 5} <= set(types), (index, types)  # SPS, PPS, IDR slice
        else:
            assert 5 not in types and 7 not in types, (index, types)


def test_a_stream_cut_at_any_keyframe_decodes_on_its_own(small_settings: CameraSettings) -> None:
    output, _ = encode_frames(small_settings, 35)
    for cut in output.keyframe_indices:
        tail = b"".join(frame.data for frame in output.frames[cut:])
        assert frame_codes(tail) == list(range(cut, 35))


def test_timestamps_are_microseconds_since_the_first_frame(small_settings: CameraSettings) -> None:
    output, encoder = encode_frames(small_settings, 20, start_us=987_654_321)
    assert encoder.firsttimestamp == 987_654_321
    assert output.timestamps == [index * 1_000_000 // 30 for index in range(20)]


def test_timestamps_must_increase(small_settings: CameraSettings) -> None:
    encoder = SoftwareH264Encoder(small_settings)
    encoder.start(RecordingOutput())
    frame = np.zeros((240, 320, 3), np.uint8)
    encoder.encode(frame, 1_000)
    with pytest.raises(CameraError, match="not after the previous frame"):
        encoder.encode(frame, 1_000)
    encoder.stop()


def test_refuses_frames_and_settings_it_cannot_encode(small_settings: CameraSettings) -> None:
    encoder = SoftwareH264Encoder(small_settings)
    with pytest.raises(CameraError, match="not running"):
        encoder.encode(np.zeros((240, 320, 3), np.uint8), 0)
    encoder.start(RecordingOutput())
    with pytest.raises(CameraError, match="does not match"):
        encoder.encode(np.zeros((480, 640, 3), np.uint8), 0)
    with pytest.raises(CameraError, match="already running"):
        encoder.start(RecordingOutput())
    encoder.stop()
    encoder.stop()  # stopping twice is harmless
    for bad in [{"width": 321}, {"fps": 0}, {"bitrate": 0}, {"keyframe_interval": 0}]:
        with pytest.raises(CameraError):
            SoftwareH264Encoder(dataclasses.replace(small_settings, **bad))  # type: ignore[arg-type]


def test_force_key_frame_restarts_the_keyframe_grid(small_settings: CameraSettings) -> None:
    encoder = SoftwareH264Encoder(small_settings)
    output = RecordingOutput()
    encoder.start(output)
    pattern = MovingPattern(320, 240)
    for index in range(25):
        if index == 13:
            encoder.force_key_frame()
        encoder.encode(pattern.render(index), index * 33_333)
    encoder.stop()
    assert output.keyframe_indices == [0, 10, 13, 23]


def test_output_stop_is_called_even_without_a_flush(small_settings: CameraSettings) -> None:
    encoder = SoftwareH264Encoder(small_settings)
    output = RecordingOutput()
    encoder.start(output)
    encoder.encode(np.zeros((240, 320, 3), np.uint8), 0)
    encoder.stop(flush=False)
    assert output.calls == ["start", "_add_stream", "outputframe", "stop"]


def test_rgb_and_four_channel_inputs(small_settings: CameraSettings) -> None:
    for input_format, channels in [("rgb24", 3), ("bgra", 4), ("rgba", 4)]:
        encoder = SoftwareH264Encoder(small_settings, input_format=input_format)
        output = RecordingOutput()
        encoder.start(output)
        for index in range(3):
            frame = np.full((240, 320, channels), 255, np.uint8)
            draw_frame_code(frame, index)
            encoder.encode(frame, index * 33_333)
        encoder.stop()
        assert frame_codes(output.data) == [0, 1, 2]
    with pytest.raises(CameraError, match="input format"):
        SoftwareH264Encoder(small_settings, input_format="nv12").start(RecordingOutput())


def test_packets_mux_the_way_picamera2_pyavoutput_muxes_them(small_settings: CameraSettings, tmp_path: Path) -> None:
    """What PyavOutput does with a packet-less outputframe: the recorder can mux our calls into MPEG-TS."""
    output, _ = encode_frames(small_settings, 30)
    path = tmp_path / "segment.ts"
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("h264", rate=30)
        stream.width, stream.height = 320, 240
        for frame in output.frames:
            packet = av.Packet(frame.data)
            packet.pts = packet.dts = frame.timestamp
            packet.time_base = Fraction(1, 1_000_000)
            packet.is_keyframe = frame.keyframe
            packet.stream = stream
            container.mux(packet)
    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == 30
    assert decoded[-1].time == pytest.approx(29 / 30, abs=1e-3)
    assert decode_h264(output.data)[0].shape == (240, 320, 3)
