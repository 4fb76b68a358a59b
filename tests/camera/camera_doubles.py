"""Test doubles and helpers for the camera tests (imported as a top-level module, like tests/helpers.py)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from agent.camera.overlay import draw_overlay, read_frame_code


@dataclass(frozen=True)
class OutputFrame:
    data: bytes
    keyframe: bool
    timestamp: int | None
    packet: Any
    audio: bool
    thread: str


@dataclass
class RecordingOutput:
    """An EncodedOutput that records every call, in order, and every packet.

    ``fail_at`` makes the n-th ``outputframe`` (0-based) raise OSError, as a full disk would;
    ``on_start``/``on_stop`` run inside ``start()``/``stop()`` (to look at the camera's state then).
    """

    fail_at: int | None = None
    fail_start: bool = False
    on_stop: Callable[[], None] | None = None
    calls: list[str] = field(default_factory=list)
    streams: list[tuple[Any, str, dict[str, Any]]] = field(default_factory=list)
    frames: list[OutputFrame] = field(default_factory=list)
    outputframe_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        if self.fail_start:
            raise OSError("cannot open the segment (test)")
        with self._lock:
            self.calls.append("start")

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append("_add_stream")
            self.streams.append((encoder_stream, codec_name, kwargs))

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        with self._lock:
            index = self.outputframe_calls
            self.outputframe_calls += 1
            if self.fail_at is not None and index >= self.fail_at:
                raise OSError(f"no space left on device (test, frame {index})")
            self.calls.append("outputframe")
            self.frames.append(
                OutputFrame(bytes(frame), keyframe, timestamp, packet, audio, threading.current_thread().name)
            )

    def stop(self) -> None:
        if self.on_stop is not None:
            self.on_stop()
        with self._lock:
            self.calls.append("stop")

    @property
    def data(self) -> bytes:
        return b"".join(frame.data for frame in self.frames)

    @property
    def timestamps(self) -> list[int]:
        return [frame.timestamp for frame in self.frames if frame.timestamp is not None]

    @property
    def keyframe_indices(self) -> list[int]:
        return [i for i, frame in enumerate(self.frames) if frame.keyframe]

    def assert_protocol(self) -> None:
        """start, _add_stream, at least one outputframe, stop: picamera2's order, nothing else."""
        assert self.calls[:2] == ["start", "_add_stream"], self.calls[:5]
        assert self.calls[-1] == "stop", self.calls[-5:]
        middle = self.calls[2:-1]
        assert middle and set(middle) == {"outputframe"}, sorted(set(middle))


def decode_h264(data: bytes) -> list[np.ndarray]:
    """Every frame of an Annex B H.264 byte stream, as BGR arrays."""
    with av.open(io.BytesIO(data), format="h264") as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def frame_codes(data: bytes) -> list[int | None]:
    return [read_frame_code(frame) for frame in decode_h264(data)]


def nal_types(data: bytes) -> list[int]:
    """NAL unit types in an Annex B packet (5 IDR slice, 7 SPS, 8 PPS)."""
    types = []
    position = data.find(b"\x00\x00\x01")
    while position >= 0:
        types.append(data[position + 3] & 0x1F)
        position = data.find(b"\x00\x00\x01", position + 3)
    return types


def overlay_reading(pixels: np.ndarray, frame_size: tuple[int, int], args: tuple[int, str, bool, int],
                    candidates: list[str]) -> str:
    """Which of ``candidates`` the officer field of ``pixels`` (the top-left corner of a frame of
    ``frame_size`` = (height, width)) shows, read as a person compares: against each candidate's own overlay
    (``args`` = wall time, device id, clock trusted, frame number), over the pixels where they differ.
    Raises AssertionError when no candidate is clearly nearer than the others, so a smudge never passes.
    """
    height, width = pixels.shape[:2]
    wall_us, device_id, trusted, n = args
    renders = {}
    for name in candidates:
        reference = np.full((*frame_size, 3), 128, dtype=np.uint8)
        draw_overlay(reference, wall_us, device_id, name, trusted, n)
        renders[name] = reference[:height, :width].astype(np.float32).mean(axis=2)
    first = renders[candidates[0]]
    differ = np.zeros(first.shape, dtype=bool)
    for render in renders.values():
        differ |= render != first
    assert differ.any(), f"the overlays of {candidates} look the same"
    seen = pixels[:, :, :3].astype(np.float32).mean(axis=2)[differ]
    distance = sorted((float(np.abs(render[differ] - seen).mean()), name) for name, render in renders.items())
    (best, name), (runner_up, _other) = distance[0], distance[1]
    assert best * 1.5 < runner_up, f"the officer field is not clearly legible: {distance}"
    return name
