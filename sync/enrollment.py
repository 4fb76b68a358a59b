"""Enrolment files the technician carries between a device and the station, and their checks.

    device   bodycam-provision init   ->  request (JSON): device id, Ed25519 public key, its fingerprint, a CSR
                                          for the device's MQTT client key (CN = device id)
    station  bodycam-station enroll   ->  bundle (JSON): the station's CA and acknowledgement key, the broker's
                                          address and message limit, the client certificate signed from the
                                          CSR, the enrolled fingerprint; signed with the acknowledgement key
    device   bodycam-provision apply  <-  bundle, checked against the device's own keys before anything is written

No private key is in either file: the device keeps its Ed25519 key and its MQTT key; the station keeps its CA
key. The bundle's signature is checked with the key inside it, so it proves the bundle was not edited after the
station wrote it, not who wrote it: the technician compares the acknowledgement key fingerprint that ``apply``
prints with the one ``bodycam-station init`` printed. Every check failure is a UsageError naming the file, the
field and what is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.errors import KeyFileError, UsageError
from agent.evidence.fsutil import display_path, fsync_dir, write_file_durably
from agent.evidence.keys import DeviceKey, fingerprint, public_key_pem, public_key_raw, verify_signature
from agent.evidence.record import DEVICE_ID_PATTERN
from sync.broker import RESERVED_IDS  # the station's own certificate identities: never a device id

REQUEST_TYPE = "bodycam-enrollment-request"
BUNDLE_TYPE = "bodycam-enrollment-bundle"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 * 1024
# Only bundles: a signature over one kind of statement must never pass for another (records, acks).
BUNDLE_SIGNATURE_DOMAIN = b"bodycam-enrollment-bundle-v1\x00"
MIN_MESSAGE_KIB, MAX_MESSAGE_KIB = 64, 256 * 1024 - 1
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HOST = re.compile(r"[A-Za-z0-9._:-]{1,253}\Z")


# --- reading and checking -------------------------------------------------------------------------------------


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    """A small JSON object from ``path``; UsageError "<what> <path>: ..." when it is not one."""
    name = f"{what} {display_path(path)}"
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{name}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{name}: larger than {MAX_FILE_BYTES} bytes; not an enrolment file")
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{name}: not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"{name}: not a JSON object")
    return parsed


class _Fields:
    """Typed access to one file's fields; every error names the file and the field."""

    def __init__(self, data: dict[str, Any], name: str, expected_type: str, fields: tuple[str, ...]) -> None:
        self.data, self.name = data, name
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise UsageError(f"{name}: field {unknown[0]!r}: unknown (known: {', '.join(fields)})")
        if data.get("type") != expected_type:
            raise UsageError(f"{name}: field 'type': {str(data.get('type'))[:60]!r} is not {expected_type!r}")
        if data.get("version") != FORMAT_VERSION or isinstance(data.get("version"), bool):
            raise UsageError(f"{name}: field 'version': {str(data.get('version'))[:20]!r} is not {FORMAT_VERSION}")
        missing = [field for field in fields if field not in data]
        if missing:
            raise UsageError(f"{name}: field {missing[0]!r}: missing")

    def wrong(self, field: str, what: str) -> UsageError:
        return UsageError(f"{self.name}: field {field!r}: {what}")

    def text(self, field: str) -> str:
        value = self.data[field]
        if not isinstance(value, str) or not value:
            raise self.wrong(field, "must be a non-empty string")
        return value

    def integer(self, field: str, low: int, high: int) -> int:
        value = self.data[field]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.wrong(field, f"{str(value)[:20]!r} is not a whole number in {low}..{high}")
        return value

    def identifier(self, field: str, reserved: tuple[str, ...] = ()) -> str:
        value = self.text(field)
        if not DEVICE_ID_PATTERN.match(value) or value in reserved:
            raise self.wrong(field, f"{value[:70]!r} is not a device/station id ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}}"
                             + (f", not {', '.join(reserved)}" if reserved else "") + ")")
        return value

    def hex64(self, field: str) -> str:
        value = self.text(field)
        if not _HEX64.match(value):
            raise self.wrong(field, "must be 64 lower-case hex digits")
        return value

    def certificate(self, field: str) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.text(field).encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise self.wrong(field, "not a PEM certificate") from None


