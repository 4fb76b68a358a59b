"""A real Mosquitto broker per test, set up by sync/broker.py, and MQTT 5 + TLS clients to talk to it.

Import in tests/sync: ``from broker_fixture import MosquittoBroker, connect, subscribe`` (the ``mosquitto``
fixture itself comes from tests/sync/sync_fixtures.py). No pytest import at module level except for skip/fail.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sync.broker import (
    STATION_USER,
    TOOLS_USER,
    BrokerFiles,
    free_port,
    issue_device_certificate,
    write_broker_setup,
)

MOSQUITTO_FALLBACK = Path("/usr/sbin/mosquitto")  # Debian installs it outside a normal user's PATH
START_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0


def mosquitto_binary() -> Path:
    """The broker's executable; skips the test without one, except in CI (``$CI`` set), where it fails."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    if os.access(MOSQUITTO_FALLBACK, os.X_OK):
        return MOSQUITTO_FALLBACK
    message = "mosquitto is not installed (scripts/bootstrap.sh installs the Debian package as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class BrokerConnectError(Exception):
    """A test client could not connect: TLS refused, CONNACK refused, or no answer in time."""


@dataclass
class Delivery:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None


@dataclass
class PublishResult:
    """What a QoS 1/2 PUBLISH got back; ``reason_code`` is None until the PUBACK arrives."""

    mid: int
    done: threading.Event = field(default_factory=threading.Event)
    reason_code: ReasonCode | None = None


class TestClient(mqtt.Client):
    """A paho client that records its CONNACK, its PUBACK reason codes and every message it receives."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, client_id: str) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.connected = threading.Event()
        self.connack_reason: ReasonCode | None = None
        self.connack_properties: Properties | None = None
        self.session_present = False
        self.disconnect_reason: ReasonCode | None = None
        self.inbox: queue.Queue[Delivery] = queue.Queue()
        self._published: dict[int, PublishResult] = {}
        self._subacks: dict[int, tuple[threading.Event, list[ReasonCode]]] = {}
        self._lock = threading.RLock()  # paho may call on_publish from inside publish()
        self.on_connect = self._connack
        self.on_disconnect = self._disconnected
        self.on_message = self._message
        self.on_publish = self._puback
        self.on_subscribe = self._suback
        # An assertion in a test must not be hidden by a dead network thread.
        self.suppress_exceptions = True

    def _connack(self, _c: Any, _u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, props: Properties | None) -> None:
        self.connack_reason, self.connack_properties = rc, props
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _disconnected(self, _c: Any, _u: Any, _f: mqtt.DisconnectFlags, rc: ReasonCode, _p: Any) -> None:
        self.disconnect_reason = rc
        self.connected.set()  # wakes a connect() waiting for a CONNACK that will never come

    def _message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(Delivery(message.topic, bytes(message.payload), message.qos, message.retain,
                                getattr(message, "properties", None)))

    def _puback(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        with self._lock:
            result = self._published.setdefault(mid, PublishResult(mid))
        result.reason_code = rc
        result.done.set()

    def _suback(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        with self._lock:
            event, stored = self._subacks.setdefault(mid, (threading.Event(), []))
        stored.extend(codes)
        event.set()

    @property
    def max_packet_size(self) -> int | None:
        """The CONNACK's Maximum Packet Size property, when the broker sent one."""
        value = getattr(self.connack_properties, "MaximumPacketSize", None)
        return None if value is None else int(value)

    def publish_wait(self, topic: str, payload: bytes, qos: int = 1, timeout: float = 5.0) -> PublishResult:
        """Publish and wait for the broker's PUBACK (QoS 1); the result holds its reason code."""
        with self._lock:
            info = self.publish(topic, payload, qos=qos)
            result = self._published.setdefault(info.mid, PublishResult(info.mid))
        if qos > 0 and not result.done.wait(timeout):
            raise TimeoutError(f"no PUBACK for {topic} within {timeout} s")
        return result

    def subscribe_wait(self, topic: str, qos: int = 1, timeout: float = 5.0) -> list[ReasonCode]:
        """Subscribe and return the SUBACK's reason codes (>= 128 means refused)."""
        with self._lock:
            rc, mid = self.subscribe(topic, qos=qos)
            if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
                raise BrokerConnectError(f"subscribe to {topic} failed locally: {mqtt.error_string(rc)}")
            event, codes = self._subacks.setdefault(mid, (threading.Event(), []))
        if not event.wait(timeout):
            raise TimeoutError(f"no SUBACK for {topic} within {timeout} s")
        return codes

    def next_message(self, timeout: float = 5.0) -> Delivery | None:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.disconnect()
        self.loop_stop()


