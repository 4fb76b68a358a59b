"""The pre-event buffer: the last N seconds of encoded video, kept in memory while armed.

It always starts at a keyframe, so what it hands over is decodable from its first packet; when it wraps,
whole GOPs fall off the front, never part of one. With N = 0 it still keeps the GOP in progress, so a
recording starts at the last keyframe rather than with frames no decoder can use.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class EncodedFrame:
    data: bytes
    keyframe: bool
    timestamp_us: int
    already_written: bool = False  # handed back to the buffer at a stop, after it went into a segment


class PreEventBuffer:
    def __init__(self, seconds: float) -> None:
        self.duration_us = int(seconds * 1_000_000)
        self._frames: deque[EncodedFrame] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: EncodedFrame) -> int:
        """Keep ``frame``; returns how many frames this pushed out (or refused: before any keyframe)."""
        dropped = 0
        if self.duration_us <= 0 and frame.keyframe:
            dropped = len(self.drain())
        if not self._frames and not frame.keyframe:
            return dropped + 1  # nothing decodable to start from yet
        self._frames.append(frame)
        self.bytes += len(frame.data)
        return dropped + self._trim(frame.timestamp_us)

    def _trim(self, now_us: int) -> int:
        # Drop the oldest GOP while the buffer would still cover the duration without it.
        dropped = 0
        while True:
            second_key = next((i for i, f in enumerate(self._frames) if i > 0 and f.keyframe), None)
            if second_key is None or now_us - self._frames[second_key].timestamp_us < self.duration_us:
                return dropped
            for _ in range(second_key):
                self.bytes -= len(self._frames.popleft().data)
            dropped += second_key

    def set_duration(self, seconds: float) -> int:
        """Change how much is kept; shortening drops whole GOPs at once. Returns the frames dropped."""
        self.duration_us = int(seconds * 1_000_000)
        if not self._frames:
            return 0
        if self.duration_us <= 0:
            last_key = max(i for i, f in enumerate(self._frames) if f.keyframe)
            for _ in range(last_key):
                self.bytes -= len(self._frames.popleft().data)
            return last_key
        return self._trim(self._frames[-1].timestamp_us)

    def drain(self) -> list[EncodedFrame]:
        """Hand over everything buffered (oldest first) and start empty."""
        frames = list(self._frames)
        self._frames.clear()
        self.bytes = 0
        return frames
