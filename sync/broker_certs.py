"""The station's certificate authority in files: keys, certificates, the revocation list (PEM).

Keys are ECDSA P-256 rather than Ed25519 because that is what every OpenSSL build Mosquitto and paho link
against accepts for TLS. The broker's own set of files (which certificate for whom, the ACL, mosquitto.conf)
is sync/broker.py's.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.errors import ConfigError, KeyFileError
from agent.evidence.fsutil import display_path, write_file_durably

# Certificates start a little in the past so a device whose clock lags the station's still accepts them.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    if days < 1:
        raise ConfigError(f"certificate validity {days} days: must be at least 1")
    now = datetime.datetime.now(datetime.UTC)
    # Random serials: two CAs created on the same second must still never issue colliding serials.
    serial = secrets.randbits(159) | 1
    end = now + datetime.timedelta(days=days)
    return builder.serial_number(serial).not_valid_before(now - _CLOCK_SKEW).not_valid_after(end)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    # A CA only signs certificates; an end entity only signs TLS handshakes (ECDHE does the key exchange).
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def create_ca(common_name: str, days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed certificate authority: (certificate PEM, private key PEM)."""
    key = _new_key()
    public = key.public_key()
    builder = (
        _validity(x509.CertificateBuilder(), days)
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        # path_length 0: this CA signs end-entity certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _load_ca(ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca_cert_pem)
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except ValueError as exc:
        raise KeyFileError(f"CA certificate or key: not readable PEM ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError("CA key: not an ECDSA key")
    if _public_der(key) != _public_der(cert):
        raise KeyFileError("CA key: does not belong to the CA certificate")
    return cert, key


def _public_der(owner: ec.EllipticCurvePrivateKey | x509.Certificate) -> bytes:
    public = owner.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_certificate(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    *,
    server: bool,
    hosts: Sequence[str] = (),
    days: int = 825,
) -> tuple[bytes, bytes]:
    """A certificate signed by the CA for a new key: (certificate PEM, private key PEM).

    A server certificate names ``hosts`` (DNS names or IP addresses) as subject alternative names, since TLS
    clients match the host against those and ignore the common name. A client certificate's common name is the
    MQTT user name the broker gives its holder.
    """
    if server and not hosts:
        raise ConfigError(f"server certificate {common_name!r}: needs at least one host name or address")
    if not server and hosts:
        raise ConfigError(f"client certificate {common_name!r}: hosts apply to server certificates only")
    ca = _load_ca(ca_cert_pem, ca_key_pem)
    key = _new_key()
    cert = _signed(ca, key.public_key(), common_name, server=server, hosts=hosts, days=days)
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def certify_client_key(
    ca_cert_pem: bytes, ca_key_pem: bytes, public_key: ec.EllipticCurvePublicKey, common_name: str, days: int = 825,
) -> bytes:
    """A client certificate (PEM) for a key the CA never sees the private half of: enrolment from a CSR."""
    cert = _signed(_load_ca(ca_cert_pem, ca_key_pem), public_key, common_name, server=False, hosts=(), days=days)
    return cert.public_bytes(serialization.Encoding.PEM)


def _signed(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], public: ec.EllipticCurvePublicKey, common_name: str,
    *, server: bool, hosts: Sequence[str], days: int,
) -> x509.Certificate:
    ca_cert, ca_key = ca
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _validity(x509.CertificateBuilder(), days)
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_host_name(host) for host in hosts]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def crl_pem(ca_cert_pem: bytes, ca_key_pem: bytes, revoked: Mapping[int, datetime.datetime]) -> bytes:
    """The CA's certificate revocation list (PEM) naming each serial of ``revoked`` with its revocation time;
    empty is valid and what a new station has.

    OpenSSL refuses every client once the CRL it checks against is past its next update, so the list stays
    valid as long as the CA itself; it is re-signed on every revocation anyway.
    """
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _CLOCK_SKEW)
        .next_update(max(ca_cert.not_valid_after_utc, now + datetime.timedelta(days=1)))
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1_000_000)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    for serial, when in sorted(revoked.items()):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def crl_serials(crl_path: Path, ca_cert_pem: bytes) -> dict[int, datetime.datetime]:
    """The serials an existing CRL revokes and when, after checking the CA signed it."""
    name = display_path(crl_path)
    try:
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"revocation list {name}: cannot read ({exc.strerror})") from None
    except ValueError:
        raise KeyFileError(f"revocation list {name}: not a PEM certificate revocation list") from None
    if not crl.is_signature_valid(x509.load_pem_x509_certificate(ca_cert_pem).public_key()):  # type: ignore[arg-type]
        raise KeyFileError(f"revocation list {name}: not signed by this station's CA")
    return {entry.serial_number: entry.revocation_date_utc for entry in crl}


def write_pem_files(folder: Path, stem: str, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    """Write ``stem.crt`` (0644) and ``stem.key`` (0600) durably; an existing key is never overwritten."""
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    if key_path.exists():
        raise KeyFileError(f"key file {display_path(key_path)}: already exists; refusing to overwrite it")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The certificate first: a crash between the two leaves a certificate without its key, which the next
        # run replaces, never a key without its certificate, which it would have to refuse.
        write_file_durably(cert_path, cert_pem, mode=0o644)
        write_file_durably(key_path, key_pem, mode=0o600, exclusive=True)
    except FileExistsError:
        raise KeyFileError(f"key file {display_path(key_path)}: created by someone else meanwhile") from None
    except OSError as exc:
        raise KeyFileError(f"key file {display_path(key_path)}: cannot write ({exc.strerror})") from None
    return cert_path, key_path


def read_pair(cert_path: Path, key_path: Path) -> tuple[bytes, bytes]:
    """An existing certificate and its key, checked to belong together."""
    if not cert_path.exists():
        raise KeyFileError(
            f"key file {display_path(key_path)}: exists without its certificate {display_path(cert_path)}; "
            "remove the key to issue a new pair"
        )
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except OSError as exc:
        raise KeyFileError(f"key file {display_path(key_path)}: cannot read ({exc.strerror})") from None
    except ValueError:
        raise KeyFileError(f"{display_path(cert_path)} or its key: not readable PEM") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or _public_der(key) != _public_der(cert):
        raise KeyFileError(f"key file {display_path(key_path)}: does not belong to {display_path(cert_path)}")
    return cert_pem, key_pem


def check_reused(cert_path: Path, ca_cert_pem: bytes, common_name: str, hosts: Sequence[str]) -> None:
    """An existing certificate must still be what this setup would issue, or the operator must decide."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    name = display_path(cert_path)
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_cert_pem))
    except (ValueError, TypeError, InvalidSignature):
        raise ConfigError(f"certificate {name}: not issued by this CA; remove it and its key to reissue") from None
    if [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] != [common_name]:
        raise ConfigError(f"certificate {name}: common name is not {common_name!r}; remove it and its key to reissue")
    if hosts:
        try:
            san = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            san = set()
        if san != {_host_name(host) for host in hosts}:
            raise ConfigError(f"certificate {name}: not issued for hosts {list(hosts)}; remove it and its key")
