"""The capture thread shared by the backends that encode in software (synthetic, OpenCV).

One thread per recording run takes a frame from the source, stamps it, draws the overlay, encodes it and
hands the packets to the output: the same thread that calls ``outputframe`` on the Pi 5 (picamera2's
LibavH264Encoder encodes in the camera thread). ``start()`` and ``_add_stream()`` happen in the thread that
calls ``start_recording``; the flush and ``stop()`` in the thread that calls ``stop_recording``, after
the capture thread has ended: the order picamera2 keeps (camera stop, then encoder stop).

Three ways to time frames:

- ``FAST``: as fast as the encoder goes, timestamps on the exact frame grid (``i * 1e6 / fps``), so a
  test records a minute in seconds; the overlay clock advances by the same synthetic time.
- ``PACED``: sleep to the frame grid on CLOCK_MONOTONIC; a frame that cannot be made in time is dropped
  (counted in ``frames_dropped``) and the stamps stay on the grid, as a sensor's do.
- ``LIVE``: the source paces itself (a V4L2 device); the stamp is CLOCK_MONOTONIC when the frame arrived.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import replace
from typing import Self

import numpy as np

from agent.camera.base import CameraSettings, EncodedOutput
from agent.camera.clock import Clock, SystemClock
from agent.camera.encoder import SoftwareH264Encoder, check_settings
from agent.camera.overlay import draw_frame_code, draw_overlay
from agent.errors import CameraError

log = logging.getLogger(__name__)


class FrameTiming(enum.Enum):
    FAST = "fast"
    PACED = "paced"
    LIVE = "live"


def monotonic_us() -> int:
    """CLOCK_MONOTONIC in µs: the clock picamera2's SensorTimestamp uses."""
    return time.monotonic_ns() // 1000