def _common_names(name: x509.Name) -> list[str]:
    return [str(attribute.value) for attribute in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def spki(public_key: object) -> bytes:
    """The DER SubjectPublicKeyInfo of an ECDSA public key (what two certificates or a CSR share when their
    key is the same); empty for any other kind of key."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return b""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _p256(key: object) -> bool:
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


# --- the request ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnrollmentRequest:
    device_id: str
    public_key: str  # hex of the raw 32-byte Ed25519 key
    fingerprint: str
    csr: str  # PEM

    def to_json(self) -> str:
        return json.dumps({"type": REQUEST_TYPE, "version": FORMAT_VERSION, **asdict(self)}, indent=2) + "\n"

    @property
    def ed25519(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key))

    @property
    def mqtt_public_key(self) -> ec.EllipticCurvePublicKey:
        key = x509.load_pem_x509_csr(self.csr.encode("ascii")).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)  # parse_request admits nothing else
        return key


def make_request(device_id: str, device_key: DeviceKey, mqtt_key: ec.EllipticCurvePrivateKey) -> EnrollmentRequest:
    """The request for a device: its identity key's public half and a CSR signed by its MQTT key."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(mqtt_key, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return EnrollmentRequest(device_id, device_key.public_raw.hex(), device_key.fingerprint, pem)


def parse_request(data: dict[str, Any], source: str) -> EnrollmentRequest:
    """A checked request: its schema, that the fingerprint is the key's, that the CSR is signed by the key it
    carries (an ECDSA P-256 key) and names the device as its only common name."""
    fields = _Fields(data, f"enrolment request {source}", REQUEST_TYPE,
                     ("type", "version", "device_id", "public_key", "fingerprint", "csr"))
    device_id = fields.identifier("device_id", RESERVED_IDS)
    public_hex = fields.hex64("public_key")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
    except ValueError:
        raise fields.wrong("public_key", "not an Ed25519 public key") from None
    stated = fields.hex64("fingerprint")
    if stated != fingerprint(bytes.fromhex(public_hex)):
        raise fields.wrong("fingerprint", "is not the SHA-256 of public_key (the request was altered or mixed up)")
    try:
        csr = x509.load_pem_x509_csr(fields.text("csr").encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise fields.wrong("csr", "not a PEM certificate signing request") from None
    if not _p256(csr.public_key()):
        raise fields.wrong("csr", "its key is not an ECDSA P-256 key")
    if not csr.is_signature_valid:
        raise fields.wrong("csr", "its signature does not verify (the request was altered)")
    names = _common_names(csr.subject)
    if names != [device_id]:
        raise fields.wrong("csr", f"common name {names!r} is not the device id {device_id!r}")
    return EnrollmentRequest(device_id, public_hex, stated, fields.text("csr"))


# --- the bundle -----------------------------------------------------------------------------------------------

_BUNDLE_FIELDS = ("type", "version", "device_id", "station_id", "ca", "station_key", "broker_host", "broker_port",
                  "max_message_kib", "client_cert", "fingerprint", "signature")


@dataclass(frozen=True)
class EnrollmentBundle:
    device_id: str
    station_id: str
    ca: str  # PEM of the station CA's certificate
    station_key: str  # PEM of the station's Ed25519 acknowledgement public key
    broker_host: str
    broker_port: int
    max_message_kib: int
    client_cert: str  # PEM, CN = device id, for the device's MQTT key
    fingerprint: str  # of the device's Ed25519 key, as enrolled
    signature: str = ""  # hex Ed25519 signature by station_key over the other fields

    def signed_payload(self) -> bytes:
        fields = {"type": BUNDLE_TYPE, "version": FORMAT_VERSION, **asdict(self)}
        del fields["signature"]
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    def signed(self, ack_key: DeviceKey) -> EnrollmentBundle:
        if public_key_pem(ack_key.public_key) != self.station_key:
            raise KeyFileError("acknowledgement key: not the key the bundle names")
        signature = ack_key.sign(self.signed_payload(), BUNDLE_SIGNATURE_DOMAIN).hex()
        return EnrollmentBundle(**{**asdict(self), "signature": signature})

    def to_json(self) -> str:
        return json.dumps({"type": BUNDLE_TYPE, "version": FORMAT_VERSION, **asdict(self)}, indent=2) + "\n"

    @property
    def station_public_key(self) -> Ed25519PublicKey:
        key = serialization.load_pem_public_key(self.station_key.encode("ascii"))
        assert isinstance(key, Ed25519PublicKey)  # parse_bundle admits nothing else
        return key

    @property
    def station_fingerprint(self) -> str:
        return fingerprint(public_key_raw(self.station_public_key))


def parse_bundle(data: dict[str, Any], source: str) -> EnrollmentBundle:
    """A bundle whose fields are well formed and whose signature verifies with the key it carries."""
    fields = _Fields(data, f"enrolment bundle {source}", BUNDLE_TYPE, _BUNDLE_FIELDS)
    ca = fields.certificate("ca")
    try:
        ca_is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        ca.verify_directly_issued_by(ca)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        ca_is_ca = False
    if not ca_is_ca:
        raise fields.wrong("ca", "not a self-signed CA certificate")
    try:
        station_key = serialization.load_pem_public_key(fields.text("station_key").encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        station_key = None
    if not isinstance(station_key, Ed25519PublicKey):
        raise fields.wrong("station_key", "not a PEM Ed25519 public key")
    host = fields.text("broker_host")
    if not _HOST.match(host):
        raise fields.wrong("broker_host", f"{host[:70]!r} is not a host name or address")
    fields.certificate("client_cert")
    bundle = EnrollmentBundle(
        device_id=fields.identifier("device_id", RESERVED_IDS), station_id=fields.identifier("station_id"),
        ca=fields.text("ca"), station_key=fields.text("station_key"), broker_host=host,
        broker_port=fields.integer("broker_port", 1, 65535),
        max_message_kib=fields.integer("max_message_kib", MIN_MESSAGE_KIB, MAX_MESSAGE_KIB),
        client_cert=fields.text("client_cert"), fingerprint=fields.hex64("fingerprint"),
        signature=fields.text("signature"),
    )
    try:
        signature = bytes.fromhex(bundle.signature)
    except ValueError:
        raise fields.wrong("signature", "not hex") from None
    if not verify_signature(station_key, bundle.signed_payload(), signature, BUNDLE_SIGNATURE_DOMAIN):
        raise fields.wrong("signature", "does not verify with station_key (the bundle was altered after the "
                                        "station wrote it)")
    return bundle


def check_bundle(bundle: EnrollmentBundle, source: str, device_id: str, device_fingerprint: str,
                 mqtt_public_key: ec.EllipticCurvePublicKey) -> None:
    """The bundle is for this device, its enrolled key and its MQTT key, and its certificate is the CA's."""
    name = f"enrolment bundle {source}"
    if bundle.device_id != device_id:
        raise UsageError(f"{name}: field 'device_id': {bundle.device_id!r} is not this device ({device_id!r})")
    if bundle.fingerprint != device_fingerprint:
        raise UsageError(f"{name}: field 'fingerprint': {bundle.fingerprint[:16]}... is not this device's key "
                         f"({device_fingerprint[:16]}...): the station enrolled another key")
    cert = x509.load_pem_x509_certificate(bundle.client_cert.encode("ascii"))
    if not _p256(cert.public_key()) or spki(cert.public_key()) != spki(mqtt_public_key):
        raise UsageError(f"{name}: field 'client_cert': certifies another key, not this device's MQTT key")
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(bundle.ca.encode("ascii")))
    except (ValueError, TypeError, InvalidSignature):
        raise UsageError(f"{name}: field 'client_cert': not issued by the bundle's CA") from None
    if _common_names(cert.subject) != [device_id]:
        raise UsageError(f"{name}: field 'client_cert': common name {_common_names(cert.subject)!r} is not "
                         f"{device_id!r}")
    try:
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = []
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise UsageError(f"{name}: field 'client_cert': not a TLS client certificate")


# --- the device's MQTT key ------------------------------------------------------------------------------------


def load_or_create_mqtt_key(path: Path) -> tuple[ec.EllipticCurvePrivateKey, bool]:
    """The device's MQTT client key (ECDSA P-256, PEM, 0600), created if missing; (key, created)."""
    name = display_path(path)
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_file_durably(path, pem, mode=0o600, exclusive=True)
            fsync_dir(path.parent)
        except FileExistsError:
            return load_or_create_mqtt_key(path)  # someone else made it meanwhile: theirs stands
        except OSError as exc:
            raise KeyFileError(f"key file {name}: cannot create ({exc.strerror})") from None
        return key, True
    try:
        mode = path.stat().st_mode
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"key file {name}: cannot read ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise KeyFileError(f"key file {name}: not an unencrypted PEM private key") from None
    if mode & 0o077:
        raise KeyFileError(f"key file {name}: mode {mode & 0o777:04o} lets others read it; must be 0600")
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(loaded.curve, ec.SECP256R1):
        raise KeyFileError(f"key file {name}: not an ECDSA P-256 key")
    return loaded, False


def same_public_key(one: ec.EllipticCurvePublicKey, other: ec.EllipticCurvePublicKey) -> bool:
    return spki(one) == spki(other)
