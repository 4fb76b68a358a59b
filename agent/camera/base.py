"""The camera port: a source of H.264 that drives an output in picamera2's output protocol.

Every backend (the Pi camera module through picamera2, the synthetic source, an OpenCV capture) ends in
the same call sequence on an :class:`EncodedOutput`, exactly as picamera2's encoders drive their outputs:
``start()``, then ``_add_stream(...)`` (optional), then ``outputframe(...)`` for every encoded frame, then
``stop()``. So the recorder (segmenter, pre-event buffer, checkpoints, recovery) is one code path.

Timestamps passed to ``outputframe`` are microseconds since the first frame of this recording run, taken
from CLOCK_MONOTONIC (picamera2's SensorTimestamp); ``Camera.origin_mono_us`` gives the monotonic time of
timestamp 0 once the first frame has been seen.
"""

from __future__ import annotations

from typing import Any, Protocol

# The settings are the configuration's type (the device depends on its configuration); named here, where
# every backend looks for them.
from firmware_config.settings import CameraSettings as CameraSettings


class EncodedOutput(Protocol):
    """picamera2's output protocol (picamera2.outputs.Output), the part our recorder implements."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None: ...

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None: ...


class Camera(Protocol):
    """A running camera with its encoder: drives ``output`` until ``stop_recording``."""

    settings: CameraSettings
    clock_trusted: bool  # False: the overlay says "CLOCK NOT SET"; may change while recording

    @property
    def origin_mono_us(self) -> int | None:
        """CLOCK_MONOTONIC microseconds of timestamp 0 (None before the first frame)."""
        ...

    @property
    def frames_captured(self) -> int:
        """Frames taken from the sensor or source so far (for the frames-in vs frames-written count)."""
        ...

    @property
    def error(self) -> BaseException | None:
        """The failure that ended the capture, if any (the self-test stops waiting for frames on it)."""
        ...

    def set_officer(self, officer_id: str) -> None:
        """Burn ``officer_id`` into every frame drawn from now on (an officer assigned while armed)."""
        ...

    def start_recording(self, output: EncodedOutput) -> None: ...

    def stop_recording(self) -> None:
        """Stop capture and encoding; returns after the last ``outputframe`` and ``output.stop()``."""
        ...

    def close(self) -> None: ...
