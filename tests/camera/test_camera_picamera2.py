from __future__ import annotations

import sys
import time
from typing import Any

import av
import numpy as np
import pytest
from camera_doubles import RecordingOutput, frame_codes
from helpers import FakeClock

import agent.camera.picamera2_camera as backend
from agent.camera import fake_picamera2
from agent.camera.base import Camera, CameraSettings
from agent.camera.fake_picamera2_parts import H264Encoder, MappedArray
from agent.camera.picamera2_camera import PICAMERA2_MISSING, Picamera2Camera, load_picamera2
from agent.errors import CameraError

SENSOR_START_NS = 7_000_000_123_456


def open_fake(settings: CameraSettings, **options: Any) -> tuple[Picamera2Camera, fake_picamera2.FakePicamera2Module]:
    fake_options = {"fast": True, "max_frames": 25, "sensor_start_ns": SENSOR_START_NS, "stride_align": 256}
    camera_options = {key: options.pop(key) for key in ("clock", "clock_trusted") if key in options}
    fake = fake_picamera2.load(**(fake_options | options))
    camera = Picamera2Camera(settings, module_loader=lambda: fake, frame_code=True, **camera_options)
    return camera, fake


def record(camera: Picamera2Camera, fake: fake_picamera2.FakePicamera2Module, output: RecordingOutput) -> None:
    camera.start_recording(output)
    assert fake.cameras[0].finished.wait(20)
    camera.stop_recording()


