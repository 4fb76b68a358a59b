"""The runtime watch: each fault and its clearing is one signed ledger event, one FAULT pattern (on a new
fault), one new signed report and a STATUS line; looking again while nothing changed writes nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import seeded_key, wait_for

from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.evidence.store import read_records
from agent.health.monitor import (
    HealthMonitor,
    Limits,
    Readings,
    Watched,
    describe_activity,
    evaluate,
)
from agent.health.report import Check, HealthReport, read_report_file, verify_report
from agent.health.reporter import Reporter
from agent.health.selftest import ClockTrust
from agent.health.sensors import find_battery, read_battery_percent, read_temperature_c
from agent.recorder.storage import StorageThresholds
from agent.sdnotify import Notifier
from agent.workflow.events import Feedback, FeedbackEffect
from firmware_config.health import HealthConfig

DEVICE = "cam-0042"
FPS = 30
MIB = 1024 * 1024
LIMITS = Limits(min_fps=24, max_write_latency_ms=100, thresholds=StorageThresholds(512 * MIB, 64 * MIB),
                max_temperature_c=80, min_battery_percent=15)


class Rig:
    """A monitor over a real ledger and report file, with a frame counter, sensors and a recorder the test sets."""

    def __init__(self, folder: Path, key: DeviceKey, **health: Any) -> None:
        self.folder = folder
        self.key = key
        self.temperature = folder / "temp"
        self.battery = folder / "capacity"
        self.marker = folder / "synchronized"
        self.config = HealthConfig(report_path=folder / "health.json", temperature_path=str(self.temperature),
                                   battery_path=str(self.battery), clock_sync_marker=str(self.marker), rtc_path="",
                                   **health)
        self.ledger = Ledger.open(folder / "store", key, DEVICE, boot_reason="test")
        self.frames = 0
        self.fault: str | None = None
        self.shown: list[FeedbackEffect] = []
        self.clock_trusted: list[bool] = []
        self.notifier = Notifier({})
        self.reporter = Reporter(path=self.config.report_path, key=key, device=DEVICE,
                                 boot=self.ledger.boot_record.record.boot)  # type: ignore[union-attr]
        watched = Watched(lambda: self.frames, folder / "store", self.ledger.write_timer, lambda: self.fault,
                          lambda: "armed")
        self.monitor = HealthMonitor(config=self.config, limits=LIMITS, watched=watched, ledger=self.ledger,
                                     reporter=self.reporter,
                                     clock=ClockTrust(False, "not synchronised since boot and no real-time clock"),
                                     show=self.shown.append, notifier=self.notifier,
                                     set_clock_trusted=self.clock_trusted.append)
        self.now = 100.0
        self.monitor.begin(self.now)  # as start() does, without the thread

    def tick(self, frames_per_second: float = FPS, seconds: float = 1.0) -> None:
        self.now += seconds
        self.frames += round(frames_per_second * seconds)
        self.monitor.tick(self.now)

    def events(self) -> list[dict[str, Any]]:
        kinds = ("health-fault", "health-ok", "clock-trusted")
        return [dict(r.record.body) for r in read_records(self.folder / "store")
                if r.record.type == "event" and r.record.body["kind"] in kinds]

    def report(self) -> HealthReport:
        line = read_report_file(self.config.report_path)
        assert line is not None
        return verify_report(line, self.key.public_key, DEVICE)


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    made = Rig(tmp_path, seeded_key(3))
    yield made
    made.ledger.close()


def test_temperature_fault_once_then_cleared_with_a_margin(rig: Rig) -> None:
    rig.temperature.write_text("55000\n")
    rig.tick()
    assert rig.events() == [] and rig.shown == [] and rig.monitor.state == "ok"
    assert not rig.config.report_path.exists()  # nothing changed and no heartbeat due yet

    rig.temperature.write_text("90500\n")
    rig.tick()
    detail = "90.5 °C, above the limit of 80 °C"
    assert rig.events() == [{"kind": "health-fault", "check": "temperature", "detail": detail}]
    assert rig.shown == [FeedbackEffect(Feedback.FAULT)]
    report = rig.report()
    assert (report.state, report.summary) == ("degraded", f"degraded: temperature: {detail}")
    assert report.metrics["temperature_c"] == 90.5 and report.metrics["fps"] == 30.0
    assert [c.name for c in report.failing_checks()] == ["temperature"]
    assert rig.notifier.last_status == "FAULT temperature; armed; clock untrusted"

    first = rig.reporter.last
    for reading in ("91000", "78000"):  # still hot, then within the 3 °C margin below the limit: no change
        rig.temperature.write_text(reading)
        rig.tick()
    assert len(rig.events()) == 1 and len(rig.shown) == 1
    assert rig.reporter.last is first  # no new report without a change

    rig.temperature.write_text("70000")
    rig.tick()
    assert rig.events()[1] == {"kind": "health-ok", "check": "temperature", "detail": "70.0 °C"}
    assert len(rig.shown) == 1  # a clearing plays no pattern
    assert rig.report().state == "ok" and rig.notifier.last_status == "armed; clock untrusted"


def test_frame_rate_drop_and_recovery(rig: Rig) -> None:
    rig.tick()
    rig.tick(frames_per_second=0)  # the camera paused
    assert rig.events() == [{"kind": "health-fault", "check": "frame-rate", "detail": "0.0 fps, below 24.0"}]
    assert rig.report().state == "degraded"
    rig.tick(frames_per_second=12, seconds=2)
    assert len(rig.events()) == 1  # still below: no second record
    rig.tick()
    assert rig.events()[1] == {"kind": "health-ok", "check": "frame-rate", "detail": "30.0 fps"}
    records = read_records(rig.folder / "store")
    assert all(r.record.key == rig.key.fingerprint for r in records)  # signed by the device


def test_a_write_that_hangs_is_seen_while_it_hangs(rig: Rig) -> None:
    rig.tick()
    writing, release = threading.Event(), threading.Event()

    def slow_write() -> None:
        with rig.ledger.write_timer.timing():
            writing.set()
            release.wait(5)

    thread = threading.Thread(target=slow_write)
    thread.start()
    try:
        writing.wait(5)
        time.sleep(0.15)  # above the 100 ms limit and still going
        rig.tick()
    finally:
        release.set()
        thread.join()
    [fault] = rig.events()
    assert fault["check"] == "write-latency" and fault["detail"].startswith("slowest ledger write ")
    assert fault["detail"].endswith("ms, above the limit of 100 ms")
    # The next look still sees the hung write (it finished since: the longest since that look); the one
    # after sees only quick writes (the fault's own record).
    rig.tick()
    assert len(rig.events()) == 1
    rig.tick()
    assert rig.events()[-1]["kind"] == "health-ok" and rig.events()[-1]["check"] == "write-latency"


def test_the_report_goes_out_while_the_hung_write_holds_the_ledger(rig: Rig) -> None:
    rig.tick()
    writing, release = threading.Event(), threading.Event()

    def hung_append() -> None:  # as Ledger.append: its lock held through the timed write + fdatasync
        with rig.ledger._lock, rig.ledger.write_timer.timing():
            writing.set()
            release.wait(10)

    writer = threading.Thread(target=hung_append)
    writer.start()
    looker = threading.Thread(target=lambda: rig.tick(seconds=0.15))
    try:
        writing.wait(5)
        time.sleep(0.15)  # above the 100 ms limit and still going
        looker.start()
        wait_for(lambda: rig.config.report_path.exists(), 5, "the report while the write hangs")
        report = rig.report()
        assert report.state == "degraded" and [c.name for c in report.failing_checks()] == ["write-latency"]
        assert rig.notifier.last_status == "FAULT write-latency; armed; clock untrusted"
        assert rig.events() == []  # the signed event waits for the ledger
    finally:
        release.set()
        writer.join()
        if looker.ident is not None:  # started
            looker.join()
    assert [e["check"] for e in rig.events()] == ["write-latency"]  # recorded once the ledger is free


def test_a_halted_recorder_and_a_low_battery(rig: Rig) -> None:
    rig.battery.write_text("40\n")
    rig.tick()
    rig.fault = "write failed: ENOSPC (No space left on device)"
    rig.battery.write_text("10\n")
    rig.tick()
    assert {(e["check"], e["detail"]) for e in rig.events()} == {
        ("store", "recording halted: write failed: ENOSPC (No space left on device)"),
        ("battery", "10 %, below the minimum of 15 %"),
    }
    assert rig.shown == [FeedbackEffect(Feedback.FAULT)]  # one pattern for the look that found both
    rig.battery.write_text("16")  # above the minimum, not above it by the 2 % margin
    rig.tick()
    assert len(rig.events()) == 2
    rig.battery.write_text("17")
    rig.tick()
    assert rig.events()[-1] == {"kind": "health-ok", "check": "battery", "detail": "17 %"}
    assert set(rig.monitor.faults) == {"store"}


def test_the_clock_becomes_trusted_once_synchronised(rig: Rig) -> None:
    rig.tick()
    assert rig.clock_trusted == []
    rig.marker.write_text("")
    rig.tick()
    assert rig.clock_trusted == [True]  # the overlay stops saying "clock untrusted"
    assert rig.events() == [{"kind": "clock-trusted", "detail": f"synchronised since boot ({rig.marker})"}]
    report = rig.report()
    assert report.clock_trusted is True and report.state == "ok"
    rig.tick()
    assert len(rig.events()) == 1


def test_a_heartbeat_report_without_changes(tmp_path: Path) -> None:
    rig = Rig(tmp_path, seeded_key(4), report_seconds=5)
    try:
        rig.tick(seconds=4)
        assert rig.reporter.last is None
        rig.tick(seconds=2)
        assert rig.report().state == "ok" and rig.events() == []
    finally:
        rig.ledger.close()


def test_the_thread_looks_on_its_own(tmp_path: Path) -> None:
    rig = Rig(tmp_path, seeded_key(5), check_seconds=0.05)
    rig.temperature.write_text("99000")
    try:
        rig.monitor.start()
        deadline = time.monotonic() + 5
        while len(rig.events()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        rig.monitor.stop()
        rig.ledger.close()
    # The frame counter stood still too: both faults, each once.
    assert sorted(e["check"] for e in rig.events()) == ["frame-rate", "temperature"]


# --- the pure parts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("readings", "failing"),
    [
        (Readings(), set()),
        (Readings(fps=23.9), {"frame-rate"}),
        (Readings(fps=24.0), set()),
        (Readings(write_latency_ms=101), {"write-latency"}),
        (Readings(free_bytes=600 * MIB), set()),
        (Readings(free_bytes=500 * MIB), {"storage"}),
        (Readings(free_bytes=10 * MIB), {"storage"}),
        (Readings(storage_error="free space unknown (No such file or directory)"), {"storage"}),
        (Readings(temperature_c=80.0), set()),
        (Readings(temperature_c=80.1), {"temperature"}),
        (Readings(battery_percent=15), set()),
        (Readings(battery_percent=14), {"battery"}),
        (Readings(recorder_fault="halted"), {"store"}),
    ],
)
def test_evaluate(readings: Readings, failing: set[str]) -> None:
    checks = evaluate(readings, LIMITS)
    assert {c.name for c in checks if not c.ok} == failing
    names = [c.name for c in checks]
    assert names[:4] == ["store", "frame-rate", "write-latency", "storage"]
    assert ("temperature" in names) == (readings.temperature_c is not None)  # no sensor: no check
    assert ("battery" in names) == (readings.battery_percent is not None)


def test_evaluate_hysteresis() -> None:
    hot = frozenset({"temperature"})
    assert not evaluate(Readings(temperature_c=77.5), LIMITS, hot)[-1].ok
    assert evaluate(Readings(temperature_c=77.0), LIMITS, hot)[-1] == Check("temperature", True, "77.0 °C")
    low = frozenset({"battery"})
    assert not evaluate(Readings(battery_percent=16), LIMITS, low)[-1].ok
    assert evaluate(Readings(battery_percent=17), LIMITS, low)[-1].ok


def test_describe_activity() -> None:
    assert describe_activity({"recorder": "armed", "case": None}) == "armed"
    assert describe_activity({"recorder": "recording", "case": {"case_id": "cam-0001-00003"}}) == (
        "recording, case cam-0001-00003"
    )


def test_sensors(tmp_path: Path) -> None:
    assert read_temperature_c("") is None and read_temperature_c(str(tmp_path / "none")) is None
    (tmp_path / "t").write_text("48312\n")
    assert read_temperature_c(str(tmp_path / "t")) == 48.312
    (tmp_path / "t").write_text("garbage")
    assert read_temperature_c(str(tmp_path / "t")) is None
    supplies = tmp_path / "power_supply"
    for name, kind, capacity in (("AC", "Mains", None), ("BAT0", "Battery", "57"), ("BAT1", "Battery", "3")):
        (supplies / name).mkdir(parents=True)
        (supplies / name / "type").write_text(kind + "\n")
        if capacity is not None:
            (supplies / name / "capacity").write_text(capacity + "\n")
    found = find_battery(supplies)
    assert found == supplies / "BAT0" / "capacity" and read_battery_percent(found) == 57
    assert find_battery(tmp_path / "none") is None and read_battery_percent(None) is None
    (supplies / "BAT0" / "capacity").write_text("140")
    assert read_battery_percent(found) is None  # not a percentage
