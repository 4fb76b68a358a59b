"""``bodycam-agent run --config FILE``: the device daemon.

Loads the configuration (refusing a bad file before touching anything), opens the ledger (recovering what
a crash left), arms the camera, resumes an open case, and serves the buttons and the control socket until
SIGTERM or SIGINT; then closes the open segment, signs it, and exits.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from agent.camera.factory import open_camera
from agent.control_socket import ControlServer
from agent.controls.buttons import ButtonPanel
from agent.controls.feedback import FeedbackDriver
from agent.controls.pins import pin_factory as choose_pin_factory
from agent.device import Device
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.ledger import Ledger
from agent.recorder.segmenter import SegmenterSettings
from agent.recorder.session import RecordingSession
from firmware_config.device_config import DeviceConfig

log = logging.getLogger(__name__)


def run_daemon(config: DeviceConfig, stop: threading.Event, pin_factory: Any = None) -> None:
    """Run until ``stop`` is set. ``pin_factory`` None lets gpiozero choose ($GPIOZERO_PIN_FACTORY)."""
    key = load_or_create_device_key(config.key)
    options: dict[str, Any] = {"source": config.camera_source} if config.camera_backend == "opencv" else {}
    camera = open_camera(config.camera_backend, config.camera, **options)
    settings = SegmenterSettings(
        segment_seconds=config.segment_seconds,
        prebuffer_seconds=config.prebuffer_seconds,
        width=config.camera.width,
        height=config.camera.height,
        fps=config.camera.fps,
        thresholds=config.thresholds,
    )
    factory = pin_factory if pin_factory is not None else choose_pin_factory(config.controls.pin_factory)
    with Ledger.open(config.store, key, config.device_id, boot_reason="daemon start") as ledger:
        session = RecordingSession(ledger, camera, settings)
        feedback = FeedbackDriver(config.controls, pin_factory=factory)
        device = Device(ledger, session, config.workflow, show=feedback.show,
                        set_recording_indicator=feedback.set_recording)
        panel = ButtonPanel(config.controls, device.press, pin_factory=factory)
        server = ControlServer(config.socket_path, config.socket_group, device.command, device.status)
        try:
            device.start()
            server.start()
            log.info("device %s ready: store %s", config.device_id, config.store)
            stop.wait()
        finally:
            server.close()
            panel.close()
            device.close()
            feedback.close()
