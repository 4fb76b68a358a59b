"""``bodycam-sync --config FILE [--once [--timeout SECONDS]] [--verbose]``: the device uploader.

Reads the device's store (never writes it: receipts and purges go through the custody, the running agent
first) and sends it to the station's broker as ``[sync]`` in the config says.

Without ``--once`` it runs until SIGTERM/SIGINT (exit 0): a pass every ``scan_seconds``, a reconnect
``retry_seconds`` after the broker went away. With ``--once`` it runs passes until every record and file is
acknowledged and the acknowledged segments are purged as the retention policy allows: exit 0, or exit 1
when that did not happen within ``--timeout`` seconds (default 600) or cannot happen (a damaged ledger line).
Exit 2: wrong arguments or an unusable config (no broker, a missing TLS or key file); one line says why.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import threading
from pathlib import Path
from types import FrameType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.cliargs import UsageParser
from agent.errors import BodycamError, ConfigError
from agent.evidence.custody import Custody, DirectCustody, RetentionPolicy
from agent.evidence.fsutil import display_path
from agent.evidence.keys import load_public_key
from agent.evidence.store import StoreLayout
from firmware_config.device_config import DeviceConfig, load_device_config
from sync.uploader.custody_port import AgentCustody, CustodyChain
from sync.uploader.runner import Uploader

PROG = "bodycam-sync"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT_S = 600.0



def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--timeout {text!r} is not a number") from None
    if not 0 < value <= 7 * 86_400:
        raise argparse.ArgumentTypeError(f"--timeout {value:g} is outside 0..604800 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog=PROG, description="Upload the device's evidence to the station (MQTT 5 over TLS).")
    parser.add_argument("--config", type=Path, required=True, help="the device's TOML config file ([sync] table)")
    parser.add_argument("--once", action="store_true",
                        help="run until everything is acknowledged and purged, then exit (0 done, 1 not done)")
    parser.add_argument("--timeout", type=_seconds, default=None,
                        help=f"with --once: give up after this many seconds (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--verbose", action="store_true", help="log debug messages too")
    parser.add_argument("--validate-config", action="store_true",
                        help="only check the config, its [sync] table and the files it names; connect to nothing")
    return parser


def make_custody(config: DeviceConfig, station_key: Ed25519PublicKey) -> Custody:
    """The running agent (control socket) first, else the ledger opened directly."""
    direct = DirectCustody(store=config.store, key_path=config.key, device_id=config.device_id, station_key=station_key,
                           policy=RetentionPolicy.from_settings(config.sync))
    return CustodyChain([("agent", AgentCustody(config.socket_path)), ("direct", direct)],
                        available={"agent": config.socket_path})


def check_config(config: DeviceConfig) -> Ed25519PublicKey:
    """Refuse a config the uploader cannot work with (ConfigError names the key); the station's public key."""
    sync = config.sync
    if not sync.broker_host:
        raise ConfigError(f"{config.source}: key 'sync.broker_host': not set; there is no station to upload to")
    for name, path in (("ca", sync.ca), ("cert", sync.cert), ("key", sync.key)):
        if path is None or not os.access(path, os.R_OK):
            shown = display_path(path) if path is not None else "(none)"
            raise ConfigError(f"{config.source}: key 'sync.{name}': {shown} is missing or not readable")
    # Loaded once here so that a wrong file is a clear start-up error, not a connection failing every pass.
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(sync.ca))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{config.source}: key 'sync.ca': not a usable PEM certificate ({_reason(exc)})") from None
    try:
        context.load_cert_chain(str(sync.cert), str(sync.key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{config.source}: key 'sync.cert' / 'sync.key': not a usable PEM certificate and its key "
                          f"({_reason(exc)})") from None
    assert sync.station_key is not None  # the config refuses a broker without one
    try:
        station_key = load_public_key(sync.station_key)
    except BodycamError as exc:
        raise ConfigError(f"{config.source}: key 'sync.station_key': {exc}") from None
    ledger = StoreLayout(config.store).ledger_path
    if not ledger.is_file():
        raise ConfigError(f"{config.source}: key 'device.store': {display_path(ledger)} does not exist")
    return station_key


def _reason(exc: OSError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or exc)


def _log_handler(verbose: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # paho's own logger speaks only through on_log, which is not set; keep library chatter out of INFO.
    logging.getLogger("paho").setLevel(logging.WARNING)
    return handler


def main(argv: list[str] | None = None, *, custody: Custody | None = None) -> int:
    """``custody`` replaces the agent/direct custody (for tests)."""
    args = build_parser().parse_args(argv)
    if args.timeout is not None and not args.once:
        print(f"{PROG}: --timeout applies to --once only (see --help)", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_device_config(args.config)
        station_key = check_config(config)
    except BodycamError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.validate_config:
        settings = config.sync
        print(f"{config.source}: valid for {PROG} (device {config.device_id}, broker {settings.broker_host}:"
              f"{settings.broker_port}, chunk {settings.chunk_bytes // 1024} KiB x {settings.window_chunks})")
        return EXIT_OK
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()  # the session in progress ends at its next wait; nothing half-written anywhere

    handler = _log_handler(args.verbose)
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    uploader: Uploader | None = None
    try:
        uploader = Uploader(config=config, custody=custody or make_custody(config, station_key),
                            station_key=station_key, stop=stop)
        if args.once:
            return EXIT_OK if uploader.run_once(args.timeout or DEFAULT_TIMEOUT_S) else EXIT_FAILED
        uploader.run_forever()
        return EXIT_OK
    except BodycamError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if uploader is not None:
            uploader.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
        logging.getLogger().removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
