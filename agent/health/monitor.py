"""The runtime health watch: frame rate, write latency, storage, temperature, battery (SPEC art. 26).

A thread of its own looks every ``health.check_seconds``; it only reads counters and small sysfs files, so
it never holds up recording (SPEC principle 6). The decision is pure (:func:`evaluate`). What it does
about a change, once per change and never once per look:

- a check that starts failing: a signed ``health-fault`` event (``check``, ``detail``) and the FAULT pattern
  on the LED and buzzer;
- a check that passes again: a signed ``health-ok`` event;
- either: a new signed health report (state ``degraded`` while anything fails, else ``ok``) and a systemd
  STATUS line. A report also goes out every ``health.report_seconds`` as a heartbeat.

Temperature and battery clear with a margin (3 °C, 2 %), so a value wobbling at its limit does not write a
pair of records every few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import BodycamError
from agent.evidence.ledger import Ledger
from agent.evidence.write_timer import WriteTimer
from agent.health.report import Check, Metric
from agent.health.reporter import Reporter
from agent.health.selftest import ClockTrust, clock_trust, size_text
from agent.health.sensors import find_battery, read_battery_percent, read_temperature_c
from agent.recorder.storage import StorageState, StorageThresholds, free_bytes, storage_state
from agent.sdnotify import Notifier
from agent.workflow.events import Feedback, FeedbackEffect
from firmware_config.health import HealthConfig

log = logging.getLogger(__name__)

TEMPERATURE_MARGIN_C = 3.0
BATTERY_MARGIN_PERCENT = 2


@dataclass(frozen=True)
class Limits:
    min_fps: float
    max_write_latency_ms: int
    thresholds: StorageThresholds
    max_temperature_c: float
    min_battery_percent: int

    @classmethod
    def from_config(cls, config: HealthConfig, fps: int, thresholds: StorageThresholds) -> Limits:
        return cls(fps * config.min_fps_ratio, config.max_write_latency_ms, thresholds, config.max_temperature_c,
                   config.min_battery_percent)


@dataclass(frozen=True)
class Readings:
    """One look at the device. None: not measured (no frames counted yet, no sensor, nothing written)."""

    fps: float | None = None
    write_latency_ms: int | None = None
    free_bytes: int | None = None
    storage_error: str | None = None
    temperature_c: float | None = None
    battery_percent: int | None = None
    recorder_fault: str | None = None

    def metrics(self) -> dict[str, Metric]:
        return {
            "fps": None if self.fps is None else round(self.fps, 1),
            "write_latency_ms": self.write_latency_ms,
            "free_bytes": self.free_bytes,
            "temperature_c": self.temperature_c,
            "battery_percent": self.battery_percent,
        }


def evaluate(readings: Readings, limits: Limits, faulted: frozenset[str] = frozenset()) -> tuple[Check, ...]:
    """The runtime checks for ``readings``; ``faulted`` names the checks failing at the last look (hysteresis)."""
    checks = [Check("store", readings.recorder_fault is None,
                    "recorder running" if readings.recorder_fault is None
                    else f"recording halted: {readings.recorder_fault}")]
    if readings.fps is None:
        checks.append(Check("frame-rate", True, "not measured yet"))
    elif readings.fps < limits.min_fps:
        checks.append(Check("frame-rate", False, f"{readings.fps:.1f} fps, below {limits.min_fps:.1f}"))
    else:
        checks.append(Check("frame-rate", True, f"{readings.fps:.1f} fps"))
    latency = readings.write_latency_ms
    if latency is None:
        checks.append(Check("write-latency", True, "no ledger writes since the last look"))
    else:
        ok = latency <= limits.max_write_latency_ms
        limit = "" if ok else f", above the limit of {limits.max_write_latency_ms} ms"
        checks.append(Check("write-latency", ok, f"slowest ledger write {latency} ms{limit}"))
    checks.append(_storage_check(readings, limits.thresholds))
    if readings.temperature_c is not None:
        limit_c = limits.max_temperature_c - (TEMPERATURE_MARGIN_C if "temperature" in faulted else 0)
        ok = readings.temperature_c <= limit_c
        above = "" if ok else f", above the limit of {limits.max_temperature_c:g} °C"
        checks.append(Check("temperature", ok, f"{readings.temperature_c:.1f} °C{above}"))
    if readings.battery_percent is not None:
        floor = limits.min_battery_percent + (BATTERY_MARGIN_PERCENT if "battery" in faulted else 0)
        ok = readings.battery_percent >= floor
        below = "" if ok else f", below the minimum of {limits.min_battery_percent} %"
        checks.append(Check("battery", ok, f"{readings.battery_percent} %{below}"))
    return tuple(checks)


def _storage_check(readings: Readings, thresholds: StorageThresholds) -> Check:
    if readings.storage_error is not None:
        return Check("storage", False, readings.storage_error)
    if readings.free_bytes is None:
        return Check("storage", True, "not measured")
    free = readings.free_bytes
    state = storage_state(free, thresholds)
    if state is StorageState.FULL:
        floor = size_text(thresholds.floor_bytes)
        return Check("storage", False, f"full: {size_text(free)} free, at the floor of {floor}")
    if state is StorageState.LOW:
        return Check("storage", False, f"low: {size_text(free)} free, below {size_text(thresholds.low_bytes)}")
    return Check("storage", True, f"{size_text(free)} free")


def describe_activity(status: Mapping[str, Any]) -> str:
    """The device's status (Device.status()) in a few words: "armed", "recording, case cam-0001-00003"."""
    recorder = str(status.get("recorder", "unknown"))
    case = status.get("case")
    if isinstance(case, Mapping) and case.get("case_id"):
        return f"{recorder}, case {case['case_id']}"
    return recorder


