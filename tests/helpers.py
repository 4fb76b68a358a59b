"""Test helpers shared by the test suite and tests/assets/make_known_answer.py (no pytest import here)."""

from __future__ import annotations

from agent.evidence.clock import Timestamp
from agent.evidence.keys import DeviceKey

DEFAULT_BOOT_ID = "0b0c0000-0000-4000-8000-000000000001"
DEFAULT_WALL_US = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z
DEFAULT_MONO_US = 1_000_000


class FakeClock:
    """A deterministic clock: each now() advances wall and monotonic time by ``step_us``; one boot id."""

    def __init__(
        self,
        wall_us: int = DEFAULT_WALL_US,
        mono_us: int = DEFAULT_MONO_US,
        step_us: int = 1_000_000,
        boot_id: str = DEFAULT_BOOT_ID,
    ) -> None:
        self.wall_us = wall_us
        self.mono_us = mono_us
        self.step_us = step_us
        self.boot_id = boot_id
        self.calls = 0

    def now(self) -> Timestamp:
        self.calls += 1
        self.wall_us += self.step_us
        self.mono_us += self.step_us
        return Timestamp(self.wall_us, self.mono_us, self.boot_id)


def seeded_key(n: int) -> DeviceKey:
    """The deterministic device key number ``n`` (seed: 32 bytes of ``n``)."""
    return DeviceKey.from_seed(bytes([n]) * 32)
