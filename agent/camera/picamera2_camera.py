"""The Raspberry Pi camera module through picamera2: the production backend.

picamera2 does the capture and the encoding (the hardware H.264 block on a Pi 4 / Zero 2, libx264 on a
Pi 5); we only configure it, draw the overlay in ``post_callback`` and pass its output calls on to ours.
It is imported lazily through ``module_loader`` because it exists only on the Pi (its libcamera bindings
come from Raspberry Pi OS), and so that tests can hand in :mod:`agent.camera.fake_picamera2`.

Three things about real picamera2 this module exists to handle:

- Its encoders accept only subclasses of ``picamera2.outputs.Output`` ("Must pass Output"), so our output
  is wrapped in a subclass made from the loaded module's ``Output``.
- Output calls come from picamera2's threads: ``outputframe`` from the camera thread (Pi 5) or from the
  V4L2 encoder's poll thread (Pi 4); ``start``/``_add_stream`` in ``start_recording``'s caller, and the
  flush and ``stop`` in ``stop_recording``'s caller. An exception there would kill that thread silently,
  so it is caught, logged, kept, and raised as CameraError by ``stop_recording``; after a failing
  ``outputframe`` no further frames are passed on.
- ``post_callback`` runs under the camera lock, before the encoder sees the frame: drawing must be fast.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Self

from agent.camera.base import CameraSettings, EncodedOutput
from agent.camera.clock import Clock, SystemClock
from agent.camera.encoder import check_settings
from agent.camera.overlay import draw_frame_code, draw_overlay
from agent.errors import CameraError

log = logging.getLogger(__name__)

PICAMERA2_MISSING = (
    "picamera2 is not installed: this backend runs only on a Raspberry Pi with python3-picamera2 "
    "(create the venv with --system-site-packages)"
)


@dataclass(frozen=True)
class Picamera2Api:
    """The four names this backend takes from picamera2 (or from the fake)."""

    Picamera2: Any
    MappedArray: Any
    H264Encoder: Any
    Output: Any


def load_picamera2() -> Picamera2Api:
    """Import the real picamera2; CameraError with install advice when it is not there."""
    try:
        from picamera2 import MappedArray, Picamera2
        from picamera2.encoders import H264Encoder
        from picamera2.outputs import Output
    except ImportError as exc:  # also when picamera2 is there but libcamera's bindings are not
        raise CameraError(PICAMERA2_MISSING) from exc
    return Picamera2Api(Picamera2=Picamera2, MappedArray=MappedArray, H264Encoder=H264Encoder, Output=Output)


ModuleLoader = Callable[[], Any]  # returns an object with the attributes of Picamera2Api


class _Failures:
    """The first failure seen in picamera2's threads, kept for stop_recording; later ones are only logged."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._lock = threading.Lock()
        self.first: BaseException | None = None
        self.count = 0
        self.output_failed = False  # once the output has failed, it gets no more frames

    def add(self, exc: BaseException, where: str, *, output: bool = False) -> None:
        with self._lock:
            self.count += 1
            self.output_failed |= output
            first = self.first is None
            if first:
                self.first = exc
        if first:
            log.error("%s: %s failed: %s", self._what, where, exc, exc_info=exc)
        else:
            log.debug("%s: %s failed again: %s", self._what, where, exc)


