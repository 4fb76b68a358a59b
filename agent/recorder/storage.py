"""Storage policy: a pure decision from free space. Evidence is never overwritten to make room."""

from __future__ import annotations

import enum
import os
from pathlib import Path

from firmware_config.settings import StorageThresholds as StorageThresholds  # the configuration's type


class StorageState(enum.Enum):
    OK = "ok"
    LOW = "low"  # warn: LED pattern, health status, a ledger event
    FULL = "full"  # at the floor: stop recording cleanly with a signed storage-full record


def storage_state(free_bytes: int, thresholds: StorageThresholds) -> StorageState:
    if free_bytes <= thresholds.floor_bytes:
        return StorageState.FULL
    if free_bytes <= thresholds.low_bytes:
        return StorageState.LOW
    return StorageState.OK


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize
