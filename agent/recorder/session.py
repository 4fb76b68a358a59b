"""A recording session: one camera driving one segmenter, writing into one ledger.

``arm()`` starts the camera and its encoder into the pre-event buffer; ``start()`` and ``stop()`` are the
officer's record button; ``close()`` stops the camera and returns once every frame it produced is signed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from agent.camera.base import Camera
from agent.evidence.ledger import Ledger
from agent.recorder.segmenter import RecorderState, Segmenter, SegmenterSettings, SegmenterStats
from agent.recorder.storage import StorageState


@dataclass(frozen=True)
class StopResult:
    """How long the stop took from the press to the last segment signed."""

    seconds: float
    completed: bool


class RecordingSession:
    def __init__(self, *, ledger: Ledger, camera: Camera, settings: SegmenterSettings) -> None:
        self.ledger = ledger
        self.camera = camera
        self.storage_state = StorageState.OK
        self.segmenter = Segmenter(
            ledger=ledger, settings=settings, origin_mono_us=lambda: camera.origin_mono_us,
            on_storage=self._storage_changed,
        )
        self._armed = False

    @property
    def state(self) -> RecorderState:
        return self.segmenter.state

    @property
    def stats(self) -> SegmenterStats:
        return self.segmenter.stats

    def arm(self) -> None:
        if not self._armed:
            self.camera.start_recording(self.segmenter)
            self._armed = True

    def start(self, reason: str = "record button", fresh: bool = False) -> threading.Event:
        """Start recording; ``fresh`` begins at a new keyframe with nothing from before (see the segmenter)."""
        self.arm()
        done = self.segmenter.start_recording(reason, fresh)
        if fresh:
            force = getattr(self.camera, "force_key_frame", None)  # every backend here has it; a port need not
            if force is not None:
                force()  # after the command is queued, so the keyframe lands after the start
        return done

    def stop(self, reason: str = "record button", timeout: float = 10.0) -> StopResult:
        began = time.monotonic()
        done = self.segmenter.stop_recording(reason).wait(timeout)
        return StopResult(time.monotonic() - began, done)

    def close(self) -> None:
        """Stop the camera; the segmenter closes and signs whatever is open before this returns."""
        try:
            if self._armed:
                self._armed = False
                self.camera.stop_recording()  # raises CameraError if the camera failed while running
        finally:
            self.camera.close()  # the camera is released even then

    def _storage_changed(self, state: StorageState) -> None:
        self.storage_state = state  # read by health reporting and the LED driver
