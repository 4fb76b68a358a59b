"""The device's configuration file (TOML): typed, every key documented, unknown keys refused.

Every problem raises ConfigError naming the file, the dotted key and what is wrong; nothing starts on a
bad file. An example with every key is ``firmware_config/device.example.toml``; the ``[controls]`` table is
documented in :mod:`firmware_config.controls`.

    [device]            id, officer, store, key, enrolled_fingerprint
    [camera]            backend, source, width, height, fps, bitrate
    [recorder]          segment_seconds, prebuffer_seconds, low_space_mb, floor_mb, memory_budget_mb
    [workflow]          default_procedure, stop_reasons, reason_window_seconds, profiles
    [controls]          buttons, LED, buzzer (firmware_config.controls)
    [control_socket]    path, group
    [sync]              broker, TLS files, the station's key, chunking, timing, retention (SyncSettings)
    [health]            self-test and runtime watch: report file, limits, sensor paths (firmware_config.health)

Besides each key on its own, settings that must agree are checked together (``_cross_checks``): a pin used
twice, a segment chunk or a records batch that would not fit the broker's message limit, a pre-event buffer
that would not fit the memory budget. docs/configuration.md lists every key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.evidence.encoding import MAX_LINE_BYTES
from agent.evidence.fsutil import display_path
from agent.evidence.limits import DEFAULT_MAX_PACKET_BYTES, MAX_CHUNK_HEADER_BYTES, PUBLISH_OVERHEAD_BYTES
from agent.evidence.procedure import Procedure
from agent.evidence.record import DEVICE_ID_PATTERN, MAX_OFFICER_CHARS, officer_problem
from firmware_config.controls import ControlsConfig
from firmware_config.controls import from_mapping as controls_from_mapping
from firmware_config.health import HealthConfig
from firmware_config.health import from_mapping as health_from_mapping
from firmware_config.profiles import load_profiles
from firmware_config.settings import (
    CAMERA_BACKENDS,
    DEFAULT_STOP_REASONS,
    MAX_STOP_REASONS,
    CameraSettings,
    StorageThresholds,
    WorkflowConfig,
)
from firmware_config.toml_file import FILE_PATH, PRINTABLE, Schema, Text, read_toml, refusal, typed_tables

MIB = 1024 * 1024
KIB = 1024
# A chunk message is the MQTT PUBLISH framing (fixed header, topic, properties), the chunk header line (at
# most MAX_CHUNK_HEADER_BYTES, which the station enforces, then LF) and the chunk's bytes.
CHUNK_FRAMING_BYTES = PUBLISH_OVERHEAD_BYTES + MAX_CHUNK_HEADER_BYTES + 1
# A records message is the PUBLISH framing and whole ledger lines; a line travels alone when longer than a
# batch, so the broker's limit must hold the longest line the ledger allows.
RECORDS_FRAMING_BYTES = PUBLISH_OVERHEAD_BYTES
MIN_MESSAGE_KIB = -(-(MAX_LINE_BYTES + RECORDS_FRAMING_BYTES) // KIB)  # rounded up: 65
# The pre-event buffer holds prebuffer_seconds plus the GOP in progress (one second: the keyframe interval
# is fps frames), and the encoder's rate control overshoots its target on busy scenes; half again on top
# covers that and Python's per-frame overhead (a few hundred bytes a frame).
PREBUFFER_GOP_SECONDS = 1.0
PREBUFFER_MARGIN = 1.5

_SCHEMA: Schema = {
    "device": {"id": (str, ...), "officer": (str, ...), "store": (str, ...), "key": (str, ...),
               "enrolled_fingerprint": (str, "")},
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
        "memory_budget_mb": (int, 64),
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
        "max_message_kib": (int, DEFAULT_MAX_PACKET_BYTES // KIB),
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
    "recorder.memory_budget_mb": (4, 1_000_000),
    "workflow.reason_window_seconds": (1, 120),
    "sync.broker_port": (1, 65535),
    "sync.chunk_kib": (4, 16384),
    "sync.window_chunks": (1, 1024),
    "sync.batch_kib": (1, 4096),
    # MQTT caps a packet at 256 MiB - 1; below MIN_MESSAGE_KIB the longest ledger line could not be sent.
    "sync.max_message_kib": (MIN_MESSAGE_KIB, (256 * MIB - 1) // KIB),
    "sync.scan_seconds": (0.1, 3600),
    "sync.retry_seconds": (0.1, 3600),
    "sync.reply_timeout_seconds": (1, 3600),
    "sync.session_expiry_seconds": (60, 2**31 - 1),
    "sync.keep_hours": (0, 100_000),
    "sync.long_term_keep_days": (0, 100_000),
}

_TEXTS: dict[str, Text] = {
    "device.id": Text("a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}", pattern=DEVICE_ID_PATTERN),
    "device.enrolled_fingerprint": Text(
        'the device key\'s SHA-256 fingerprint (64 lowercase hex digits), or "" before enrollment',
        pattern=re.compile(r"(?:[0-9a-f]{64})?\Z"),
    ),
    "camera.backend": Text(choices=CAMERA_BACKENDS),
}


@dataclass(frozen=True)
class SyncSettings:
    """The uploader's settings (``[sync]``); ``bodycam-sync`` refuses to start without a broker host.

    ``broker_host``/``broker_port``: the station's Mosquitto. ``ca``/``cert``/``key``: PEM files of the
    station's CA and this device's MQTT client certificate and key (its CN is the device id).
    ``station_key``: the station's acknowledgement public key (PEM, hex or raw); acks signed by any other
    key are refused. ``chunk_kib``: segment chunk size (shrunk further if the broker announces a smaller
    maximum packet size). ``window_chunks``: chunks in flight before the station confirms them.
    ``batch_kib``: most ledger bytes per records message. ``max_message_kib``: the broker's maximum packet
    size (Mosquitto's ``max_packet_size``); chunks and batches must fit it with their framing.
    ``scan_seconds``: how often new evidence is looked for. ``retry_seconds``: wait
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
    max_message_bytes: int = DEFAULT_MAX_PACKET_BYTES
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
    memory_budget_bytes: int
    thresholds: StorageThresholds
    workflow: WorkflowConfig
    controls: ControlsConfig
    socket_path: Path
    socket_group: str
    sync: SyncSettings = SyncSettings()
    enrolled_fingerprint: str = ""  # the device key's SHA-256 fingerprint once enrolled; "" before
    health: HealthConfig = field(default_factory=HealthConfig)


def load_device_config(path: Path) -> DeviceConfig:
    source = display_path(path)
    return parse_device_config(read_toml(path, source), source)


def parse_device_config(data: dict[str, Any], source: str) -> DeviceConfig:
    values = typed_tables(data, _SCHEMA, _RANGES, source, other_tables=("controls", "health"), texts=_TEXTS)
    device, camera, recorder, workflow = values["device"], values["camera"], values["recorder"], values["workflow"]
    _field_checks(values, source)
    _cross_checks(values, source)
    procedures = _procedures(workflow, source)
    reasons = workflow["stop_reasons"]
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
        memory_budget_bytes=recorder["memory_budget_mb"] * MIB,
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
        enrolled_fingerprint=device["enrolled_fingerprint"],
        health=health_from_mapping(data["health"], source) if "health" in data else HealthConfig(),
    )


