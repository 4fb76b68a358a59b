"""Hardware profiles: the camera and pin settings of one kind of board, as a partial device config.

Each ``firmware_config/hardware/NAME.toml`` holds only ``[camera]``, ``[recorder]`` and ``[controls]`` tables;
``bodycam-provision init --hardware NAME`` merges one into the device config it writes. docs/wiring.md has
the wiring table of each. A profile is checked when it is loaded: merged into a placeholder ``[device]``
table it must pass the device config's own validation (pins used twice, memory budget, ranges), so a
broken profile is refused naming its file and key rather than producing a config that will not start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.evidence.fsutil import display_path
from firmware_config.device_config import parse_device_config
from firmware_config.toml_file import read_toml

HARDWARE_DIR = Path(__file__).resolve().parent / "hardware"
SUFFIX = ".toml"
PROFILE_TABLES = ("camera", "recorder", "controls")
# Only for checking a profile: paths that are never opened (parsing a config touches no file).
_PLACEHOLDER_DEVICE = {"id": "hardware-check", "officer": "-", "store": "/nonexistent/store",
                       "key": "/nonexistent/device.key"}


def hardware_names() -> list[str]:
    """The shipped profiles' names, sorted (``pi-zero-2w``, ``pi4-pi5``, ``synthetic``)."""
    return sorted(path.name.removesuffix(SUFFIX) for path in HARDWARE_DIR.glob(f"*{SUFFIX}"))


def hardware_profile_path(name: str) -> Path:
    """The file of the shipped profile ``name``; ConfigError naming the unknown name and the known ones."""
    known = hardware_names()
    if name not in known:
        raise ConfigError(f"hardware profile {name!r}: unknown (known: {', '.join(known)})")
    return HARDWARE_DIR / f"{name}{SUFFIX}"


def load_hardware_profile(name: str) -> dict[str, Any]:
    """The profile's tables (``camera``, ``controls``, maybe ``recorder``), checked; ConfigError otherwise."""
    path = hardware_profile_path(name)
    source = display_path(path)
    data = read_toml(path, source)
    extra = sorted(set(data) - set(PROFILE_TABLES))
    if extra:
        raise ConfigError(f"{source}: key '{extra[0]}': unknown table: expected only {', '.join(PROFILE_TABLES)} "
                          "in a hardware profile")
    parse_device_config({"device": dict(_PLACEHOLDER_DEVICE), **data}, source)
    return data
