"""The uploader's transport port: what a session needs from a connection to the station's broker.

sync/uploader/connection.py implements it over MQTT 5 + TLS (paho); the uploader's tests also run sessions
over an in-memory transport wired to the station's receiver (tests/uploader/memory_transport.py), as the
receiver itself is tested without MQTT. ``Uploader(..., connect=...)`` makes one per connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from firmware_config.device_config import SyncSettings


@dataclass(frozen=True)
class Event:
    """Something the transport reported: kind is "connected", "subscribed", "message" or "disconnected"."""

    kind: str
    topic: str = ""
    payload: bytes = b""
    received_us: int = 0  # wall clock when it arrived (t4 of the clock exchange)
    reason: str = ""
    session_present: bool = False
    max_packet: int | None = None
    receive_max: int | None = None
    failed: bool = False


@dataclass(frozen=True)
class ConnectInfo:
    session_present: bool
    max_packet: int | None  # the broker's Maximum Packet Size, None when it sets no limit
    receive_max: int | None


class Transport(Protocol):
    """One connection, used until it drops and then thrown away; every failure is a ProtocolError."""

    info: ConnectInfo
    closed: bool

    @property
    def broker(self) -> str:
        """What the messages name it by (``broker HOST:PORT``)."""

    def open(self) -> ConnectInfo:
        """Connect and subscribe to this device's down topics."""

    def next_event(self, timeout: float | None) -> Event | None:
        """The next event, in order (None after ``timeout`` seconds; 0: only what is there already)."""

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Send a message (at least once); ``retain``: kept for later subscribers."""

    def flush(self, timeout: float) -> bool:
        """Wait until everything published was taken; False on timeout."""

    def close(self) -> None:
        """Disconnect; safe to call twice."""


# Connect(settings, device_id) -> a transport not yet opened.
Connect = Callable[[SyncSettings, str], Transport]
