"""Reading the Pi's sensors from sysfs: the SoC temperature and, where there is one, a battery's charge.

A missing sensor is None (the check is left out), never an error: a Pi on a power bank has no battery
to read, and a container has no thermal zone.
"""

from __future__ import annotations

from pathlib import Path

POWER_SUPPLY = Path("/sys/class/power_supply")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def read_temperature_c(path: str) -> float | None:
    """The thermal zone's temperature in °C (the file holds millidegrees); None without a sensor."""
    if not path:
        return None
    millidegrees = _read_int(Path(path))
    return None if millidegrees is None else millidegrees / 1000


def find_battery(root: Path = POWER_SUPPLY) -> Path | None:
    """The capacity file of the first power supply of type Battery under ``root``, if any."""
    try:
        supplies = sorted(root.iterdir())
    except OSError:
        return None
    for supply in supplies:
        try:
            kind = (supply / "type").read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if kind == "Battery" and (supply / "capacity").exists():
            return supply / "capacity"
    return None


def read_battery_percent(path: Path | None) -> int | None:
    """The battery's charge in percent (0..100); None without a battery or a readable value."""
    if path is None:
        return None
    value = _read_int(path)
    return None if value is None or not 0 <= value <= 100 else value
