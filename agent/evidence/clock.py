"""Where a record's times come from: wall clock, monotonic clock and the kernel's boot id.

Monotonic time only means something together with the boot it was counted in, so every record carries
all three. The clock is a small port so tests can drive time.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Timestamp:
    wall_us: int
    mono_us: int
    boot_id: str


class Clock(Protocol):
    def now(self) -> Timestamp: ...


def read_boot_id(path: Path = BOOT_ID_FILE) -> str:
    """The kernel's boot id; where the kernel has none, a fresh random id (one per clock)."""
    try:
        text = path.read_text(encoding="ascii").strip().lower()
    except OSError:
        return str(uuid.uuid4())
    return text or str(uuid.uuid4())


class SystemClock:
    """CLOCK_REALTIME and CLOCK_MONOTONIC (what picamera2's sensor timestamps use), in microseconds."""

    def __init__(self, boot_id: str | None = None) -> None:
        self.boot_id = boot_id or read_boot_id()

    def now(self) -> Timestamp:
        return Timestamp(time.time_ns() // 1000, time.monotonic_ns() // 1000, self.boot_id)
