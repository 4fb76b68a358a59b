"""A fake of the parts of picamera2 that :class:`~agent.camera.picamera2_camera.Picamera2Camera` uses.

Modelled on picamera2's own source (``Picamera2`` here; requests, outputs and encoders in
:mod:`agent.camera.fake_picamera2_parts`), keeping what the backend and the recorder depend on:

- ``Picamera2``: context manager; ``create_video_configuration`` returning a dict shaped like the real
  one; ``configure`` filling in ``stride``/``framesize`` (rows padded to ``stride_align`` bytes, so
  ``MappedArray`` arrays are non-contiguous views as on the Pi); ``start``/``stop``; ``start_encoder``/
  ``stop_encoder``; ``start_recording`` (configure, start the encoder, start the camera) and
  ``stop_recording`` (stop the camera, then the encoder); ``close``; a capture thread that calls
  ``pre_callback``, ``post_callback`` and then each encoder with every request under the camera lock,
  as ``process_requests`` does. An exception there ends the thread (kept in ``thread_error``), as it
  ends picamera2's event loop.
- Requests whose ``get_metadata()`` holds ``SensorTimestamp`` (ns, on CLOCK_MONOTONIC) and
  ``FrameDuration`` (µs), and ``MappedArray(request, "main")`` giving a writable view of the buffer.
- Encoders driving outputs in the real order, with real H.264 (libx264). ``platform="vc4"`` (Pi 4 /
  Zero 2, the default) makes ``H264Encoder`` the V4L2 one: ``_add_stream("video", "h264", width=,
  height=)`` and ``outputframe`` without a packet. ``platform="pisp"`` (Pi 5) makes it LibavH264Encoder:
  ``_add_stream(<PyAV stream>, "h264", rate=, width=, height=)`` and ``outputframe(..., packet=<PyAV
  packet>)``. Encoders accept only ``Output`` subclasses, as the real ones do.

``fast=True`` delivers frames as fast as they encode, with SensorTimestamps on an exact grid starting at
``sensor_start_ns`` (default: CLOCK_MONOTONIC now); ``max_frames`` stops the sensor after that many frames
(``Picamera2.finished`` is then set). ``load(**options)`` returns the module-like object::

    fake = fake_picamera2.load(fast=True, max_frames=90)
    camera = Picamera2Camera(settings, module_loader=lambda: fake)
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Self

import numpy as np

from agent.camera.fake_picamera2_parts import (
    FORMATS,
    CompletedRequest,
    Encoder,
    H264Encoder,
    LibavH264Encoder,
    MappedArray,
    Output,
)
from agent.camera.synthetic import MovingPattern

log = logging.getLogger(__name__)

PLATFORMS = ("vc4", "pisp")
_STREAM_KEYS = ("format", "size", "stride", "preserve_ar")
_RAW_IGNORED = ("bit_depth", "crop_limits", "exposure_limits", "fps", "unpacked")


@dataclass(frozen=True)
class Transform:
    """libcamera.Transform, as far as a configuration dict shows it."""

    hflip: int = 0
    vflip: int = 0


def _stream_config(defaults: dict[str, Any], updates: dict[str, Any] | None, ignore: tuple[str, ...] = ()) -> Any:
    """Picamera2._make_initial_stream_config."""
    if updates is None:
        return None
    for key, value in updates.items():
        if key in _STREAM_KEYS:
            defaults[key] = value
        elif key not in ignore:
            raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {_STREAM_KEYS}")
    return defaults


class Picamera2:
    """picamera2.Picamera2: open, configure, record through encoders, close."""

    def __init__(self, camera_num: int = 0, *, module: FakePicamera2Module | None = None) -> None:
        self._module = module or FakePicamera2Module()
        self.camera_idx = camera_num
        self.is_open = True
        self.started = False
        self.camera_config: dict[str, Any] = {}
        self.stream_map: dict[str, Any] = {}
        self.encode_stream_name = "main"
        self.pre_callback: Any = None
        self.post_callback: Any = None
        self.lock = threading.Lock()  # the camera lock: held while callbacks and encoders run
        self.request_lock = threading.Lock()
        self._encoders: set[Encoder] = set()
        self.sensor_format = "SRGGB10_CSI2P"
        self.camera_properties = {"Model": "imx708", "PixelArraySize": (4608, 2592), "ColorFilterArrangement": 0}
        # name -> (control id, ControlInfo with min/max/default), as camera_ctrl_info holds them.
        self.camera_ctrl_info: dict[str, tuple[str, Any]] = {
            "FrameDurationLimits": ("FrameDurationLimits", SimpleNamespace(min=8333, max=2_000_000, default=33333)),
            "NoiseReductionMode": ("NoiseReductionMode", SimpleNamespace(min=0, max=4, default=0)),
            "ExposureTime": ("ExposureTime", SimpleNamespace(min=26, max=2_000_000, default=20000)),
            "AnalogueGain": ("AnalogueGain", SimpleNamespace(min=1.0, max=16.0, default=1.0)),
        }
        self.controls: dict[str, Any] = {}
        self.frame_duration_us = 33333
        self.configure_count = 0
        self.stop_count = 0
        self._buffers: list[np.ndarray] = []
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        # For tests: frames delivered in this run, set when max_frames are out, what killed the thread.
        self.frames_delivered = 0
        self.finished = threading.Event()
        self.thread_error: BaseException | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        return {name: (info.min, info.max, info.default) for name, (_, info) in self.camera_ctrl_info.items()}

    @property
    def encoders(self) -> set[Encoder]:
        return self._encoders

    # -- configuration ------------------------------------------------------------------------------------

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Transform | None = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        main = _stream_config({"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}, main or {})
        width, height = main["size"]
        main["size"] = (width - width % 2, height - height % 2)  # align_stream(optimal=False)
        lores = _stream_config({"format": "YUV420", "size": main["size"], "preserve_ar": False}, lores)
        raw = _stream_config({"format": self.sensor_format, "size": main["size"]}, raw or {}, _RAW_IGNORED)
        if colour_space is None:
            small = main["size"][0] < 1280 or main["size"][1] < 720
            colour_space = "Smpte170m" if small else "Rec709"
        controls = {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333)} | (controls or {})
        config = {
            "use_case": use_case,
            "transform": transform or Transform(),
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main,
            "lores": lores,
            "raw": raw,
            "controls": controls,
            "sensor": sensor or {},
        }
        for role, stream in (("Display", display), ("Encode", encode)):
            if stream is not None and config.get(stream) is None:
                raise RuntimeError(f"{role} stream {stream} was not defined")
        config["display"] = display
        config["encode"] = encode
        return config

    def configure(self, camera_config: dict[str, Any] | str | None = None) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if camera_config is None or isinstance(camera_config, str):
            camera_config = self.create_video_configuration()  # the fake has only a video configuration
        if not isinstance(camera_config, dict):
            raise TypeError("Invalid type for `camera_config` given")
        config = copy.deepcopy(camera_config)
        main = config["main"]
        if main["format"] not in FORMATS:
            raise RuntimeError(f"fake picamera2 supports only {sorted(FORMATS)}, not {main['format']}")
        width, height = main["size"]
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise RuntimeError(f"Invalid camera configuration: main size {main['size']}")
        align = self._module.stride_align
        main["stride"] = -(-width * FORMATS[main["format"]][0] // align) * align
        main["framesize"] = main["stride"] * height
        self.stream_map = {"main": "main", "lores": None, "raw": "raw" if config.get("raw") else None}
        for role in ("display", "encode"):
            if config.get(role) is not None and config.get(config[role]) is None:
                raise RuntimeError(f"{role.capitalize()} stream {config[role]} was not defined")
        self.encode_stream_name = config["encode"]
        self.controls = {}
        self.set_controls(config["controls"])
        self._buffers = [np.zeros(main["framesize"], dtype=np.uint8) for _ in range(config["buffer_count"])]
        self.camera_config = config
        self.configure_count += 1

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config

    def stream_configuration(self, name: str = "main") -> dict[str, Any]:
        config: dict[str, Any] = self.camera_config[name]
        return config

    def set_controls(self, controls: dict[str, Any]) -> None:
        for name, value in controls.items():
            if name == "FrameRate":  # picamera2's virtual control
                rates = value if isinstance(value, (tuple, list)) else (value, value)
                name, value = "FrameDurationLimits", (int(1_000_000 / rates[1]), int(1_000_000 / rates[0]))
            if name not in self.camera_ctrl_info:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
            self.controls[name] = value
            if name == "FrameDurationLimits":
                info = self.camera_ctrl_info[name][1]
                self.frame_duration_us = min(max(int(value[0]), info.min), info.max)

    # -- running ------------------------------------------------------------------------------------------

    def start(self, config: dict[str, Any] | None = None, show_preview: bool = False) -> None:
        if config is not None:
            self.configure(config)
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        self._halt.clear()
        self.finished.clear()
        self.frames_delivered = 0
        self.thread_error = None
        self._thread = threading.Thread(target=self._run, name="fake-picamera2", daemon=True)
        self.started = True
        self._thread.start()

    def stop(self) -> None:
        if not self.started:
            return
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        self.stop_count += 1
        self.started = False

    def start_encoder(
        self, encoder: Encoder | None = None, output: Any = None, pts: Any = None, quality: Any = None, name: Any = None
    ) -> None:
        if encoder is None:
            if len(self._encoders) != 1:
                raise RuntimeError("No encoder specified" if not self._encoders else "Multiple possible encoders")
            encoder = next(iter(self._encoders))
        if output is not None:
            if isinstance(output, str):
                raise RuntimeError("fake picamera2 writes no files: pass an Output")
            encoder.output = output
        streams = self.camera_configuration()
        if not streams:
            raise RuntimeError("Camera has not been configured")
        name = name or self.encode_stream_name
        if streams.get(name) is None:
            raise RuntimeError(f"Encode stream {name} was not defined")
        encoder.name = name
        encoder.width, encoder.height = streams[name]["size"]
        encoder.format = streams[name]["format"]
        encoder.stride = streams[name]["stride"]
        min_frame_duration = max(self.camera_ctrl_info["FrameDurationLimits"][1].min, 33333)
        if getattr(encoder, "framerate", 0) is None:
            encoder.framerate = 1_000_000 / min_frame_duration  # type: ignore[attr-defined]
        encoder.start(quality=quality)
        with self.lock:
            self._encoders.add(encoder)

    def stop_encoder(self, encoders: Encoder | list[Encoder] | set[Encoder] | None = None) -> None:
        if encoders is None:
            chosen = list(self._encoders)
        elif isinstance(encoders, Encoder):
            chosen = [encoders]
        else:
            chosen = list(encoders)
        for encoder in chosen:
            encoder.stop()
        with self.lock:
            for encoder in chosen:
                self._encoders.discard(encoder)

    def start_recording(
        self,
        encoder: Encoder,
        output: Any,
        pts: Any = None,
        config: dict[str, Any] | None = None,
        quality: Any = None,
        name: Any = None,
    ) -> None:
        if not self.camera_config and config is None:
            config = self.create_video_configuration()
        if config is not None:
            self.configure(config)
        self.start_encoder(encoder, output, pts=pts, quality=quality, name=name)
        self.start()

    def stop_recording(self) -> None:
        self.stop()
        self.stop_encoder()

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self.camera_config = {}
        self.stream_map = {}
        self._buffers = []

    # -- the sensor and the event loop ------------------------------------------------------------------

    def _run(self) -> None:
        module = self._module
        main = self.camera_config["main"]
        width, height = main["size"]
        channels = FORMATS[main["format"]][0]
        pattern = MovingPattern(width, height)
        period_ns = self.frame_duration_us * 1000
        base_ns = time.monotonic_ns()
        if module.fast and module.sensor_start_ns is not None:
            base_ns = module.sensor_start_ns
        slot = 0
        try:
            while not self._halt.is_set():
                if module.max_frames is not None and self.frames_delivered >= module.max_frames:
                    self.finished.set()
                    self._halt.wait()
                    return
                if not module.fast:
                    slot = self._wait_for_slot(base_ns, slot, period_ns)
                    if slot < 0:
                        return
                buffer = self._buffers[self.frames_delivered % len(self._buffers)]
                metadata = {
                    "SensorTimestamp": base_ns + slot * period_ns,
                    "FrameDuration": self.frame_duration_us,
                    "ExposureTime": min(20000, self.frame_duration_us),
                    "AnalogueGain": 1.0,
                }
                request = CompletedRequest(self, buffer, metadata)
                with MappedArray(request, "main") as mapped:
                    assert mapped.array is not None
                    pattern.render(self.frames_delivered, out=mapped.array[:, :, :3])
                    if channels == 4:
                        mapped.array[:, :, 3] = 255
                self._process(request)
                self.frames_delivered += 1
                slot += 1
        except BaseException as exc:
            self.thread_error = exc
            log.exception("fake picamera2: the event loop died")
            self.finished.set()

    def _process(self, request: CompletedRequest) -> None:
        """Picamera2.process_requests for one request."""
        with self.lock:
            if self.pre_callback:
                self.pre_callback(request)
            if self.post_callback:
                self.post_callback(request)
            for encoder in list(self._encoders):
                if encoder.name in self.stream_map:
                    encoder.encode(encoder.name, request)
            request.release()

    def _wait_for_slot(self, base_ns: int, slot: int, period_ns: int) -> int:
        """Sleep to the sensor's frame grid; frames missed while we were busy are dropped, as a sensor's are."""
        due = base_ns + slot * period_ns
        now = time.monotonic_ns()
        if now < due:
            return -1 if self._halt.wait((due - now) / 1e9) else slot
        return max(slot, (now - base_ns) // period_ns)


FakeCamera = Picamera2  # for annotations inside FakePicamera2Module, where Picamera2 names the method


class FakePicamera2Module:
    """What ``module_loader`` returns: ``Picamera2``, ``H264Encoder``, ``MappedArray``, ``Output``.

    Records the cameras and encoders it made (``cameras``, ``created_encoders``) for tests.
    """

    Output = Output
    MappedArray = MappedArray
    CompletedRequest = CompletedRequest

    def __init__(
        self,
        *,
        fast: bool = False,
        max_frames: int | None = None,
        platform: str = "vc4",
        cameras: int = 1,
        sensor_start_ns: int | None = None,
        stride_align: int = 64,
    ) -> None:
        if platform not in PLATFORMS:
            raise ValueError(f"platform {platform!r} is not one of {PLATFORMS}")
        self.fast = fast
        self.max_frames = max_frames
        self.platform = platform
        self.camera_count = cameras
        self.sensor_start_ns = sensor_start_ns
        self.stride_align = stride_align
        self.cameras: list[FakeCamera] = []
        self.created_encoders: list[Encoder] = []
        self.encoders = SimpleNamespace(
            Encoder=Encoder, LibavH264Encoder=LibavH264Encoder, H264Encoder=self.H264Encoder
        )
        self.outputs = SimpleNamespace(Output=Output)

    def Picamera2(self, camera_num: int = 0, **kwargs: Any) -> FakeCamera:  # picamera2 spells it so
        if not 0 <= camera_num < self.camera_count:
            raise IndexError("list index out of range")  # what picamera2 raises for a camera that is not there
        camera = Picamera2(camera_num, module=self)
        self.cameras.append(camera)
        return camera

    def H264Encoder(self, *args: Any, **kwargs: Any) -> Encoder:  # picamera2 spells it so
        encoder_class = H264Encoder if self.platform == "vc4" else LibavH264Encoder
        encoder = encoder_class(*args, **kwargs)
        self.created_encoders.append(encoder)
        return encoder


def load(**options: Any) -> FakePicamera2Module:
    """A fresh fake picamera2 (see :class:`FakePicamera2Module` for the options)."""
    return FakePicamera2Module(**options)
