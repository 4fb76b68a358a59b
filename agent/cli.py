"""``bodycam-agent``: the device agent's command line.

``run`` is the daemon (camera, buttons, workflow, control socket, health watch; READY after the self-test);
``selftest`` runs the start-up checks alone; ``ctl`` talks to a running daemon; ``simulate`` runs the device
side with the synthetic camera; ``record`` records with any camera backend until a duration or a signal.

Exit 0: done. Exit 1: it failed (one line says why). Exit 2: wrong arguments or a bad config file.
Exit 3: the self-test failed (``run``; the unit's RestartPreventExitStatus=). Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from agent.camera.base import CameraSettings
from agent.camera.factory import BACKENDS
from agent.cliargs import UsageParser, device_id_arg
from agent.errors import BodycamError, ConfigError, SelfTestError
from agent.evidence.fsutil import display_path
from agent.evidence.keys import load_or_create_device_key
from agent.scenario import load_scenario
from agent.simulate import RecordingResult, record, simulate, simulate_scenario
from agent.stopping import StopRequest

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SELFTEST = 3  # the self-test failed: the unit's RestartPreventExitStatus= (agent/health/startup.py)
DEFAULT_DEVICE_ID = "sim-0001"


def _bounded(name: str, convert: Callable[[str], float], low: float, high: float) -> Callable[[str], float]:
    """An argparse type: ``convert`` the text and insist on ``low <= value <= high``."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            kind = "whole number" if convert is int else "number"
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not a {kind}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} {value} is outside {low}..{high}")
        return value

    return parse


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--store", type=Path, required=True, help="store folder (created if missing)")
    sub.add_argument("--device-id", type=device_id_arg, default=DEFAULT_DEVICE_ID, help="device id")
    sub.add_argument("--officer-id", default="unassigned", help="officer id burned into the overlay")
    sub.add_argument("--key", type=Path, help="device key file (default STORE/identity/device.key; created 0600)")
    sub.add_argument("--segment-seconds", type=_bounded("--segment-seconds", float, 1, 600), default=10.0,
                     help="segment length in seconds (default 10)")
    sub.add_argument("--width", type=_bounded("--width", int, 64, 4096), default=640, help="frame width")
    sub.add_argument("--height", type=_bounded("--height", int, 64, 4096), default=360, help="frame height")
    sub.add_argument("--fps", type=_bounded("--fps", int, 1, 120), default=30, help="frames per second")
    sub.add_argument("--bitrate", type=_bounded("--bitrate", int, 100_000, 50_000_000), default=2_000_000,
                     help="H.264 bitrate in bits/s")


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="bodycam-agent", description="Body-camera device agent.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)
    sim = commands.add_parser("simulate", help="record synthetic video into a real, signed store")
    _common(sim)
    sim.add_argument("--seconds", type=_bounded("--seconds", int, 0, 86_400), default=10,
                     help="seconds of video to record (default 10)")
    sim.add_argument("--fast", action="store_true", help="make frames as fast as possible instead of in real time")
    sim.add_argument("--scenario", type=Path,
                     help="press buttons as this TOML file scripts (firmware_config/scenarios/); overrides --seconds")
    rec = commands.add_parser("record", help="record with a camera backend until --seconds or Ctrl-C/SIGTERM")
    _common(rec)
    rec.add_argument("--backend", choices=BACKENDS, default="synthetic",
                     help="camera backend (the BODYCAM_CAMERA environment variable overrides it)")
    rec.add_argument("--source", default="0", help="opencv backend: a V4L2 device index or a video file")
    rec.add_argument("--seconds", type=_bounded("--seconds", float, 0, 86_400 * 7), default=None,
                     help="stop after this many seconds of video (default: run until stopped)")
    rec.add_argument("--prebuffer-seconds", type=_bounded("--prebuffer-seconds", float, 0, 120), default=0.0,
                     help="seconds of video kept before the start (default 0)")
    run = commands.add_parser("run", help="the device daemon: camera, buttons, workflow, control socket")
    run.add_argument("--config", type=Path, required=True, help="the device's TOML config file")
    run.add_argument("--validate-config", action="store_true",
                     help="only check the config file (every key, type, range and profile); start nothing")
    selftest = commands.add_parser("selftest", help="the start-up self-test (camera, store, clock, key); "
                                   "run it with the agent stopped, as its user")
    selftest.add_argument("--config", type=Path, required=True, help="the device's TOML config file")
    selftest.add_argument("--json", action="store_true", help="print the checks as JSON")
    ctl = commands.add_parser("ctl", help="send one operation to a running daemon's control socket")
    ctl.add_argument("--socket", type=Path, default=Path("/run/bodycam/control.sock"), help="control socket path")
    ops = ctl.add_subparsers(dest="op", required=True, parser_class=UsageParser)
    ops.add_parser("status", help="show the workflow and recorder state")
    ops.add_parser("open-case", help="open a case").add_argument("--procedure", help="procedure (default: configured)")
    ops.add_parser("stage", help="the next stage is done").add_argument("--skip", action="store_true",
                                                                        help="skip it (recorded as skipped)")
    ops.add_parser("record", help="start recording")
    ops.add_parser("stop", help="stop recording").add_argument("--reason", help="why (required while a case is open)")
    ops.add_parser("bookmark", help="bookmark this moment").add_argument("--note", help="a note")
    ops.add_parser("retention", help="flag for long-term retention").add_argument("--reason", required=True,
                                                                                 help="why (art. 19)")
    ops.add_parser("close-case", help="close the open case early (missing stages are listed)").add_argument(
        "--reason", help="why (required while a required stage is not done: the close guard)")
    ops.add_parser("purge", help="remove the segments the station acknowledged, as [sync] retention allows")
    ops.add_parser("assign", help="assign the officer carrying this device (at the dock; refused in a case)"
                   ).add_argument("--officer", required=True, help="the officer id (printable, 1-64 characters)")
    return parser


