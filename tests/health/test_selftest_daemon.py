"""The self-test at the daemon's start (SPEC art. 26): each failure keeps the device from saying READY,
says why on the STATUS line, in the signed health report and (where the store and the key allow it) in a
signed ledger event, plays the FAULT pattern, records nothing, and ends with exit status 3.

No camera frames and a disk below the floor run ``run_daemon`` in this process (a camera fake that delivers
nothing; a floor above the real free space); a key that is not the enrolled one and a read-only store run
``bodycam-agent run`` as a process (the store really on a read-only mount where the kernel lets us make one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from helpers import seeded_key, wait_for

from agent.camera.synthetic import SyntheticCamera
from agent.daemon import run_daemon
from agent.errors import SelfTestError
from agent.evidence.keys import load_device_key
from agent.evidence.store import read_records
from agent.health.report import HealthReport, read_report_file, verify_report
from agent.recorder.storage import StorageThresholds, free_bytes
from agent.sdnotify import Notifier
from firmware_config.device_config import DeviceConfig
from firmware_config.toml_write import dumps

BIN = Path(sys.executable).parent
LED_PIN, BUZZER_PIN = 23, 24
EXIT_SELFTEST = 3
FAULT_BLINKS = 4  # agent/controls/feedback.py: FAULT is 250/250 x4 on the LED and the buzzer


def report_of(config: DeviceConfig) -> HealthReport:
    line = read_report_file(config.health.report_path)
    assert line is not None, "no health report written"
    return verify_report(line, load_device_key(config.key).public_key, config.device_id)


def ons(factory: MockFactory, pin: int) -> int:
    return sum(1 for state in factory.pin(pin).states[1:] if state.state)


def assert_refused(got: list[str], reason: str) -> None:
    """No READY ever; the last STATUS names the reason."""
    assert not any("READY=1" in message for message in got), got
    statuses = [line for message in got for line in message.splitlines() if line.startswith("STATUS=")]
    assert statuses and statuses[-1] == f"STATUS=self-test failed: {reason}", got


def assert_failed_report(report: HealthReport, reason: str, check: str) -> None:
    assert report.state == "failed", report
    assert report.summary == f"self-test failed: {reason}"
    failing = report.failing_checks()
    assert [c.name for c in failing] == [check], report.checks
    assert reason == f"{check}: {failing[0].detail}"
    assert [c.name for c in report.checks] == ["camera", "store", "clock", "key"]


def run_in_process(config: DeviceConfig, notify: Any, pins: MockFactory, **kwargs: Any) -> SelfTestError:
    with pytest.raises(SelfTestError) as caught:
        run_daemon(config, threading.Event(), pin_factory=pins, notifier=Notifier({"NOTIFY_SOCKET": notify.path}),
                   **kwargs)
    return caught.value


# --- in this process ---------------------------------------------------------------------------------------


def test_no_camera_frames(make_config: Callable[..., DeviceConfig], notify: Any, pins: MockFactory) -> None:
    config = make_config(selftest_timeout_seconds=0.5)
    silent = SyntheticCamera(config.camera, realtime=True, max_frames=0)  # armed, but never a frame
    error = run_in_process(config, notify, pins, camera=silent)

    reason = "camera: no frames within 0.5 s"
    assert str(error) == f"self-test failed: {reason}"
    assert_refused(notify.read(0.1), reason)
    assert_failed_report(report_of(config), reason, "camera")
    assert not config.socket_path.exists()  # the control socket never listened
    # The store and the key were fine: the failure is a signed record, and nothing was recorded.
    records = read_records(config.store)
    assert [r.record.type for r in records] == ["boot", "event"]
    body = dict(records[-1].record.body)
    assert (body["kind"], body["result"], body["clock_trusted"]) == ("selftest", "fail", False)
    assert [c["name"] for c in body["checks"] if not c["ok"]] == ["camera"]
    assert not any(path.is_file() for path in (config.store / "segments").iterdir())
    assert ons(pins, LED_PIN) == FAULT_BLINKS and ons(pins, BUZZER_PIN) == FAULT_BLINKS


def test_a_camera_that_cannot_be_opened(make_config: Callable[..., DeviceConfig], notify: Any, pins: MockFactory,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BODYCAM_CAMERA", raising=False)
    config = replace(make_config(), camera_backend="opencv", camera_source=str(tmp_path / "no-such-video.mp4"))
    error = run_in_process(config, notify, pins)

    reason = str(error).removeprefix("self-test failed: ")
    assert reason.startswith("camera: ") and "no-such-video.mp4" in reason, reason
    assert_refused(notify.read(0.1), reason)
    assert_failed_report(report_of(config), reason, "camera")
    assert [r.record.body.get("result") for r in read_records(config.store)] == [None, "fail"]  # boot, selftest


def test_disk_below_the_floor(make_config: Callable[..., DeviceConfig], notify: Any, pins: MockFactory,
                              tmp_path: Path) -> None:
    floor = free_bytes(tmp_path) + 1024**3  # a floor above the real free space
    config = replace(make_config(), thresholds=StorageThresholds(low_bytes=floor, floor_bytes=floor))
    error = run_in_process(config, notify, pins)

    reason = str(error).removeprefix("self-test failed: ")
    assert reason.startswith("store: only ") and "at or below the floor of" in reason, reason
    assert_refused(notify.read(0.1), reason)
    assert_failed_report(report_of(config), reason, "store")
    # Writable, only full: the failure is signed in the ledger (the floor keeps room for such records).
    [boot, event] = read_records(config.store)
    assert boot.record.type == "boot" and event.record.body["kind"] == "selftest"
    assert event.record.body["result"] == "fail"
    assert ons(pins, LED_PIN) == FAULT_BLINKS


# --- bodycam-agent run as a process ------------------------------------------------------------------------


def write_config(config: DeviceConfig, folder: Path, **device: Any) -> Path:
    """The test daemon's TOML file (test_daemon.daemon_config) with ``config``'s [health] and ``device`` keys."""
    data = tomllib.loads((folder / "device.toml").read_text(encoding="utf-8"))
    data["device"].update(device)
    h = config.health
    data["health"] = {
        "report_path": str(h.report_path), "selftest_frames": h.selftest_frames,
        "selftest_timeout_seconds": h.selftest_timeout_seconds, "clock_sync_marker": h.clock_sync_marker,
        "rtc_path": h.rtc_path, "temperature_path": h.temperature_path, "battery_path": h.battery_path,
    }
    path = folder / "selftest.toml"
    path.write_text(dumps(data), encoding="utf-8")
    return path


def run_agent(config_file: Path, notify: Any, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NOTIFY_SOCKET": notify.path}
    for name in ("GPIOZERO_PIN_FACTORY", "BODYCAM_CAMERA"):
        env.pop(name, None)
    command = [*(prefix or []), str(BIN / "bodycam-agent"), "run", "--config", str(config_file)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False,
                          cwd=config_file.parent)


def assert_exit(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode == EXIT_SELFTEST, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == f"bodycam-agent: self-test failed: {reason}", result.stderr


def test_key_that_is_not_the_enrolled_one(make_config: Callable[..., DeviceConfig], notify: Any,
                                          tmp_path: Path) -> None:
    config = make_config()
    enrolled = seeded_key(9).fingerprint
    result = run_agent(write_config(config, tmp_path, enrolled_fingerprint=enrolled), notify)

    key = load_device_key(config.key)  # created at this first start, on the device: not the enrolled one
    reason = f"key: fingerprint {key.fingerprint[:16]}... is not the enrolled {enrolled[:16]}..."
    assert_exit(result, reason)
    assert_refused(notify.read(0.1), reason)
    assert_failed_report(report_of(config), reason, "key")  # signed by the key it has: the station sees that
    # A key that is not the enrolled one signs no evidence: the ledger was not even created.
    assert not (config.store / "ledger.jsonl").exists()


def _read_only(store: Path) -> tuple[list[str], Callable[[], None]] | None:
    """How to run the agent with ``store`` read-only even for root: (command prefix, undo), or None.

    First choice: a read-only bind mount in a mount namespace of the agent's own (``unshare``), which gives
    the real EROFS; then the immutable attribute (root on ext4 and friends); then plain permissions."""
    unshare = shutil.which("unshare")
    if unshare is not None:
        script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        probe = subprocess.run([unshare, "-rm", "sh", "-c", script + ' && exit 1', str(store), "touch",
                                str(store / "probe")], capture_output=True, check=False)
        if probe.returncode != 0 and b"Read-only file system" in probe.stderr:
            return [unshare, "-rm", "sh", "-c", script, str(store)], lambda: None
    if os.geteuid() == 0 and shutil.which("chattr") is not None:
        if subprocess.run(["chattr", "+i", str(store)], capture_output=True, check=False).returncode == 0:
            return [], lambda: subprocess.run(["chattr", "-i", str(store)], check=True)
        return None
    if os.geteuid() != 0:
        store.chmod(0o555)
        return [], lambda: store.chmod(0o755)
    return None


def test_read_only_store(make_config: Callable[..., DeviceConfig], notify: Any, tmp_path: Path) -> None:
    config = make_config()
    for folder in ("segments", "quarantine"):
        (config.store / folder).mkdir(parents=True)
    how = _read_only(config.store)
    if how is None:
        pytest.skip("no way to make a folder read-only for root here (no unshare, no chattr)")
    prefix, undo = how
    try:
        result = run_agent(write_config(config, tmp_path), notify, prefix)
    finally:
        undo()

    reason = result.stderr.splitlines()[-1].removeprefix("bodycam-agent: self-test failed: ")
    assert reason.startswith(f"store: {config.store}: cannot create a file ("), result.stderr
    assert_exit(result, reason)
    assert_refused(notify.read(0.1), reason)
    assert_failed_report(report_of(config), reason, "store")  # the key was readable: the report is signed
    assert sorted(p.name for p in config.store.iterdir()) == ["quarantine", "segments"]  # nothing written


# --- a passing self-test, then a fault while running -------------------------------------------------------


def test_ready_after_the_self_test_then_a_fault_and_its_clearing(
    make_config: Callable[..., DeviceConfig], notify: Any, pins: MockFactory, tmp_path: Path
) -> None:
    temperature = tmp_path / "thermal"
    temperature.write_text("45000\n")
    # The frame rate over a short look is noisy on a busy test machine; its own tests are in test_health_monitor.
    config = make_config(temperature_path=str(temperature), max_temperature_c=70.0, check_seconds=0.3,
                         min_fps_ratio=0.2)
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            run_daemon(config, stop, pin_factory=pins, notifier=Notifier({"NOTIFY_SOCKET": notify.path}))
        except BaseException as exc:  # handed to the test thread
            failures.append(exc)

    daemon = threading.Thread(target=run)
    daemon.start()
    try:
        wait_for(lambda: failures or any(m.startswith("READY=1") for m in notify.read(0.05)), 30, "READY")
        assert not failures, failures
        [ready] = [m for m in notify.got if m.startswith("READY=1")]
        assert ready.endswith("; self-test passed; clock untrusted (not synchronised since boot and no "
                              "real-time clock)"), ready
        report = report_of(config)
        assert (report.state, report.clock_trusted) == ("ok", False)
        assert [(c.name, c.ok) for c in report.checks] == [("camera", True), ("store", True), ("clock", True),
                                                          ("key", True)]
        passed = [dict(r.record.body) for r in read_records(config.store) if r.record.body.get("kind") == "selftest"]
        assert [(b["result"], b["clock_trusted"]) for b in passed] == [("pass", False)]
        wait_for(lambda: "STATUS=armed; clock untrusted" in notify.read(0.05), 10, "a STATUS from the watch")
        blinks = ons(pins, LED_PIN)

        temperature.write_text("75500\n")
        wait_for(lambda: health_events(config), 10, "the health-fault event")
        wait_for(lambda: report_of(config).state == "degraded", 10, "a degraded report")
        assert report_of(config).summary == "degraded: temperature: 75.5 °C, above the limit of 70 °C"
        wait_for(lambda: "STATUS=FAULT temperature; armed; clock untrusted" in notify.read(0.05), 10, "STATUS")
        wait_for(lambda: ons(pins, LED_PIN) - blinks == FAULT_BLINKS, 5, "the FAULT pattern")

        temperature.write_text("50000\n")
        wait_for(lambda: len(health_events(config)) == 2, 10, "the health-ok event")
        wait_for(lambda: report_of(config).state == "ok", 10, "an ok report")
        assert health_events(config) == [
            {"kind": "health-fault", "check": "temperature", "detail": "75.5 °C, above the limit of 70 °C"},
            {"kind": "health-ok", "check": "temperature", "detail": "50.0 °C"},
        ]
    finally:
        stop.set()
        daemon.join(30)
    assert not failures, failures
    assert notify.read(0.1)[-1].startswith("STOPPING=1")


def health_events(config: DeviceConfig) -> list[dict[str, Any]]:
    return [dict(r.record.body) for r in read_records(config.store)
            if r.record.type == "event" and str(r.record.body["kind"]).startswith("health-")]