def _field_checks(values: dict[str, dict[str, Any]], source: str) -> None:
    """Each setting on its own, beyond its declared type and range."""
    device, camera, workflow = values["device"], values["camera"], values["workflow"]
    for side in ("width", "height"):
        if camera[side] % 2:  # the encoder's yuv420p halves each side for the colour planes
            raise refusal(source, f"camera.{side}", camera[side], "an even number of pixels (H.264 in yuv420p)")
    _check_stop_reasons(workflow["stop_reasons"], source)
    _check_officer(device["officer"], source)
    for key, value in (("device.store", device["store"]), ("device.key", device["key"]),
                       ("control_socket.path", values["control_socket"]["path"])):
        if not PRINTABLE.accepts(value):  # checked after the stop reasons and the officer, as always
            raise refusal(source, key, value, PRINTABLE.words())


def _procedures(workflow: dict[str, Any], source: str) -> dict[str, Procedure]:
    profiles_dir = Path(workflow["profiles"]) if workflow["profiles"] else None
    try:
        procedures = load_profiles(profiles_dir)
    except ConfigError as exc:  # names the profile file and its key; say which setting pointed there
        raise refusal(source, "workflow.profiles", workflow["profiles"],
                      f"a folder of valid procedure profiles ({exc})") from None
    if workflow["default_procedure"] not in procedures:
        raise refusal(source, "workflow.default_procedure", workflow["default_procedure"],
                      f"a loaded procedure ({', '.join(sorted(procedures))})")
    return procedures


def _check_officer(officer: str, source: str) -> None:
    """The officer is named in every record: the one officer-id rule (agent.evidence.record)."""
    if officer_problem(officer) is not None:
        raise refusal(source, "device.officer", officer,
                      f"non-empty printable text of 1-{MAX_OFFICER_CHARS} characters")


