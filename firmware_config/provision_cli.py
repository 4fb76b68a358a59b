"""``bodycam-provision``: the technician's tool on the device (docs/provisioning.md).

    bodycam-provision init --dir DIR --device-id ID --hardware NAME --store PATH [--officer ID] [--profiles DIR]
    bodycam-provision apply --dir DIR BUNDLE
    bodycam-provision create-key --key FILE [--json | --pem]
    bodycam-provision show-key --key FILE [--json | --pem]

``init`` creates the device's Ed25519 identity key (DIR/device.key) and its MQTT client key (DIR/mqtt.key),
both 0600 and never overwritten, writes DIR/device.toml from a hardware profile, and writes the enrolment
request (DIR/<id>.request.json: the public key, its fingerprint, a CSR) for the station's
``bodycam-station enroll``. No private key leaves the device. ``apply`` checks the station's bundle against
the device's own keys, installs the CA, the client certificate and the station's acknowledgement key
(DIR/ca.pem, DIR/mqtt.crt, DIR/station.pub), and points device.toml's [sync] at them. Both are idempotent: a
second run changes nothing and says so. ``create-key``/``show-key`` handle the identity key alone.

Exit 0: done. Exit 1: a key file cannot be used (create-key/show-key). Exit 2: wrong arguments or bad input
(config, request, bundle); one line names the file and what is wrong, and nothing was changed.
"""

from __future__ import annotations

import argparse
import json
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from agent.cliargs import UsageParser, device_id_arg
from agent.errors import BodycamError, KeyFileError, UsageError
from agent.evidence.fsutil import display_path, write_file_durably
from agent.evidence.keys import DeviceKey, load_device_key, load_or_create_device_key, public_key_pem
from agent.evidence.text import printable
from firmware_config.device_config import load_device_config, parse_device_config
from firmware_config.toml_file import read_toml
from firmware_config.toml_write import dumps
from sync.broker import RESERVED_IDS, write_if_changed
from sync.enrollment import (
    check_bundle,
    load_or_create_mqtt_key,
    make_request,
    parse_bundle,
    parse_request,
    read_json_file,
    same_public_key,
)