class ThreadedCamera:
    """Base of the software backends; subclasses supply frames through :meth:`_read_frame`.

    ``clock`` supplies the wall-clock reading for the overlay (and, in FAST mode, the monotonic origin);
    ``clock_trusted`` may be changed while recording (e.g. once NTP has synchronised) and takes effect on
    the next frame. ``frame_code`` draws the machine-readable frame counter tests read back.
    """

    name = "camera"

    def __init__(
        self,
        settings: CameraSettings,
        *,
        timing: FrameTiming,
        clock: Clock | None = None,
        clock_trusted: bool = True,
        frame_code: bool = False,
        max_frames: int | None = None,
        preset: str = "ultrafast",
    ) -> None:
        check_settings(settings)
        if max_frames is not None and max_frames < 0:
            raise CameraError(f"max_frames {max_frames} must not be negative")
        self.settings = settings
        self.timing = timing
        self.clock: Clock = clock or SystemClock()
        self.clock_trusted = clock_trusted
        self.frame_code = frame_code
        self.max_frames = max_frames
        self._preset = preset
        self._encoder: SoftwareH264Encoder | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._control = threading.Lock()  # start/stop/close against each other
        self._error: BaseException | None = None
        self._origin_mono_us: int | None = None
        self._frames_captured = 0
        self.frames_dropped = 0
        self._closed = False

    # -- the Camera protocol -------------------------------------------------------------------------

    @property
    def origin_mono_us(self) -> int | None:
        return self._origin_mono_us

    @property
    def frames_captured(self) -> int:
        return self._frames_captured

    @property
    def error(self) -> BaseException | None:
        """The failure that ended the capture thread, if any (re-raised by ``stop_recording``)."""
        return self._error

    @property
    def recording(self) -> bool:
        return self._thread is not None

    def set_officer(self, officer_id: str) -> None:
        """The next frame drawn carries ``officer_id``: the drawing reads ``self.settings`` once per frame,
        and swapping the whole (frozen) settings object is one atomic assignment."""
        self.settings = replace(self.settings, officer_id=officer_id)

    def start_recording(self, output: EncodedOutput) -> None:
        """Start a run: ``output.start()`` and ``_add_stream`` here, frames from the capture thread.

        Exceptions raised by ``output`` propagate unchanged; the camera stays idle then.
        """
        with self._control:
            if self._closed:
                raise CameraError(f"{self.describe()} is closed")
            if self._thread is not None:
                raise CameraError(f"{self.describe()} is already recording")
            encoder = SoftwareH264Encoder(self.settings, preset=self._preset)
            self._before_run()
            encoder.start(output)
            self._encoder = encoder
            self._stop.clear()
            self._finished.clear()
            self._error = None
            self._origin_mono_us = None
            self._frames_captured = 0
            self.frames_dropped = 0
            thread = threading.Thread(target=self._run, args=(encoder,), name=f"{self.name}-capture", daemon=True)
            self._thread = thread
            thread.start()

    def stop_recording(self) -> None:
        """Stop capture, flush the encoder, ``output.stop()``; then raise CameraError if the thread failed.

        A no-op when not recording. Exceptions raised by the output's ``stop()`` or by flushed
        ``outputframe`` calls propagate unchanged (they happen in the caller's thread).
        """
        with self._control:
            thread, encoder = self._thread, self._encoder
            if thread is None or encoder is None:
                return
            self._stop.set()
            thread.join()
            self._thread = None
            self._encoder = None
            failure = self._error
            try:
                # After a failure the codec or the output may be broken: do not feed them more.
                encoder.stop(flush=failure is None)
            except Exception:
                if failure is None:
                    raise
                log.exception("%s: stopping the encoder after a failure failed too", self.describe())
            if failure is not None:
                raise CameraError(
                    f"{self.describe()} failed after {self._frames_captured} frames: {failure}"
                ) from failure

    def close(self) -> None:
        """Stop recording if needed (its errors propagate) and release the source. Idempotent."""
        try:
            self.stop_recording()
        finally:
            with self._control:
                if not self._closed:
                    self._closed = True
                    self._close_source()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Wait until the capture thread has ended by itself (max_frames, end of source, failure).

        The output stays open until ``stop_recording``, as it does with a camera that has stopped.
        """
        return self._finished.wait(timeout)

    def force_key_frame(self) -> None:
        """Make the next frame a keyframe (e.g. when an event starts)."""
        encoder = self._encoder
        if encoder is not None:
            encoder.force_key_frame()

    # -- for subclasses -------------------------------------------------------------------------------

    def describe(self) -> str:
        """How messages name this camera."""
        return f"{self.name} camera"

    def _before_run(self) -> None:
        """Prepare the source for a run (called in start_recording, before the output is started)."""

    def _read_frame(self, index: int) -> np.ndarray | None:
        """Frame ``index`` as a writable (H, W, 3) BGR uint8 array of the settings' size; None: no more."""
        raise NotImplementedError

    def _close_source(self) -> None:
        """Release the source (called once, by close)."""

    # -- the capture thread ---------------------------------------------------------------------------

    def _run(self, encoder: SoftwareH264Encoder) -> None:
        try:
            self._capture(encoder)
        except BaseException as exc:
            self._error = exc
            log.exception("%s: capture thread failed after %d frames", self.describe(), self._frames_captured)
        finally:
            self._finished.set()

    def _capture(self, encoder: SoftwareH264Encoder) -> None:
        fps = self.settings.fps
        start = self.clock.now()
        # FAST mode stamps from the clock's monotonic reading; the others from the real CLOCK_MONOTONIC,
        # which pacing needs.
        base_us = start.mono_us if self.timing is FrameTiming.FAST else monotonic_us()
        slot = 0  # position on the frame grid: base_us + slot * 1e6 / fps
        index = 0
        while not self._stop.is_set():
            if self.max_frames is not None and index >= self.max_frames:
                return
            if self.timing is FrameTiming.PACED:
                slot = self._wait_for_slot(base_us, slot)
                if slot < 0:
                    return  # stopped while waiting
            frame = self._read_frame(index)
            if frame is None:
                return
            live = self.timing is FrameTiming.LIVE
            mono_us = monotonic_us() if live else base_us + slot * 1_000_000 // fps
            if self.timing is FrameTiming.FAST:
                wall_us = start.wall_us + (mono_us - base_us)
            else:
                now = self.clock.now()
                wall_us = mono_us + (now.wall_us - now.mono_us)
            if self._origin_mono_us is None:
                self._origin_mono_us = mono_us
            s = self.settings
            draw_overlay(frame, wall_us, s.device_id, s.officer_id, self.clock_trusted, index)
            if self.frame_code:
                draw_frame_code(frame, index)
            encoder.encode(frame, mono_us)
            self._frames_captured += 1
            index += 1
            slot += 1

    def _wait_for_slot(self, base_us: int, slot: int) -> int:
        """Sleep until grid slot ``slot`` is due; if it is already past, skip to the current slot.

        Returns the slot to stamp, or -1 when stop was requested while waiting.
        """
        fps = self.settings.fps
        due = base_us + slot * 1_000_000 // fps
        now = monotonic_us()
        if now < due:
            if self._stop.wait((due - now) / 1_000_000):
                return -1
            return slot
        current = (now - base_us) * fps // 1_000_000
        if current > slot:
            self.frames_dropped += current - slot
            return current
        return slot
