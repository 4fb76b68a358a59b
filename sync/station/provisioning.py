"""``bodycam-station init``, ``enroll`` and ``revoke``: the station's half of the technician's flow.

    init    --dir DIR [--host NAME]... [--port N] [--bind ADDR] [--station-id ID] [--run-as USER]
            [--data DIR] [--ack-key FILE]
    enroll  --config FILE REQUEST [--out BUNDLE] [--replace] [--broker-host NAME]
    revoke  --config FILE --device ID

``init`` makes DIR/broker (CA, server certificate, the receiver's and the station tools' client certificates,
ACL, empty CRL, mosquitto.conf: sync/broker.py), the acknowledgement key and DIR/station.toml; nothing
existing is replaced, and a second run with the same settings changes nothing; run again on an older station
it adds what is missing and regenerates the ACL and mosquitto.conf (the upgrade path). ``enroll`` checks a
device's request (sync/enrollment.py), registers its key, signs its MQTT client certificate and writes the
bundle. ``revoke`` marks the device revoked in the index and puts its certificates on the CRL the broker
checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from agent.cliargs import UsageParser, device_id_arg
from agent.errors import ConfigError, UsageError
from agent.evidence.clock import SystemClock
from agent.evidence.fsutil import display_path, write_file_durably
from agent.evidence.keys import load_device_key, load_or_create_device_key, public_key_pem
from agent.evidence.record import DEVICE_ID_PATTERN
from firmware_config.station_config import StationConfig, load_station_config, parse_station_config
from firmware_config.toml_write import dumps
from sync.broker import DEFAULT_MAX_PACKET_BYTES, RESERVED_IDS, write_broker_setup, write_if_changed
from sync.broker_certs import certify_client_key
from sync.enrollment import EnrollmentBundle, parse_request, read_json_file, spki
from sync.station.certificates import StationCA, broker_folder, issued_certificates, record_issued
from sync.station.index import technician_index
from sync.station.report import enroll_device

EXIT_OK = 0
DEFAULT_PORT = 8883
LOOPBACK = ("localhost", "127.0.0.1", "::1")
SETTINGS_FILE = "init.json"  # the broker settings init was last run with, so a bare second run repeats them


def add_provisioning_commands(commands: argparse._SubParsersAction[UsageParser]) -> None:
    init = commands.add_parser(
        "init", help="create the station: CA, broker certificates, ACL, CRL, Mosquitto config, ack key, config",
        description="Create (or complete) a station in --dir: broker/ (CA, server certificate, the receiver's "
        "and the station tools' client certificates, ACL, empty CRL, mosquitto.conf), the acknowledgement key "
        "and station.toml. Keys and station.toml are never overwritten; a second run with the same settings "
        "changes nothing; on an older station it adds what is missing and regenerates the broker's config.")
    init.add_argument("--dir", type=Path, required=True, help="the station's folder")
    init.add_argument("--host", action="append", default=[], help="a name or address devices reach the broker "
                      "at (repeatable; the first goes into bundles; default localhost and 127.0.0.1)")
    init.add_argument("--port", type=int, help=f"the broker's TLS port (default {DEFAULT_PORT})")
    init.add_argument("--bind", help="the listener's address (default 0.0.0.0 when a --host is not loopback, "
                      "else 127.0.0.1)")
    init.add_argument("--station-id", type=device_id_arg, help="the station's id (default: station-01)")
    init.add_argument("--run-as", help="the user Mosquitto drops to when started as root")
    init.add_argument("--data", type=Path, help="the evidence store and index (default DIR/data)")
    init.add_argument("--ack-key", type=Path, help="the acknowledgement key file (default DIR/ack.key)")
    enroll = commands.add_parser(
        "enroll", help="enrol a device from its request file; writes the bundle for bodycam-provision apply",
        description="Check a device's enrolment request, register its key, sign its MQTT client certificate and "
        "write the bundle. A different key for an enrolled device, or a revoked device, needs --replace.")
    enroll.add_argument("--config", type=Path, required=True, help="the station's TOML config file")
    enroll.add_argument("request", type=Path, help="the request file bodycam-provision init wrote")
    enroll.add_argument("--out", type=Path, help="where to write the bundle (default: <device>.bundle.json "
                        "beside the request)")
    enroll.add_argument("--replace", action="store_true", help="re-enrol: replace the enrolled key, lift a "
                        "revocation, revoke certificates issued for another MQTT key, issue a new certificate")
    enroll.add_argument("--broker-host", help="the broker address devices use (default: the first --host of init)")
    revoke = commands.add_parser(
        "revoke", help="revoke a device: its uploads are refused, its certificates go on the broker's CRL",
        description="Mark the device revoked in the station index (its uploads are refused and reported) and "
        "add every certificate issued for it to the CRL; then reload the broker.")
    revoke.add_argument("--config", type=Path, required=True, help="the station's TOML config file")
    revoke.add_argument("--device", type=device_id_arg, required=True, help="the device id")


# --- init -----------------------------------------------------------------------------------------------------


def _snapshot(paths: list[Path]) -> dict[Path, str]:
    """Each file at or under ``paths`` and its SHA-256: what init reports as created or updated."""
    found: dict[Path, str] = {}
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in (p for p in files if p.is_file()):
            found[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclasses.dataclass(frozen=True)
class BrokerChoice:
    """What init sets the broker up with; kept in broker/init.json so a bare second run repeats it."""

    hosts: list[str]
    port: int
    bind: str
    run_as: str | None


def _init_settings(args: argparse.Namespace, folder: Path, existing: StationConfig | None) -> BrokerChoice:
    """The broker settings for this run: the arguments given, else the previous run's, else the defaults."""
    recorded_path = folder / "broker" / SETTINGS_FILE
    recorded: dict[str, object] = {}
    if recorded_path.exists():
        recorded = read_json_file(recorded_path, "init settings")
    hosts = args.host or recorded.get("hosts") or ["localhost", "127.0.0.1"]
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        raise ConfigError(f"{display_path(recorded_path)}: key 'hosts': must be a list of names")
    default_port = existing.broker.port if existing else DEFAULT_PORT
    port = args.port if args.port is not None else recorded.get("port", default_port)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: not 1..65535")
    bind = args.bind or recorded.get("bind") or ("0.0.0.0" if set(hosts) - set(LOOPBACK) else "127.0.0.1")
    run_as = args.run_as or recorded.get("run_as")
    return BrokerChoice(list(hosts), port, str(bind), None if run_as is None else str(run_as))


