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

from agent.errors import KeyFileError, RecordFormatError, UsageError
from agent.evidence.fsutil import display_path, fsync_dir, write_file_durably
from agent.evidence.keys import DeviceKey, fingerprint, public_key_pem, public_key_raw
from agent.evidence.signed_message import HEX64, TEXT, MessageFormat, identifier, text, whole_number
from sync.broker import RESERVED_IDS  # the station's own certificate identities: never a device id

REQUEST_TYPE = "bodycam-enrollment-request"
BUNDLE_TYPE = "bodycam-enrollment-bundle"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 * 1024
# Only bundles: a signature over one kind of statement must never pass for another (records, acks).
BUNDLE_SIGNATURE_DOMAIN = b"bodycam-enrollment-bundle-v1\x00"
MIN_MESSAGE_KIB, MAX_MESSAGE_KIB = 64, 256 * 1024 - 1
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


def _declared(data: dict[str, Any], name: str, expected: MessageFormat) -> _Fields:
    """``data`` checked against its declaration; UsageError "<name>: field ...: ..." when it does not hold."""
    try:
        expected.check(data, name)
    except RecordFormatError as exc:
        raise UsageError(str(exc)) from None
    return _Fields(data, name)


@dataclass(frozen=True)
class _Fields:
    """A checked file's fields; the checks that need more than the declaration name the file and the field."""

    data: dict[str, Any]
    name: str

    def wrong(self, field: str, what: str) -> UsageError:
        return UsageError(f"{self.name}: field {field!r}: {what}")

    def text(self, field: str) -> str:
        return str(self.data[field])

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


_DEVICE_ID = identifier(RESERVED_IDS)
# The request is not signed (its CSR is, by the MQTT key it names): only its fields are declared.
REQUEST_FORMAT = MessageFormat(
    "enrolment request", b"", {"type": REQUEST_TYPE, "version": FORMAT_VERSION},
    {"device_id": _DEVICE_ID, "public_key": HEX64, "fingerprint": HEX64, "csr": TEXT},
)
BUNDLE_FORMAT = MessageFormat(
    "enrolment bundle", BUNDLE_SIGNATURE_DOMAIN, {"type": BUNDLE_TYPE, "version": FORMAT_VERSION},
    {
        "device_id": _DEVICE_ID, "station_id": identifier(), "ca": TEXT, "station_key": TEXT,
        "broker_host": text(_HOST, "a host name or address"), "broker_port": whole_number(1, 65535),
        "max_message_kib": whole_number(MIN_MESSAGE_KIB, MAX_MESSAGE_KIB), "client_cert": TEXT,
        "fingerprint": HEX64, "signature": TEXT,
    },
)  # fmt: skip


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
    fields = _declared(data, f"enrolment request {source}", REQUEST_FORMAT)
    device_id, public_hex = fields.text("device_id"), fields.text("public_key")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
    except ValueError:
        raise fields.wrong("public_key", "not an Ed25519 public key") from None
    stated = fields.text("fingerprint")
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
        """The bytes the signature covers: every field but the signature, canonical JSON (docs/provisioning.md)."""
        fields = {**BUNDLE_FORMAT.header, **asdict(self)}
        del fields["signature"]
        return BUNDLE_FORMAT.encode(fields, "enrolment bundle")

    def signed(self, ack_key: DeviceKey) -> EnrollmentBundle:
        if public_key_pem(ack_key.public_key) != self.station_key:
            raise KeyFileError("acknowledgement key: not the key the bundle names")
        signature = BUNDLE_FORMAT.signature(self.signed_payload(), ack_key).hex()
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
    fields = _declared(data, f"enrolment bundle {source}", BUNDLE_FORMAT)
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
    fields.certificate("client_cert")
    bundle = EnrollmentBundle(**{name: data[name] for name in BUNDLE_FORMAT.fields})
    try:
        signature = bytes.fromhex(bundle.signature)
    except ValueError:
        raise fields.wrong("signature", "not hex") from None
    if not BUNDLE_FORMAT.check_signature(station_key, bundle.signed_payload(), signature):
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
