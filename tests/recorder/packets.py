"""A small real H.264 source for recorder tests: libx264 packets driven into an output like an encoder does."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from agent.camera.base import EncodedOutput


def h264_packets(frames: int, fps: int = 30, width: int = 160, height: int = 120, gop: int = 30,
                 start: int = 0) -> Iterator[tuple[bytes, bool, int]]:
    """(data, keyframe, timestamp_us) for ``frames`` frames of a moving bar, keyframe every ``gop``."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, 1_000_000)
    encoder.framerate = fps
    encoder.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x264-params": f"repeat-headers=1:keyint={gop}:min-keyint={gop}:scenecut=0",
    }
    encoder.open()
    for index in range(start, start + frames):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, (index * 3) % width :][:, :8] = 255
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = index * 1_000_000 // fps
        frame.time_base = Fraction(1, 1_000_000)
        if index % gop == 0:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in encoder.encode(frame):
            yield bytes(packet), bool(packet.is_keyframe), int(packet.pts)
    for packet in encoder.encode(None):
        yield bytes(packet), bool(packet.is_keyframe), int(packet.pts)


def drive(output: EncodedOutput, frames: int, **kwargs: int) -> None:
    """Start the output, send every packet, stop it: picamera2's encoder call order."""
    output.start()
    output._add_stream("video", "h264", rate=kwargs.get("fps", 30))
    for data, keyframe, timestamp in h264_packets(frames, **kwargs):
        output.outputframe(data, keyframe, timestamp)
    output.stop()


def decoded_pts_us(path: str) -> list[int]:
    """Presentation times (µs) of every frame a file decodes to."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        return [int(frame.pts * stream.time_base * 1_000_000) for frame in container.decode(stream)]
