"""The station's Mosquitto broker: its certificates, its ACL and its configuration.

Identity is the client certificate: with ``use_identity_as_username`` Mosquitto takes the certificate's common
name as the MQTT user name, so a device can only speak as the device id its certificate was issued for, and with
``use_username_as_clientid`` that name is also its client id, whatever client id it sends: no client can push
another off the broker or resume or discard another's session. Hence one connection per certificate identity,
and a second identity for the station's command-line tools, which must never displace the receiver. The ACL
then confines each identity:

    device D        publishes  bodycam/D/up/#                  subscribes  bodycam/D/down/#
    station         reads      bodycam/+/up/#                  writes      bodycam/+/down/#     (the receiver)
    station-tools   writes     bodycam/+/down/assignment       reads       nothing               (``assign``)

The ACL is a fence, not the proof: the station still checks every record's signature against the device key.
Keys are ECDSA P-256 rather than Ed25519 because that is what every OpenSSL build Mosquitto and paho link
against accepts for TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.errors import ConfigError, KeyFileError
from agent.evidence.fsutil import display_path, write_file_durably
from agent.evidence.limits import DEFAULT_MAX_PACKET_BYTES as DEFAULT_MAX_PACKET_BYTES  # the configs check it
from agent.evidence.record import DEVICE_ID_PATTERN
from sync.protocol import TOPIC_ROOT

STATION_USER = "station"
TOOLS_USER = "station-tools"
# The receiver's client id before the broker fixed client ids to certificate names: on a broker upgraded in
# place its old session may still exist, and a device by that name could resume it.
LEGACY_RECEIVER_ID = "bodycam-station"
# Names no device may have: the station's certificate identities (each is also a client id on the broker).
RESERVED_IDS = (STATION_USER, TOOLS_USER, LEGACY_RECEIVER_ID)
CRL_FILE = "crl.pem"
# Per client, beyond the in-flight window. Mosquitto drops QoS 1 messages silently past either limit, so they
# are set far above what a station that is merely slow (not dead) lets pile up.
MAX_QUEUED_MESSAGES = 10_000
MAX_QUEUED_BYTES = 512 * 1024 * 1024
MAX_INFLIGHT_MESSAGES = 20
# Certificates start a little in the past so a device whose clock lags the station's still accepts them.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class BrokerFiles:
    """Every file ``write_broker_setup`` made or reused; ``clients`` maps device id to (cert, key); ``tools_*``
    is the station tools' identity (CN ``station-tools``)."""

    folder: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    station_cert: Path
    station_key: Path
    clients: dict[str, tuple[Path, Path]]
    acl: Path
    conf: Path
    tools_cert: Path
    tools_key: Path
    crl: Path | None = None


# --- certificates ---------------------------------------------------------------------------------------------


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


def _read_pair(cert_path: Path, key_path: Path) -> tuple[bytes, bytes]:
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


# --- broker configuration -------------------------------------------------------------------------------------


def acl_text() -> str:
    """The Mosquitto ACL file for the topic layout above.

    Mosquitto 2.0 tries a client's own ``user`` lines first, then every ``pattern`` line, for every user; a line
    only grants, so the patterns cannot take anything from the station. The acl_file never refuses a SUBSCRIBE
    (2.0.11 grants any filter, even ``#``): ``read`` is enforced per message at delivery, so a device that
    subscribes to another's down topics is granted the subscription but receives nothing from it. ``%u`` is the
    certificate's common name; Mosquitto denies pattern access to user names holding ``+``, ``#`` or ``/``, and
    device ids cannot contain them. The patterns also give the station's own identities a ``bodycam/<name>/``
    subtree of their own, which no device can share: their names are reserved (``RESERVED_IDS``).
    """
    root = TOPIC_ROOT
    return "\n".join(
        [
            "# Generated by sync/broker.py; regenerate rather than edit.",
            f"user {STATION_USER}",
            f"topic read {root}/+/up/#",
            f"topic write {root}/+/down/#",
            "",
            "# The station's command-line tools (bodycam-station assign): the assignments only, nothing to read.",
            f"user {TOOLS_USER}",
            f"topic write {root}/+/down/assignment",
            "",
            "# Every certificate-authenticated device, by the common name of its certificate.",
            f"pattern write {root}/%u/up/#",
            f"pattern read {root}/%u/down/#",
            "",
        ]
    )