def _check_stop_reasons(reasons: list[Any], source: str) -> None:
    # WorkflowConfig checks the same; here the message names the config file's own key.
    key = "workflow.stop_reasons"
    if not all(isinstance(r, str) for r in reasons):
        raise refusal(source, key, reasons, "an array of strings")
    if not 1 <= len(reasons) <= MAX_STOP_REASONS:
        raise refusal(source, key, reasons, f"1 to {MAX_STOP_REASONS} reasons (a stop needs a reason to choose, and "
                      "the reason's number is beeped: more than nine beeps cannot be counted)")
    for number, reason in enumerate(reasons, start=1):
        if not reason.strip() or not reason.isprintable() or len(reason) > 100:
            raise refusal(source, f"{key}[{number}]", reason, "printable text of 1-100 characters")
    if len(set(reasons)) != len(reasons):
        twice = next(r for r in reasons if reasons.count(r) > 1)
        raise refusal(source, key, reasons, f"each reason once ({twice!r} appears twice)")


def prebuffer_need_bytes(prebuffer_seconds: float, bitrate: int) -> int:
    """Memory the pre-event buffer may take: its seconds plus the GOP in progress at ``bitrate``, with
    PREBUFFER_MARGIN for rate-control overshoot and per-frame overhead."""
    return int((prebuffer_seconds + PREBUFFER_GOP_SECONDS) * bitrate / 8 * PREBUFFER_MARGIN)


def _cross_checks(values: dict[str, dict[str, Any]], source: str) -> None:
    """Settings that are each fine alone but cannot work together; the message names both keys."""
    recorder, camera, sync = values["recorder"], values["camera"], values["sync"]
    if recorder["floor_mb"] > recorder["low_space_mb"]:
        raise refusal(source, "recorder.floor_mb", recorder["floor_mb"],
                      f"at most recorder.low_space_mb ({recorder['low_space_mb']}): the low-space warning must "
                      "come before recording stops at the floor")
    need = prebuffer_need_bytes(recorder["prebuffer_seconds"], camera["bitrate"])
    budget = recorder["memory_budget_mb"] * MIB
    if need > budget:
        raise refusal(source, "recorder.prebuffer_seconds", recorder["prebuffer_seconds"],
                      f"a pre-event buffer that fits recorder.memory_budget_mb ({recorder['memory_budget_mb']} MiB): "
                      f"at camera.bitrate {camera['bitrate']} it needs {_mib(need)} MiB "
                      f"(({recorder['prebuffer_seconds']:g} s + {PREBUFFER_GOP_SECONDS:g} s GOP) x bitrate/8 x "
                      f"{PREBUFFER_MARGIN:g}); shorten it, lower the bitrate or raise the budget")
    limit = sync["max_message_kib"] * KIB
    chunk_message = sync["chunk_kib"] * KIB + CHUNK_FRAMING_BYTES
    if chunk_message > limit:
        raise refusal(source, "sync.chunk_kib", sync["chunk_kib"],
                      f"a chunk whose message fits sync.max_message_kib ({sync['max_message_kib']} KiB = {limit} "
                      f"bytes): {sync['chunk_kib']} KiB + {CHUNK_FRAMING_BYTES} bytes of framing = {chunk_message}")
    records_message = sync["batch_kib"] * KIB + RECORDS_FRAMING_BYTES
    if records_message > limit:
        raise refusal(source, "sync.batch_kib", sync["batch_kib"],
                      f"a records batch whose message fits sync.max_message_kib ({sync['max_message_kib']} KiB = "
                      f"{limit} bytes): {sync['batch_kib']} KiB + {RECORDS_FRAMING_BYTES} bytes of framing = "
                      f"{records_message}")


def _mib(size: int) -> str:
    return f"{size / MIB:.1f}"


def _sync_settings(sync: dict[str, Any], source: str) -> SyncSettings:
    paths: dict[str, Path | None] = {}
    for name in ("ca", "cert", "key", "station_key"):
        value = sync[name]
        if not FILE_PATH.accepts(value):
            raise refusal(source, f"sync.{name}", value, FILE_PATH.words())
        paths[name] = Path(value) if value else None
    if sync["broker_host"] and not all(paths.values()):
        missing = next(name for name, path in paths.items() if path is None)
        raise refusal(source, f"sync.{missing}", "", f"a file path: required when sync.broker_host is set "
                      f"({sync['broker_host']!r})")
    return SyncSettings(
        broker_host=sync["broker_host"], broker_port=sync["broker_port"], ca=paths["ca"], cert=paths["cert"],
        key=paths["key"], station_key=paths["station_key"], chunk_bytes=sync["chunk_kib"] * 1024,
        window_chunks=sync["window_chunks"], batch_bytes=sync["batch_kib"] * 1024,
        max_message_bytes=sync["max_message_kib"] * KIB,
        scan_seconds=float(sync["scan_seconds"]), retry_seconds=float(sync["retry_seconds"]),
        reply_timeout_seconds=float(sync["reply_timeout_seconds"]),
        session_expiry_seconds=sync["session_expiry_seconds"], purge=sync["purge"],
        keep_hours=float(sync["keep_hours"]), long_term_keep_days=float(sync["long_term_keep_days"]),
    )
