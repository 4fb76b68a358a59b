"""The typed settings the device's camera, recorder, buttons and workflow are built from, as the config makes them.

The device depends on its configuration, not the reverse: agent/camera, agent/recorder, agent/controls and
agent/workflow take these types (and name them too: agent/camera/base.py, agent/camera/factory.py,
agent/recorder/storage.py, agent/workflow/state.py, agent/workflow/events.py), and
firmware_config/device_config.py builds them without importing the device. Imports only the core.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from agent.errors import ConfigError
from agent.evidence.encoding import is_integer
from agent.evidence.procedure import Procedure
from agent.evidence.record import DEVICE_ID_PATTERN, officer_problem


class Button(enum.Enum):
    """The device's buttons: the keys of ``[controls.buttons]`` and the workflow machine's inputs."""

    RECORD = "record"
    STAGE = "stage"
    MARK = "mark"


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


DEFAULT_STOP_REASONS = (
    "device fault",
    "battery critical",
    "party's privacy",
    "legally restricted area",
    "officer safety",
    "case closed elsewhere",
)
MAX_STOP_REASONS = 9  # the reason number is beeped: more than nine beeps cannot be counted in the field


@dataclass(frozen=True, kw_only=True)
class WorkflowConfig:
    """What the machine needs to know; ``source`` names the config file in error messages."""

    procedures: Mapping[str, Procedure]
    device_id: str
    officer_id: str
    default_procedure: str = "inspection"
    stop_reasons: tuple[str, ...] = DEFAULT_STOP_REASONS
    reason_window_us: int = 15_000_000
    source: str = "workflow config"

    def __post_init__(self) -> None:
        where = self.source
        if not self.procedures:
            raise ConfigError(f"{where}: key 'procedures': no procedure profiles loaded")
        if self.default_procedure not in self.procedures:
            known = ", ".join(sorted(self.procedures))
            raise ConfigError(
                f"{where}: key 'default_procedure': {self.default_procedure!r} is not a loaded procedure ({known})"
            )
        if not self.stop_reasons:
            raise ConfigError(f"{where}: key 'stop_reasons': the list is empty; a stop needs reasons to choose")
        if len(self.stop_reasons) > MAX_STOP_REASONS:
            raise ConfigError(f"{where}: key 'stop_reasons': at most {MAX_STOP_REASONS} (each is counted in beeps)")
        for number, reason in enumerate(self.stop_reasons, start=1):
            if not isinstance(reason, str) or not reason.strip() or not reason.isprintable() or len(reason) > 100:
                raise ConfigError(f"{where}: key 'stop_reasons[{number}]': must be printable text of 1-100 chars")
        if len(set(self.stop_reasons)) != len(self.stop_reasons):
            raise ConfigError(f"{where}: key 'stop_reasons': a reason appears twice")
        if not is_integer(self.reason_window_us) or not (
            1_000_000 <= self.reason_window_us <= 120_000_000
        ):
            raise ConfigError(f"{where}: key 'reason_window_us': must be 1 to 120 seconds in microseconds")
        if not DEVICE_ID_PATTERN.match(self.device_id):
            raise ConfigError(f"{where}: key 'device_id': {self.device_id!r} is not a valid device id")
        if officer_problem(self.officer_id) is not None:
            raise ConfigError(f"{where}: key 'officer_id': must be printable text of 1-64 characters")
