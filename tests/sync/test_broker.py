"""The station's broker setup (sync/broker.py): certificates, ACL and config, then a real Mosquitto using them."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from broker_fixture import BrokerConnectError, MosquittoBroker, TestClient, connect
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import wait_for
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.errors import ConfigError, KeyFileError
from sync.broker import (
    STATION_USER,
    TOOLS_USER,
    acl_text,
    issue_device_certificate,
    mosquitto_conf_text,
    write_broker_setup,
)
from sync.broker_certs import create_ca, issue_certificate, write_pem_files

NOT_AUTHORIZED = 135
QUIET_S = 1.0  # how long "never arrives" waits


def drain(client: TestClient, seconds: float) -> list[str]:
    """Topics of everything the client receives within ``seconds``."""
    topics = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = client.next_message(left)
        if message is not None:
            topics.append(message.topic)
    return topics


def wait_for_log(broker: MosquittoBroker, text: str, timeout: float = 2.0) -> None:
    """Fail the test unless ``text`` appears in the broker's log within ``timeout`` s."""
    wait_for(lambda: text in broker.log_path.read_text(errors="replace"), timeout, f"{text!r} in the broker log")


# --- without a broker -----------------------------------------------------------------------------------------


def test_setup_is_idempotent_and_never_replaces_a_key(tmp_path: Path) -> None:
    first = write_broker_setup(tmp_path, port=18883, devices=["dev-a"])
    key_paths = (first.ca_key, first.server_key, first.station_key, first.clients["dev-a"][1])
    keys = {path: path.read_bytes() for path in key_paths}
    ca_cert = first.ca_cert.read_bytes()

    second = write_broker_setup(tmp_path, port=18884, devices=["dev-a", "dev-b"])

    assert {path: path.read_bytes() for path in keys} == keys
    assert second.ca_cert.read_bytes() == ca_cert
    assert set(second.clients) == {"dev-a", "dev-b"}
    assert "listener 18884 127.0.0.1" in second.conf.read_text()
    for key in (*keys, second.clients["dev-b"][1]):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(second.clients["dev-b"][0].stat().st_mode) == 0o644


@pytest.mark.parametrize(
    "device_id", [STATION_USER, TOOLS_USER, "bodycam-station", "", "a/b", "dev+1", "dev#", "-dev", "x" * 65],
)
def test_setup_refuses_reserved_and_invalid_device_ids(tmp_path: Path, device_id: str) -> None:
    with pytest.raises(ConfigError, match="device id"):
        write_broker_setup(tmp_path / "setup", port=18883, devices=[device_id])
    assert not (tmp_path / "setup").exists()
    write_broker_setup(tmp_path / "ok", port=18883, devices=[])
    with pytest.raises(ConfigError, match="device id"):
        issue_device_certificate(tmp_path / "ok", device_id)


def test_write_pem_files_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    cert, key = create_ca("test CA")
    write_pem_files(tmp_path, "ca", cert, key)
    other_cert, other_key = create_ca("other CA")
    with pytest.raises(KeyFileError, match=r"ca\.key"):
        write_pem_files(tmp_path, "ca", other_cert, other_key)
    assert (tmp_path / "ca.key").read_bytes() == key
    assert (tmp_path / "ca.crt").read_bytes() == cert


def test_certificates_name_their_holder_and_purpose() -> None:
    ca_cert, ca_key = create_ca("test CA")
    server = x509.load_pem_x509_certificate(
        issue_certificate(ca_cert, ca_key, "localhost", server=True, hosts=["localhost", "127.0.0.1"])[0]
    )
    client = x509.load_pem_x509_certificate(issue_certificate(ca_cert, ca_key, "dev-a", server=False)[0])
    ca = x509.load_pem_x509_certificate(ca_cert)

    for cert in (server, client):
        cert.verify_directly_issued_by(ca)
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-a"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_acl_text_is_the_topic_contract() -> None:
    lines = [line for line in acl_text().splitlines() if line and not line.startswith("#")]
    assert lines == [
        "user station",
        "topic read bodycam/+/up/#",
        "topic write bodycam/+/down/#",
        "user station-tools",
        "topic write bodycam/+/down/assignment",
        "pattern write bodycam/%u/up/#",
        "pattern read bodycam/%u/down/#",
    ]


def test_conf_text_sets_the_limits_and_mutual_tls(tmp_path: Path) -> None:
    text = mosquitto_conf_text(
        port=8883, bind="0.0.0.0", cafile=tmp_path / "ca.crt", certfile=tmp_path / "s.crt",
        keyfile=tmp_path / "s.key", aclfile=tmp_path / "acl", persistence_dir=None, max_packet_bytes=65536,
    )
    lines = set(text.splitlines())
    for expected in (
        "per_listener_settings false", "listener 8883 0.0.0.0", "require_certificate true",
        "use_identity_as_username true", "use_username_as_clientid true", "allow_anonymous false",
        f"acl_file {tmp_path / 'acl'}",
        "max_packet_size 65536", "max_queued_messages 10000", "max_queued_bytes 536870912", "persistence false",
    ):
        assert expected in lines
    # A listener setting in Mosquitto 2.0: it takes effect only below the listener line.
    ordered = text.splitlines()
    assert ordered.index("use_username_as_clientid true") > ordered.index("listener 8883 0.0.0.0")
    with pytest.raises(ConfigError, match="max_packet_size"):
        mosquitto_conf_text(
            port=8883, bind="0.0.0.0", cafile=tmp_path, certfile=tmp_path, keyfile=tmp_path, aclfile=tmp_path,
            persistence_dir=None, max_packet_bytes=19,
        )


# --- a real Mosquitto -----------------------------------------------------------------------------------------


def test_station_and_device_connect_and_connack_carries_max_packet_size(mosquitto: MosquittoBroker) -> None:
    for user in (STATION_USER, "dev-a"):
        client = connect(mosquitto, user)
        assert client.max_packet_size == mosquitto.max_packet_bytes == 4 * 1024 * 1024


def test_device_publishes_to_its_own_up_topic_and_station_receives(mosquitto: MosquittoBroker) -> None:
    station, device = connect(mosquitto, STATION_USER), connect(mosquitto, "dev-a")
    assert not station.subscribe_wait("bodycam/+/up/#")[0].is_failure

    assert device.publish_wait("bodycam/dev-a/up/records", b"line 1\n").reason_code == 0

    message = station.next_message()
    assert message is not None
    assert (message.topic, message.payload, message.qos) == ("bodycam/dev-a/up/records", b"line 1\n", 1)


@pytest.mark.parametrize("client_id", [None, "dev-b"])
def test_device_cannot_publish_as_another_device(mosquitto: MosquittoBroker, client_id: str | None) -> None:
    """Identity is the certificate's CN: even a client id of "dev-b" does not let dev-a write dev-b's topics."""
    station, device = connect(mosquitto, STATION_USER), connect(mosquitto, "dev-a", client_id=client_id)
    station.subscribe_wait("bodycam/+/up/#")

    forged = device.publish_wait("bodycam/dev-b/up/records", b"forged\n")
    device.publish_wait("bodycam/dev-a/up/records", b"genuine\n")

    assert forged.reason_code is not None and forged.reason_code.value == NOT_AUTHORIZED
    # Messages from one client arrive in order: the genuine one first means the forged one was dropped.
    assert drain(station, QUIET_S) == ["bodycam/dev-a/up/records"]


def test_station_cannot_publish_on_a_device_up_topic(mosquitto: MosquittoBroker) -> None:
    station = connect(mosquitto, STATION_USER)
    station.subscribe_wait("bodycam/+/up/#")
    result = station.publish_wait("bodycam/dev-a/up/records", b"forged\n")
    assert result.reason_code is not None and result.reason_code.value == NOT_AUTHORIZED
    assert drain(station, QUIET_S) == []


def test_device_cannot_read_another_devices_topics(mosquitto: MosquittoBroker) -> None:
    station, dev_a, dev_b = (connect(mosquitto, user) for user in (STATION_USER, "dev-a", "dev-b"))
    # Mosquitto 2.0.11's acl_file grants every SUBSCRIBE; the refusal happens per message at delivery.
    for topic in ("bodycam/dev-b/down/#", "bodycam/+/up/#", "#"):
        dev_a.subscribe_wait(topic)
    dev_b.subscribe_wait("bodycam/dev-b/down/#")

    station.publish_wait("bodycam/dev-b/down/ack", b"for dev-b")
    dev_b.publish_wait("bodycam/dev-b/up/records", b"from dev-b")

    received = dev_b.next_message()
    assert received is not None and received.payload == b"for dev-b"
    assert drain(dev_a, QUIET_S) == []


def test_station_publishes_to_a_device_down_topic_and_device_receives(mosquitto: MosquittoBroker) -> None:
    station, device = connect(mosquitto, STATION_USER), connect(mosquitto, "dev-a")
    device.subscribe_wait("bodycam/dev-a/down/#")

    assert station.publish_wait("bodycam/dev-a/down/ack", b"ack 1").reason_code == 0

    message = device.next_message()
    assert message is not None and (message.topic, message.payload) == ("bodycam/dev-a/down/ack", b"ack 1")


def test_certificate_from_a_foreign_ca_is_refused(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    ca_cert, ca_key = create_ca("impostor CA")
    impostor = issue_certificate(ca_cert, ca_key, "dev-a", server=False)
    cert, key = write_pem_files(tmp_path / "foreign", "dev-a", *impostor)
    with pytest.raises(BrokerConnectError):
        connect(mosquitto, "dev-a", tls=(mosquitto.files.ca_cert, cert, key))
    wait_for_log(mosquitto, "certificate verify failed")


def test_client_without_a_certificate_is_refused(mosquitto: MosquittoBroker) -> None:
    with pytest.raises(BrokerConnectError):
        connect(mosquitto, "dev-a", tls=(mosquitto.files.ca_cert, None, None))
    wait_for_log(mosquitto, "peer did not return a certificate")


def test_restart_keeps_the_port_and_a_persistent_sessions_queue(mosquitto: MosquittoBroker) -> None:
    """SIGTERM saves the persistence database: a message queued for an offline device survives the restart."""
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 3600
    device = connect(mosquitto, "dev-a", client_id="dev-a", clean_start=False, properties=session)
    device.subscribe_wait("bodycam/dev-a/down/#")
    device.close()
    connect(mosquitto, STATION_USER).publish_wait("bodycam/dev-a/down/ack", b"queued")
    port = mosquitto.port

    mosquitto.restart()

    assert mosquitto.port == port
    device = connect(mosquitto, "dev-a", client_id="dev-a", clean_start=False, properties=session)
    assert device.session_present
    message = device.next_message()
    assert message is not None and message.payload == b"queued"
