"""Issue 12, fault 3: a client's MQTT client id is its certificate identity, so no enrolled device can take over
the receiver's connection or session, or another device's (a real Mosquitto with the generated config)."""

from __future__ import annotations

import time

import pytest
from broker_fixture import MosquittoBroker, TestClient, connect
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_config.station_config import BrokerSettings
from sync.broker import STATION_USER

ATTEMPTS = 5
RECEIVER_ID = BrokerSettings().client_id  # what `bodycam-station serve` asks for by default
# Every client id an attacker would try: the receiver's configured one, the receiver's certificate name and the
# other device's id.
SPOOFED = list(dict.fromkeys([RECEIVER_ID, STATION_USER, "bodycam-station", "dev-a"]))


def session_properties() -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    return properties


def takeover_lines(broker: MosquittoBroker, client_id: str) -> list[str]:
    return [line for line in broker.log_tail(10_000).splitlines()
            if f"Client {client_id} already connected, closing old connection" in line]


def spoof(broker: MosquittoBroker, client_id: str, attempts: int = ATTEMPTS) -> None:
    """dev-b, with its own genuine certificate, connects again and again asking for ``client_id``."""
    for _ in range(attempts):
        connect(broker, "dev-b", client_id=client_id, track=False).close()


@pytest.mark.parametrize("spoofed", SPOOFED)
def test_a_device_asking_for_anothers_client_id_pushes_nobody_off(mosquitto: MosquittoBroker, spoofed: str) -> None:
    victims: dict[str, TestClient] = {
        STATION_USER: connect(mosquitto, STATION_USER, client_id=RECEIVER_ID, clean_start=False,
                              properties=session_properties()),
        "dev-a": connect(mosquitto, "dev-a", client_id="dev-a", clean_start=False, properties=session_properties()),
    }
    victims[STATION_USER].subscribe_wait("bodycam/+/up/#")
    victims["dev-a"].subscribe_wait("bodycam/dev-a/down/#")

    spoof(mosquitto, spoofed)

    time.sleep(0.3)  # a takeover's DISCONNECT would have arrived by now
    for name, victim in victims.items():
        assert victim.disconnect_reason is None and victim.is_connected(), f"{name} was pushed off"
    assert takeover_lines(mosquitto, spoofed) == [], mosquitto.log_tail()
    # Both still work on the connection they had.
    victims["dev-a"].publish_wait("bodycam/dev-a/up/records", b"still here\n")
    got = victims[STATION_USER].next_message()
    assert got is not None and got.payload == b"still here\n"
    victims[STATION_USER].publish_wait("bodycam/dev-a/down/ack", b"ack")
    got = victims["dev-a"].next_message()
    assert got is not None and got.payload == b"ack"


@pytest.mark.parametrize("spoofed", SPOOFED)
def test_the_receivers_queued_messages_survive_a_device_asking_for_its_client_id(
    mosquitto: MosquittoBroker, spoofed: str,
) -> None:
    """While the receiver is away its persistent session queues the devices' messages; a device that connects
    with clean start under the receiver's (or another device's) client id must not discard that session."""
    receiver = connect(mosquitto, STATION_USER, client_id=RECEIVER_ID, clean_start=False,
                       properties=session_properties(), track=False)
    receiver.subscribe_wait("bodycam/+/up/#")
    receiver.close()
    dev_a = connect(mosquitto, "dev-a", client_id="dev-a", clean_start=False, properties=session_properties(),
                    track=False)
    dev_a.subscribe_wait("bodycam/dev-a/down/#")
    dev_a.publish_wait("bodycam/dev-a/up/records", b"queued while the receiver is down\n")
    dev_a.close()

    spoof(mosquitto, spoofed)

    receiver = connect(mosquitto, STATION_USER, client_id=RECEIVER_ID, clean_start=False,
                       properties=session_properties())
    assert receiver.session_present
    got = receiver.next_message()
    assert got is not None and got.payload == b"queued while the receiver is down\n"
    dev_a = connect(mosquitto, "dev-a", client_id="dev-a", clean_start=False, properties=session_properties())
    assert dev_a.session_present
