"""Software H.264 (libx264 through PyAV) that drives an output the way picamera2's encoders do.

:class:`H264Codec` turns frames into packets and knows nothing about outputs; :class:`SoftwareH264Encoder`
adds the picamera2 call sequence on one :class:`~agent.camera.base.EncodedOutput`: ``start()``,
``_add_stream("video", "h264", rate=..., width=..., height=...)``, ``outputframe(...)`` per packet and, on
stop, the flushed packets and ``stop()``. That is what picamera2's V4L2 H264Encoder sends (no PyAV packet),
so picamera2's own outputs (PyavOutput, SplittableOutput, CircularOutput2) accept it too.

Settings and why:
- ``tune=zerolatency``: no B-frames and no lookahead, so every frame comes out as one packet at once,
  pts == dts, and the timestamp handed to the output is the capture time of that very frame.
- ``keyint = min-keyint = keyframe_interval``, ``scenecut=0``: keyframes (IDR) exactly every N frames,
  so segment cuts land on a predictable grid.
- ``repeat-headers=1``, Annex B: SPS/PPS ride with every keyframe, so any file cut at a keyframe decodes
  on its own (picamera2's ``repeat=True``).
- ``vbv-maxrate = vbv-bufsize = bitrate``: the bitrate is a ceiling over any second, which is what
  storage and upload planning need; plain ABR lets busy scenes overshoot for seconds.
- ``preset=ultrafast`` by default: the only preset that keeps up with 720p30 on two small cores
  (picamera2's LibavH264Encoder uses it too); ``deblock`` is switched back on because it costs little and
  ultrafast's blockiness hurts faces and plates most.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np

from agent.camera.base import CameraSettings, EncodedOutput
from agent.errors import CameraError

MICROSECONDS = Fraction(1, 1_000_000)

# PyAV's pixel format names for the frame layouts we accept, and the OpenCV conversion to yuv420p.
# OpenCV's conversion is BT.601 limited range like swscale's default, and twice as fast at 1080p.
_TO_I420 = {
    "bgr24": (3, cv2.COLOR_BGR2YUV_I420),
    "rgb24": (3, cv2.COLOR_RGB2YUV_I420),
    "bgra": (4, cv2.COLOR_BGRA2YUV_I420),
    "rgba": (4, cv2.COLOR_RGBA2YUV_I420),
}


@dataclass(frozen=True)
class EncodedPacket:
    """One encoded frame: Annex B bytes, whether it is a keyframe, its pts in µs, and PyAV's packet."""

    data: bytes
    keyframe: bool
    timestamp_us: int
    packet: Any  # av.Packet, whose .stream is H264Codec.stream (what picamera2's LibavH264Encoder passes on)


def check_settings(settings: CameraSettings) -> None:
    """Refuse settings libx264 or yuv420p cannot honour, naming the field."""
    if settings.width <= 0 or settings.height <= 0 or settings.width % 2 or settings.height % 2:
        raise CameraError(f"frame size {settings.width}x{settings.height} must be positive and even (yuv420p)")
    if settings.fps <= 0:
        raise CameraError(f"fps {settings.fps} must be positive")
    if settings.bitrate <= 0:
        raise CameraError(f"bitrate {settings.bitrate} must be positive")
    if settings.keyframe_interval < 1:
        raise CameraError(f"keyframe_interval {settings.keyframe_interval} must be at least 1")


