"""The device's configuration file (TOML): typed, every key documented, unknown keys refused.

Every problem raises ConfigError naming the file, the dotted key and what is wrong; nothing starts on a
bad file. An example with every key is ``firmware_config/device.example.toml``; the ``[controls]`` table is
documented in :mod:`agent.controls.config`.

    [device]            id, officer, store, key
    [camera]            backend, source, width, height, fps, bitrate
    [recorder]          segment_seconds, prebuffer_seconds, low_space_mb, floor_mb
    [workflow]          default_procedure, stop_reasons, reason_window_seconds, profiles
    [controls]          buttons, LED, buzzer (agent.controls.config)
    [control_socket]    path, group
    [sync]              broker, TLS files, the station's key, chunking, timing, retention (SyncSettings)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.camera.base import CameraSettings
from agent.controls.config import ControlsConfig
from agent.controls.config import from_mapping as controls_from_mapping
from agent.errors import ConfigError
from agent.evidence.fsutil import display_path
from agent.evidence.record import DEVICE_ID_PATTERN
from agent.recorder.storage import StorageThresholds
from agent.workflow.state import DEFAULT_STOP_REASONS, WorkflowConfig
from firmware_config.profiles import load_profiles
from firmware_config.toml_file import Schema, read_toml, typed_tables

MIB = 1024 * 1024
BACKENDS = ("synthetic", "opencv", "picamera2")

_SCHEMA: Schema = {
    "device": {"id": (str, ...), "officer": (str, ...), "store": (str, ...), "key": (str, ...)},
    "camera": {
        "backend": (str, "picamera2"),
        "source": ((str, int), "0"),
        "width": (int, 1920),
        "height": (int, 1080),
        "fps": (int, 30),
        "bitrate": (int, 8_000_000),
    },
    "recorder": {
        "segment_seconds": ((int, float), 10.0),
        "prebuffer_seconds": ((int, float), 30.0),
        "low_space_mb": (int, 512),
        "floor_mb": (int, 64),
    },
    "workflow": {
        "default_procedure": (str, "inspection"),
        "stop_reasons": (list, list(DEFAULT_STOP_REASONS)),
        "reason_window_seconds": ((int, float), 15.0),
        "profiles": (str, ""),
    },
    "control_socket": {"path": (str, "/run/bodycam/control.sock"), "group": (str, "bodycam")},
    "sync": {
        "broker_host": (str, ""),
        "broker_port": (int, 8883),
        "ca": (str, ""),
        "cert": (str, ""),
        "key": (str, ""),
        "station_key": (str, ""),
        "chunk_kib": (int, 256),
        "window_chunks": (int, 32),
        "batch_kib": (int, 256),
        "scan_seconds": ((int, float), 5.0),
        "retry_seconds": ((int, float), 5.0),
        "reply_timeout_seconds": ((int, float), 15.0),
        "session_expiry_seconds": (int, 3600),
        "purge": (bool, True),
        "keep_hours": ((int, float), 0.0),
        "long_term_keep_days": ((int, float), 30.0),
    },
}
_RANGES: dict[str, tuple[float, float]] = {
    "camera.width": (64, 4096),
    "camera.height": (64, 4096),
    "camera.fps": (1, 120),
    "camera.bitrate": (100_000, 50_000_000),
    "recorder.segment_seconds": (1, 600),
    "recorder.prebuffer_seconds": (0, 120),
    "recorder.low_space_mb": (0, 1_000_000),
    "recorder.floor_mb": (1, 1_000_000),
    "workflow.reason_window_seconds": (1, 120),
    "sync.broker_port": (1, 65535),
    "sync.chunk_kib": (4, 16384),
    "sync.window_chunks": (1, 1024),
    "sync.batch_kib": (1, 4096),
    "sync.scan_seconds": (0.1, 3600),
    "sync.retry_seconds": (0.1, 3600),
    "sync.reply_timeout_seconds": (1, 3600),
    "sync.session_expiry_seconds": (60, 2**31 - 1),
    "sync.keep_hours": (0, 100_000),
    "sync.long_term_keep_days": (0, 100_000),
}


@dataclass(frozen=True)
class SyncSettings:
    """The uploader's settings (``[sync]``); ``bodycam-sync`` refuses to start without a broker host.

    ``broker_host``/``broker_port``: the station's Mosquitto. ``ca``/``cert``/``key``: PEM files of the
    station's CA and this device's MQTT client certificate and key (its CN is the device id).
    ``station_key``: the station's acknowledgement public key (PEM, hex or raw); acks signed by any other
    key are refused. ``chunk_kib``: segment chunk size (shrunk to the broker's maximum packet size).
    ``window_chunks``: chunks in flight before the station confirms them. ``batch_kib``: most ledger bytes
    per records message. ``scan_seconds``: how often new evidence is looked for. ``retry_seconds``: wait
    before reconnecting. ``reply_timeout_seconds``: silence from the station before a session is restarted.
    ``session_expiry_seconds``: how long the broker keeps the device's MQTT session. Retention: ``purge``
    (delete acknowledged segments at all), ``keep_hours`` (acknowledged standard footage stays at least this
    long after recording), ``long_term_keep_days`` (the same for footage flagged long-term).
    """

    broker_host: str = ""
    broker_port: int = 8883
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    station_key: Path | None = None
    chunk_bytes: int = 256 * 1024
    window_chunks: int = 32
    batch_bytes: int = 256 * 1024
    scan_seconds: float = 5.0
    retry_seconds: float = 5.0
    reply_timeout_seconds: float = 15.0
    session_expiry_seconds: int = 3600
    purge: bool = True
    keep_hours: float = 0.0
    long_term_keep_days: float = 30.0


@dataclass(frozen=True)
class DeviceConfig:
    source: str
    device_id: str
    officer_id: str
    store: Path
    key: Path
    camera_backend: str
    camera_source: int | str
    camera: CameraSettings
    segment_seconds: float
    prebuffer_seconds: float
    thresholds: StorageThresholds
    workflow: WorkflowConfig
    controls: ControlsConfig
    socket_path: Path
    socket_group: str
    sync: SyncSettings = SyncSettings()


def load_device_config(path: Path) -> DeviceConfig:
    source = display_path(path)
    return parse_device_config(read_toml(path, source), source)


def parse_device_config(data: dict[str, Any], source: str) -> DeviceConfig:
    values = typed_tables(data, _SCHEMA, _RANGES, source, other_tables=("controls",))
    device, camera, recorder, workflow = values["device"], values["camera"], values["recorder"], values["workflow"]
    if not DEVICE_ID_PATTERN.match(device["id"]):
        raise ConfigError(f"{source}: key 'device.id': {device['id']!r} is not [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    if camera["backend"] not in BACKENDS:
        raise ConfigError(f"{source}: key 'camera.backend': {camera['backend']!r} is not one of {', '.join(BACKENDS)}")
    if recorder["floor_mb"] > recorder["low_space_mb"]:
        raise ConfigError(f"{source}: key 'recorder.floor_mb': above recorder.low_space_mb")
    reasons = workflow["stop_reasons"]
    if not all(isinstance(r, str) for r in reasons):
        raise ConfigError(f"{source}: key 'workflow.stop_reasons': must be a list of strings")
    for key, value in (("device.officer", device["officer"]), ("device.store", device["store"]),
                       ("device.key", device["key"]), ("control_socket.path", values["control_socket"]["path"])):
        # An empty path would be the working directory; the officer is named in every record.
        if not value.strip() or not value.isprintable() or (key == "device.officer" and len(value) > 64):
            limit = " of 1-64 characters" if key == "device.officer" else ""
            raise ConfigError(f"{source}: key '{key}': must be non-empty printable text{limit}")
    profiles_dir = Path(workflow["profiles"]) if workflow["profiles"] else None
    try:
        procedures = load_profiles(profiles_dir)
    except ConfigError as exc:  # names the profile file and its key; say which setting pointed there
        raise ConfigError(f"{source}: key 'workflow.profiles': {exc}") from None
    settings = CameraSettings(
        width=camera["width"], height=camera["height"], fps=camera["fps"], bitrate=camera["bitrate"],
        keyframe_interval=camera["fps"], device_id=device["id"], officer_id=device["officer"],
    )
    return DeviceConfig(
        source=source,
        device_id=device["id"],
        officer_id=device["officer"],
        store=Path(device["store"]),
        key=Path(device["key"]),
        camera_backend=camera["backend"],
        camera_source=camera["source"],
        camera=settings,
        segment_seconds=float(recorder["segment_seconds"]),
        prebuffer_seconds=float(recorder["prebuffer_seconds"]),
        thresholds=StorageThresholds(low_bytes=recorder["low_space_mb"] * MIB, floor_bytes=recorder["floor_mb"] * MIB),
        workflow=WorkflowConfig(
            procedures=procedures,
            device_id=device["id"],
            officer_id=device["officer"],
            default_procedure=workflow["default_procedure"],
            stop_reasons=tuple(reasons),
            reason_window_us=int(workflow["reason_window_seconds"] * 1_000_000),
            source=f"{source}: [workflow]",
        ),
        controls=controls_from_mapping(data["controls"], source) if "controls" in data else ControlsConfig.default(),
        socket_path=Path(values["control_socket"]["path"]),
        socket_group=values["control_socket"]["group"],
        sync=_sync_settings(values["sync"], source),
    )


def _sync_settings(sync: dict[str, Any], source: str) -> SyncSettings:
    paths: dict[str, Path | None] = {}
    for name in ("ca", "cert", "key", "station_key"):
        value = sync[name]
        if value and not value.isprintable():
            raise ConfigError(f"{source}: key 'sync.{name}': must be printable text")
        paths[name] = Path(value) if value else None
    if sync["broker_host"] and not all(paths.values()):
        missing = next(name for name, path in paths.items() if path is None)
        raise ConfigError(f"{source}: key 'sync.{missing}': required when sync.broker_host is set")
    return SyncSettings(
        broker_host=sync["broker_host"], broker_port=sync["broker_port"], ca=paths["ca"], cert=paths["cert"],
        key=paths["key"], station_key=paths["station_key"], chunk_bytes=sync["chunk_kib"] * 1024,
        window_chunks=sync["window_chunks"], batch_bytes=sync["batch_kib"] * 1024,
        scan_seconds=float(sync["scan_seconds"]), retry_seconds=float(sync["retry_seconds"]),
        reply_timeout_seconds=float(sync["reply_timeout_seconds"]),
        session_expiry_seconds=sync["session_expiry_seconds"], purge=sync["purge"],
        keep_hours=float(sync["keep_hours"]), long_term_keep_days=float(sync["long_term_keep_days"]),
    )
