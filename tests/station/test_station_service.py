"""The MQTT side: replies published before the incoming message is acknowledged to the broker, nothing
acknowledged after a storage fault, and (with a real Mosquitto) TLS, the persistent session and queued messages.
"""

from __future__ import annotations

import errno
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from broker_fixture import MosquittoBroker
from helpers import seeded_key, wait_for
from paho.mqtt.enums import CallbackAPIVersion
from station_support import STATION_KEY_SEED, Station, StoreFactory, station_config

from agent.evidence.ack import parse_ack, verify_ack
from agent.evidence.clock import SystemClock
from agent.evidence.keys import DeviceKey
from agent.evidence.store import StoreLayout
from sync.broker import STATION_USER
from sync.protocol import Hello, HelloReply, down_subscription, up_subscription, up_topic
from sync.station.index import SqliteIndex
from sync.station.receiver import Receiver
from sync.station.report import enroll_device
from sync.station.service import Incoming, StationService
from sync.station.store import FilesystemEvidenceStore

DEVICE = "dev-0001"


@dataclass
class Info:
    rc: int = mqtt.MQTT_ERR_SUCCESS


class FakeClient:
    """What StationService uses of paho's client; every call is recorded in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.on_connect: Any = None
        self.on_disconnect: Any = None
        self.on_message: Any = None

    def publish(self, topic: str, payload: bytes, qos: int) -> Info:
        self.calls.append(("publish", topic, qos))
        return Info()

    def ack(self, mid: int, qos: int) -> None:
        self.calls.append(("ack", mid, qos))

    def subscribe(self, topic: str, qos: int) -> None:
        self.calls.append(("subscribe", topic, qos))

    def connect_async(self, host: str, port: int, keepalive: int, clean_start: bool, properties: Any) -> None:
        self.calls.append(("connect", host, port, clean_start, properties.SessionExpiryInterval))

    def loop_start(self) -> None:
        self.calls.append(("loop_start",))

    def loop_stop(self) -> None:
        self.calls.append(("loop_stop",))

    def disconnect(self) -> None:
        self.calls.append(("disconnect",))


def service_for(station: Station) -> tuple[StationService, FakeClient]:
    client = FakeClient()
    return StationService(config=station.config, receiver=station.receiver, client=client), client  # type: ignore[arg-type]


def test_replies_are_published_before_the_message_is_acknowledged(station: Station) -> None:
    station.enroll(DEVICE, seeded_key(1))
    service, client = service_for(station)
    assert service.process(Incoming(up_topic(DEVICE, "hello"), Hello("s1", 1).encode(), 7, 1, 100))
    assert client.calls == [("publish", f"bodycam/{DEVICE}/down/hello", 1), ("ack", 7, 1)]
    # A refused message is acknowledged too (after its error notice): the broker must not send it again.
    assert service.process(Incoming(up_topic(DEVICE, "clock"), b"junk", 8, 1, 100))
    assert client.calls[2:] == [("publish", f"bodycam/{DEVICE}/down/error", 1), ("ack", 8, 1)]


def test_nothing_is_acknowledged_after_a_storage_fault(station: Station, make_store: StoreFactory,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    service, client = service_for(station)

    def full(*_args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(station.store, "append_records", full)
    lines = StoreLayout(root).ledger_path.read_bytes()
    assert not service.process(Incoming(up_topic(DEVICE, "records"), lines, 9, 1, 100))
    assert client.calls == []  # no reply, no PUBACK: the broker keeps the message for the next start
    assert station.receiver.fault is not None and "No space left" in station.receiver.fault
    assert [p.kind for p in station.problems()] == ["station-fault"]
    assert station.receiver.handle(up_topic(DEVICE, "hello"), Hello("s1", 1).encode()) == []


@dataclass
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass
class Flags:
    session_present: bool


@dataclass
class Reason:
    is_failure: bool


def test_run_connects_resumes_the_session_and_stops_cleanly(station: Station) -> None:
    station.enroll(DEVICE, seeded_key(1))
    service, client = service_for(station)
    stop = threading.Event()

    def network() -> None:
        """What paho's thread does: connect, then deliver one message; the test stops once it is acked."""
        try:
            deadline = time.monotonic() + 5
            while not client.calls and time.monotonic() < deadline:
                time.sleep(0.01)
            client.on_connect(client, None, Flags(True), Reason(False), None)
            client.on_message(client, None, Message(up_topic(DEVICE, "hello"), Hello("s1", 1).encode(), 3, 1))
            while ("ack", 3, 1) not in client.calls and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            stop.set()

    thread = threading.Thread(target=network)
    thread.start()
    assert service.run(stop) == 0  # the worker is this thread, as in bodycam-station serve
    thread.join(timeout=5)
    assert client.calls[0] == ("connect", "localhost", 8883, False, 86400)
    assert client.calls[1:] == [("loop_start",), ("subscribe", up_subscription(), 1),
                                ("publish", f"bodycam/{DEVICE}/down/hello", 1), ("ack", 3, 1), ("disconnect",),
                                ("loop_stop",)]
    assert service.connected.is_set()


