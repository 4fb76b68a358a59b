"""``bodycam-agent``: the device daemon's command line.

``simulate`` runs the device side with stand-ins for hardware; the recording daemon (``run``) arrives with
the recording pipeline.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

from agent.errors import BodycamError
from agent.evidence.fsutil import display_path
from agent.evidence.keys import load_or_create_device_key
from agent.evidence.record import DEVICE_ID_PATTERN
from agent.simulate import simulate

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_DEVICE_ID = "sim-0001"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def _device_id(text: str) -> str:
    if not DEVICE_ID_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"device id {text!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    return text


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seconds {text!r} is not a whole number") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"--seconds {value} is outside 0..86400")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bodycam-agent", description="Body-camera device agent.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sim = commands.add_parser("simulate", help="run a simulated device writing a real, signed ledger")
    sim.add_argument("--store", type=Path, required=True, help="store folder (created if missing)")
    sim.add_argument("--seconds", type=_seconds, default=10, help="how many ~1 s segments to write (default 10)")
    sim.add_argument("--device-id", type=_device_id, default=DEFAULT_DEVICE_ID, help="device id")
    sim.add_argument("--key", type=Path, help="device key file (default STORE/identity/device.key; created 0600)")
    sim.add_argument("--fast", action="store_true", help="do not wait a second between segments")
    return parser


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run_simulate(args: argparse.Namespace) -> int:
    key_path: Path = args.key or args.store / "identity" / "device.key"
    key = load_or_create_device_key(key_path)
    result = simulate(
        args.store, key, args.device_id, args.seconds, sleep=(lambda _s: None) if args.fast else time.sleep
    )
    print(
        f"simulated device {args.device_id}: wrote {result.records} records and {result.segments} segments "
        f"into {display_path(args.store)}; head seq {result.head_seq}; key fingerprint {key.fingerprint}"
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        return _run_simulate(args)
    except BodycamError as exc:
        print(f"bodycam-agent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("bodycam-agent: interrupted; every record written so far is durable", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
