"""The request, output and encoder classes of the picamera2 fake (see :mod:`agent.camera.fake_picamera2`).

Each mirrors the picamera2 class of the same name (picamera2.request, .outputs.output, .encoders): the
same constructor arguments, the same order of output calls, the same checks and error messages.
"""

from __future__ import annotations

import copy
import threading
from math import sqrt
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.camera.base import CameraSettings
from agent.camera.encoder import H264Codec

if TYPE_CHECKING:
    from agent.camera.fake_picamera2 import Picamera2

# picamera2's format names -> (bytes per pixel, PyAV pixel format of the bytes in memory).
FORMATS = {"RGB888": (3, "bgr24"), "BGR888": (3, "rgb24"), "XBGR8888": (4, "rgba"), "XRGB8888": (4, "bgra")}


class Output:
    """picamera2.outputs.Output."""

    def __init__(self, pts: Any = None) -> None:
        self.recording = False
        self.ptsoutput = pts
        self.needs_pacing = False
        self.needs_add_stream = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(
        self, frame: Any, keyframe: bool = True, timestamp: int | None = None, packet: Any = None, audio: bool = False
    ) -> None:
        pass

    def _add_stream(self, encoder_stream: Any, *args: Any, **kwargs: Any) -> None:
        pass


class CompletedRequest:
    """picamera2.request.CompletedRequest: one frame buffer and its metadata, reference counted."""

    def __init__(self, picam2: Picamera2, buffer: np.ndarray, metadata: dict[str, Any]) -> None:
        self.picam2 = picam2
        self.buffer = buffer
        self.config = copy.deepcopy(picam2.camera_config)
        self.stream_map = dict(picam2.stream_map)
        self.request = SimpleNamespace(metadata=metadata)  # the libcamera request, as encoders read it
        self.ref_count = 1
        self.lock = picam2.request_lock

    def get_metadata(self) -> dict[str, Any]:
        return dict(self.request.metadata)

    def acquire(self) -> None:
        with self.lock:
            if self.ref_count == 0:
                raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
            self.ref_count += 1

    def release(self) -> None:
        with self.lock:
            self.ref_count -= 1
            if self.ref_count < 0:
                raise RuntimeError("CompletedRequest: lock now has negative ref_count")

    def make_array(self, name: str) -> np.ndarray:
        with MappedArray(self, name) as mapped:
            return np.ascontiguousarray(mapped.array)


class MappedArray:
    """picamera2.request.MappedArray: the buffer as an (H, W, C) view sharing memory, padding sliced off."""

    def __init__(self, request: CompletedRequest, stream: str, reshape: bool = True, write: bool = True) -> None:
        self._request = request
        self._stream = stream
        self._reshape = reshape
        self._write = write
        self._array: np.ndarray | None = None

    def __enter__(self) -> MappedArray:
        if self._stream != "main":
            raise RuntimeError(f"fake picamera2 has only the main stream, not {self._stream!r}")
        array = self._request.buffer.view()
        if self._reshape:
            config = self._request.config["main"]
            width, height = config["size"]
            channels = FORMATS[config["format"]][0]
            array = array.reshape(height, config["stride"])[:, : width * channels].reshape(height, width, channels)
        array.flags.writeable = self._write
        self._array = array
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._array = None

    @property
    def array(self) -> np.ndarray | None:
        return self._array


class Encoder:
    """picamera2.encoders.Encoder: the part that drives outputs."""

    def __init__(self) -> None:
        self.width = 0
        self.height = 0
        self.stride = 0
        self.format: str | None = None
        self.name: str | None = None
        self._output: list[Output] = []
        self._running = False
        self._lock = threading.Lock()
        self._output_lock = threading.Lock()
        self.firsttimestamp: int | None = None
        self.frames_encoded = 0
        self.frame_skip_count = 1
        self._skip_count = 0

    @property
    def running(self) -> bool:
        return self._running

    @property
    def output(self) -> Output | list[Output]:
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value: Output | list[Output]) -> None:
        outputs = value if isinstance(value, list) else [value]
        if not all(isinstance(out, Output) for out in outputs):
            raise RuntimeError("Must pass Output")
        for out in outputs:
            if self._running and out not in self._output:
                self._send_streams(out)
        self._output = outputs

    def encode(self, stream: str, request: CompletedRequest) -> None:
        if self._skip_count == 0:
            with self._lock:
                if not self._running:
                    return
                self._encode(stream, request)
        self._skip_count = (self._skip_count + 1) % self.frame_skip_count
        self.frames_encoded += 1

    def start(self, quality: Any = None) -> None:
        with self._lock:
            if self._running:
                raise RuntimeError("Encoder already running")
            self.frames_encoded = 0
            self._setup(quality)
            self._running = True
            self.firsttimestamp = None
            for out in self._output:
                out.start()
            self._start()

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                raise RuntimeError("Encoder already stopped")
            self._running = False
            self._stop()
            for out in self._output:
                out.stop()

    def outputframe(
        self, frame: Any, keyframe: bool = True, timestamp: int | None = None, packet: Any = None, audio: bool = False
    ) -> None:
        with self._output_lock:
            for out in self._output:
                out.outputframe(frame, keyframe, timestamp, packet, audio)

    def _timestamp(self, request: CompletedRequest) -> int:
        ts = int(request.request.metadata["SensorTimestamp"] / 1000)  # ns to µs, as picamera2 does
        if self.firsttimestamp is None:
            self.firsttimestamp = ts
            return 0
        return ts - self.firsttimestamp

    def _setup(self, quality: Any) -> None:
        pass

    def _start(self) -> None:
        pass

    def _stop(self) -> None:
        pass

    def _send_streams(self, output: Output) -> None:
        pass

    def _encode(self, stream: str, request: CompletedRequest) -> None:
        raise NotImplementedError