def _adapt_output(output_base: type, target: EncodedOutput, failures: _Failures) -> Any:
    """``target`` as an instance of picamera2's Output class, as its encoders insist on."""

    class ForwardingOutput(output_base):  # type: ignore[misc]
        """Passes picamera2's output calls to our output; see the module docstring for errors."""

        def __init__(self) -> None:
            super().__init__()
            self.raised: BaseException | None = None  # what our output raised in the caller's thread

        def start(self) -> None:
            super().start()
            try:
                target.start()
            except BaseException as exc:
                self.raised = exc
                raise

        def stop(self) -> None:
            super().stop()
            try:
                target.stop()
            except BaseException as exc:
                self.raised = exc
                raise

        def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
            try:
                target._add_stream(encoder_stream, codec_name, **kwargs)
            except BaseException as exc:
                self.raised = exc
                raise

        def outputframe(
            self,
            frame: Any,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            if failures.output_failed:
                return  # the run has failed; stop_recording will say so
            try:
                target.outputframe(frame, keyframe, timestamp, packet, audio)
            except Exception as exc:
                failures.add(exc, "the output's outputframe", output=True)

    return ForwardingOutput()


class Picamera2Camera:
    """The Pi camera, configured for ``settings``, recording through picamera2's H264Encoder.

    The camera is opened and configured here (so a missing camera fails at construction) and released
    by :meth:`close`. Each ``start_recording`` uses a new encoder, so timestamps restart at 0.
    """

    def __init__(
        self,
        settings: CameraSettings,
        module_loader: ModuleLoader | None = None,
        *,
        camera_num: int = 0,
        clock: Clock | None = None,
        clock_trusted: bool = True,
        frame_code: bool = False,
        buffer_count: int = 6,
    ) -> None:
        check_settings(settings)
        self.settings = settings
        self.camera_num = camera_num
        self.clock: Clock = clock or SystemClock()
        self.clock_trusted = clock_trusted
        self.frame_code = frame_code
        self._api = (module_loader or load_picamera2)()
        try:
            self._picam2: Any = self._api.Picamera2(camera_num)
        except Exception as exc:
            raise CameraError(f"cannot open Pi camera {camera_num}: {exc}") from exc
        try:
            config = self._picam2.create_video_configuration(
                main={"size": (settings.width, settings.height), "format": "RGB888"},
                controls={"FrameRate": settings.fps},
                buffer_count=buffer_count,
            )
            self._picam2.configure(config)
            main = self._picam2.camera_configuration()["main"]
        except Exception as exc:
            self._picam2.close()
            raise CameraError(
                f"Pi camera {camera_num} refused {settings.width}x{settings.height}@{settings.fps}: {exc}"
            ) from exc
        self.stream_size: tuple[int, int] = tuple(main["size"])
        if self.stream_size != (settings.width, settings.height):
            log.warning("Pi camera %d: asked for %dx%d, got %s", camera_num, settings.width, settings.height, main)
        self._encoder: Any = None
        self._forwarder: Any = None
        self._failures = _Failures(self.describe())
        self._first_sensor_us: int | None = None
        self._frames_captured = 0
        self._closed = False
        self._control = threading.Lock()

    def describe(self) -> str:
        return f"Pi camera {self.camera_num}"

    # -- the Camera protocol -------------------------------------------------------------------------

    @property
    def origin_mono_us(self) -> int | None:
        """SensorTimestamp (CLOCK_MONOTONIC) of frame 0 in µs, as picamera2's encoder recorded it."""
        first = getattr(self._encoder, "firsttimestamp", None) if self._encoder is not None else None
        return int(first) if first is not None else self._first_sensor_us

    @property
    def frames_captured(self) -> int:
        return self._frames_captured

    @property
    def error(self) -> BaseException | None:
        """The first failure in picamera2's threads during this run, if any."""
        return self._failures.first

    @property
    def recording(self) -> bool:
        return self._encoder is not None

    def set_officer(self, officer_id: str) -> None:
        """The next frame drawn carries ``officer_id``: the drawing reads ``self.settings`` once per frame,
        and swapping the whole (frozen) settings object is one atomic assignment."""
        self.settings = replace(self.settings, officer_id=officer_id)

    def start_recording(self, output: EncodedOutput) -> None:
        with self._control:
            if self._closed:
                raise CameraError(f"{self.describe()} is closed")
            if self._encoder is not None:
                raise CameraError(f"{self.describe()} is already recording")
            s = self.settings
            encoder = self._api.H264Encoder(
                bitrate=s.bitrate, repeat=True, iperiod=s.keyframe_interval, framerate=s.fps
            )
            self._failures = _Failures(self.describe())
            forwarder = _adapt_output(self._api.Output, output, self._failures)
            self._first_sensor_us = None
            self._frames_captured = 0
            self._picam2.post_callback = self._post_callback
            try:
                self._picam2.start_recording(encoder, forwarder)
            except Exception as exc:
                self._picam2.post_callback = None
                if exc is forwarder.raised:
                    raise  # our output's own failure, unchanged
                raise CameraError(f"{self.describe()} could not start recording: {exc}") from exc
            self._encoder = encoder
            self._forwarder = forwarder

    def stop_recording(self) -> None:
        """picamera2's stop_recording (camera, then encoder: flush, ``output.stop()``); then report failures."""
        with self._control:
            forwarder = self._forwarder
            if self._encoder is None:
                return
            try:
                self._picam2.stop_recording()
            except Exception as exc:
                if self._failures.first is None:
                    if exc is forwarder.raised:
                        raise
                    raise CameraError(f"{self.describe()} could not stop recording: {exc}") from exc
                log.exception("%s: stop_recording failed after an earlier failure", self.describe())
            finally:
                self._picam2.post_callback = None
                # origin_mono_us stays readable after the run: the encoder's value wins over ours.
                self._first_sensor_us = self.origin_mono_us
                self._encoder = None
                self._forwarder = None
            failure = self._failures.first
            if failure is not None:
                raise CameraError(
                    f"{self.describe()} failed during recording after {self._frames_captured} frames "
                    f"({self._failures.count} failures): {failure}"
                ) from failure

    def close(self) -> None:
        """Stop recording if needed (its errors propagate) and release the camera. Idempotent."""
        try:
            self.stop_recording()
        finally:
            with self._control:
                if not self._closed:
                    self._closed = True
                    self._picam2.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def force_key_frame(self) -> None:
        """Ask picamera2's encoder for a keyframe as soon as possible (e.g. when an event starts)."""
        encoder = self._encoder
        if encoder is not None and hasattr(encoder, "force_key_frame"):
            encoder.force_key_frame()

    # -- runs in picamera2's camera thread, under its lock ------------------------------------------------

    def _post_callback(self, request: Any) -> None:
        try:
            sensor_ns = request.get_metadata().get("SensorTimestamp")
            now = self.clock.now()
            mono_us = int(sensor_ns) // 1000 if sensor_ns is not None else now.mono_us
            if self._first_sensor_us is None:
                self._first_sensor_us = mono_us
            wall_us = mono_us + (now.wall_us - now.mono_us)
            index = self._frames_captured
            s = self.settings
            with self._api.MappedArray(request, "main") as mapped:
                draw_overlay(mapped.array, wall_us, s.device_id, s.officer_id, self.clock_trusted, index)
                if self.frame_code:
                    draw_frame_code(mapped.array, index)
        except Exception as exc:
            # Raising here would kill picamera2's event loop; the frame is still encoded, unmarked.
            self._failures.add(exc, "the overlay (post_callback)")
        finally:
            self._frames_captured += 1
