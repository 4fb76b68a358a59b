"""The receiver on MQTT: paho-mqtt 2.x, MQTT 5 over mutual TLS, a persistent session, manual acknowledgement.

The network thread (paho's ``loop_start``, which also reconnects with backoff) only queues messages; one
worker thread (the caller of :meth:`StationService.run`) hands each to the :class:`Receiver`, publishes its
replies at QoS 1 and only then sends the broker the PUBACK for the incoming message. A message the receiver
has not finished with is therefore never acknowledged to the broker: after a crash or a stop the broker
delivers it again (the session survives: fixed client id, ``clean_start=False``, a session expiry), and the
receiver takes duplicates in its stride.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import ConfigError
from firmware_config.station_config import StationConfig, require_broker_tls
from sync.protocol import up_subscription
from sync.station.periodic import Periodic
from sync.station.receiver import Receiver

log = logging.getLogger(__name__)
# The broker sends at most this many unacknowledged messages: it bounds the queue (and its memory) while the
# worker is busy storing.
RECEIVE_MAXIMUM = 32
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60
POLL_S = 0.5
# Group commit limits: one fdatasync per staged file and one index commit per batch.
BATCH_MESSAGES = 64
BATCH_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_us: int


def tls_client(config: StationConfig, client_id: str, tls: tuple[Path, Path, Path] | None = None) -> mqtt.Client:
    """An MQTT 5 client with the receiver's TLS files (or ``tls``: CA, certificate, key); ConfigError naming the
    keys when they cannot be loaded."""
    ca, cert, key = tls or require_broker_tls(config)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    try:
        client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError, ValueError) as exc:
        named = "keys 'broker.ca/cert/key'" if tls is None else f"{cert}, {key}"
        raise ConfigError(f"{config.source}: {named}: cannot load the TLS files ({exc})") from None
    # A failing callback would otherwise end the network thread, and with it every reconnect.
    client.suppress_exceptions = True
    return client


def make_client(config: StationConfig) -> mqtt.Client:
    """The receiver's MQTT client: MQTT 5, TLS with its certificate, manual acks, reconnect backoff."""
    client = tls_client(config, config.broker.client_id)
    client.manual_ack_set(True)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    client.enable_logger(logging.getLogger("paho"))
    return client


def connect_properties(config: StationConfig) -> Properties:
    # paho's Properties constructor carries no type hints.
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = config.broker.session_expiry_seconds
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    return properties


class StationService:
    def __init__(self, *, config: StationConfig, receiver: Receiver, client: mqtt.Client | None = None,
                 periodic: Sequence[Periodic] = (), idle: Callable[[], bool] | None = None) -> None:
        self.config = config
        # Work between batches (the scrub's slices: sync/station/scrub.py); True while it has more to do.
        self.idle = idle
        self.receiver = receiver
        self.periodic = list(periodic)  # run between batches, on this (the worker's) thread
        self.client = client if client is not None else make_client(config)
        self.inbox: queue.Queue[Incoming] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # --- network thread ---------------------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    _properties: Properties | None) -> None:
        broker = f"{self.config.broker.host}:{self.config.broker.port}"
        if reason.is_failure:
            log.error("broker %s refused the connection: %s (retrying)", broker, reason)
            return
        log.info("connected to broker %s (session %s)", broker,
                 "resumed" if flags.session_present else "new: messages sent while away may be lost")
        # Subscribing again on every connect costs nothing and covers a broker that lost the session.
        client.subscribe(up_subscription(), qos=1)
        self.connected.set()

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list[ReasonCode],
                      _properties: Properties | None) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            # The broker's ACL must let the user "station" read bodycam/+/up/#: without it nothing arrives.
            log.error("broker refused the subscription to %s: %s", up_subscription(), ", ".join(refused))
            return
        log.info("subscribed to %s", up_subscription())
        self.subscribed.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: mqtt.DisconnectFlags, reason: ReasonCode,
                       _properties: Properties | None) -> None:
        self.connected.clear()
        self.subscribed.clear()
        log.warning("disconnected from broker %s:%d: %s (reconnecting)", self.config.broker.host,
                    self.config.broker.port, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(Incoming(message.topic, bytes(message.payload), message.mid, message.qos,
                                self.receiver.clock.now().wall_us))

    # --- worker -----------------------------------------------------------------------------------------------

    def process(self, item: Incoming) -> bool:
        """Handle one message (see :meth:`process_batch`)."""
        return self.process_batch([item])

    def process_batch(self, items: list[Incoming]) -> bool:
        """Take in messages with one group commit, publish the replies, then acknowledge them to the broker.

        False after a fault: then nothing of the batch is acknowledged, and the broker keeps the messages
        for the next start, which reconciles the store."""
        replies = self.receiver.handle_batch([(i.topic, i.payload, i.received_us) for i in items])
        if self.receiver.fault is not None:
            log.error("stopping: %s", self.receiver.fault)
            return False
        for reply in replies:
            info = self.client.publish(reply.topic, reply.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                # Queued by paho and sent after the reconnect; the device asks again if it never arrives.
                log.info("topic %s: reply queued while the broker is away (%s)", reply.topic,
                         mqtt.error_string(info.rc))
        for item in items:
            if item.qos > 0:
                self.client.ack(item.mid, item.qos)
        return True

    def next_batch(self, first: Incoming) -> list[Incoming]:
        """``first`` and whatever else is already waiting, up to the batch limits: under load batches grow,
        so the cost of each fsync is shared by more messages; when idle a message goes alone, at once."""
        batch, size = [first], len(first.payload)
        while len(batch) < BATCH_MESSAGES and size < BATCH_BYTES:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            size += len(item.payload)
        return batch

    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` is set (0) or the receiver faults (1)."""
        broker = self.config.broker
        self.client.connect_async(broker.host, broker.port, keepalive=broker.keepalive_seconds, clean_start=False,
                                  properties=connect_properties(self.config))
        self.client.loop_start()
        log.info("station %s: receiving from %s:%d as %s", self.config.station_id, broker.host, broker.port,
                 broker.client_id)
        try:
            more = False
            while not stop.is_set():
                for task in self.periodic:
                    task.poll(time.monotonic())
                try:
                    item = self.inbox.get(timeout=0 if more else POLL_S)
                except queue.Empty:
                    more = self.idle() if self.idle is not None else False
                    continue
                if not self.process_batch(self.next_batch(item)):
                    return 1
                if self.idle is not None:
                    more = self.idle()
            log.info("station %s: stopping (%d message(s) left to the broker)", self.config.station_id,
                     self.inbox.qsize())
            return 0
        finally:
            self.client.disconnect()
            self.client.loop_stop()
