"""The recording pipeline end to end: a camera backend -> segmenter -> signed segments, decoded back.

The burned-in frame code is read from every decoded frame, so a frame lost or repeated at a cut shows up
as a break in the counter sequence, whatever the timestamps say.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import av
from helpers import seeded_key

from agent.camera import fake_picamera2
from agent.camera.base import CameraSettings
from agent.camera.overlay import read_frame_code
from agent.camera.picamera2_camera import Picamera2Api, Picamera2Camera
from agent.camera.synthetic import SyntheticCamera
from agent.evidence.ledger import Ledger
from agent.evidence.record import parse_line
from agent.evidence.verify import verify_store
from agent.recorder.segmenter import SegmenterSettings
from agent.recorder.session import RecordingSession

FPS = 30
SETTINGS = CameraSettings(width=320, height=192, fps=FPS, bitrate=600_000, keyframe_interval=FPS, device_id="e2e-01")


def decode(path: Path) -> list[tuple[int | None, int]]:
    """(frame code, pts in µs) of every frame the file decodes to, decoding the file on its own."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (read_frame_code(frame.to_ndarray(format="bgr24")), int(frame.pts * stream.time_base * 1_000_000))
            for frame in container.decode(stream)
        ]


def records(store: Path, record_type: str) -> list[dict[str, object]]:
    lines = (store / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    return [dict(s.record.body) for s in map(parse_line, lines) if s.record.type == record_type]


def record_with(camera: object, store: Path, segment_seconds: float, wait: Callable[[float], bool]) -> RecordingSession:
    """Record until ``wait`` says the camera has produced all its frames, then stop and close."""
    settings = SegmenterSettings(segment_seconds=segment_seconds, prebuffer_seconds=0, width=SETTINGS.width,
                                 height=SETTINGS.height, fps=FPS)
    with Ledger.open(store, seeded_key(3), SETTINGS.device_id) as ledger:
        session = RecordingSession(ledger=ledger, camera=camera, settings=settings)  # type: ignore[arg-type]
        session.start("test").wait(10)
        assert wait(120), "the camera did not produce its frames"
        assert session.stop("test").completed
        session.close()
    return session


def test_sixty_seconds_of_synthetic_video_has_consecutive_counters_across_segments(tmp_path: Path) -> None:
    store = tmp_path / "store"
    frames = 60 * FPS
    camera = SyntheticCamera(SETTINGS, realtime=False, max_frames=frames)
    session = record_with(camera, store, segment_seconds=10, wait=camera.wait_finished)

    assert verify_store(store, seeded_key(3).public_key).intact
    files = sorted((store / "segments").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.ts" for i in range(1, 7)]  # 60 s in 10 s segments
    decoded = [decode(f) for f in files]
    counters = [code for segment in decoded for code, _ in segment]
    assert None not in counters
    assert counters == list(range(frames))  # none lost, none repeated, across every cut
    assert all(len(segment) == 10 * FPS for segment in decoded)
    pts = [p for segment in decoded for _, p in segment]
    steps = {b - a for a, b in pairwise(pts)}
    assert steps <= {33322, 33333, 33345}, steps  # one frame (rounded to the 90 kHz clock), no jumps
    segment_records = records(store, "segment")
    assert [r["frames"] for r in segment_records] == [300] * 6
    assert session.stats.frames_written == frames == session.stats.frames_in


def test_picamera2_backend_through_the_segmenter_cuts_on_keyframes_with_sensor_timestamps(tmp_path: Path) -> None:
    frames = 7 * FPS
    sensor_start_ns = 5_000_000_000_000
    module = fake_picamera2.load(fast=True, max_frames=frames, sensor_start_ns=sensor_start_ns)
    api = Picamera2Api(Picamera2=module.Picamera2, MappedArray=module.MappedArray, H264Encoder=module.H264Encoder,
                       Output=module.Output)
    camera = Picamera2Camera(SETTINGS, module_loader=lambda: api, frame_code=True)
    store = tmp_path / "store"
    record_with(camera, store, segment_seconds=2, wait=lambda timeout: module.cameras[0].finished.wait(timeout))

    assert verify_store(store).intact
    (encoder,) = module.created_encoders
    assert encoder.repeat is True and encoder.iperiod == FPS
    files = sorted((store / "segments").iterdir())
    assert len(files) == 4  # 2 + 2 + 2 + 1 seconds
    counters = [code for f in files for code, _ in decode(f)]
    assert counters == list(range(frames))
    segment_records = records(store, "segment")
    assert segment_records[0]["first_ts_us"] == 0  # µs since the first frame, as picamera2 hands them over
    assert segment_records[1]["first_ts_us"] == 2 * FPS * 33_333  # the sensor's FrameDuration, exactly
    assert segment_records[0]["origin_mono_us"] == sensor_start_ns // 1000  # SensorTimestamp of frame 0
    checkpoints = records(store, "checkpoint")
    assert len(checkpoints) == 3  # one inside each of the three 2-second segments (at its second keyframe)


def test_stopping_before_any_frame_leaves_no_empty_segment(tmp_path: Path) -> None:
    camera = SyntheticCamera(SETTINGS, realtime=False, max_frames=0)
    store = tmp_path / "store"
    record_with(camera, store, segment_seconds=10, wait=camera.wait_finished)
    assert list((store / "segments").iterdir()) == []
    assert verify_store(store).intact
