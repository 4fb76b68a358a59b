"""The ``[health]`` table of the device config: the self-test and the runtime watch.

Every key is optional; ``from_mapping`` refuses unknown keys, wrong types and values out of range, naming the
file and the key. The defaults, and why:

``report_path`` ("/run/bodycam/health.json")
    The signed health report; the uploader publishes it to the station. /run/bodycam is the unit's
    RuntimeDirectory: a report describes this boot, so it lives in memory and goes with the boot.
``report_seconds`` (60)
    A fresh report at least this often (a heartbeat), besides one at every change of state or faults.
``selftest_frames`` (15)
    Frames that must arrive from the armed camera before the device says it is ready: half a second at
    30 fps, enough to show the sensor, the encoder and the recorder's queue all move.
``selftest_timeout_seconds`` (10)
    How long they may take: a Pi camera needs one or two seconds for its first frame (sensor start,
    auto-exposure); ten leaves room on a busy boot without hiding a dead camera.
``clock_sync_marker`` ("/run/systemd/timesync/synchronized")
    A file systemd-timesyncd creates once the clock has been synchronised in this boot; empty: not used.
``rtc_path`` ("/sys/class/rtc/rtc0")
    A battery-backed real-time clock keeps the time across power loss; empty: not used (a Pi 5 without
    its RTC battery has the device but forgets the time). Either one makes the clock trusted; neither
    leaves it untrusted, which is recorded and shown, not a failure.
``check_seconds`` (5)
    The runtime watch's period: twice per systemd watchdog interval (WatchdogSec=10), so a falling frame
    rate is on record before a stalled camera gets the service restarted.
``min_fps_ratio`` (0.8)
    A frame rate below this share of ``camera.fps`` over one period is a fault: below 24 of 30 fps the
    footage is visibly jerky and the camera or the CPU is in trouble.
``max_write_latency_ms`` (1000)
    A ledger write (write and fdatasync) slower than this is a fault: a second is far beyond a healthy
    SD card's few milliseconds and eats into the segmenter's two seconds of queue.
``temperature_path`` ("/sys/class/thermal/thermal_zone0/temp")
    The SoC temperature in millidegrees Celsius; empty: not watched.
``max_temperature_c`` (80)
    Above this is a fault: the Pi's firmware starts throttling the CPU at 80 °C, which costs frames.
``battery_path`` ("")
    A battery's capacity file (percent); empty: the first ``/sys/class/power_supply/*`` of type Battery,
    if there is one (a Pi on a power bank has none, and the check is left out).
``min_battery_percent`` (15)
    Below this is a fault: time to swap the battery before the recording stops on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_config.toml_file import Schema, Text, typed_tables

TABLE = "health"

_SCHEMA: Schema = {
    TABLE: {
        "report_path": (str, "/run/bodycam/health.json"),
        "report_seconds": ((int, float), 60.0),
        "selftest_frames": (int, 15),
        "selftest_timeout_seconds": ((int, float), 10.0),
        "clock_sync_marker": (str, "/run/systemd/timesync/synchronized"),
        "rtc_path": (str, "/sys/class/rtc/rtc0"),
        "check_seconds": ((int, float), 5.0),
        "min_fps_ratio": ((int, float), 0.8),
        "max_write_latency_ms": (int, 1000),
        "temperature_path": (str, "/sys/class/thermal/thermal_zone0/temp"),
        "max_temperature_c": ((int, float), 80.0),
        "battery_path": (str, ""),
        "min_battery_percent": (int, 15),
    }
}
_RANGES: dict[str, tuple[float, float]] = {
    f"{TABLE}.report_seconds": (1, 3600),
    f"{TABLE}.selftest_frames": (1, 1000),
    f"{TABLE}.selftest_timeout_seconds": (0.1, 300),
    f"{TABLE}.check_seconds": (0.05, 600),
    f"{TABLE}.min_fps_ratio": (0.05, 1),
    f"{TABLE}.max_write_latency_ms": (1, 600_000),
    f"{TABLE}.max_temperature_c": (20, 150),
    f"{TABLE}.min_battery_percent": (0, 100),
}
_OPTIONAL_PATH = Text("a path of printable characters", printable=True, empty=True)  # "": not used
_TEXTS: dict[str, Text] = {
    f"{TABLE}.report_path": Text("a non-empty path of printable characters", printable=True),
    **{f"{TABLE}.{key}": _OPTIONAL_PATH for key in ("clock_sync_marker", "rtc_path", "temperature_path",
                                                    "battery_path")},
}


@dataclass(frozen=True)
class HealthConfig:
    """``[health]``; see the module docstring for every field's meaning, default and reason."""

    report_path: Path = Path("/run/bodycam/health.json")
    report_seconds: float = 60.0
    selftest_frames: int = 15
    selftest_timeout_seconds: float = 10.0
    clock_sync_marker: str = "/run/systemd/timesync/synchronized"  # "": not used
    rtc_path: str = "/sys/class/rtc/rtc0"  # "": not used
    check_seconds: float = 5.0
    min_fps_ratio: float = 0.8
    max_write_latency_ms: int = 1000
    temperature_path: str = "/sys/class/thermal/thermal_zone0/temp"  # "": not watched
    max_temperature_c: float = 80.0
    battery_path: str = ""  # "": look for a battery under /sys/class/power_supply
    min_battery_percent: int = 15


def from_mapping(table: Mapping[str, Any], source: str) -> HealthConfig:
    """A checked HealthConfig from the ``[health]`` table of the config file ``source``."""
    values = typed_tables({TABLE: table}, _SCHEMA, _RANGES, source, texts=_TEXTS)[TABLE]
    return HealthConfig(
        report_path=Path(values["report_path"]),
        report_seconds=float(values["report_seconds"]),
        selftest_frames=values["selftest_frames"],
        selftest_timeout_seconds=float(values["selftest_timeout_seconds"]),
        clock_sync_marker=values["clock_sync_marker"],
        rtc_path=values["rtc_path"],
        check_seconds=float(values["check_seconds"]),
        min_fps_ratio=float(values["min_fps_ratio"]),
        max_write_latency_ms=values["max_write_latency_ms"],
        temperature_path=values["temperature_path"],
        max_temperature_c=float(values["max_temperature_c"]),
        battery_path=values["battery_path"],
        min_battery_percent=values["min_battery_percent"],
    )
