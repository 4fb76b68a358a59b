"""``bodycam-agent run --config FILE``: the device daemon.

Loads the configuration (refusing a bad file before touching anything), runs the self-test around opening
the ledger (recovering what a crash left) and arming the camera (docs/health.md; a failure ends here with
exit status 3), resumes an open case, and serves the buttons and the control socket, with the health watch
beside them, until SIGTERM or SIGINT (or a fatal fault); then, with the buttons and the socket closed, signs
the cause of the stop (agent/stopping.py: inside a case a ``stop-reason`` record with ``source: system``,
before the camera stops), closes the open segment, signs it, and exits. An open case resumes at the next
start, as after a power loss.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any, TypeVar

from agent.camera.base import Camera
from agent.camera.factory import open_camera
from agent.control_socket import ControlError, ControlServer, CustodyHandler
from agent.controls.buttons import ButtonPanel
from agent.controls.feedback import FeedbackDriver
from agent.controls.pins import pin_factory as choose_pin_factory
from agent.device import Device, assignment_handler
from agent.errors import CameraError, ConfigError
from agent.evidence.assignment import officer_in_store
from agent.evidence.custody import RetentionPolicy
from agent.evidence.custody_view import LedgerCustody
from agent.evidence.keys import load_public_key
from agent.evidence.ledger import Ledger
from agent.health.reporter import Reporter
from agent.health.startup import StartUp, release, start_monitor
from agent.recorder.segmenter import SegmenterSettings
from agent.recorder.session import RecordingSession
from agent.sdnotify import FrameWatchdog, Notifier
from agent.stopping import StopRequest, system_state, system_stop_cause
from agent.workflow.events import Press
from firmware_config.device_config import DeviceConfig, SyncSettings

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def run_daemon(
    config: DeviceConfig,
    stop: threading.Event,
    pin_factory: Any = None,
    notifier: Notifier | None = None,
    camera: Camera | None = None,
) -> None:
    """Run until ``stop`` is set. ``pin_factory`` None lets gpiozero choose ($GPIOZERO_PIN_FACTORY);
    ``camera`` None opens the configured backend.

    Under systemd (Type=notify) it says READY once the self-test passed (agent/health/startup.py: frames
    from the armed camera, a writable store above the floor, the enrolled key; the clock's trust is noted)
    and the socket listens, feeds the watchdog while frames flow, and says STOPPING on the way out. A failed
    self-test raises SelfTestError without READY and before any recording.

    One ExitStack owns what is opened, and undoes it in reverse: the control socket and the buttons first
    (nothing restarts what the stop ends), the system stop, the health watch, the watchdog, the device (the
    open segment signed), the ledger, the feedback last.
    """
    notifier = notifier or Notifier()
    # Everything that can refuse the configuration (the pin factory, the pins themselves: two spellings of one
    # pin are only found when gpiozero reserves them) comes before the first file is created (key, store).
    factory = pin_factory if pin_factory is not None else _named(config, choose_pin_factory,
                                                                 config.controls.pin_factory)
    camera, camera_error = (camera, None) if camera is not None else _open_camera(config)
    with ExitStack() as stack:
        feedback = _named(config, FeedbackDriver, config.controls, pin_factory=factory).start()
        stack.callback(feedback.close)
        presses = _PressRoute()  # presses before the device exists are ignored, as when the panel opened after it
        buttons = stack.enter_context(ExitStack())  # closed once: before the system stop, or here on a failure
        panel = _named(config, ButtonPanel, config=config.controls, on_press=presses, pin_factory=factory)
        buttons.callback(panel.close)
        startup = StartUp(config=config, notifier=notifier, show=feedback.show, wait_feedback=feedback.wait_idle)
        ledger, session, reporter = _self_test(stack, startup, camera, camera_error)
        device = Device(ledger=ledger, session=session, config=config.workflow, show=feedback.show,
                        set_recording_indicator=feedback.set_recording)
        server = ControlServer(path=config.socket_path, group=config.socket_group, handle=device.command,
                               status=device.status, custody=custody_handler(ledger, config.sync),
                               assign=assignment_handler(device, config.sync.station_key))
        watchdog = FrameWatchdog(notifier, lambda: session.stats.frames_in)
        stack.callback(device.close)
        stack.callback(watchdog.stop)
        monitor = stack.enter_context(ExitStack())  # the health watch, once it runs
        stack.push(lambda _type, fault, _tb: _system_stop(device, stop, fault))
        stack.callback(buttons.close)
        stack.callback(server.close)
        presses.device = device  # presses from here on reach the device (as before this order)
        device.start()
        server.start()
        log.info("device %s ready: store %s", config.device_id, config.store)
        notifier.ready(f"device {config.device_id}: camera armed, control socket {config.socket_path}; "
                       f"{startup.result.summary}")
        watchdog.start()
        monitor.callback(start_monitor(startup, ledger, session, reporter, device.status, feedback.show).stop)
        stop.wait()
        notifier.stopping("closing the open segment")


def _self_test(stack: ExitStack, startup: StartUp, camera: Camera | None,
               camera_error: CameraError | None) -> tuple[Ledger, RecordingSession, Reporter]:
    """StartUp's steps in their order, the ledger opened on ``stack``; SelfTestError unless it passed."""
    config = startup.config
    if camera_error is not None:
        startup.camera_open_failed(camera_error)
    startup.before_ledger(camera)
    ledger = stack.enter_context(startup.open_ledger())
    if ledger is not None and camera is not None:  # before the self-test arms it: no frame names another
        camera.set_officer(officer_in_store(config.store, config.officer_id))
    session = RecordingSession(ledger=ledger, camera=camera,
                               settings=_segmenter_settings(config)) if ledger and camera else None
    try:
        startup.check_camera(camera, session)
        reporter = startup.finish(ledger)  # SelfTestError unless it passed
    except BaseException:
        release(session, camera)
        raise
    assert ledger is not None and session is not None and reporter is not None  # it passed
    return ledger, session, reporter


class _PressRoute:
    """The buttons' callback: a press reaches the device once it exists, and is ignored before."""

    def __init__(self) -> None:
        self.device: Device | None = None

    def __call__(self, event: Press) -> None:
        if self.device is not None:
            self.device.press(event)


def _open_camera(config: DeviceConfig) -> tuple[Camera | None, CameraError | None]:
    """The configured camera; no usable camera fails the self-test (exit 3), with a signed record."""
    options: dict[str, Any] = {"source": config.camera_source} if config.camera_backend == "opencv" else {}
    try:
        return open_camera(config.camera_backend, config.camera, **options), None
    except CameraError as exc:
        return None, exc


def _segmenter_settings(config: DeviceConfig) -> SegmenterSettings:
    return SegmenterSettings(
        segment_seconds=config.segment_seconds,
        prebuffer_seconds=config.prebuffer_seconds,
        width=config.camera.width,
        height=config.camera.height,
        fps=config.camera.fps,
        thresholds=config.thresholds,
    )


def _system_stop(device: Device, stop: threading.Event, fault: BaseException | None) -> None:
    """Sign why the daemon stops (inside a case, before the camera stops); never masks the fault itself."""
    signum = stop.signum if isinstance(stop, StopRequest) else None
    state = system_state() if signum == signal.SIGTERM and fault is None else None
    cause = system_stop_cause(signum, state, fault)
    log.info("system stop: %s", cause.detail)
    try:
        errors = device.handle(cause)
    except Exception:  # the camera must still be closed and the open segment signed (device.close)
        log.exception("the system stop (%s) could not be carried out", cause.detail)
        return
    for error in errors:
        log.error("system stop (%s): %s", cause.detail, error)


def custody_handler(ledger: Ledger, sync: SyncSettings) -> CustodyHandler:
    """The control socket's ``receipt`` and ``purge`` ops on the daemon's own ledger.

    The station key is read from ``sync.station_key`` at every op (a key file fixed or replaced takes effect
    without a restart, and a bad one never keeps the camera from starting); the policy comes from ``[sync]``.
    One LedgerCustody serves every op, made at the first: its view of the ledger reads it in full once, then
    only what was appended since the op before (the recorder shares this process's CPU).
    """
    policy = RetentionPolicy.from_settings(sync)
    lock = threading.Lock()  # one custody op at a time: the receipt's news check and its append belong together
    made: list[LedgerCustody] = []

    def handle(op: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        if sync.station_key is None:
            raise ConfigError("sync.station_key is not configured: no acknowledgement can be checked")
        station_key = load_public_key(sync.station_key)
        with lock:
            if not made:
                made.append(LedgerCustody(ledger=ledger, station_key=station_key, policy=policy))
            custody = made[0]
            custody.station_key = station_key
            if op == "receipt":
                return {"outcome": custody.record_receipt(str(fields["ack"]).encode("ascii", "replace"))}
            if op == "purge":
                outcome = custody.purge()
                return {"purged": outcome.purged, "refused": outcome.refused}
        raise ControlError(f"op {op!r}: not a custody op")

    return handle


def _named(config: DeviceConfig, make: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``make(*args, **kwargs)``; a ConfigError from it (naming the key) also names the config file."""
    try:
        return make(*args, **kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{config.source}: {exc}") from None