def _check_existing(config: StationConfig, args: argparse.Namespace, port: int) -> None:
    """A station.toml already there is kept; it must agree with what this run was asked to set up."""
    if args.station_id and args.station_id != config.station_id:
        raise ConfigError(f"{config.source}: key 'station.id': {config.station_id!r}, not --station-id "
                          f"{args.station_id!r}; station.toml is never rewritten: edit it or leave --station-id out")
    if config.broker.port != port:
        raise ConfigError(f"{config.source}: key 'broker.port': {config.broker.port}, not {port}; edit it or "
                          f"pass --port {config.broker.port}")


STATION_TOML_HEADER = (
    "Written once by bodycam-station init; edit freely (firmware_config/station.example.toml lists every key).\n"
    "[broker] is the station's own Mosquitto; this receiver connects to it as CN \"station\".\n"
    "limits.max_message_bytes is also the broker's max_packet_size.")


def _station_toml(toml_path: Path, station_id: str, data: Path, ack_key: Path, broker: Path, host: str,
                  port: int) -> str:
    """The new station.toml, checked to read back as a valid config (ConfigError, naming the key, if not)."""
    text = dumps({
        "station": {"id": station_id, "data": str(data), "key": str(ack_key)},
        "broker": {"host": host, "port": port, "ca": str(broker / "ca.crt"), "cert": str(broker / "station.crt"),
                   "key": str(broker / "station.key")},
        "limits": {"max_message_bytes": DEFAULT_MAX_PACKET_BYTES},
    }, STATION_TOML_HEADER)
    parse_station_config(tomllib.loads(text), display_path(toml_path))  # what init writes must be what serve reads
    return text


