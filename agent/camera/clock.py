"""The camera's clock port: where the overlay's wall time (and, in FAST mode, the frames' times) are read.

The camera knows nothing of evidence, so it names the shape it needs here: the device passes its own clock
(agent.evidence.clock's SystemClock, or a test's clock: both have this shape), and a camera built without
one reads the system's clocks itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Reading(Protocol):
    @property
    def wall_us(self) -> int: ...
    @property
    def mono_us(self) -> int: ...


class Clock(Protocol):
    def now(self) -> Reading: ...


@dataclass(frozen=True)
class SystemReading:
    wall_us: int
    mono_us: int


class SystemClock:
    """CLOCK_REALTIME and CLOCK_MONOTONIC (what picamera2's sensor timestamps use), in microseconds."""

    def now(self) -> SystemReading:
        return SystemReading(time.time_ns() // 1000, time.monotonic_ns() // 1000)
