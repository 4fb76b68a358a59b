"""Helpers shared by the recorder tests (imported by name: tests/recorder is on sys.path under pytest).

Times: the segmenter takes microseconds and the MPEG-TS file stores 90 kHz ticks (µs * 9 // 100, rounded
down), so every comparison between what was pushed and what a file decodes to is made in ticks, exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
from packets import h264_packets

from agent.evidence.ledger import Ledger
from agent.evidence.record import Record, parse_line
from agent.recorder.segmenter import Segmenter, SegmenterSettings
from agent.recorder.storage import StorageThresholds

DEVICE = "dev-rec-01"
WIDTH, HEIGHT, FPS = 160, 120, 30
Packet = tuple[bytes, bool, int]  # (data, keyframe, timestamp_us), as h264_packets yields them
NO_THRESHOLDS = StorageThresholds(low_bytes=0, floor_bytes=0)  # only a really full disk stops recording
RecorderFactory = Callable[..., tuple[Ledger, Segmenter]]  # the ``recorder`` fixture (conftest.py)


@lru_cache(maxsize=8)
def packets(frames: int, gop: int = 30) -> tuple[Packet, ...]:
    """Real libx264 packets (160x120, 30 fps), encoded once per process and shape."""
    return tuple(h264_packets(frames, fps=FPS, width=WIDTH, height=HEIGHT, gop=gop))


def settings(**overrides: Any) -> SegmenterSettings:
    values: dict[str, Any] = {
        "segment_seconds": 4.0,
        "prebuffer_seconds": 0.0,
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "thresholds": NO_THRESHOLDS,
    }
    values.update(overrides)
    return SegmenterSettings(**values)


def ticks(timestamp_us: int) -> int:
    """A pushed timestamp as the 90 kHz tick the file stores."""
    return timestamp_us * 9 // 100


def expected_ticks(pushed: Iterable[Packet]) -> list[int]:
    return [ticks(ts) for _, _, ts in pushed]


def push(segmenter: Segmenter, pushed: Iterable[Packet]) -> None:
    for data, keyframe, timestamp in pushed:
        segmenter.outputframe(data, keyframe, timestamp)


def barrier(segmenter: Segmenter, timeout: float = 30.0) -> None:
    """Wait until the worker has handled everything queued so far (a command it ignores, in queue order)."""
    assert segmenter._command("test-barrier", "test").wait(timeout), "segmenter worker did not catch up"


@dataclass(frozen=True)
class Decoded:
    pts: int  # 90 kHz ticks
    key: bool


def decode(path: Path | str) -> list[Decoded]:
    """Every frame a file decodes to on its own (raises if it does not decode)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base == Fraction(1, 90_000), stream.time_base
        return [Decoded(int(frame.pts), bool(frame.key_frame)) for frame in container.decode(stream)]


def decode_prefix(data: bytes, scratch: Path) -> tuple[list[Decoded], str | None]:
    """Decode the bytes of a (possibly cut) file: the frames before any error, and the error."""
    scratch.write_bytes(data)
    frames: list[Decoded] = []
    try:
        with av.open(str(scratch)) as container:
            for frame in container.decode(video=0):
                frames.append(Decoded(int(frame.pts), bool(frame.key_frame)))
    except (av.FFmpegError, OSError, IndexError) as exc:
        return frames, f"{type(exc).__name__}: {exc}"
    return frames, None


def first_packet_is_keyframe(path: Path) -> bool:
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.size:
                return bool(packet.is_keyframe)
    return False


def records(root: Path) -> list[Record]:
    """The ledger's records (complete lines only)."""
    data = (root / "ledger.jsonl").read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [parse_line(line).record for line in complete.splitlines(keepends=True)]


def of_type(recs: Sequence[Record], record_type: str, kind: str | None = None) -> list[Record]:
    return [r for r in recs if r.type == record_type and (kind is None or r.body.get("kind") == kind)]


def checkpoints_of(recs: Sequence[Record], name: str) -> list[Record]:
    return [r for r in recs if r.type == "checkpoint" and r.body["file"] == name]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def segment_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "segments").iterdir() if not p.name.startswith("."))
