"""systemd: the unit files verify, and the notify protocol says the right things at the right times."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon import daemon_config

from agent.evidence.keys import load_device_key
from agent.health.report import read_report_file, verify_report
from agent.sdnotify import FrameWatchdog, Notifier

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
UNITS = sorted((ROOT / "systemd").glob("*.service"))


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, at a short path (Unix socket paths are limited)."""
    folder = tempfile.mkdtemp(prefix="bc-notify-")
    path = os.path.join(folder, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(0.2)
    try:
        yield listener, path
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


def messages(listener: socket.socket, until: float) -> list[str]:
    got = []
    while time.monotonic() < until:
        try:
            got.append(listener.recv(4096).decode())
        except TimeoutError:
            continue
    return got


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_files_verify(unit: Path, tmp_path: Path) -> None:
    # The installed ExecStart path does not exist here: point it at this checkout's console script.
    text = unit.read_text().replace("/opt/bodycam/.venv/bin/", f"{BIN}/")
    copy = tmp_path / unit.name
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr  # unknown keys only warn on stderr


def test_unit_files_are_there() -> None:
    assert [u.name for u in UNITS] == ["bodycam-agent.service", "bodycam-broker.service", "bodycam-station.service",
                                       "bodycam-sync.service"]
    text = UNITS[0].read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "SupplementaryGroups=video gpio", "RestartPreventExitStatus=3", "RuntimeDirectory=bodycam",
                 "RuntimeDirectoryPreserve=yes"):
        assert line in text, line
    settings = [line for line in text.splitlines() if not line.startswith("#")]
    assert "PrivateDevices=yes" not in settings  # it would hide the camera and GPIO devices


def test_notifier_sends_the_protocol_messages(notify_socket: tuple[socket.socket, str]) -> None:
    listener, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("armed")
    notifier.status("recording")
    notifier.watchdog()
    notifier.stopping("closing")
    assert messages(listener, time.monotonic() + 0.5) == [
        "READY=1\nSTATUS=armed", "STATUS=recording", "WATCHDOG=1", "STOPPING=1\nSTATUS=closing",
    ]


def test_notifier_without_systemd_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_seconds is None
    notifier.ready("armed")  # no socket, no error


def test_watchdog_interval_is_only_for_our_pid() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000"}).watchdog_seconds == 4.0
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None


def test_watchdog_is_fed_only_while_frames_flow(notify_socket: tuple[socket.socket, str]) -> None:
    listener, path = notify_socket
    frames = [0]
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # fed every 0.1 s
    watchdog = FrameWatchdog(notifier, lambda: frames[0])
    watchdog.start()
    try:
        until = time.monotonic() + 0.6
        while time.monotonic() < until:
            frames[0] += 1
            time.sleep(0.01)
        flowing = messages(listener, time.monotonic() + 0.05)
        stalled = messages(listener, time.monotonic() + 0.6)  # no new frames now
    finally:
        watchdog.stop()
    assert flowing.count("WATCHDOG=1") >= 3
    assert "WATCHDOG=1" not in stalled
    assert any(m.startswith("STATUS=no camera frames") for m in stalled), stalled
    assert watchdog.starved >= 3


def test_daemon_says_ready_feeds_the_watchdog_and_says_stopping(
    notify_socket: tuple[socket.socket, str], tmp_path: Path
) -> None:
    listener, path = notify_socket
    control = Path(tempfile.mkdtemp(prefix="bc-ctl-")) / "control.sock"
    config = daemon_config(tmp_path, control)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    env.pop("GPIOZERO_PIN_FACTORY", None)
    env.pop("BODYCAM_CAMERA", None)
    process = subprocess.Popen([str(BIN / "bodycam-agent"), "run", "--config", str(config)], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        got: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(m == "WATCHDOG=1" for m in got) < 2:
            got += messages(listener, time.monotonic() + 0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, process.stdout.read().decode() if process.stdout else ""
        got += messages(listener, time.monotonic() + 0.3)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(control.parent, ignore_errors=True)
    ready = [m for m in got if m.startswith("READY=1")]
    assert len(ready) == 1 and "camera armed" in ready[0], got
    assert "; self-test passed; clock " in ready[0], ready  # READY only after the self-test (docs/health.md)
    line = read_report_file(tmp_path / "health.json")  # daemon_config puts [health] report_path there
    assert line is not None
    report = verify_report(line, load_device_key(tmp_path / "identity" / "device.key").public_key, "cam-0001")
    assert report.state == "ok" and all(check.ok for check in report.checks), report
    assert got.index(ready[0]) < got.index("WATCHDOG=1"), got  # fed only after READY
    assert got[-1].startswith("STOPPING=1"), got


def test_the_uploader_yields_to_the_agent_and_the_station_to_nothing_it_does_not_own() -> None:
    sync = (ROOT / "systemd" / "bodycam-sync.service").read_text()
    agent = (ROOT / "systemd" / "bodycam-agent.service").read_text()
    nice = {name: int(next(line for line in text.splitlines() if line.startswith("Nice=")).split("=")[1])
            for name, text in (("sync", sync), ("agent", agent))}
    assert nice["sync"] > nice["agent"]  # a lower CPU priority than the recording
    assert "IOSchedulingClass=idle" in sync and "ReadWritePaths=/var/lib/bodycam" in sync
    station = (ROOT / "systemd" / "bodycam-station.service").read_text()
    for line in ("User=bodycam-station", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "StateDirectory=bodycam-station bodycam-station-key", "bodycam-broker.service"):
        assert line in station