class MosquittoBroker:
    """One Mosquitto process on a free loopback port, its files under ``folder``."""

    host = "127.0.0.1"

    def __init__(self, folder: Path, devices: Sequence[str] = ("dev-a", "dev-b"),
                 max_packet_bytes: int = 4 * 1024 * 1024) -> None:
        self.folder = folder
        self.binary = mosquitto_binary()
        self.port = free_port(self.host)
        self.log_path = folder / "mosquitto.log"
        self.clients: list[TestClient] = []
        self._process: subprocess.Popen[bytes] | None = None
        # Run as root, Mosquitto drops to the "mosquitto" user, who cannot read a 0700 pytest tmp folder.
        self.files: BrokerFiles = write_broker_setup(
            folder, port=self.port, bind=self.host, devices=devices, max_packet_bytes=max_packet_bytes,
            user="root" if os.geteuid() == 0 else None,
        )
        self.max_packet_bytes = max_packet_bytes

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [str(self.binary), "-c", str(self.files.conf)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no attempt"
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"mosquitto exited at start (code {self._exit_code()}):\n{self.log_tail()}")
            try:
                # As the station tools: as "station" the probe would push a running receiver off (client id =
                # certificate name) and its clean start would discard the receiver's session.
                connect(self, TOOLS_USER, track=False, timeout=2.0).close()
                return
            except (BrokerConnectError, OSError, TimeoutError) as exc:
                last = str(exc)
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto not accepting TLS within {START_TIMEOUT_S} s ({last}):\n{self.log_tail()}")

    def _exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        """SIGTERM and wait: Mosquitto saves its persistence database on the way out."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port with the same configuration and persistence."""
        self.stop()
        self.start()

    def client_tls(self, user: str) -> tuple[Path, Path, Path]:
        """(CA certificate, client certificate, client key) for the station, its tools or a device id."""
        if user == STATION_USER:
            return self.files.ca_cert, self.files.station_cert, self.files.station_key
        if user == TOOLS_USER:
            return self.files.ca_cert, self.files.tools_cert, self.files.tools_key
        cert, key = self.files.clients.get(user) or issue_device_certificate(self.folder, user)
        return self.files.ca_cert, cert, key

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()
        self.stop()


def connect(
    broker: MosquittoBroker,
    user: str | None,
    *,
    client_id: str | None = None,
    clean_start: bool = True,
    tls: tuple[Path, Path | None, Path | None] | None = None,
    properties: Properties | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
    track: bool = True,
) -> TestClient:
    """A started MQTT 5 + TLS client connected as ``user`` (the station or a device id); raises if refused.

    ``tls`` overrides the (CA, certificate, key) triple, e.g. a foreign CA's certificate or no certificate.
    """
    if tls is None:
        if user is None:
            raise ValueError("connect: give a user or an explicit tls triple")
        tls = broker.client_tls(user)
    ca, cert, key = tls
    client = TestClient(client_id or f"{user or 'anonymous'}-{os.getpid()}-{time.monotonic_ns()}")
    client.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None)
    client.reconnect_delay_set(1, 2)
    try:
        client.connect(broker.host, broker.port, keepalive=30, clean_start=clean_start, properties=properties)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerConnectError(f"{user}: connection refused at TCP/TLS: {exc}") from exc
    client.loop_start()
    # Under TLS 1.3 the broker checks the client certificate after the client's side of the handshake is done:
    # a refused certificate shows up here, as a disconnect before any CONNACK, not as an error from connect().
    if not client.connected.wait(timeout) or client.connack_reason is None or client.connack_reason.is_failure:
        client.loop_stop()
        client.disconnect()
        reason = client.connack_reason or client.disconnect_reason or "no CONNACK in time"
        raise BrokerConnectError(f"{user}: not connected ({reason})")
    if track:
        broker.clients.append(client)
    return client