# --- a real broker ----------------------------------------------------------------------------------------


class Serving:
    """``bodycam-station serve`` in a thread (the receiver and its index belong to that thread)."""

    def __init__(self, data: Path, broker: MosquittoBroker, device_key: DeviceKey) -> None:
        ca, cert, key = broker.client_tls(STATION_USER)
        self.config = station_config(data, broker={"host": broker.host, "port": broker.port, "ca": str(ca),
                                                   "cert": str(cert), "key": str(key),
                                                   "client_id": "station-under-test"})
        self.device_key = device_key
        self.stop = threading.Event()
        self.service: StationService | None = None
        self.result: list[int] = []
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        store = FilesystemEvidenceStore(self.config.data)
        index = SqliteIndex(self.config.index_path)
        try:
            enroll_device(index, DEVICE, self.device_key.public_key, 1, replace=False)
            receiver = Receiver.open(config=self.config, store=store, index=index,
                                     ack_key=seeded_key(STATION_KEY_SEED), clock=SystemClock())
            self.service = StationService(config=self.config, receiver=receiver)
            self.result.append(self.service.run(self.stop))
        finally:
            index.close()

    def wait_subscribed(self) -> bool:
        service: StationService = wait_for(lambda: self.service, 10, "the station's service to start")
        return service.subscribed.wait(10)

    def close(self) -> int:
        self.stop.set()
        self.thread.join(timeout=10)
        return self.result[0] if self.result else -1


def device_client(broker: MosquittoBroker) -> tuple[mqtt.Client, queue.Queue[tuple[str, bytes]]]:
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=mqtt.MQTTv5)
    ca, cert, key = broker.client_tls(DEVICE)
    client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
    client.on_message = lambda _c, _u, m: inbox.put((m.topic, bytes(m.payload)))
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_connect = lambda c, *_a: c.subscribe(down_subscription(DEVICE), qos=1)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    assert subscribed.wait(10), "the device could not subscribe"
    return client, inbox


def next_message(inbox: queue.Queue[tuple[str, bytes]], kind: str) -> bytes:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            topic, payload = inbox.get(timeout=0.2)
        except queue.Empty:
            continue
        if topic.endswith(f"/down/{kind}"):
            return payload
    raise AssertionError(f"no down/{kind} message within 10 s")


def test_over_a_real_broker_with_a_restart_in_between(tmp_path: Path, mosquitto: MosquittoBroker,
                                                      make_store: StoreFactory) -> None:
    root, key = make_store()
    lines = StoreLayout(root).ledger_path.read_bytes().splitlines(keepends=True)
    serving = Serving(tmp_path / "data", mosquitto, key)
    assert serving.wait_subscribed(), "the station did not subscribe"
    client, inbox = device_client(mosquitto)
    try:
        client.publish(up_topic(DEVICE, "hello"), Hello("s1", 1).encode(), qos=1)
        assert HelloReply.decode(next_message(inbox, "hello")).seq == 0
        client.publish(up_topic(DEVICE, "records"), b"".join(lines[:4]), qos=1)
        assert parse_ack(next_message(inbox, "ack")).ack.seq == 4
        assert serving.close() == 0
        # While the station is away the broker keeps what the device sends for the station's session.
        client.publish(up_topic(DEVICE, "records"), b"".join(lines[4:]), qos=1).wait_for_publish(5)
        serving = Serving(tmp_path / "data", mosquitto, key)
        signed = parse_ack(next_message(inbox, "ack"))
        verify_ack(signed, seeded_key(STATION_KEY_SEED).public_key, DEVICE)
        assert signed.ack.seq == 9
    finally:
        client.loop_stop()
        client.disconnect()
        serving.close()
    ledger = tmp_path / "data" / "devices" / DEVICE / "ledger.jsonl"
    assert ledger.read_bytes() == b"".join(lines)


def test_serve_command_runs_alone_and_stops_on_sigterm(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    ca, cert, key = mosquitto.client_tls(STATION_USER)
    config = tmp_path / "station.toml"
    config.write_text(
        f'[station]\nid = "st"\ndata = "{tmp_path / "data"}"\nkey = "{tmp_path / "ack.key"}"\n'
        f'[broker]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\nca = "{ca}"\ncert = "{cert}"\nkey = "{key}"\n')
    script = Path(sys.executable).parent / "bodycam-station"
    serve = subprocess.Popen([str(script), "serve", "--config", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stderr is not None
        deadline = time.monotonic() + 15
        seen = []
        while time.monotonic() < deadline:
            line = serve.stderr.readline()
            seen.append(line)
            if "connected to broker" in line:
                break
        else:
            pytest.fail("no connection logged: " + "".join(seen))
        second = subprocess.run([str(script), "serve", "--config", str(config)], capture_output=True, text=True,
                                timeout=30, check=False)
        assert second.returncode == 2
        assert second.stderr == f"bodycam-station: station data {tmp_path / 'data'}: in use by another receiver\n"
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=15) == 0
        assert "Traceback" not in serve.stderr.read()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
