"""Fixtures for the health tests: a device config with every health path in the test's folders, a stand-in
for systemd's notify socket, and gpiozero's mock pins to watch the LED and the buzzer."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from test_daemon import daemon_config

from firmware_config.device_config import DeviceConfig, load_device_config

LED_PIN, BUZZER_PIN = 23, 24  # device.example.toml's [controls.feedback]


class NotifySocket:
    """A datagram socket standing in for systemd's (at a short path: Unix socket paths are limited)."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="bc-hn-")
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.got: list[str] = []

    def read(self, seconds: float = 0.2) -> list[str]:
        """Everything received so far (waiting up to ``seconds`` for more)."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                self.got.append(self.sock.recv(65536).decode())
            except TimeoutError:
                continue
        return list(self.got)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    listener = NotifySocket()
    yield listener
    listener.close()


@pytest.fixture
def make_config(tmp_path: Path, short_folder: Path) -> Callable[..., DeviceConfig]:
    """``make_config(**health)``: the test daemon's config (test_daemon.daemon_config) with quick health
    settings and every health path under tmp_path: no sync marker, no RTC, no thermal zone, no battery."""

    def make(**health: Any) -> DeviceConfig:
        config = load_device_config(daemon_config(tmp_path, short_folder / "control.sock"))
        settings = {
            "report_path": tmp_path / "run" / "health.json",
            "selftest_frames": 5,
            "selftest_timeout_seconds": 3.0,
            "clock_sync_marker": str(tmp_path / "timesync-synchronized"),
            "rtc_path": "",
            "temperature_path": "",
            "battery_path": str(tmp_path / "no-battery"),
            "check_seconds": 0.1,
            **health,
        }
        return replace(config, health=replace(config.health, **settings))

    return make


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.reset()


def led_blinks(factory: MockFactory) -> int:
    """How often the LED went on since the pins were made."""
    return sum(1 for state in factory.pin(LED_PIN).states[1:] if state.state)
