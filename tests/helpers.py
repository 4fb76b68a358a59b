"""Test helpers shared by the test suite and tests/assets/make_known_answer.py (no pytest import here)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.evidence.clock import Clock, Timestamp
from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.evidence.store import read_records, segment_file_name

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


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something true (returned); fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class DeviceFile:
    """A file a store's records vouch for, as the uploader offers it: name, hash, size, the record's seq."""

    name: str
    sha256: str
    size: int
    seq: int


def vouched_files(store: Path) -> list[DeviceFile]:
    """Every file named by a ``segment``, ``recovered`` or ``recovery`` record of the store, in ledger order."""
    found = []
    for signed in read_records(store):
        body = signed.record.body
        if signed.record.type in ("segment", "recovered", "recovery"):
            size = body["length"] if signed.record.type == "recovery" else body["size"]
            found.append(DeviceFile(str(body["file"]), str(body["sha256"]), int(size), signed.seq))
    return found


def writable(path: Path) -> Path:
    """What root (or the station's user, on purpose) can do to sealed evidence: open the folder holding
    ``path`` and the file itself for writing. Tests that tamper use it, so they also run as a plain user."""
    os.chmod(path.parent, 0o750)
    os.chmod(path, 0o644)
    return path


def writable_tree(root: Path) -> Path:
    """A copy of a station folder made writable for its new owner (``shutil.copytree`` keeps the modes)."""
    for folder, _dirs, files in os.walk(root):
        os.chmod(folder, 0o750)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return root