def mosquitto_conf_text(
    *,
    port: int,
    bind: str,
    cafile: Path,
    certfile: Path,
    keyfile: Path,
    aclfile: Path,
    persistence_dir: Path | None,
    max_packet_bytes: int,
    log_dest: str = "stderr",
    user: str | None = None,
    crlfile: Path | None = None,
) -> str:
    """A mosquitto.conf (2.0) for one mutual-TLS listener. ``user`` is who Mosquitto drops to when run as root;
    ``crlfile`` is the CA's revocation list, re-read (with the certificates) when Mosquitto gets SIGHUP."""
    if not 0 < port < 65536:
        raise ConfigError(f"broker port {port}: not between 1 and 65535")
    if max_packet_bytes < 20:
        # Mosquitto itself refuses values below 20; fail here with the reason instead of at broker start.
        raise ConfigError(f"max_packet_size {max_packet_bytes}: below Mosquitto's minimum of 20 bytes")
    for path in (cafile, certfile, keyfile, aclfile, *[p for p in (persistence_dir, crlfile) if p is not None]):
        if any(c in str(path) for c in "\n\r"):
            raise ConfigError(f"path {display_path(path)}: a line break cannot be written into mosquitto.conf")
    lines = [
        "# Generated by sync/broker.py; regenerate rather than edit.",
        # The ACL and anonymous settings below are global: the one listener cannot be left without them.
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {aclfile}",
        # Sent to MQTT 5 clients in the CONNACK; the uploader sizes its chunks from it.
        f"max_packet_size {max_packet_bytes}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        # Without it small replies (file statuses, acks) wait for Nagle's delayed ACK: ~40 ms each.
        "set_tcp_nodelay true",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        f"log_dest {log_dest}",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if user is not None:
        lines.append(f"user {user}")
    if persistence_dir is not None:
        # Keeps queued messages and persistent sessions across a broker restart; still not a durable store
        # (up to autosave_interval of changes is lost in a crash), hence end-to-end acknowledgements.
        # Mosquitto appends "mosquitto.db" to the location as written, hence the trailing slash.
        lines += ["persistence true", f"persistence_location {persistence_dir}/", "autosave_interval 30"]
    else:
        lines.append("persistence false")
    lines += [
        "",
        f"listener {port} {bind}",
        f"cafile {cafile}",
        f"certfile {certfile}",
        f"keyfile {keyfile}",
        "require_certificate true",
        # The certificate's common name becomes the user name the ACL sees; a client cannot choose it.
        "use_identity_as_username true",
        # ... and the client id too, whatever the client sent: sessions are keyed by client id, and a second
        # connection under a live id pushes the first off (a clean start discards its queued messages), so a
        # client id anyone could choose would let any device evict the receiver or another device. A listener
        # setting: above the listener line Mosquitto 2.0.11 ignores it, even with per_listener_settings false.
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
    ]
    if crlfile is not None:
        lines.append(f"crlfile {crlfile}")
    return "\n".join([*lines, ""])


def _check_device_id(device_id: str) -> None:
    if not DEVICE_ID_PATTERN.match(device_id):
        raise ConfigError(f"device id {device_id!r}: not [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    if device_id in RESERVED_IDS:
        raise ConfigError(f"device id {device_id!r}: reserved for the station's own identities "
                          f"({', '.join(RESERVED_IDS)})")


def _check_reused(cert_path: Path, ca_cert_pem: bytes, common_name: str, hosts: Sequence[str]) -> None:
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


def _ensure_pair(
    folder: Path, stem: str, ca: tuple[bytes, bytes] | None, common_name: str, *, server: bool,
    hosts: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Reuse ``stem.crt/.key`` when the key exists (checked against the CA), otherwise issue a new pair."""
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    if key_path.exists():
        _read_pair(cert_path, key_path)
        if ca is not None:
            _check_reused(cert_path, ca[0], common_name, hosts)
        return cert_path, key_path
    pair = create_ca(common_name) if ca is None else issue_certificate(*ca, common_name, server=server, hosts=hosts)
    return write_pem_files(folder, stem, *pair)


def _load_ca_files(folder: Path) -> tuple[bytes, bytes]:
    ca_cert, ca_key = _ensure_pair(folder, "ca", None, "bodycam station CA", server=False)
    return _read_pair(ca_cert, ca_key)


def read_ca(folder: Path) -> tuple[bytes, bytes]:
    """The PEM certificate and key of the CA in an existing broker folder, checked to belong together."""
    for path in (folder / "ca.crt", folder / "ca.key"):
        if not path.exists():
            raise KeyFileError(f"station CA {display_path(path)}: missing; run bodycam-station init (or "
                               "broker-setup) first")
    return _read_pair(folder / "ca.crt", folder / "ca.key")


def issue_device_certificate(folder: Path, device_id: str) -> tuple[Path, Path]:
    """The client certificate and key of ``device_id`` (``clients/<id>.crt/.key``), issued if not there yet."""
    _check_device_id(device_id)
    return _ensure_pair(folder / "clients", device_id, read_ca(folder), device_id, server=False)


def write_broker_setup(
    folder: Path,
    *,
    port: int,
    bind: str = "127.0.0.1",
    devices: Sequence[str],
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
    user: str | None = None,
) -> BrokerFiles:
    """Create (or reuse) everything a station broker needs in ``folder``; returns the paths.

    Existing keys are always reused, never replaced: a CA key replaced would orphan every device certificate
    already handed out. The ACL and mosquitto.conf are rewritten from the arguments when they differ; the
    revocation list (``crl.pem``) is created empty once and from then on only changed by revocations.
    """
    for device_id in devices:
        _check_device_id(device_id)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = _load_ca_files(folder)
    server_cert, server_key = _ensure_pair(folder, "server", ca, hosts[0] if hosts else "", server=True, hosts=hosts)
    station_cert, station_key = _ensure_pair(folder, STATION_USER, ca, STATION_USER, server=False)
    # Made here too, so that re-running init (or broker-setup) on an older station folder adds it.
    tools_cert, tools_key = _ensure_pair(folder, TOOLS_USER, ca, TOOLS_USER, server=False)
    clients = {device_id: issue_device_certificate(folder, device_id) for device_id in devices}
    acl = folder / "acl"
    write_if_changed(acl, acl_text().encode(), mode=0o644)
    crl = folder / CRL_FILE
    if crl.exists():
        crl_serials(crl, ca[0])  # a list the CA did not sign would make Mosquitto refuse every client
    else:
        write_file_durably(crl, crl_pem(*ca, revoked={}), mode=0o644)
    persistence = folder / "persistence"
    persistence.mkdir(mode=0o700, exist_ok=True)
    conf = folder / "mosquitto.conf"
    text = mosquitto_conf_text(
        port=port, bind=bind, cafile=folder / "ca.crt", certfile=server_cert, keyfile=server_key, aclfile=acl,
        persistence_dir=persistence, max_packet_bytes=max_packet_bytes, user=user, crlfile=crl,
    )
    write_if_changed(conf, text.encode(), mode=0o644)
    return BrokerFiles(
        folder=folder, ca_cert=folder / "ca.crt", ca_key=folder / "ca.key", server_cert=server_cert,
        server_key=server_key, station_cert=station_cert, station_key=station_key, clients=clients, acl=acl,
        conf=conf, tools_cert=tools_cert, tools_key=tools_key, crl=crl,
    )


def write_if_changed(path: Path, data: bytes, mode: int) -> bool:
    """Durably write ``path`` unless it already holds ``data``; True when it was written."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_file_durably(path, data, mode=mode)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for a broker started on this machine: the demo, tests, benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
