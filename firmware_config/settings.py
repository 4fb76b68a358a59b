"""The typed settings the device's camera and recorder are built from, as the device config makes them.

The device depends on its configuration, not the reverse: agent/camera and agent/recorder take these types
(and name them too: agent/camera/base.py, agent/camera/factory.py, agent/recorder/storage.py), and
firmware_config/device_config.py builds them without importing the device. Imports nothing of the project.
"""

from __future__ import annotations

from dataclasses import dataclass

CAMERA_BACKENDS = ("synthetic", "opencv", "picamera2")  # the names agent/camera/factory.py opens


@dataclass(frozen=True)
class CameraSettings:
    """What every backend needs to produce the footage agencies require."""

    width: int = 1280
    height: int = 720
    fps: int = 30
    bitrate: int = 4_000_000  # bits per second
    keyframe_interval: int = 30  # frames between keyframes: one GOP of about a second at 30 fps
    device_id: str = "sim-0001"
    officer_id: str = "unassigned"


@dataclass(frozen=True)
class StorageThresholds:
    """Free space below ``low_bytes`` warns; at ``floor_bytes`` recording stops cleanly (agent/recorder/storage.py)."""

    low_bytes: int = 512 * 1024 * 1024
    floor_bytes: int = 64 * 1024 * 1024  # keeps room for the ledger records that close a recording
