"""A camera without a camera: a moving test picture, really encoded with libx264.

It exercises everything downstream of the sensor (overlay, H.264, keyframes, timestamps, the recorder)
on any machine. With ``realtime=False`` it records a minute of footage in a few seconds with exact
synthetic timestamps; with ``realtime=True`` it paces to the frame rate on CLOCK_MONOTONIC like a sensor.
"""

from __future__ import annotations

import numpy as np

from agent.camera.base import CameraSettings
from agent.camera.clock import Clock
from agent.camera.threaded import FrameTiming, ThreadedCamera


class MovingPattern:
    """A scrolling textured gradient with a bouncing square: motion and detail for the encoder to work on.

    Everything is precomputed once; a frame costs one copy of the image plus the square. The texture
    is seeded, so the pictures are the same on every run.
    """

    def __init__(self, width: int, height: int, seed: int = 2024) -> None:
        self.width = width
        self.height = height
        rng = np.random.default_rng(seed)
        wide = 2 * width  # scrolling through twice the width needs no wrap-around copy
        xs = np.arange(wide, dtype=np.float32)[None, :]
        ys = np.arange(height, dtype=np.float32)[:, None]
        background = np.empty((height, wide, 3), dtype=np.float32)
        background[:, :, 0] = 128 + 100 * np.sin(2 * np.pi * xs / width)
        background[:, :, 1] = 40 + 160 * ys / max(1, height - 1)
        background[:, :, 2] = 128 + 90 * np.sin(2 * np.pi * (xs + ys) / (width / 3))
        # Some fine detail, as a real scene has, so the encoder's cost is not flattered.
        background += rng.normal(0, 12, size=(height, wide, 1)).astype(np.float32)
        self._background = np.clip(background, 0, 255).astype(np.uint8)
        self._square = max(8, height // 6)
        self._frame = np.empty((height, width, 3), dtype=np.uint8)

    def render(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frame ``index`` (BGR) into ``out`` (any (H, W, 3) view) or an internal buffer reused per call."""
        frame = self._frame if out is None else out
        offset = (index * 4) % self.width
        frame[...] = self._background[:, offset : offset + self.width]
        side = self._square
        span_x = max(1, self.width - side)
        span_y = max(1, self.height - side)
        x = _bounce(index * 7, span_x)
        y = _bounce(index * 5, span_y)
        frame[y : y + side, x : x + side] = (40, 220, 250)
        return frame


def _bounce(position: int, span: int) -> int:
    """Position on a segment of length ``span`` for something moving back and forth."""
    phase = position % (2 * span)
    return phase if phase < span else 2 * span - phase


class SyntheticCamera(ThreadedCamera):
    """The synthetic backend. ``max_frames`` ends the picture after that many frames (see ``wait_finished``)."""

    name = "synthetic"

    def __init__(
        self,
        settings: CameraSettings | None = None,
        *,
        realtime: bool = True,
        clock_trusted: bool = True,
        max_frames: int | None = None,
        clock: Clock | None = None,
        frame_code: bool = True,
        preset: str = "ultrafast",
    ) -> None:
        super().__init__(
            settings or CameraSettings(),
            timing=FrameTiming.PACED if realtime else FrameTiming.FAST,
            clock=clock,
            clock_trusted=clock_trusted,
            frame_code=frame_code,
            max_frames=max_frames,
            preset=preset,
        )
        self._pattern: MovingPattern | None = None

    def describe(self) -> str:
        s = self.settings
        return f"synthetic camera {s.device_id} ({s.width}x{s.height}@{s.fps})"

    def _before_run(self) -> None:
        if self._pattern is None:
            self._pattern = MovingPattern(self.settings.width, self.settings.height)

    def _read_frame(self, index: int) -> np.ndarray | None:
        assert self._pattern is not None  # _before_run made it
        return self._pattern.render(index)
