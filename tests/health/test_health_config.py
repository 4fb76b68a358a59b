"""``[health]``: defaults, every key read, and bad values refused with the file and the key named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from firmware_config.device_config import load_device_config, parse_device_config
from firmware_config.health import HealthConfig, from_mapping

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_and_the_example() -> None:
    assert from_mapping({}, "f.toml") == HealthConfig()
    example = load_device_config(ROOT / "firmware_config" / "device.example.toml")
    assert example.health == HealthConfig()  # the example lists every key with its default
    text = (ROOT / "firmware_config" / "device.example.toml").read_text(encoding="utf-8")
    health = text[text.index("[health]"):]
    for name in HealthConfig.__dataclass_fields__:
        assert f"\n{name} = " in health, f"device.example.toml's [health] lacks {name}"


def test_every_key_is_read() -> None:
    table = {"report_path": "/x/h.json", "report_seconds": 7, "selftest_frames": 3, "selftest_timeout_seconds": 1.5,
             "clock_sync_marker": "", "rtc_path": "/dev/rtc", "check_seconds": 2, "min_fps_ratio": 0.5,
             "max_write_latency_ms": 250, "temperature_path": "", "max_temperature_c": 75,
             "battery_path": "/b/capacity", "min_battery_percent": 20}
    config = from_mapping(table, "f.toml")
    assert config == HealthConfig(report_path=Path("/x/h.json"), report_seconds=7.0, selftest_frames=3,
                                  selftest_timeout_seconds=1.5, clock_sync_marker="", rtc_path="/dev/rtc",
                                  check_seconds=2.0, min_fps_ratio=0.5, max_write_latency_ms=250,
                                  temperature_path="", max_temperature_c=75.0, battery_path="/b/capacity",
                                  min_battery_percent=20)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"report_seconds": 0}, "health.report_seconds"),
        ({"selftest_frames": 0}, "health.selftest_frames"),
        ({"selftest_frames": 2.5}, "health.selftest_frames"),
        ({"selftest_timeout_seconds": True}, "health.selftest_timeout_seconds"),
        ({"check_seconds": 0.0}, "health.check_seconds"),
        ({"min_fps_ratio": 1.5}, "health.min_fps_ratio"),
        ({"max_write_latency_ms": "1000"}, "health.max_write_latency_ms"),
        ({"max_temperature_c": 500}, "health.max_temperature_c"),
        ({"min_battery_percent": 101}, "health.min_battery_percent"),
        ({"report_path": ""}, "health.report_path"),
        ({"temperature_path": "/sys/x\n"}, "health.temperature_path"),
        ({"rtc_path": 0}, "health.rtc_path"),
        ({"watch_fans": True}, "health.watch_fans"),
    ],
)
def test_bad_values_are_refused_naming_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping(table, "dev.toml")
    assert str(caught.value).startswith(f"dev.toml: key '{key}': "), caught.value


def test_the_device_config_reads_the_table() -> None:
    base = {"device": {"id": "cam-0001", "officer": "A1", "store": "/s", "key": "/k"}}
    assert parse_device_config(base, "d.toml").health == HealthConfig()
    config = parse_device_config({**base, "health": {"selftest_frames": 4}}, "d.toml")
    assert config.health.selftest_frames == 4
    with pytest.raises(ConfigError, match=r"^d\.toml: key 'health': "):
        parse_device_config({**base, "health": 3}, "d.toml")
