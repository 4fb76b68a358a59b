"""One MQTT 5 + TLS connection of the uploader to the station's broker (paho-mqtt 2.x).

paho runs its network loop in its own thread; the callbacks here only put events on a queue (they never
raise: an exception in a callback would kill paho's loop). The uploader's thread takes the events and
publishes. A connection is used until it drops and is then thrown away: the next one starts a new sync
session from the station's watermark and have-ranges, rather than letting paho replay the messages of a
session that has ended.

Persistent session: the client id is the device id, ``clean_start=False`` and a session expiry interval,
so acknowledgements the station sends while the device is away wait at the broker.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import ProtocolError
from firmware_config.device_config import SyncSettings
from sync.protocol import down_subscription
from sync.uploader.transport import ConnectInfo, Event

log = logging.getLogger(__name__)
KEEPALIVE_S = 30
# paho's default; the broker's Receive Maximum (from the CONNACK) lowers it: more unacknowledged
# QoS 1 messages than that and an MQTT 5 broker disconnects the client.
DEFAULT_INFLIGHT = 20


class Connection:
    """The Transport over MQTT (sync/uploader/transport.py): a connected, subscribed client; ``next_event``
    hands out what the station sends, in order."""

    def __init__(self, settings: SyncSettings, device_id: str) -> None:
        self.settings = settings
        self.device_id = device_id
        self.events: queue.Queue[Event] = queue.Queue()
        self._early: deque[Event] = deque()  # taken off the queue while connecting, handed out first
        self.info = ConnectInfo(False, None, None)
        self.closed = False
        self._published = 0
        self._pubacks = 0
        self._client = self._new_client(DEFAULT_INFLIGHT)

    def _new_client(self, inflight: int) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=mqtt.MQTTv5)
        # Should a callback still fail (a paho bug), log it rather than kill the network loop silently.
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        # paho cannot change this once connected; the broker's Receive Maximum may ask for less (see open).
        client.max_inflight_messages_set(inflight)
        # paho reconnects by itself inside loop_start; the uploader closes a dropped connection first.
        delay = max(1, int(self.settings.retry_seconds))
        client.reconnect_delay_set(delay, delay)
        client.connect_timeout = self.settings.reply_timeout_seconds
        # Counted, not tracked by message id: only paho's network thread increments the PUBACK count.
        self._published = self._pubacks = 0
        return client

    @property
    def broker(self) -> str:
        return f"broker {self.settings.broker_host}:{self.settings.broker_port}"

    # ---------------------------------------------------------------- paho callbacks: queue only

    def _on_connect(self, _c: Any, _u: Any, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    props: Properties | None) -> None:
        self.events.put(Event(
            "connected", reason=str(reason), session_present=bool(flags.session_present),
            max_packet=_int_property(props, "MaximumPacketSize"), receive_max=_int_property(props, "ReceiveMaximum"),
            failed=bool(reason.is_failure),
        ))

    def _on_disconnect(self, _c: Any, _u: Any, _f: mqtt.DisconnectFlags, reason: ReasonCode,
                       _p: Properties | None) -> None:
        self.events.put(Event("disconnected", reason=str(reason)))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[ReasonCode], _p: Properties | None) -> None:
        refused = [str(code) for code in codes if code.is_failure]
        self.events.put(Event("subscribed", reason=", ".join(refused), failed=bool(refused)))

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _reason: ReasonCode, _p: Properties | None) -> None:
        self._pubacks += 1

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.events.put(Event("message", topic=message.topic, payload=bytes(message.payload),
                              received_us=time.time_ns() // 1000))

    # ---------------------------------------------------------------- the uploader's side

    def open(self) -> ConnectInfo:
        """Connect (TLS, persistent session), subscribe to this device's down topics; raise ProtocolError."""
        event = self._connect()
        if event.receive_max is not None and event.receive_max < DEFAULT_INFLIGHT:
            # More unacknowledged QoS 1 messages than the broker's Receive Maximum and it disconnects us;
            # paho only takes a new limit before connecting, so connect again with it.
            self._client.disconnect()
            self._client.loop_stop()
            self._client = self._new_client(max(1, event.receive_max))
            event = self._connect()
        self.info = ConnectInfo(event.session_present, event.max_packet, event.receive_max)
        # Subscribed on every connect: a session the broker did not keep has no subscription.
        result, _mid = self._client.subscribe(down_subscription(self.device_id), qos=1)
        if result != mqtt.MQTT_ERR_SUCCESS:
            self.close()
            raise ProtocolError(f"{self.broker}: cannot subscribe ({mqtt.error_string(result)})")
        event = self._expect("subscribed", "SUBACK")
        if event.failed:
            self.close()
            raise ProtocolError(f"{self.broker}: subscription to {down_subscription(self.device_id)} refused "
                                f"({event.reason})")
        log.debug("%s: connected (session present: %s, maximum packet size %s, receive maximum %s)",
                  self.broker, self.info.session_present, self.info.max_packet, self.info.receive_max)
        return self.info

    def _connect(self) -> Event:
        s = self.settings
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
        props.SessionExpiryInterval = s.session_expiry_seconds
        try:
            self._client.tls_set(ca_certs=str(s.ca), certfile=str(s.cert), keyfile=str(s.key))
            self._client.connect(s.broker_host, s.broker_port, keepalive=KEEPALIVE_S, clean_start=False,
                                 properties=props)
            sock = self._client.socket()
            if isinstance(sock, socket.socket):  # an SSLSocket is one
                # Small control messages (hello, offers) must not wait for Nagle's algorithm (~40 ms each).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.close()
            raise ProtocolError(f"{self.broker}: cannot connect ({exc})") from None
        self._client.loop_start()
        event = self._expect("connected", "CONNACK")
        if event.failed:
            self.close()
            raise ProtocolError(f"{self.broker}: connection refused ({event.reason})")
        return event

    def _expect(self, kind: str, what: str) -> Event:
        """Wait for the event ``kind``; messages that arrive first (queued acks) are kept, in order, for later."""
        deadline = time.monotonic() + self.settings.reply_timeout_seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise ProtocolError(f"{self.broker}: no {what} within {self.settings.reply_timeout_seconds:g} s")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event.kind == kind:
                return event
            if event.kind == "disconnected":
                self.close()
                # The broker ends a refused TLS handshake this way, before any MQTT reason code can be sent.
                hint = ("; a broker that refuses this device's certificate (revoked, or issued by another CA) "
                        "looks like this" if kind == "connected" else "")
                raise ProtocolError(f"{self.broker}: disconnected while waiting for the {what} ({event.reason}){hint}")
            self._early.append(event)

    def next_event(self, timeout: float | None) -> Event | None:
        """The next event (None after ``timeout`` seconds; 0: only what is there already)."""
        if self._early:
            return self._early.popleft()
        try:
            return self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            return None

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Queue a QoS 1 message (``retain``: the broker keeps it for later subscribers); raise ProtocolError
        when the connection is gone."""
        if self.closed:
            raise ProtocolError(f"{self.broker}: connection closed; cannot publish to {topic}")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ProtocolError(f"{self.broker}: cannot publish to {topic} ({mqtt.error_string(info.rc)})")
        self._published += 1

    def flush(self, timeout: float) -> bool:
        """Wait until the broker has acknowledged every message published; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._pubacks < self._published and not self.closed:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return self._pubacks >= self._published

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._client.disconnect()
        self._client.loop_stop()


def _int_property(props: Properties | None, name: str) -> int | None:
    value = getattr(props, name, None) if props is not None else None
    return None if value is None else int(value)
