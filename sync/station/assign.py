"""``bodycam-station assign --config FILE --device D --officer O``: assign the officer who carries a device.

The station signs the assignment with its acknowledgement key (agent/evidence/assignment.py) and publishes it
RETAINED at QoS 1 on ``bodycam/D/down/assignment`` through its broker, with the station tools' own client
certificate (``broker/station-tools.crt``, user ``station-tools``, which the ACL lets write only
``bodycam/+/down/assignment``). Not the receiver's: the broker makes a client's id its certificate name, so a
second connection as ``station`` would push the running receiver off and, with a clean start, discard the
messages its session holds. The broker keeps the newest assignment per device and hands it
to the device's uploader at every connect; the device records it once. Only after the broker's PUBACK is the
assignment stored in the station's index (:meth:`SqliteIndex.add_assignment`), where ``status`` shows it.

An unknown or revoked device, an officer id that is not printable text of 1-64 characters, or no
acknowledgement key: refused, nothing published.
"""

from __future__ import annotations

import argparse
import queue
import sqlite3
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.cliargs import device_id_arg
from agent.errors import KeyFileError, ProtocolError, StoreError, UsageError
from agent.evidence.assignment import Assignment, SignedAssignment, new_serial, sign_assignment
from agent.evidence.clock import SystemClock
from agent.evidence.fsutil import display_path
from agent.evidence.keys import load_device_key
from agent.evidence.record import officer_problem
from firmware_config.station_config import StationConfig, require_broker_tls
from sync.broker import TOOLS_USER
from sync.protocol import down_topic
from sync.station.certificates import broker_folder
from sync.station.index import technician_index
from sync.station.model import AssignmentRow
from sync.station.service import tls_client

TIMEOUT_S = 15.0


def signed_assignment(config: StationConfig, device: str, officer: str, now_us: int) -> SignedAssignment:
    """Check the device and the officer against the index and sign; UsageError says what is refused."""
    problem = officer_problem(officer)
    if problem is not None:
        raise UsageError(f"--officer: {problem}; nothing published")
    if not config.index_path.exists():
        raise UsageError(f"station data {display_path(config.data)}: no index yet; device {device} is not enrolled")
    with technician_index(config.index_path) as index:
        row = index.device(device)
    if row is None:
        raise UsageError(f"device {device}: not enrolled at this station; nothing published")
    if row.revoked:
        raise UsageError(f"device {device}: revoked; nothing published")
    if not config.key.exists():
        raise KeyFileError(f"key file {display_path(config.key)}: the station has no acknowledgement key yet "
                           "(devices could not check an assignment); nothing published")
    key = load_device_key(config.key)
    assignment = Assignment(config.station_id, key.fingerprint, device, officer, now_us, new_serial())
    return sign_assignment(assignment, key)


def tools_tls(config: StationConfig) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) of the station tools' identity, beside the CA ``broker.ca`` names (where init puts
    it); KeyFileError saying how to make it when a station set up before it existed lacks it."""
    ca, _cert, _key = require_broker_tls(config)
    folder = broker_folder(ca, config.source)
    cert, key = folder / f"{TOOLS_USER}.crt", folder / f"{TOOLS_USER}.key"
    for path in (cert, key):
        if not path.exists():
            raise KeyFileError(f"station tools' certificate {display_path(path)}: missing; run bodycam-station init "
                               "--dir <station folder> again to create it, then restart the broker "
                               "(docs/provisioning.md, Upgrading); nothing published")
    return ca, cert, key


def publish_retained(config: StationConfig, topic: str, payload: bytes, timeout: float = TIMEOUT_S) -> None:
    """Publish ``payload`` retained at QoS 1 and wait for the broker's PUBACK; ProtocolError when it did not
    take it (not reachable, refused the connection, or refused the message)."""
    broker = f"broker {config.broker.host}:{config.broker.port}"
    events: queue.Queue[tuple[str, ReasonCode]] = queue.Queue()
    client = tls_client(config, TOOLS_USER, tools_tls(config))

    def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None) -> None:
        events.put(("connected", reason))

    def on_publish(_c: Any, _u: Any, _mid: int, reason: ReasonCode, _p: Properties | None) -> None:
        events.put(("published", reason))

    def on_disconnect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None) -> None:
        events.put(("disconnected", reason))

    client.on_connect, client.on_publish, client.on_disconnect = on_connect, on_publish, on_disconnect
    client.connect_timeout = timeout
    try:
        client.connect(config.broker.host, config.broker.port, keepalive=30, clean_start=True)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ProtocolError(f"{broker}: cannot connect ({exc}); nothing published") from None
    client.loop_start()
    try:
        _expect(events, "connected", timeout, broker, "CONNACK")
        info = client.publish(topic, payload, qos=1, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ProtocolError(f"{broker}: cannot publish to {topic} ({mqtt.error_string(info.rc)})")
        _expect(events, "published", timeout, broker, f"PUBACK for {topic}")
    finally:
        client.disconnect()
        client.loop_stop()


def _expect(events: queue.Queue[tuple[str, ReasonCode]], kind: str, timeout: float, broker: str, what: str) -> None:
    try:
        got, reason = events.get(timeout=timeout)
    except queue.Empty:
        raise ProtocolError(f"{broker}: no {what} within {timeout:g} s; the assignment may not be kept") from None
    if got != kind or reason.is_failure:
        raise ProtocolError(f"{broker}: {what}: {got} ({reason}); the assignment was not taken")


def record_assignment(config: StationConfig, signed: SignedAssignment) -> None:
    """Keep the published assignment in the index, where ``status`` finds it."""
    a = signed.assignment
    try:
        with technician_index(config.index_path) as index:
            index.add_assignment(AssignmentRow(a.device, a.officer, a.issued_wall_us, a.serial), signed.text())
    except (StoreError, sqlite3.Error) as exc:
        raise StoreError(f"index {display_path(config.index_path)}: assignment of {a.officer!r} to {a.device} was "
                         f"published but not recorded here ({exc})") from None


def assign(config: StationConfig, device: str, officer: str) -> SignedAssignment:
    signed = signed_assignment(config, device, officer, SystemClock().now().wall_us)
    publish_retained(config, down_topic(device, "assignment"), signed.to_line())
    record_assignment(config, signed)
    return signed


def _assign_command(config: StationConfig, args: argparse.Namespace) -> int:
    signed = assign(config, args.device, args.officer)
    a = signed.assignment
    print(f"device {a.device}: officer {a.officer!r} assigned by station {a.station} (serial {a.serial}); "
          "published retained, the device records it at its next connect")
    return 0


def add_assign_command(commands: Any) -> None:
    """``assign`` on ``bodycam-station``'s sub-command parser."""
    text = "assign the officer who carries a device (signed, published retained to the device)"
    sub = commands.add_parser("assign", help=text, description=text)
    sub.add_argument("--config", type=Path, required=True, help="the station's TOML config file")
    sub.add_argument("--device", type=device_id_arg, required=True, help="the device id")
    sub.add_argument("--officer", required=True, help="the officer id (printable, 1-64 characters)")


ASSIGN_COMMANDS: dict[str, Callable[[StationConfig, argparse.Namespace], int]] = {"assign": _assign_command}
