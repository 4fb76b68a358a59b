"""The self-test around the daemon's own objects (before READY), and the technician's stand-alone run.

The daemon goes through it in order: ``before_ledger`` (key, store, clock), ``open_ledger`` (only when the
store and the key allow a signed record), ``check_camera`` (frames from the armed camera), ``finish``. On
a failure ``finish`` says why everywhere it can (the STATUS line, the FAULT pattern, a signed ``selftest``
event, the signed report) and raises SelfTestError, whose one line the caller prints: nothing says READY
and no recording starts.
A failed key check, or a store that takes no write, leaves the ledger alone: a read-only store takes no
record, and a key that is not the enrolled one must not sign evidence (the report it signs says so, and the
station sees it is not the enrolled key). A store that is only full still takes the signed record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from agent.camera.base import Camera
from agent.camera.factory import open_camera
from agent.errors import BodycamError, CameraError, LedgerBusyError, LedgerError, SelfTestError, StoreError
from agent.evidence.clock import SystemClock
from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.health.monitor import HealthMonitor, Limits, Watched, describe_activity
from agent.health.report import Check
from agent.health.reporter import Reporter
from agent.health.selftest import (
    ClockTrust,
    CountingOutput,
    SelfTestResult,
    check_key,
    check_store,
    clock_trust,
    watch_camera,
)
from agent.recorder.segmenter import RecorderState
from agent.recorder.session import RecordingSession
from agent.sdnotify import Notifier
from agent.workflow.events import Feedback, FeedbackEffect
from firmware_config.device_config import DeviceConfig

log = logging.getLogger(__name__)

ORDER = ("camera", "store", "clock", "key")
FAULT_SHOW_SECONDS = 3.0  # the FAULT pattern plays out (2 s) before the agent exits


class StartUp:
    """One self-test. ``create``: the daemon's run (creates the key on first start and the store's folders);
    without it nothing is created (the technician's ``bodycam-agent selftest``)."""

    def __init__(
        self,
        *, config: DeviceConfig,
        notifier: Notifier | None = None,
        show: Callable[[FeedbackEffect], None] | None = None,
        wait_feedback: Callable[[float], object] | None = None,
        create: bool = True,
    ) -> None:
        self.config = config
        self.health = config.health
        self.notifier = notifier or Notifier({})
        self._show = show
        self._wait_feedback = wait_feedback
        self.create = create
        self.checks: dict[str, Check] = {}
        self.clock = ClockTrust(False, "not checked")
        self.key: DeviceKey | None = None
        self.store_writable = False

    @property
    def result(self) -> SelfTestResult:
        ordered = tuple(self.checks[name] for name in ORDER if name in self.checks)
        return SelfTestResult(ordered, self.clock)

    def _ok(self, name: str) -> bool:
        check = self.checks.get(name)
        return check is not None and check.ok

    # --- the steps -----------------------------------------------------------------------------------------

    def camera_open_failed(self, error: CameraError) -> None:
        self.checks["camera"] = Check("camera", False, str(error))

    def before_ledger(self, camera: Camera | None) -> DeviceKey | None:
        """Key, store and clock; the camera's overlay shows the clock's trust from the first frame."""
        self.checks["key"], self.key = check_key(self.config.key, self.config.enrolled_fingerprint, self.create)
        self.checks["store"], self.store_writable = check_store(self.config.store,
                                                                self.config.thresholds.floor_bytes, self.create)
        self.clock = clock_trust(self.health.clock_sync_marker, self.health.rtc_path)
        self.checks["clock"] = self.clock.check()
        if camera is not None:
            camera.clock_trusted = self.clock.trusted
        return self.key

    def open_ledger(self) -> AbstractContextManager[Ledger | None]:
        """The ledger when the key passed and the store is writable (None otherwise; a store at its floor still
        takes the self-test's record); a ledger that will not open (damage that is not a torn tail, say) fails
        the store check. Another process holding it is not a device fault."""
        if self.key is None or not (self._ok("key") and self.store_writable):
            return nullcontext(None)
        try:
            return Ledger.open(self.config.store, self.key, self.config.device_id, boot_reason="daemon start")
        except LedgerBusyError:
            raise
        except (LedgerError, StoreError) as exc:
            self.checks["store"] = Check("store", False, str(exc))
            return nullcontext(None)

    def check_camera(self, camera: Camera | None, session: RecordingSession | None) -> None:
        """Arm the camera (into the recorder's pre-event buffer when there is one) and count its frames."""
        if camera is None or "camera" in self.checks:
            return
        wanted, timeout = self.health.selftest_frames, self.health.selftest_timeout_seconds
        try:
            if session is not None:
                session.arm()
                self.checks["camera"] = watch_camera(lambda: camera.frames_captured, wanted, timeout,
                                                     lambda: camera.error)
                return
            output = CountingOutput()
            camera.start_recording(output)
            try:
                self.checks["camera"] = watch_camera(lambda: output.frames, wanted, timeout,
                                                     lambda: camera.error)
            finally:
                camera.stop_recording()
        except CameraError as exc:
            self.checks["camera"] = Check("camera", False, str(exc))

    def finish(self, ledger: Ledger | None) -> Reporter | None:
        """Record the outcome; the reporter for the runtime watch when it passed, SelfTestError when not."""
        result = self.result
        if ledger is not None:
            try:
                ledger.append("event", result.ledger_body())
            except BodycamError as exc:
                log.error("the self-test's outcome could not be recorded: %s", exc)
        reporter = None
        if self.key is not None:
            boot = ledger.boot_record.record.boot if ledger is not None and ledger.boot_record else None
            reporter = Reporter(path=self.health.report_path, key=self.key, device=self.config.device_id,
                                boot=boot or SystemClock().boot_id)
            reporter.publish("ok" if result.passed else "failed", result.summary, result.checks,
                             self.clock.trusted)
        if result.passed:
            log.info("%s", result.summary)
            return reporter
        self.notifier.status(result.summary)  # the caller prints the error itself (bodycam-agent: one line)
        if self._show is not None:
            try:
                self._show(FeedbackEffect(Feedback.FAULT))
                if self._wait_feedback is not None:
                    self._wait_feedback(FAULT_SHOW_SECONDS)
            except Exception:  # a failing LED must not hide the self-test's own outcome
                log.exception("the fault pattern failed")
        raise SelfTestError(result.summary)


def run_selftest(config: DeviceConfig) -> SelfTestResult:
    """The technician's self-test (``bodycam-agent selftest``): the start checks, creating and recording
    nothing. Run it with the agent stopped (the camera is then free) and as the agent's user."""
    startup = StartUp(config=config, create=False)
    camera: Camera | None = None
    options: dict[str, Any] = {"source": config.camera_source} if config.camera_backend == "opencv" else {}
    try:
        camera = open_camera(config.camera_backend, config.camera, **options)
    except CameraError as exc:
        startup.camera_open_failed(exc)
    try:
        startup.before_ledger(camera)
        startup.check_camera(camera, None)
    finally:
        if camera is not None:
            try:
                camera.close()
            except CameraError as exc:
                log.error("closing the camera failed: %s", exc)
    return startup.result


def release(session: RecordingSession | None, camera: Camera | None) -> None:
    """Stop and close what a failed start armed; a failure here is logged, the self-test's own error wins."""
    try:
        if session is not None:
            session.close()
        elif camera is not None:
            camera.close()
    except BodycamError as exc:
        log.error("closing the camera after the self-test failed: %s", exc)


def start_monitor(
    startup: StartUp,
    ledger: Ledger,
    session: RecordingSession,
    reporter: Reporter,
    status: Callable[[], Mapping[str, Any]],
    show: Callable[[FeedbackEffect], None],
) -> HealthMonitor:
    """The runtime watch over the daemon's recorder, ledger and store, started."""
    config = startup.config
    camera = session.camera

    def recorder_fault() -> str | None:
        return (session.segmenter.halt_reason or "halted") if session.state is RecorderState.HALTED else None

    def set_clock_trusted(trusted: bool) -> None:
        camera.clock_trusted = trusted

    monitor = HealthMonitor(
        config=config.health,
        limits=Limits.from_config(config.health, config.camera.fps, config.thresholds),
        watched=Watched(lambda: session.stats.frames_in, config.store, ledger.write_timer, recorder_fault,
                        lambda: describe_activity(status())),
        ledger=ledger, reporter=reporter, clock=startup.clock, show=show, notifier=startup.notifier,
        set_clock_trusted=set_clock_trusted,
    )
    monitor.start()
    return monitor