class _SoftwareH264(Encoder):
    """Real H.264 for both flavours: libx264 through :class:`H264Codec`."""

    default_iperiod = 60
    _reference_mbps = 6.0

    def __init__(self, bitrate: int | None, repeat: bool, iperiod: int | None, framerate: float | None) -> None:
        super().__init__()
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod
        self.framerate = framerate
        self.qp: int | None = None
        self._codec: H264Codec | None = None
        self._key_frames_requested = 0

    def force_key_frame(self) -> None:
        self._key_frames_requested += 1

    def _setup(self, quality: Any) -> None:
        if self.bitrate is None:  # picamera2's Quality.MEDIUM, scaled from 1080p30
            complexity = self.width * self.height * (self.framerate or 30) / (1920 * 1080 * 30)
            self.bitrate = int(self._reference_mbps * 1_000_000 * self._scale(complexity))

    @staticmethod
    def _scale(complexity: float) -> float:
        return complexity

    def _start(self) -> None:
        if self.format not in FORMATS:
            raise RuntimeError(f"fake picamera2 cannot encode format {self.format}")
        settings = CameraSettings(
            width=self.width,
            height=self.height,
            fps=max(1, round(self.framerate or 30)),
            bitrate=int(self.bitrate or 1_000_000),
            keyframe_interval=self.iperiod or self.default_iperiod,
        )
        self._codec = H264Codec(settings, input_format=FORMATS[self.format][1])
        for out in self._output:
            self._send_streams(out)

    def _encode(self, stream: str, request: CompletedRequest) -> None:
        assert self._codec is not None
        timestamp_us = self._timestamp(request)
        if self._key_frames_requested:
            self._key_frames_requested = 0
            self._codec.force_key_frame()
        with MappedArray(request, stream) as mapped:
            assert mapped.array is not None
            packets = self._codec.encode(mapped.array, timestamp_us)
        for packet in packets:
            self._emit(packet)

    def _stop(self) -> None:
        assert self._codec is not None
        try:
            for packet in self._codec.flush():
                self._emit(packet)
        finally:
            self._codec.close()
            self._codec = None

    def _emit(self, packet: Any) -> None:
        raise NotImplementedError


class H264Encoder(_SoftwareH264):
    """picamera2.encoders.H264Encoder as on a Pi 4 / Zero 2 (the V4L2 hardware encoder)."""

    def __init__(
        self,
        bitrate: int | None = None,
        repeat: bool = True,
        iperiod: int | None = None,
        framerate: float | None = None,
        enable_sps_framerate: bool = False,
        qp: int | None = None,
        profile: str | None = None,
    ) -> None:
        super().__init__(bitrate, repeat, iperiod, framerate)
        self.qp = qp
        self.profile = profile
        self._enable_framerate = enable_sps_framerate

    def _send_streams(self, output: Output) -> None:
        output._add_stream("video", "h264", width=self.width, height=self.height)

    def _emit(self, packet: Any) -> None:
        self.outputframe(packet.data, packet.keyframe, packet.timestamp_us)


class LibavH264Encoder(_SoftwareH264):
    """picamera2.encoders.LibavH264Encoder, what ``H264Encoder`` is on a Pi 5."""

    default_iperiod = 30
    _reference_mbps = 7.0

    def __init__(
        self,
        bitrate: int | None = None,
        repeat: bool = True,
        iperiod: int | None = 30,
        framerate: float | None = 30,
        qp: int | None = None,
        profile: str | None = None,
    ) -> None:
        super().__init__(bitrate, repeat, iperiod, framerate)
        self.qp = qp
        self.profile = profile

    @staticmethod
    def _scale(complexity: float) -> float:
        return sqrt(complexity)

    def _send_streams(self, output: Output) -> None:
        assert self._codec is not None
        output._add_stream(self._codec.stream, "h264", rate=self.framerate, width=self.width, height=self.height)

    def _emit(self, packet: Any) -> None:
        self.outputframe(packet.data, packet.keyframe, timestamp=packet.timestamp_us, packet=packet.packet)