@dataclass(frozen=True)
class Watched:
    """Where the monitor looks: the recorder's frame counter and state, the ledger's write times, the store."""

    frames: Callable[[], int]
    store: Path
    write_timer: WriteTimer
    recorder_fault: Callable[[], str | None] = lambda: None
    activity: Callable[[], str] = lambda: "running"


class HealthMonitor:
    """The runtime watch; :meth:`tick` is one look (the thread calls it; tests call it directly)."""

    def __init__(
        self,
        *,
        config: HealthConfig,
        limits: Limits,
        watched: Watched,
        ledger: Ledger,
        reporter: Reporter,
        clock: ClockTrust,
        show: Callable[[FeedbackEffect], None] = lambda _effect: None,
        notifier: Notifier | None = None,
        set_clock_trusted: Callable[[bool], None] = lambda _trusted: None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.watched = watched
        self.ledger = ledger
        self.reporter = reporter
        self.clock = clock
        self._show = show
        self._notifier = notifier or Notifier({})
        self._set_clock_trusted = set_clock_trusted
        # The configured battery, or one looked for at the first look (not here: a constructor reads nothing).
        self._battery: Path | None = Path(config.battery_path) if config.battery_path else None
        self._battery_known = self._battery is not None
        self.faults: dict[str, str] = {}  # check name -> detail, as of the last look
        self.checks: tuple[Check, ...] = ()
        self._last_frames: tuple[int, float] | None = None
        self._last_report = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def begin(self, now: float) -> None:
        """Start counting frames and the heartbeat from ``now`` (the report at the self-test was just written)."""
        self._last_frames = (self.watched.frames(), now)
        self._last_report = now

    def start(self) -> None:
        self.begin(time.monotonic())
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.config.check_seconds):
            try:
                self.tick()
            except Exception:  # the watch must never die quietly, nor take anything with it
                log.exception("health check failed")

    # --- one look --------------------------------------------------------------------------------------

    def _battery_file(self) -> Path | None:
        if not self._battery_known:
            self._battery, self._battery_known = find_battery(), True
        return self._battery

    def read(self, now: float) -> Readings:
        frames = self.watched.frames()
        fps = None
        if self._last_frames is not None and now > self._last_frames[1]:
            fps = (frames - self._last_frames[0]) / (now - self._last_frames[1])
        self._last_frames = (frames, now)
        latency = self.watched.write_timer.take()
        free, storage_error = None, None
        try:
            free = free_bytes(self.watched.store)
        except OSError as exc:
            storage_error = f"free space unknown ({exc.strerror})"
        return Readings(
            fps=fps,
            write_latency_ms=None if latency is None else round(latency * 1000),
            free_bytes=free,
            storage_error=storage_error,
            temperature_c=read_temperature_c(self.config.temperature_path),
            battery_percent=read_battery_percent(self._battery_file()),
            recorder_fault=self.watched.recorder_fault(),
        )

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        readings = self.read(now)
        checks = evaluate(readings, self.limits, frozenset(self.faults))
        clock_changed = self._look_at_clock()
        failing = {c.name: c.detail for c in checks if not c.ok}
        started = [c for c in checks if not c.ok and c.name not in self.faults]
        ended = [Check(name, True, next((c.detail for c in checks if c.name == name), "no longer measured"))
                 for name in self.faults if name not in failing]
        for check in started:
            log.warning("health fault: %s: %s", check.name, check.detail)
        for check in ended:
            log.info("health fault cleared: %s: %s", check.name, check.detail)
        if started:
            self._fault_pattern()
        self.faults, self.checks = failing, (*checks, self.clock.check())
        if started or ended or clock_changed or now - self._last_report >= self.config.report_seconds:
            self._last_report = now
            self.reporter.publish(self.state, self.summary, self.checks, self.clock.trusted, readings.metrics())
        status = self.status_line()
        if status != self._notifier.last_status:
            self._notifier.status(status)
        # The signed events last: a write that hangs holds the ledger's lock until it returns, and the report
        # and the STATUS line must say so while it hangs, not after.
        for check in started:
            self._record("health-fault", check)
        for check in ended:
            self._record("health-ok", check)

    @property
    def state(self) -> str:
        return "degraded" if self.faults else "ok"

    @property
    def summary(self) -> str:
        if not self.faults:
            return f"ok: every check passes; clock {'trusted' if self.clock.trusted else 'untrusted'}"
        return "degraded: " + "; ".join(f"{name}: {detail}" for name, detail in self.faults.items())

    def status_line(self) -> str:
        """systemd's STATUS: what the device does, the clock, and the failing checks by name."""
        parts = [self.watched.activity(), f"clock {'trusted' if self.clock.trusted else 'untrusted'}"]
        if self.faults:
            parts.insert(0, f"FAULT {', '.join(self.faults)}")
        return "; ".join(parts)

    def _look_at_clock(self) -> bool:
        """An untrusted clock becomes trusted once it synchronises: recorded, and the overlay follows."""
        if self.clock.trusted:
            return False
        now = clock_trust(self.config.clock_sync_marker, self.config.rtc_path)
        if not now.trusted:
            return False
        self.clock = now
        self._set_clock_trusted(True)
        log.info("clock trusted: %s", now.detail)
        try:
            self.ledger.append("event", {"kind": "clock-trusted", "detail": now.detail})
        except BodycamError as exc:
            log.error("clock-trusted event not recorded: %s", exc)
        return True

    def _record(self, kind: str, check: Check) -> None:
        try:
            self.ledger.append("event", {"kind": kind, "check": check.name, "detail": check.detail})
        except BodycamError as exc:  # the ledger failed (the recorder halts on its own): the report still says it
            log.error("%s %s not recorded: %s", kind, check.name, exc)

    def _fault_pattern(self) -> None:
        try:
            self._show(FeedbackEffect(Feedback.FAULT))
        except Exception:  # feedback hardware must never take the watch down with it
            log.exception("the fault pattern failed")