def test_without_picamera2_the_backend_says_how_to_install_it(
    small_settings: CameraSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # importing it now raises ImportError, as off the Pi
    with pytest.raises(CameraError) as info:
        load_picamera2()
    assert str(info.value) == PICAMERA2_MISSING
    assert str(info.value) == (
        "picamera2 is not installed: this backend runs only on a Raspberry Pi with python3-picamera2 "
        "(create the venv with --system-site-packages)"
    )
    with pytest.raises(CameraError, match="picamera2 is not installed"):
        Picamera2Camera(small_settings)


def test_importing_the_backend_does_not_import_picamera2() -> None:
    assert backend.__name__ in sys.modules
    assert "picamera2" not in sys.modules or sys.modules["picamera2"] is None


def test_configures_the_camera_for_the_settings(small_settings: CameraSettings) -> None:
    camera, fake = open_fake(small_settings)
    typed: Camera = camera  # mypy checks that the backend satisfies the port
    assert typed.frames_captured == 0 and typed.origin_mono_us is None
    picam2 = fake.cameras[0]
    config = picam2.camera_configuration()
    assert config["main"]["size"] == (320, 240) and config["main"]["format"] == "RGB888"
    assert config["main"]["stride"] == 1024  # padded rows, as on the Pi
    assert config["controls"]["FrameRate"] == 30
    assert picam2.frame_duration_us == 33333
    assert config["encode"] == "main" and config["buffer_count"] == 6
    camera.close()
    assert not picam2.is_open


def test_records_through_picamera2s_encoder_in_its_order(small_settings: CameraSettings) -> None:
    camera, fake = open_fake(small_settings)
    picam2 = fake.cameras[0]
    camera_running_at_stop: list[bool] = []
    output = RecordingOutput(on_stop=lambda: camera_running_at_stop.append(picam2.started))
    record(camera, fake, output)
    output.assert_protocol()
    assert camera_running_at_stop == [False]  # the camera stops before the encoder stops the output
    (encoder,) = fake.created_encoders
    assert isinstance(encoder, H264Encoder)
    assert (encoder.bitrate, encoder.repeat, encoder.iperiod, encoder.framerate) == (600_000, True, 10, 30)
    assert output.streams == [("video", "h264", {"width": 320, "height": 240})]  # the V4L2 encoder's call
    assert len(output.frames) == camera.frames_captured == picam2.frames_delivered == 25
    assert output.keyframe_indices == [0, 10, 20]
    assert output.timestamps == [i * 33333 for i in range(25)]  # SensorTimestamp steps of FrameDuration
    assert camera.origin_mono_us == SENSOR_START_NS // 1000 == encoder.firsttimestamp
    assert frame_codes(output.data) == list(range(25))  # drawn in post_callback, before the encoder
    assert picam2.post_callback is None and not picam2.encoders
    camera.close()


def test_post_callback_draws_through_mapped_array_once_per_frame(
    small_settings: CameraSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    camera, fake = open_fake(small_settings, max_frames=6, clock=clock)
    arrays: list[np.ndarray] = []

    class SpyMappedArray(MappedArray):
        def __enter__(self) -> MappedArray:
            mapped = super().__enter__()
            assert mapped.array is not None
            arrays.append(mapped.array)
            return mapped

    monkeypatch.setattr(fake, "MappedArray", SpyMappedArray)
    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(backend, "draw_overlay", lambda frame, *args: seen.append(args))
    record(camera, fake, RecordingOutput())
    assert len(arrays) == len(seen) == 6
    assert all(a.shape == (240, 320, 3) and not a.flags.c_contiguous and a.flags.writeable for a in arrays)
    assert [args[4] for args in seen] == list(range(6))  # frame numbers
    assert all(args[1:4] == ("cam-test-01", "officer-42", True) for args in seen)
    # The wall time is the frame's SensorTimestamp moved onto the wall clock.
    offset = clock.wall_us - clock.mono_us
    assert [args[0] for args in seen] == [SENSOR_START_NS // 1000 + i * 33333 + offset for i in range(6)]
    camera.close()


def test_the_pi_5_encoder_passes_pyav_streams_and_packets(small_settings: CameraSettings) -> None:
    camera, fake = open_fake(small_settings, platform="pisp", max_frames=12)
    output = RecordingOutput()
    record(camera, fake, output)
    output.assert_protocol()
    ((stream, codec, kwargs),) = output.streams
    assert isinstance(stream, av.video.stream.VideoStream) and codec == "h264"
    assert kwargs == {"rate": 30, "width": 320, "height": 240}
    assert all(frame.packet is not None and frame.packet.stream is stream for frame in output.frames)
    assert output.timestamps == [frame.packet.pts for frame in output.frames] == [i * 33333 for i in range(12)]
    assert frame_codes(output.data) == list(range(12))
    camera.close()


def test_realtime_sensor_timestamps_are_monotonic_and_on_the_frame_grid(small_settings: CameraSettings) -> None:
    camera, fake = open_fake(small_settings, fast=False, max_frames=8)
    before_us = time.monotonic_ns() // 1000
    output = RecordingOutput()
    record(camera, fake, output)
    assert camera.origin_mono_us is not None and camera.origin_mono_us >= before_us
    assert all(ts % 33333 == 0 for ts in output.timestamps) and output.timestamps == sorted(set(output.timestamps))
    camera.close()


def test_picamera2_encoders_refuse_outputs_that_are_not_theirs(small_settings: CameraSettings) -> None:
    with pytest.raises(RuntimeError, match="Must pass Output"):
        H264Encoder().output = RecordingOutput()  # type: ignore[assignment]
    camera, fake = open_fake(small_settings, max_frames=3)
    record(camera, fake, RecordingOutput())  # the backend wraps ours in an Output subclass
    camera.close()


def test_a_failing_output_ends_forwarding_and_is_raised_at_stop(small_settings: CameraSettings) -> None:
    camera, fake = open_fake(small_settings)
    output = RecordingOutput(fail_at=4)
    camera.start_recording(output)
    assert fake.cameras[0].finished.wait(20)
    assert fake.cameras[0].thread_error is None  # picamera2's event loop must survive our output's failure
    assert isinstance(camera.error, OSError)
    with pytest.raises(CameraError, match="failed during recording after 25 frames") as info:
        camera.stop_recording()
    assert isinstance(info.value.__cause__, OSError)
    assert output.outputframe_calls == 5 and output.calls[-1] == "stop"
    camera.close()


def test_an_overlay_failure_keeps_the_footage_and_is_raised_at_stop(
    small_settings: CameraSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera, fake = open_fake(small_settings, max_frames=5)

    def broken(*args: Any) -> None:
        raise ValueError("overlay broke (test)")

    monkeypatch.setattr(backend, "draw_overlay", broken)
    output = RecordingOutput()
    camera.start_recording(output)
    assert fake.cameras[0].finished.wait(20)
    with pytest.raises(CameraError, match="overlay broke"):
        camera.stop_recording()
    assert len(output.frames) == 5 and output.calls[-1] == "stop"
    camera.close()


def test_output_start_failure_propagates_unchanged(small_settings: CameraSettings) -> None:
    camera, fake = open_fake(small_settings, max_frames=3)
    with pytest.raises(OSError, match="cannot open the segment"):
        camera.start_recording(RecordingOutput(fail_start=True))
    assert not camera.recording and fake.cameras[0].post_callback is None
    camera.close()


def test_missing_camera_and_states(small_settings: CameraSettings) -> None:
    with pytest.raises(CameraError, match="cannot open Pi camera 0"):
        Picamera2Camera(small_settings, module_loader=lambda: fake_picamera2.load(cameras=0))
    camera, fake = open_fake(small_settings, max_frames=3)
    camera.stop_recording()  # idle: a no-op
    camera.start_recording(RecordingOutput())
    with pytest.raises(CameraError, match="already recording"):
        camera.start_recording(RecordingOutput())
    camera.close()  # stops the recording
    assert not fake.cameras[0].is_open and not fake.cameras[0].started
    with pytest.raises(CameraError, match="closed"):
        camera.start_recording(RecordingOutput())


def test_a_second_run_restarts_timestamps(small_settings: CameraSettings) -> None:
    camera, fake = open_fake(small_settings, max_frames=4)
    first, second = RecordingOutput(), RecordingOutput()
    record(camera, fake, first)
    record(camera, fake, second)
    assert first.timestamps == second.timestamps == [0, 33333, 66666, 99999]
    assert len(fake.created_encoders) == 2
    camera.close()


def test_the_fake_is_usable_like_picamera2() -> None:
    """The documented picamera2 recipe runs against the fake unchanged."""
    fake = fake_picamera2.load(fast=True, max_frames=5)
    output = RecordingOutput()

    class Forward(fake.Output):  # type: ignore[name-defined, misc]
        def start(self) -> None:
            output.start()

        def _add_stream(self, *args: Any, **kwargs: Any) -> None:
            output._add_stream(*args, **kwargs)

        def outputframe(self, *args: Any) -> None:
            output.outputframe(*args)

        def stop(self) -> None:
            output.stop()

    with fake.Picamera2() as picam2:
        picam2.configure(picam2.create_video_configuration(main={"size": (320, 240)}))  # XBGR8888 by default
        encoder = fake.H264Encoder(bitrate=500_000, iperiod=5)
        picam2.start_recording(encoder, Forward())
        assert picam2.finished.wait(10)
        picam2.stop_recording()
    output.assert_protocol()
    assert output.keyframe_indices == [0]  # 5 frames, the second keyframe would be frame 5
    assert len(frame_codes(output.data)) == 5
    with pytest.raises(ValueError, match="Bad key"):
        fake.Picamera2().create_video_configuration(main={"sise": (1, 1)})
