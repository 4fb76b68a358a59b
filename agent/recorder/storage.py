"""Storage policy: a pure decision from free space. Evidence is never overwritten to make room."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path


class StorageState(enum.Enum):
    OK = "ok"
    LOW = "low"  # warn: LED pattern, health status, a ledger event
    FULL = "full"  # at the floor: stop recording cleanly with a signed storage-full record


@dataclass(frozen=True)
class StorageThresholds:
    low_bytes: int = 512 * 1024 * 1024
    floor_bytes: int = 64 * 1024 * 1024  # keeps room for the ledger records that close a recording


def storage_state(free_bytes: int, thresholds: StorageThresholds) -> StorageState:
    if free_bytes <= thresholds.floor_bytes:
        return StorageState.FULL
    if free_bytes <= thresholds.low_bytes:
        return StorageState.LOW
    return StorageState.OK


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize
