"""The enrolment request and bundle checks (sync/enrollment.py): every altered or mixed-up file is refused
with the file and the field named."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import seeded_key

from agent.errors import UsageError
from agent.evidence.keys import DeviceKey, public_key_pem
from sync.broker_certs import certify_client_key, create_ca
from sync.enrollment import EnrollmentBundle, check_bundle, make_request, parse_bundle, parse_request

DEVICE = "cam-7"


def mqtt_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def request_dict(device: str = DEVICE, key: DeviceKey | None = None,
                 mqtt: ec.EllipticCurvePrivateKey | None = None) -> dict[str, Any]:
    request = make_request(device, key or seeded_key(1), mqtt or mqtt_key())
    parsed: dict[str, Any] = json.loads(request.to_json())
    return parsed


def test_a_request_made_by_make_request_passes() -> None:
    key, mqtt = seeded_key(1), mqtt_key()
    request = parse_request(request_dict(key=key, mqtt=mqtt), "r.json")
    assert (request.device_id, request.fingerprint) == (DEVICE, key.fingerprint)
    assert request.ed25519.public_bytes_raw() == key.public_raw
    assert request.mqtt_public_key.public_numbers() == mqtt.public_key().public_numbers()


def _other_csr(device: str) -> str:
    return str(request_dict(device)["csr"])


@pytest.mark.parametrize(("change", "field", "why"), [
    ({"type": "bodycam-enrollment-bundle"}, "type", "is not"),
    ({"version": 2}, "version", "is not 1"),
    ({"version": True}, "version", "is not 1"),
    ({"extra": 1}, "extra", "unknown"),
    ({"device_id": "station"}, "device_id", "not a device/station id"),
    ({"device_id": "station-tools"}, "device_id", "not station, station-tools, bodycam-station"),
    ({"device_id": "bodycam-station"}, "device_id", "not a device/station id"),
    ({"device_id": "a/b"}, "device_id", "not a device/station id"),
    ({"public_key": seeded_key(2).public_raw.hex()}, "fingerprint", "not the SHA-256 of public_key"),
    ({"fingerprint": seeded_key(2).fingerprint}, "fingerprint", "not the SHA-256 of public_key"),
    ({"public_key": "zz" * 32}, "public_key", "hex digits"),
    ({"csr": "not a csr"}, "csr", "not a PEM certificate signing request"),
    ({"device_id": "cam-8"}, "csr", "common name ['cam-7'] is not the device id 'cam-8'"),
])
def test_altered_requests_are_refused_naming_the_field(change: dict[str, Any], field: str, why: str) -> None:
    data = {**request_dict(), **change}
    with pytest.raises(UsageError) as refused:
        parse_request(data, "r.json")
    message = str(refused.value)
    assert message.startswith("enrolment request r.json: field ") and repr(field) in message and why in message


def test_missing_field_and_a_csr_with_a_broken_signature_are_refused() -> None:
    data = request_dict()
    del data["csr"]
    with pytest.raises(UsageError, match="field 'csr' is missing"):
        parse_request(data, "r.json")
    data = request_dict()
    csr = x509.load_pem_x509_csr(data["csr"].encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    body = base64.encodebytes(bytes(der)).decode()
    data["csr"] = f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(UsageError, match=r"field 'csr': (its signature does not verify|not a PEM)"):
        parse_request(data, "r.json")


# --- bundles --------------------------------------------------------------------------------------------------


class Station:
    def __init__(self) -> None:
        self.ca_cert, self.ca_key = create_ca("test station CA")
        self.ack = seeded_key(9)

    def bundle(self, device: str, device_key: DeviceKey, mqtt_public: ec.EllipticCurvePublicKey,
               cn: str | None = None) -> EnrollmentBundle:
        cert = certify_client_key(self.ca_cert, self.ca_key, mqtt_public, cn or device)
        return EnrollmentBundle(
            device_id=device, station_id="station-t", ca=self.ca_cert.decode(),
            station_key=public_key_pem(self.ack.public_key), broker_host="station.local", broker_port=8883,
            max_message_kib=4096, client_cert=cert.decode(), fingerprint=device_key.fingerprint,
        ).signed(self.ack)


def roundtrip(bundle: EnrollmentBundle) -> EnrollmentBundle:
    return parse_bundle(json.loads(bundle.to_json()), "b.json")


def test_a_bundle_for_this_device_and_its_keys_passes() -> None:
    station, key, mqtt = Station(), seeded_key(1), mqtt_key()
    bundle = roundtrip(station.bundle(DEVICE, key, mqtt.public_key()))
    check_bundle(bundle, "b.json", DEVICE, key.fingerprint, mqtt.public_key())
    assert bundle.station_fingerprint == station.ack.fingerprint


@pytest.mark.parametrize("field", ["broker_host", "broker_port", "device_id", "fingerprint", "max_message_kib",
                                   "station_id"])
def test_a_field_edited_after_signing_is_refused(field: str) -> None:
    station, key, mqtt = Station(), seeded_key(1), mqtt_key()
    data = json.loads(station.bundle(DEVICE, key, mqtt.public_key()).to_json())
    data[field] = {"broker_host": "evil.example", "broker_port": 1883, "device_id": "cam-8",
                   "fingerprint": seeded_key(2).fingerprint, "max_message_kib": 128, "station_id": "other"}[field]
    with pytest.raises(UsageError, match="field 'signature': does not verify"):
        parse_bundle(data, "b.json")


@pytest.mark.parametrize(("field", "value", "why"), [
    ("ca", "junk", "not a PEM certificate"),
    ("station_key", "junk", "not a PEM Ed25519 public key"),
    ("broker_port", 0, "not a whole number in 1..65535"),
    ("broker_host", "a host", "not a host name"),
    ("signature", "xyz", "not hex"),
])
def test_malformed_bundle_fields_are_refused(field: str, value: Any, why: str) -> None:
    data = json.loads(Station().bundle(DEVICE, seeded_key(1), mqtt_key().public_key()).to_json())
    data[field] = value
    with pytest.raises(UsageError, match=f"enrolment bundle b.json: field '{field}': .*{why}"):
        parse_bundle(data, "b.json")


def test_a_bundle_for_another_device_key_or_mqtt_key_is_refused() -> None:
    station, key, mqtt = Station(), seeded_key(1), mqtt_key()
    for bundle, why in [
        (station.bundle("cam-8", key, mqtt.public_key()), "field 'device_id': 'cam-8' is not this device"),
        (station.bundle(DEVICE, seeded_key(2), mqtt.public_key()), "field 'fingerprint'"),
        (station.bundle(DEVICE, key, mqtt_key().public_key()), "certifies another key"),
        (station.bundle(DEVICE, key, mqtt.public_key(), cn="cam-8"), "common name ['cam-8'] is not 'cam-7'"),
    ]:
        with pytest.raises(UsageError, match=r"enrolment bundle b.json: .*" + why.replace("[", r"\[")
                           .replace("]", r"\]")):
            check_bundle(roundtrip(bundle), "b.json", DEVICE, key.fingerprint, mqtt.public_key())


def test_a_certificate_from_another_ca_is_refused_even_in_a_consistently_signed_bundle() -> None:
    station, key, mqtt = Station(), seeded_key(1), mqtt_key()
    foreign_ca, foreign_key = create_ca("foreign CA")
    cert = certify_client_key(foreign_ca, foreign_key, mqtt.public_key(), DEVICE)
    bundle = replace(station.bundle(DEVICE, key, mqtt.public_key()), client_cert=cert.decode()).signed(station.ack)
    with pytest.raises(UsageError, match="field 'client_cert': not issued by the bundle's CA"):
        check_bundle(roundtrip(bundle), "b.json", DEVICE, key.fingerprint, mqtt.public_key())


def test_the_bundle_signs_the_same_bytes_as_before_the_shared_signed_message_helper() -> None:
    # The signed bytes are pinned: every field but the signature, sorted keys, no whitespace, ASCII escapes
    # (what json.dumps wrote before the bundle moved onto agent/evidence/signed_message.py).
    bundle = Station().bundle(DEVICE, seeded_key(1), mqtt_key().public_key())
    fields = {"type": "bodycam-enrollment-bundle", "version": 1, **json.loads(bundle.to_json())}
    del fields["signature"]
    expected = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    assert bundle.signed_payload() == expected
    assert seeded_key(9).sign(expected, b"bodycam-enrollment-bundle-v1\x00").hex() == bundle.signature