def station_init(args: argparse.Namespace) -> int:
    folder: Path = args.dir.absolute()
    toml_path, broker = folder / "station.toml", folder / "broker"
    existing = load_station_config(toml_path) if toml_path.exists() else None
    settings = _init_settings(args, folder, existing)
    hosts, port = settings.hosts, settings.port
    if existing is not None:
        _check_existing(existing, args, port)
    ack_key = existing.key if existing else (args.ack_key or folder / "ack.key").absolute()
    data = existing.data if existing else (args.data or folder / "data").absolute()
    text = None
    if existing is None:  # checked before anything is made
        receiver_host = next((h for h in hosts if h in LOOPBACK), hosts[0])
        text = _station_toml(toml_path, args.station_id or "station-01", data, ack_key, broker, receiver_host, port)
    watched = [broker, toml_path, ack_key]
    before = _snapshot(watched)

    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    max_packet = existing.max_message_bytes if existing else DEFAULT_MAX_PACKET_BYTES
    files = write_broker_setup(broker, port=port, bind=settings.bind, devices=[], hosts=hosts,
                               max_packet_bytes=max_packet, user=settings.run_as)
    recorded = json.dumps(dataclasses.asdict(settings), indent=2, sort_keys=True) + "\n"
    write_if_changed(broker / SETTINGS_FILE, recorded.encode(), mode=0o644)
    key = load_or_create_device_key(ack_key)
    if text is not None:
        write_file_durably(toml_path, text.encode(), mode=0o644, exclusive=True)

    after = _snapshot(watched)
    created = sorted(p for p in after if p not in before)
    changed = sorted(p for p in after if p in before and before[p] != after[p])
    if not created and not changed:
        print(f"station {display_path(folder)}: already initialised; nothing changed")
    for path in created:
        print(f"created {display_path(path)}")
    for path in changed:
        print(f"updated {display_path(path)}")
    if files.conf in changed:
        # Listener settings (use_username_as_clientid among them) are read at start only, not on SIGHUP.
        print("the broker's config changed: restart the broker (systemctl restart bodycam-broker); a reload does "
              "not apply it")
    print(f"station config {display_path(toml_path)}")
    print(f"broker: mosquitto -c {display_path(files.conf)}  (port {port}, devices reach it as {hosts[0]})")
    print(f"CA fingerprint (SHA-256) {_cert_fingerprint(files.ca_cert.read_bytes())}")
    print(f"acknowledgement key fingerprint {key.fingerprint}")
    return EXIT_OK