PROG = "bodycam-provision"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
UNASSIGNED_OFFICER = "unassigned"
HEADER = ("Written by bodycam-provision; every key is documented in firmware_config/device.example.toml.\n"
          "init wrote it from a hardware profile; apply rewrote [sync] and device.enrolled_fingerprint.")


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog=PROG, description="Provision a body-camera device.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)
    for name, text in (
        ("create-key", "create the device key if it does not exist, then show its public half"),
        ("show-key", "show the public key and fingerprint of an existing device key"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--key", type=Path, required=True, help="the device's private key file")
        output = sub.add_mutually_exclusive_group()
        output.add_argument("--json", action="store_true", help="machine-readable output")
        output.add_argument("--pem", action="store_true", help="print only the public key in PEM (for --pubkey)")
    init = commands.add_parser(
        "init", help="create the device's keys and config and write its enrolment request",
        description="Create the device's identity key and MQTT key (never overwritten), DIR/device.toml from a "
        "hardware profile, and the enrolment request to carry to the station.")
    init.add_argument("--dir", type=Path, required=True, help="the device's provisioning folder (keys, config)")
    init.add_argument("--device-id", type=device_id_arg, required=True, help="the device id")
    init.add_argument("--hardware", required=True, help="the hardware profile (pi4-pi5, pi-zero-2w, synthetic)")
    init.add_argument("--store", type=Path, required=True, help="the evidence store folder")
    init.add_argument("--officer", default=UNASSIGNED_OFFICER,
                      help=f"the officer id until the station assigns one (default {UNASSIGNED_OFFICER})")
    init.add_argument("--profiles", type=Path, help="a folder of procedure profiles (default: the shipped ones)")
    apply = commands.add_parser(
        "apply", help="install the station's enrolment bundle and point [sync] at it",
        description="Check the bundle is for this device and its keys, install the station CA, the client "
        "certificate and the station's acknowledgement key, and update device.toml.")
    apply.add_argument("--dir", type=Path, required=True, help="the folder bodycam-provision init used")
    apply.add_argument("bundle", type=Path, help="the bundle bodycam-station enroll wrote")
    return parser


def describe(key: DeviceKey, path: Path, as_json: bool, pem_only: bool = False) -> str:
    pem = public_key_pem(key.public_key)
    if pem_only:
        return pem.rstrip()
    if as_json:
        return json.dumps(
            {"key_file": display_path(path), "fingerprint": key.fingerprint,
             "public_key_hex": key.public_raw.hex(), "public_key_pem": pem}
        )
    return f"fingerprint {key.fingerprint}\npublic key (hex) {key.public_raw.hex()}\n{pem.rstrip()}"


# --- init -----------------------------------------------------------------------------------------------------


def _new_config(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The device.toml for a new device: identity and store from the arguments, the rest from the profile."""
    from firmware_config.hardware import hardware_names, load_hardware_profile

    if args.hardware not in hardware_names():
        raise UsageError(f"--hardware {args.hardware!r}: no such profile (known: {', '.join(hardware_names())})")
    profile = load_hardware_profile(args.hardware)
    data: dict[str, Any] = {
        "device": {"id": args.device_id, "officer": args.officer, "store": str(args.store.absolute()),
                   "key": str(folder / "device.key"), "enrolled_fingerprint": ""},
    }
    data.update({table: profile[table] for table in ("camera", "recorder", "controls") if table in profile})
    if args.profiles is not None:
        data["workflow"] = {"profiles": str(args.profiles.absolute())}
    return data


def _init(args: argparse.Namespace) -> int:
    if args.device_id in RESERVED_IDS:
        raise UsageError(f"--device-id {args.device_id!r}: reserved for the station")
    folder: Path = args.dir.absolute()
    toml_path = folder / "device.toml"
    done: list[str] = []
    new_text = None
    if toml_path.exists():
        config = load_device_config(toml_path)
        if config.device_id != args.device_id:
            raise UsageError(f"{display_path(toml_path)}: key 'device.id': this device is {config.device_id!r}, "
                             f"not {args.device_id!r}; init never changes a device's identity")
        key_path = config.key
    else:
        data = _new_config(args, folder)
        new_text = dumps(data, HEADER)
        parse_device_config(tomllib.loads(new_text), display_path(toml_path))  # checked before anything is made
        key_path = folder / "device.key"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    existed = key_path.exists()
    device_key = load_or_create_device_key(key_path)
    done.append(f"{'kept' if existed else 'created'} identity key {display_path(key_path)} (0600)")
    mqtt_path = folder / "mqtt.key"
    mqtt_key, created = load_or_create_mqtt_key(mqtt_path)
    done.append(f"{'created' if created else 'kept'} MQTT key {display_path(mqtt_path)} (0600)")
    if new_text is not None:
        write_file_durably(toml_path, new_text.encode(), mode=0o644, exclusive=True)
        done.append(f"created config {display_path(toml_path)} (hardware {args.hardware})")
    else:
        done.append(f"kept config {display_path(toml_path)}")
        if config.store != args.store.absolute():
            done.append(f"kept its store {display_path(config.store)}, not --store {display_path(args.store)} "
                        "(edit device.toml to move it)")
    request_path = folder / f"{args.device_id}.request.json"
    if _request_matches(request_path, args.device_id, device_key, mqtt_key.public_key()):
        done.append(f"kept enrolment request {display_path(request_path)}")
    else:
        request = make_request(args.device_id, device_key, mqtt_key)
        write_file_durably(request_path, request.to_json().encode(), mode=0o644)
        done.append(f"wrote enrolment request {display_path(request_path)}")
    if all(line.startswith("kept") for line in done):
        print(f"device {args.device_id}: already initialised; nothing changed")
    print("\n".join(done))
    print(f"device {args.device_id}: key fingerprint {device_key.fingerprint}")
    print(f"carry {display_path(request_path)} to the station: bodycam-station enroll --config STATION.toml "
          f"{request_path.name}")
    return EXIT_OK


def _request_matches(path: Path, device_id: str, key: DeviceKey, mqtt_public: Any) -> bool:
    if not path.exists():
        return False
    try:
        request = parse_request(read_json_file(path, "enrolment request"), display_path(path))
    except UsageError:
        return False  # damaged or stale: it holds no secret, so a fresh one replaces it
    return (request.device_id == device_id and request.public_key == key.public_raw.hex()
            and same_public_key(request.mqtt_public_key, mqtt_public))


# --- apply ----------------------------------------------------------------------------------------------------


def _apply(args: argparse.Namespace) -> int:
    folder: Path = args.dir.absolute()
    toml_path = folder / "device.toml"
    config = load_device_config(toml_path)
    raw = read_toml(toml_path, display_path(toml_path))
    device_key = load_device_key(config.key)
    mqtt_path = folder / "mqtt.key"
    if not mqtt_path.exists():
        raise KeyFileError(f"key file {display_path(mqtt_path)}: not found; run bodycam-provision init first")
    mqtt_key, _ = load_or_create_mqtt_key(mqtt_path)
    source = display_path(args.bundle)
    bundle = parse_bundle(read_json_file(args.bundle, "enrolment bundle"), source)
    check_bundle(bundle, source, config.device_id, device_key.fingerprint, mqtt_key.public_key())

    files = {folder / "ca.pem": bundle.ca, folder / "mqtt.crt": bundle.client_cert,
             folder / "station.pub": bundle.station_key}
    sync = dict(raw.get("sync", {}))
    sync.update({
        "broker_host": bundle.broker_host, "broker_port": bundle.broker_port, "ca": str(folder / "ca.pem"),
        "cert": str(folder / "mqtt.crt"), "key": str(mqtt_path), "station_key": str(folder / "station.pub"),
        "max_message_kib": bundle.max_message_kib,
    })
    updated = {**raw, "device": {**raw["device"], "enrolled_fingerprint": bundle.fingerprint}, "sync": sync}
    text = dumps(updated, HEADER)
    parse_device_config(tomllib.loads(text), display_path(toml_path))  # refused here, before anything is written
    mode = stat.S_IMODE(toml_path.stat().st_mode)
    changed = [path for path, pem in files.items() if write_if_changed(path, pem.encode(), mode=0o644)]
    if write_if_changed(toml_path, text.encode(), mode=mode):
        changed.append(toml_path)
    if not changed:
        print(f"device {config.device_id}: bundle already applied; nothing changed")
    for path in changed:
        print(f"wrote {display_path(path)}")
    ca_fingerprint = x509.load_pem_x509_certificate(bundle.ca.encode()).fingerprint(hashes.SHA256()).hex()
    print(f"station {bundle.station_id}: broker {bundle.broker_host}:{bundle.broker_port}")
    print(f"station CA fingerprint (SHA-256) {ca_fingerprint}")
    print(f"station acknowledgement key fingerprint {bundle.station_fingerprint}")
    print("compare both with what bodycam-station init printed; then: bodycam-sync --config "
          f"{display_path(toml_path)}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("init", "apply"):
        try:
            return _init(args) if args.command == "init" else _apply(args)
        except (BodycamError, OSError) as exc:
            print(f"{PROG}: {printable(str(exc))}", file=sys.stderr)
            return EXIT_USAGE
    try:
        load = load_or_create_device_key if args.command == "create-key" else load_device_key
        key = load(args.key)
    except BodycamError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(describe(key, args.key, args.json, args.pem))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
