"""An in-memory Transport (sync/uploader/transport.py) wired to the station's receiver, without MQTT.

``MemoryTransport(receiver, device)`` hands every message the uploader publishes to ``Receiver.handle`` at
once and queues the replies for this device's down topics as the broker would deliver them, so the uploader's
session logic runs against the real receiver in memory (the real-broker tests keep the wiring). ``drop_after``
publishes: the connection is then lost (a "disconnected" event), as when the broker goes away.
"""

from __future__ import annotations

import time
from collections import deque

from agent.errors import ProtocolError
from sync.protocol import down_topic
from sync.station.receiver import Receiver
from sync.uploader.transport import ConnectInfo, Event


class MemoryTransport:
    def __init__(self, receiver: Receiver, device: str, max_packet: int | None = None,
                 drop_after: int | None = None) -> None:
        self.receiver = receiver
        self.device = device
        self.info = ConnectInfo(False, None, None)
        self.closed = False
        self.published: list[tuple[str, bytes]] = []
        self._max_packet = max_packet
        self._drop_after = drop_after
        self._events: deque[Event] = deque()

    @property
    def broker(self) -> str:
        return "in-memory broker"

    def open(self) -> ConnectInfo:
        self.info = ConnectInfo(False, self._max_packet, None)
        return self.info

    def next_event(self, timeout: float | None) -> Event | None:
        if self._events:
            return self._events.popleft()
        if timeout:
            time.sleep(min(timeout, 0.001))  # nothing can arrive meanwhile: the receiver answers at once
        return None

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        if self.closed:
            raise ProtocolError(f"{self.broker}: connection closed; cannot publish to {topic}")
        if self._drop_after is not None and len(self.published) >= self._drop_after:
            self._events.append(Event("disconnected", reason="dropped by the test"))
            return
        self.published.append((topic, payload))
        for out in self.receiver.handle(topic, payload):
            assert self.receiver.fault is None, self.receiver.fault
            if out.topic.startswith(down_topic(self.device, "")):
                self._events.append(Event("message", topic=out.topic, payload=out.payload,
                                          received_us=time.time_ns() // 1000))

    def flush(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        self.closed = True