def _cert_fingerprint(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


# --- enroll ---------------------------------------------------------------------------------------------------


def _bundle_host(broker: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    cert = x509.load_pem_x509_certificate((broker / "server.crt").read_bytes())
    names = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    return str(names[0].value)


def _enroll(config: StationConfig, args: argparse.Namespace) -> int:
    request = parse_request(read_json_file(args.request, "enrolment request"), display_path(args.request))
    device = request.device_id
    if device == config.broker.client_id:
        # The broker keys sessions by client id: under the receiver's it could resume what was queued for it.
        raise UsageError(f"device {device}: the receiver's client id ({config.source}: key 'broker.client_id'); "
                         "a device cannot have it; nothing enrolled")
    broker = broker_folder(config.broker.ca, config.source)
    ca = StationCA.load(broker)
    ack_key = load_device_key(config.key)
    revoked_serials = ca.revoked()
    host = _bundle_host(broker, args.broker_host)
    csr_key = spki(request.mqtt_public_key)
    with technician_index(config.index_path) as index:
        row = index.device(device)
        live = [c for c in issued_certificates(broker, device) if c.serial_number not in revoked_serials]
        other_keys = [c for c in live if spki(c.public_key()) != csr_key]
        if not args.replace:
            if row is not None and row.revoked:
                raise UsageError(f"device {device}: revoked at this station; pass --replace to enrol it again "
                                 "(a new certificate is issued)")
            if row is not None and row.public_key != request.public_key:
                raise UsageError(f"device {device}: already enrolled with key {row.fingerprint[:16]}...; pass "
                                 f"--replace to enrol key {request.fingerprint[:16]}... instead")
            if other_keys:
                raise UsageError(f"device {device}: holds certificate {other_keys[0].serial_number:x} for another "
                                 "MQTT key; pass --replace to revoke it and issue one for the new key")
        # Checked: from here on every step is needed and each repeats safely if a later one fails.
        newly_revoked = ca.revoke({c.serial_number for c in other_keys}) if args.replace else set()
        reusable = [c for c in live if spki(c.public_key()) == csr_key]
        if reusable and not args.replace:
            cert_pem = reusable[-1].public_bytes(serialization.Encoding.PEM)
            issued = f"certificate {reusable[-1].serial_number:x} (issued before, reused)"
        else:
            cert_pem = certify_client_key(ca.cert_pem, ca.key_pem, request.mqtt_public_key, device)
            path = record_issued(broker, device, cert_pem)
            issued = f"certificate {x509.load_pem_x509_certificate(cert_pem).serial_number:x} ({display_path(path)})"
        outcome = enroll_device(index, device, request.ed25519, SystemClock().now().wall_us, args.replace)
    bundle = EnrollmentBundle(
        device_id=device, station_id=config.station_id, ca=ca.cert_pem.decode("ascii"),
        station_key=public_key_pem(ack_key.public_key), broker_host=host, broker_port=config.broker.port,
        max_message_kib=config.max_message_bytes // 1024, client_cert=cert_pem.decode("ascii"),
        fingerprint=request.fingerprint,
    ).signed(ack_key)
    out = args.out or args.request.with_name(f"{device}.bundle.json")
    write_file_durably(out, bundle.to_json().encode(), mode=0o644)
    print(outcome)
    print(f"device {device}: {issued}")
    if newly_revoked:
        print(f"device {device}: revoked {len(newly_revoked)} certificate(s) for its previous MQTT key; "
              + _RELOAD_HINT)
    print(f"bundle {display_path(out)}: carry it to the device and run bodycam-provision apply")
    return EXIT_OK


# --- revoke ---------------------------------------------------------------------------------------------------

_RELOAD_HINT = ("reload the broker so it refuses them: systemctl reload bodycam-broker (or kill -HUP the "
                "mosquitto process); connections already open stay until they close or the broker restarts")


def _revoke(config: StationConfig, args: argparse.Namespace) -> int:
    device = args.device
    if device in RESERVED_IDS or not DEVICE_ID_PATTERN.match(device):
        raise UsageError(f"--device {device!r}: not a device id")
    broker = broker_folder(config.broker.ca, config.source)
    ca = StationCA.load(broker)
    ca.revoked()  # a damaged CRL is reported before the index is touched
    certs = issued_certificates(broker, device)
    with technician_index(config.index_path) as index:
        row = index.device(device)
        if row is None and not certs:
            raise UsageError(f"device {device}: not enrolled at this station and no certificate issued for it")
        new = ca.revoke({c.serial_number for c in certs})
        was_revoked = row is not None and row.revoked
        if row is not None and not row.revoked:
            index.put_device(dataclasses.replace(row, revoked=True))
    if was_revoked and not new:
        print(f"device {device}: already revoked; nothing changed")
        return EXIT_OK
    print(f"device {device}: revoked; its uploads are refused and reported as problems from now on")
    if new:
        serials = ", ".join(f"{s:x}" for s in sorted(new))
        print(f"revocation list {display_path(ca.crl_path)}: added {len(new)} certificate(s) ({serials}); "
              + _RELOAD_HINT)
    return EXIT_OK


PROVISIONING_COMMANDS: dict[str, Callable[[StationConfig, argparse.Namespace], int]] = {
    "enroll": _enroll, "revoke": _revoke,
}