def _run_daemon(args: argparse.Namespace, stop: threading.Event) -> int:
    from agent.daemon import run_daemon
    from firmware_config.device_config import load_device_config

    config = load_device_config(args.config)
    if args.validate_config:
        print(f"{config.source}: valid (device {config.device_id}, officer {config.officer_id}, "
              f"camera {config.camera_backend}, store {config.store})")
        return EXIT_OK
    run_daemon(config, stop)
    return EXIT_OK


def _selftest(args: argparse.Namespace) -> int:
    """Exit 0 when the self-test passes, 1 when it fails (a bad config file: 2, from ``main``)."""
    from agent.health.startup import run_selftest
    from firmware_config.device_config import load_device_config

    result = run_selftest(load_device_config(args.config))
    if args.json:
        checks = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in result.checks]
        print(json.dumps({"passed": result.passed, "summary": result.summary, "clock_trusted": result.clock.trusted,
                          "checks": checks}, indent=2))
    else:
        for check in result.checks:
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<7} {check.detail}")
        print(result.summary)
    return EXIT_OK if result.passed else EXIT_FAILED


def _ctl(args: argparse.Namespace) -> int:
    from agent.control_socket import send_request

    request: dict[str, object] = {"op": args.op}
    for field in ("procedure", "reason", "note", "officer"):
        if getattr(args, field, None) is not None:
            request[field] = getattr(args, field)
    if getattr(args, "skip", False):
        request["skip"] = True
    reply = send_request(args.socket, request)
    print(json.dumps(reply, indent=2))
    return EXIT_OK if reply.get("ok") else EXIT_FAILED


def _settings(args: argparse.Namespace) -> CameraSettings:
    return CameraSettings(
        width=args.width, height=args.height, fps=args.fps, bitrate=args.bitrate,
        keyframe_interval=args.fps, device_id=args.device_id, officer_id=args.officer_id,
    )


def _report(args: argparse.Namespace, what: str, result: RecordingResult, fingerprint: str) -> None:
    stats = result.stats
    print(
        f"{what} {args.device_id}: wrote {result.records} records and {result.segments} segments "
        f"({stats.frames_written} frames) into {display_path(args.store)}; head seq {result.head_seq}; "
        f"key fingerprint {fingerprint}"
    )


def _run(args: argparse.Namespace, stop: threading.Event) -> int:
    if args.command == "run":
        return _run_daemon(args, stop)
    if args.command == "ctl":
        return _ctl(args)
    if args.command == "selftest":
        return _selftest(args)
    # Everything the command was given is checked before the key is made: bad input creates nothing.
    settings = _settings(args)
    key_path: Path = args.key or args.store / "identity" / "device.key"
    if args.command == "simulate" and args.scenario is not None:
        scenario = load_scenario(args.scenario)
        key = load_or_create_device_key(key_path)
        outcome = simulate_scenario(args.store, key, settings, scenario, segment_seconds=args.segment_seconds)
        print(
            f"simulated device {args.device_id}: scenario {scenario.name!r}: wrote {outcome.records} records "
            f"({outcome.stats.frames_written} frames) into {display_path(args.store)}; head seq {outcome.head_seq}; "
            f"key fingerprint {key.fingerprint}"
        )
        return EXIT_OK
    if args.command == "simulate":
        key = load_or_create_device_key(key_path)
        result = simulate(args.store, key, settings, args.seconds, realtime=not args.fast,
                          segment_seconds=args.segment_seconds, stop_requested=stop)
        _report(args, "simulated device", result, key.fingerprint)
        return EXIT_OK
    from agent.camera.factory import open_camera

    options: dict[str, object] = {}
    if args.backend == "opencv":
        options["source"] = int(args.source) if args.source.isdigit() else args.source
    camera = open_camera(args.backend, settings, **options)
    try:
        key = load_or_create_device_key(key_path)
    except BodycamError:
        camera.close()
        raise
    result = record(args.store, key, camera, args.seconds, segment_seconds=args.segment_seconds,
                    prebuffer_seconds=args.prebuffer_seconds, stop_requested=stop)
    _report(args, "recorded device", result, key.fingerprint)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = StopRequest()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # The recording finishes cleanly: the cause is signed, the open segment closed and signed.
        stop.request(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(args, stop)
    except SelfTestError as exc:  # the one line was logged too; systemd leaves a unit with this status stopped
        print(f"bodycam-agent: {exc}", file=sys.stderr)
        return EXIT_SELFTEST
    except ConfigError as exc:  # a bad config file (or pins it names that cannot be opened): as bodycam-sync does
        print(f"bodycam-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BodycamError as exc:
        print(f"bodycam-agent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
