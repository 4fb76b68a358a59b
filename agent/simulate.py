"""Recording runs: the simulated device (synthetic camera) and a recording with any camera backend.

Both use the real recorder: camera -> encoder -> segmenter -> signed, chained, fsynced evidence. The
simulator stands in for the buttons with a bookmark every few seconds of video (scripted button presses
arrive with the field workflow).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.camera.base import Camera, CameraSettings
from agent.camera.synthetic import SyntheticCamera
from agent.controls.buttons import ButtonPanel
from agent.controls.feedback import FeedbackDriver
from agent.device import Device
from agent.evidence.clock import Clock
from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.recorder.segmenter import SegmenterSettings, SegmenterStats
from agent.recorder.session import RecordingSession
from agent.scenario import Scenario, play
from agent.workflow.state import WorkflowConfig
from firmware_config.controls import ControlsConfig
from firmware_config.profiles import load_profiles

BOOKMARK_EVERY_SECONDS = 4
POLL_SECONDS = 0.02


@dataclass(frozen=True)
class RecordingResult:
    records: int
    segments: int
    head_seq: int
    head_link: str
    stats: SegmenterStats
    stop_seconds: float  # from the stop request to the last segment signed


def segmenter_settings_for(
    camera: CameraSettings, segment_seconds: float, prebuffer_seconds: float
) -> SegmenterSettings:
    return SegmenterSettings(
        segment_seconds=segment_seconds,
        prebuffer_seconds=prebuffer_seconds,
        width=camera.width,
        height=camera.height,
        fps=camera.fps,
    )


def record(
    store: Path,
    key: DeviceKey,
    camera: Camera,
    seconds: float | None,
    segment_seconds: float = 10.0,
    prebuffer_seconds: float = 0.0,
    clock: Clock | None = None,
    stop_requested: threading.Event | None = None,
    on_second: Callable[[Ledger, int], None] | None = None,
    boot_reason: str = "record",
) -> RecordingResult:
    """Record from ``camera`` for ``seconds`` of video (or until ``stop_requested``), then stop cleanly."""
    settings = camera.settings
    stop_requested = stop_requested or threading.Event()
    with Ledger.open(store, key, settings.device_id, clock, boot_reason=boot_reason) as ledger:
        assert ledger.boot_record is not None  # open() always writes one
        first_seq = ledger.boot_record.seq
        session = RecordingSession(
            ledger=ledger, camera=camera, settings=segmenter_settings_for(settings, segment_seconds, prebuffer_seconds))
        try:
            session.arm()
            session.start("recording run")
            target = None if seconds is None else int(seconds * settings.fps)
            announced = 0
            while not stop_requested.is_set():
                captured = camera.frames_captured
                video_seconds = captured // max(settings.fps, 1)
                while on_second is not None and announced < video_seconds:
                    announced += 1
                    on_second(ledger, announced)
                if target is not None and captured >= target:
                    break
                time.sleep(POLL_SECONDS)
            stopped = session.stop("recording run ended")
        finally:
            session.close()
        head_seq, head_link = ledger.head
        return RecordingResult(
            records=head_seq - first_seq + 1,
            segments=session.stats.segments_closed,
            head_seq=head_seq,
            head_link=head_link,
            stats=session.stats,
            stop_seconds=stopped.seconds,
        )


def bookmark_every_few_seconds(ledger: Ledger, second: int) -> None:
    """The simulator's stand-in for the mark button."""
    if second % BOOKMARK_EVERY_SECONDS == 0:
        ledger.append("event", {"kind": "bookmark", "video_second": second})


def simulate(
    store: Path,
    key: DeviceKey,
    settings: CameraSettings,
    seconds: int,
    realtime: bool = True,
    segment_seconds: float = 10.0,
    clock: Clock | None = None,
    stop_requested: threading.Event | None = None,
) -> RecordingResult:
    """The simulated device: the synthetic camera recording ``seconds`` of video into ``store``."""
    camera = SyntheticCamera(settings, realtime=realtime, max_frames=seconds * settings.fps)
    return record(
        store, key, camera, seconds, segment_seconds=segment_seconds, clock=clock, stop_requested=stop_requested,
        on_second=bookmark_every_few_seconds, boot_reason="simulate",
    )


@dataclass(frozen=True)
class ScenarioResult:
    records: int
    head_seq: int
    head_link: str
    stats: SegmenterStats


def simulate_scenario(
    store: Path,
    key: DeviceKey,
    settings: CameraSettings,
    scenario: Scenario,
    segment_seconds: float = 10.0,
    prebuffer_seconds: float = 30.0,
    clock: Clock | None = None,
) -> ScenarioResult:
    """The simulated device with scripted buttons: the real device code on gpiozero's mock pins."""
    from gpiozero.pins.mock import MockFactory  # the simulator's pins; a device uses the configured factory

    factory = MockFactory()
    controls = ControlsConfig.default()
    config = WorkflowConfig(
        procedures=load_profiles(), device_id=settings.device_id, officer_id=settings.officer_id,
        source="the simulator's defaults",
    )
    with Ledger.open(store, key, settings.device_id, clock, boot_reason="simulate") as ledger:
        assert ledger.boot_record is not None  # open() always writes one
        first_seq = ledger.boot_record.seq
        camera = SyntheticCamera(settings, realtime=True)
        session = RecordingSession(
            ledger=ledger, camera=camera, settings=segmenter_settings_for(settings, segment_seconds, prebuffer_seconds))
        feedback = FeedbackDriver(controls, pin_factory=factory).start()
        device = Device(ledger=ledger, session=session, config=config, show=feedback.show,
                        set_recording_indicator=feedback.set_recording)
        panel = ButtonPanel(config=controls, on_press=device.press, pin_factory=factory)
        try:
            device.start()
            ledger.append("event", {"kind": "scenario", "name": scenario.name})
            play(scenario, {button.name: factory.pin(button.pin) for button in controls.buttons})
        finally:
            panel.close()
            device.close()
            feedback.close()
        head_seq, head_link = ledger.head
        return ScenarioResult(head_seq - first_seq + 1, head_seq, head_link, session.stats)
