"""``bodycam-provision``: the technician's tool. For now: the device identity key.

``create-key`` makes the device key (0600, never printed); ``show-key`` prints its public key and
fingerprint, the two things the station needs to enroll the device and an auditor needs to pin it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.cliargs import UsageParser
from agent.errors import BodycamError
from agent.evidence.fsutil import display_path
from agent.evidence.keys import DeviceKey, load_device_key, load_or_create_device_key, public_key_pem

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2



def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="bodycam-provision", description="Provision a body-camera device.")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load = load_or_create_device_key if args.command == "create-key" else load_device_key
        key = load(args.key)
    except BodycamError as exc:
        print(f"bodycam-provision: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(describe(key, args.key, args.json, args.pem))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