class H264Codec:
    """libx264 in a PyAV stream: numpy frames in, :class:`EncodedPacket` out. Not thread-safe."""

    def __init__(
        self,
        settings: CameraSettings,
        *,
        input_format: str = "bgr24",
        preset: str = "ultrafast",
        threads: int = 0,
    ) -> None:
        check_settings(settings)
        if input_format not in _TO_I420:
            raise CameraError(f"input format {input_format!r} is not one of {sorted(_TO_I420)}")
        self.settings = settings
        self.input_format = input_format
        self._channels, self._conversion = _TO_I420[input_format]
        self._force_key_frame = False
        # A stream in a "null" container, as picamera2's LibavH264Encoder does: its packets then carry a
        # .stream that picamera2's PyavOutput can map. Nothing is ever muxed, so nothing is written.
        self._container: Any = av.open(io.BytesIO(), mode="w", format="null")
        self.stream: Any = self._container.add_stream("libx264", rate=settings.fps)
        self.stream.width = settings.width
        self.stream.height = settings.height
        self.stream.pix_fmt = "yuv420p"
        context = self.stream.codec_context
        context.time_base = MICROSECONDS
        context.bit_rate = settings.bitrate
        context.gop_size = settings.keyframe_interval
        context.max_b_frames = 0
        context.thread_count = threads
        kbit = max(1, settings.bitrate // 1000)
        interval = settings.keyframe_interval
        x264_params = ":".join(
            (
                f"keyint={interval}",
                f"min-keyint={interval}",
                "scenecut=0",
                "repeat-headers=1",
                "annexb=1",
                f"vbv-maxrate={kbit}",
                f"vbv-bufsize={kbit}",
            )
        )
        context.options = {
            "preset": preset,
            "tune": "zerolatency",
            "deblock": "1",
            "forced-idr": "1",
            "x264-params": x264_params,
        }

    def force_key_frame(self) -> None:
        """Make the next frame an IDR keyframe (the keyframe grid restarts there)."""
        self._force_key_frame = True

    def encode(self, frame: np.ndarray, pts_us: int) -> list[EncodedPacket]:
        """Encode one ``(H, W, C)`` uint8 frame (any row stride) presented at ``pts_us``."""
        expected = (self.settings.height, self.settings.width, self._channels)
        if frame.shape != expected or frame.dtype != np.uint8:
            raise CameraError(
                f"frame of shape {frame.shape} and type {frame.dtype} does not match the encoder's "
                f"{expected} uint8 ({self.input_format})"
            )
        i420 = np.asarray(cv2.cvtColor(frame, self._conversion), dtype=np.uint8)
        video_frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        video_frame.pts = pts_us
        video_frame.time_base = MICROSECONDS
        if self._force_key_frame:
            video_frame.pict_type = av.video.frame.PictureType.I
            self._force_key_frame = False
        return self._run(video_frame, f"frame at {pts_us} µs")

    def flush(self) -> list[EncodedPacket]:
        """The packets libx264 still holds (none with zerolatency, but never assume)."""
        return self._run(None, "flush")

    def close(self) -> None:
        self._container.close()

    def _run(self, video_frame: av.VideoFrame | None, what: str) -> list[EncodedPacket]:
        try:
            packets = self.stream.encode(video_frame)
        except av.FFmpegError as exc:
            raise CameraError(f"libx264 failed on the {what}: {exc}") from exc
        result = []
        for packet in packets:
            if packet.pts is None:
                raise CameraError(f"libx264 returned a packet without a timestamp on the {what}")
            result.append(EncodedPacket(bytes(packet), bool(packet.is_keyframe), int(packet.pts), packet))
        return result


class SoftwareH264Encoder:
    """Encodes numpy frames and drives one output exactly as picamera2's H264Encoder drives its outputs.

    ``encode(frame, timestamp_us)`` takes any microsecond clock (monotonic, or synthetic); the output sees
    microseconds since the first frame, as picamera2's encoders compute from SensorTimestamp.
    ``firsttimestamp`` keeps the clock value of frame 0, as picamera2's Encoder does.

    Errors of the codec are :class:`CameraError`; errors raised by the output propagate unchanged.
    """

    def __init__(
        self,
        settings: CameraSettings,
        *,
        input_format: str = "bgr24",
        preset: str = "ultrafast",
        threads: int = 0,
    ) -> None:
        check_settings(settings)
        self.settings = settings
        self._codec_options: dict[str, Any] = {"input_format": input_format, "preset": preset, "threads": threads}
        self._codec: H264Codec | None = None
        self._output: EncodedOutput | None = None
        self._lock = threading.Lock()
        self._last_us: int | None = None
        self.firsttimestamp: int | None = None
        self.frames_encoded = 0
        self.packets_sent = 0

    @property
    def running(self) -> bool:
        return self._output is not None

    def start(self, output: EncodedOutput) -> None:
        """``output.start()``, then ``output._add_stream(...)``, the order picamera2 keeps."""
        with self._lock:
            if self._output is not None:
                raise CameraError("encoder already running")
            codec = H264Codec(self.settings, **self._codec_options)
            self.firsttimestamp = None
            self._last_us = None
            self.frames_encoded = 0
            self.packets_sent = 0
            output.start()
            try:
                output._add_stream(
                    "video", "h264", rate=self.settings.fps, width=self.settings.width, height=self.settings.height
                )
            except BaseException:
                codec.close()
                raise
            self._codec = codec
            self._output = output

    def force_key_frame(self) -> None:
        with self._lock:
            if self._codec is not None:
                self._codec.force_key_frame()

    def encode(self, frame: np.ndarray, timestamp_us: int) -> None:
        with self._lock:
            if self._codec is None or self._output is None:
                raise CameraError("encoder is not running: call start(output) first")
            if self.firsttimestamp is None:
                self.firsttimestamp = timestamp_us
            relative = timestamp_us - self.firsttimestamp
            if self._last_us is not None and relative <= self._last_us:
                # libx264 would reject it anyway; say which frame and which times.
                raise CameraError(
                    f"frame {self.frames_encoded} at {relative} µs is not after the previous frame at "
                    f"{self._last_us} µs: timestamps must increase"
                )
            self._last_us = relative
            packets = self._codec.encode(frame, relative)
            self.frames_encoded += 1
            self._send(self._output, packets)

    def stop(self, *, flush: bool = True) -> None:
        """Send the remaining packets (unless ``flush`` is False, after a failure), then ``output.stop()``.

        ``output.stop()`` is called even when flushing fails; the encoder is stopped either way.
        """
        with self._lock:
            codec, output = self._codec, self._output
            if codec is None or output is None:
                return
            self._codec = None
            self._output = None
            try:
                if flush:
                    self._send(output, codec.flush())
            finally:
                codec.close()
                output.stop()

    def _send(self, output: EncodedOutput, packets: list[EncodedPacket]) -> None:
        for packet in packets:
            output.outputframe(packet.data, packet.keyframe, packet.timestamp_us)
            self.packets_sent += 1
