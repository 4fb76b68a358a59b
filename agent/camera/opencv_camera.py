"""A camera read through OpenCV: a V4L2 device (a USB webcam on a bench) or a video file (replay).

Frames of another size than the settings ask for are scaled to it, so the recorder always sees the
configured stream. A device is timed by its own frame clock (LIVE); a file is paced to the frame rate
(``realtime=True``) or read as fast as it decodes with exact synthetic timestamps (``realtime=False``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.camera.base import CameraSettings
from agent.camera.clock import Clock
from agent.camera.threaded import FrameTiming, ThreadedCamera
from agent.errors import CameraError

log = logging.getLogger(__name__)


class OpenCVCamera(ThreadedCamera):
    """``source`` is a device index (``0`` or ``"0"`` for /dev/video0), a device path (``/dev/video2``) or a
    video file path.

    The source is opened here, so a missing device or file fails at construction. At the end of a file
    the picture stops (see ``wait_finished``) unless ``loop`` is set; a device that stops delivering
    frames is a failure, raised as CameraError by ``stop_recording``.
    """

    name = "opencv"

    def __init__(
        self,
        settings: CameraSettings,
        source: int | str | Path = 0,
        *,
        realtime: bool = True,
        loop: bool = False,
        clock_trusted: bool = True,
        max_frames: int | None = None,
        clock: Clock | None = None,
        frame_code: bool = False,
        preset: str = "ultrafast",
    ) -> None:
        if isinstance(source, str) and source.isdigit():
            source = int(source)
        self._is_device = isinstance(source, int) or str(source).startswith("/dev/")
        # A device keeps its own time; a file is replayed at the frame rate or as fast as it decodes.
        timing = FrameTiming.LIVE if self._is_device else FrameTiming.PACED if realtime else FrameTiming.FAST
        super().__init__(
            settings,
            timing=timing,
            clock=clock,
            clock_trusted=clock_trusted,
            frame_code=frame_code,
            max_frames=max_frames,
            preset=preset,
        )
        self.source = source
        self.loop = loop
        self._frames_read = 0
        self._video: Any = self._open()

    def describe(self) -> str:
        return f"video device {self.source}" if self._is_device else f"video file {self.source}"

    def _open(self) -> Any:
        if isinstance(self.source, int):
            capture = cv2.VideoCapture(self.source)
        elif self._is_device:
            capture = cv2.VideoCapture(str(self.source), cv2.CAP_V4L2)
        else:
            path = Path(self.source)
            if not path.is_file():
                raise CameraError(f"cannot open {self.describe()}: no such file")
            capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            capture.release()
            hint = " (is it connected, and is the user in the video group?)" if self._is_device else ""
            raise CameraError(f"cannot open {self.describe()} with OpenCV{hint}")
        if self._is_device:
            # Requests only: the driver picks the nearest mode, and _read_frame scales what arrives.
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.settings.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.settings.height)
            capture.set(cv2.CAP_PROP_FPS, self.settings.fps)
        return capture

    def _read_frame(self, index: int) -> np.ndarray | None:
        ok, frame = self._video.read()
        if not ok and not self._is_device and self.loop and self._frames_read > 0:
            self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._video.read()
        if not ok or frame is None:
            if self._is_device:
                raise CameraError(f"{self.describe()} stopped delivering frames after {self._frames_read} frames")
            if self._frames_read == 0:
                raise CameraError(f"{self.describe()} holds no frame OpenCV can decode")
            log.info("%s: end of file after %d frames", self.describe(), self._frames_read)
            return None
        self._frames_read += 1
        return self._conform(frame)

    def _conform(self, frame: np.ndarray) -> np.ndarray:
        """Whatever the source delivers, as a (H, W, 3) BGR frame of the settings' size."""
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        size = (self.settings.width, self.settings.height)
        if (frame.shape[1], frame.shape[0]) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame)

    def _close_source(self) -> None:
        self._video.release()
