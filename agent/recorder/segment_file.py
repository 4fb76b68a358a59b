"""One segment file being written: H.264 packets muxed into MPEG-TS, hashed as the bytes go to disk.

MPEG-TS survives truncation (a file cut by power loss plays up to the cut) and needs no index at the end.
Every byte the muxer emits passes through :class:`HashingWriter`, which keeps the whole-file SHA-256 and
the hash of the bytes since the last checkpoint, so a checkpoint never has to read the file back.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from agent.evidence.fsutil import fsync_dir

_sync_data = getattr(os, "fdatasync", os.fsync)
TS_TIME_BASE = Fraction(1, 90_000)  # MPEG-TS clock


@dataclass(frozen=True)
class Checkpoint:
    """The bytes of a segment file written since the previous checkpoint, durably on disk."""

    offset: int
    length: int
    sha256: str
    frames: int
    first_ts_us: int
    last_ts_us: int


@dataclass(frozen=True)
class ClosedSegment:
    sha256: str
    size: int
    frames: int
    first_ts_us: int
    last_ts_us: int


class HashingWriter:
    """A write-only file object for PyAV that writes straight to a descriptor and hashes what it writes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0
        self.whole = hashlib.sha256()
        self.since_checkpoint = hashlib.sha256()
        self.checkpoint_offset = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        total = len(view)
        while view:
            written = os.write(self.fd, view)
            self.whole.update(view[:written])
            self.since_checkpoint.update(view[:written])
            self.offset += written
            view = view[written:]
        return total

    def take_checkpoint_hash(self) -> tuple[int, int, str]:
        """(offset, length, sha256) of the bytes since the previous call; starts the next range."""
        start, length = self.checkpoint_offset, self.offset - self.checkpoint_offset
        digest = self.since_checkpoint.hexdigest()
        self.since_checkpoint = hashlib.sha256()
        self.checkpoint_offset = self.offset
        return start, length, digest


class SegmentFile:
    """A new segment file: created exclusively and durably, written packet by packet, closed read-only."""

    def __init__(self, path: Path, width: int, height: int, fps: int) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fsync_dir(path.parent)  # the file exists after a power cut, so recovery can find it
            self._writer = HashingWriter(self._fd)
            # flush_packets: each packet's bytes reach the file at once, so a checkpoint covers them.
            self._container = av.open(self._writer, "w", format="mpegts", options={"flush_packets": "1"})
            self._stream = self._container.add_stream("h264", rate=fps)
            self._stream.width = width
            self._stream.height = height
            self._stream.time_base = TS_TIME_BASE
        except BaseException:
            os.close(self._fd)
            raise
        self.frames = 0
        self.first_ts_us: int | None = None
        self.last_ts_us: int | None = None
        self._cp_frames = 0
        self._cp_first: int | None = None

    def write_packet(self, data: bytes, keyframe: bool, timestamp_us: int) -> None:
        packet = av.Packet(data)
        packet.pts = packet.dts = timestamp_us * 9 // 100  # µs -> 90 kHz ticks
        packet.time_base = TS_TIME_BASE
        packet.stream = self._stream
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        self.frames += 1
        self._cp_frames += 1
        if self.first_ts_us is None:
            self.first_ts_us = timestamp_us
        if self._cp_first is None:
            self._cp_first = timestamp_us
        self.last_ts_us = timestamp_us

    @property
    def size(self) -> int:
        return self._writer.offset

    def checkpoint(self) -> Checkpoint | None:
        """Make the frames since the last checkpoint durable and describe them; None if there are none."""
        if self._cp_frames == 0 or self._cp_first is None or self.last_ts_us is None:
            return None
        _sync_data(self._fd)
        offset, length, digest = self._writer.take_checkpoint_hash()
        checkpoint = Checkpoint(offset, length, digest, self._cp_frames, self._cp_first, self.last_ts_us)
        self._cp_frames = 0
        self._cp_first = None
        return checkpoint

    def close(self) -> ClosedSegment:
        """Finish the container, fsync, make the file read-only; returns what the segment record carries."""
        try:
            self._container.close()
            os.fsync(self._fd)
            os.fchmod(self._fd, 0o444)
        finally:
            self._release()
        return ClosedSegment(
            sha256=self._writer.whole.hexdigest(),
            size=self._writer.offset,
            frames=self.frames,
            first_ts_us=self.first_ts_us or 0,
            last_ts_us=self.last_ts_us or 0,
        )

    def abandon(self) -> None:
        """After a write error: release the descriptor, keep the file as it is (it is evidence)."""
        if self._fd < 0:
            return  # close() failed after releasing the descriptor: nothing left to release
        try:
            self._container.close()
        except (OSError, av.FFmpegError):
            pass  # the muxer cannot flush to a failing disk; what reached the file stays there
        finally:
            self._release()

    def _release(self) -> None:
        # Closed exactly once: a second os.close could close a descriptor another thread has since opened.
        fd, self._fd = self._fd, -1
        self._writer.fd = -1  # a late flush from the muxer fails (EBADF) instead of writing elsewhere
        os.close(fd)
