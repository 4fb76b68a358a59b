"""Test helpers shared by the test suite and tests/assets/make_known_answer.py (no pytest import here)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.evidence.clock import Clock, Timestamp
from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.evidence.store import segment_file_name

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


STAND_IN_BYTES = 64 * 1024
BOOKMARK_EVERY = 4


def stand_in_segment(device_id: str, index: int) -> bytes:
    """Deterministic filler bytes for segment ``index`` (SHAKE-256 of the device id and index)."""
    return hashlib.shake_256(f"{device_id}/{index}".encode()).digest(STAND_IN_BYTES)


def stand_in_store(store: Path, key: DeviceKey, device_id: str, seconds: int, clock: Clock | None = None) -> int:
    """A small store for evidence tests: the real ledger with stand-in segment files (no video).

    The ledger holds: boot, a start event, a segment record per second (``NNNNNN.bin``, 64 KiB), a
    bookmark every 4 segments, an end event. Returns the head sequence number.
    """
    with Ledger.open(store, key, device_id, clock, boot_reason="simulate") as ledger:
        ledger.append("event", {"kind": "simulation-start", "seconds": seconds})
        index = ledger.next_segment_index()
        for second in range(seconds):
            stored = ledger.layout.write_segment(
                segment_file_name(index, "bin"), stand_in_segment(device_id, index)
            )
            ledger.append("segment", {"file": stored.name, "sha256": stored.sha256, "size": stored.size})
            index += 1
            if (second + 1) % BOOKMARK_EVERY == 0:
                ledger.append("event", {"kind": "bookmark", "second": second + 1})
        ledger.append("event", {"kind": "simulation-end"})
        return ledger.head[0]
