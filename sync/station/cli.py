"""``bodycam-station``: the station receiver, what it reports, and the technician's station-side provisioning.

    bodycam-station init --dir DIR [--host NAME]... [--port N] [--bind ADDR] [--station-id ID] [--run-as USER]
    bodycam-station enroll --config FILE REQUEST [--out BUNDLE] [--replace]
    bodycam-station revoke --config FILE --device D
    bodycam-station broker-setup --dir DIR --port N [--bind ADDR] [--host NAME]... [--device D]... [--run-as USER]
    bodycam-station serve --config FILE [--validate-config]
    bodycam-station add-device --config FILE --device D --pubkey FILE [--replace]
    bodycam-station show-key --config FILE [--hex]
    bodycam-station status --config FILE [--json]
    bodycam-station problems --config FILE [--device D] [--json]
    bodycam-station timeline --config FILE --device D [--json] [--profiles DIR]
    bodycam-station scrub --config FILE [--json]   (sync/station/scrub.py)
    bodycam-station assign --config FILE --device D --officer O   (sync/station/assign.py)

Exit 0: done, nothing wrong. Exit 1: problems found (``status``: open problems or a degraded/failed health
report, not a merely stale one; ``problems``: open problems; ``timeline``:
the ledger copy does not verify; ``scrub``: stored evidence missing or changed; ``serve``: the station's
storage failed). Exit 2: wrong arguments, a bad
config file or unreadable station data; one line says why. Never a traceback.

``init``, ``enroll`` and ``revoke`` live in sync/station/provisioning.py (docs/provisioning.md);
``broker-setup`` and ``add-device`` are their older, manual halves, kept for scripts that use them.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from agent.cliargs import UsageParser, device_id_arg, silence_closed_stdout
from agent.errors import BodycamError, UsageError
from agent.evidence.clock import SystemClock
from agent.evidence.fsutil import display_path
from agent.evidence.keys import load_device_key, load_or_create_device_key, public_key_from_hex, public_key_pem
from agent.evidence.store import parse_records
from agent.evidence.text import printable
from agent.evidence.verify import Report, verify_lines
from agent.timeline import case_timelines, render_timeline
from firmware_config.profiles import load_profiles
from firmware_config.station_config import MIB, StationConfig, load_station_config
from sync.station.assign import ASSIGN_COMMANDS, add_assign_command
from sync.station.faults import FaultPoints
from sync.station.index import Index, open_index, technician_index
from sync.station.problems import ProblemLog
from sync.station.provisioning import PROVISIONING_COMMANDS, add_provisioning_commands, station_init
from sync.station.report import check_dict, device_statuses, enroll_device, render_check, render_problems, render_status
from sync.station.scrub import Scrubber, ScrubSchedule
from sync.station.store import open_store
from sync.station.watch import CheckResult, OverdueCheck, overdue_task

PROG = "bodycam-station"
EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2




def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog=PROG, description="The station: receives, verifies and stores body-camera evidence.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--config", type=Path, required=True, help="the station's TOML config file")
        return sub

    serve = command("serve", "receive from the broker until SIGTERM/SIGINT")
    serve.add_argument("--validate-config", action="store_true",
                       help="only check the config and the TLS files it names; touch no data, connect to nothing")
    add = command("add-device", "enroll a device's public key (the key its records must be signed with)")
    add.add_argument("--device", type=device_id_arg, required=True, help="the device id")
    add.add_argument("--pubkey", type=Path, required=True, help="its public key (PEM, hex or raw)")
    add.add_argument("--replace", action="store_true", help="replace a different key already enrolled")
    key = command("show-key", "print the station's acknowledgement public key (created if missing)")
    key.add_argument("--hex", action="store_true", help="64 hex digits instead of PEM")
    status = command("status", "per device: key, last health, last sync, records, files, backlog, open problems "
                     "(runs the overdue check first)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    problems = command("problems", "list the problems found, oldest first (runs the overdue check first)")
    problems.add_argument("--device", type=device_id_arg, help="only this device's")
    problems.add_argument("--json", action="store_true", help="machine-readable output")
    timeline = command("timeline", "the verified case timeline of a device, from the station's ledger copy")
    timeline.add_argument("--device", type=device_id_arg, required=True, help="the device id")
    timeline.add_argument("--json", action="store_true", help="machine-readable output")
    timeline.add_argument("--profiles", type=Path, help="procedure profiles folder (default: the shipped ones)")
    scrub = command("scrub", "re-hash every stored object and check each device's folder and ledger copy "
                    "against the index; what is missing or changed is reported as a problem")
    scrub.add_argument("--json", action="store_true", help="machine-readable output")
    broker = commands.add_parser(
        "broker-setup", help="write the broker's CA, certificates, ACL and Mosquitto config",
        description="Create (or complete) the station's broker folder: CA, server certificate, the receiver's "
        "client certificate (CN station), the station tools' (CN station-tools), one client certificate per "
        "--device (CN = device id), the ACL and mosquitto.conf. Existing keys are kept, never overwritten.")
    broker.add_argument("--dir", type=Path, required=True, help="the broker folder")
    broker.add_argument("--port", type=int, required=True, help="the TLS listener's port")
    broker.add_argument("--bind", default="127.0.0.1", help="the listener's address (default 127.0.0.1)")
    broker.add_argument("--host", action="append", default=[], help="a name or address devices use to reach "
                        "the broker (repeatable; default localhost and 127.0.0.1)")
    broker.add_argument("--device", type=device_id_arg, action="append", default=[], help="issue a device's "
                        "client certificate (repeatable)")
    broker.add_argument("--run-as", help="the user Mosquitto runs as when started as root (default mosquitto)")
    add_provisioning_commands(commands)
    add_assign_command(commands)
    return parser


def _broker_setup(args: argparse.Namespace) -> int:
    from sync.broker import write_broker_setup

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not 1..65535")
    files = write_broker_setup(args.dir, port=args.port, bind=args.bind, devices=args.device,
                               hosts=args.host or ("localhost", "127.0.0.1"), user=args.run_as)
    print(f"broker folder {display_path(files.folder)}: mosquitto -c {display_path(files.conf)}")
    for device, (cert, _key) in sorted(files.clients.items()):
        print(f"  device {device}: {display_path(cert)}")
    return EXIT_OK


def _open_index(config: StationConfig, create: bool = False) -> Index:
    if not create and not config.index_path.exists():
        raise UsageError(f"station data {display_path(config.data)}: no index yet (run add-device or serve first)")
    return open_index(config.index_path)


def serve(config: StationConfig, *, faults: FaultPoints | None = None) -> int:
    """``serve``; ``faults``: the crash tests' hook (tests/station/faulty_serve.py), none otherwise."""
    from sync.station.receiver import Receiver
    from sync.station.service import StationService, make_client

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    client = make_client(config)  # first: a config without TLS files is refused before anything is touched
    store = open_store(config.data)
    store.lock()
    index = open_index(config.index_path)
    try:
        receiver = Receiver.open(config=config, store=store, index=index, ack_key=load_or_create_device_key(config.key),
                                 clock=SystemClock(), faults=faults)
        overdue = overdue_task(OverdueCheck(config=config, index=index, store=store, profiles=load_profiles()),
                               receiver.clock,
                               config.overdue.check_interval_seconds)
        scrubber = Scrubber(store=store, index=index, problems=receiver.problems,
                            slice_bytes=config.scrub.slice_mib * MIB)
        schedule = ScrubSchedule(scrubber, config.scrub.interval_seconds)
        stop = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            logging.getLogger(__name__).info("signal %s: stopping", signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        try:
            return StationService(config=config, receiver=receiver, client=client, periodic=[overdue],
                                  idle=schedule.tick).run(stop)
        finally:
            scrubber.close()
    finally:
        index.close()
        store.close()


def _add_device(config: StationConfig, args: argparse.Namespace) -> int:
    from agent.evidence.keys import load_public_key

    public_key = load_public_key(args.pubkey)
    with technician_index(config.index_path) as index:
        print(enroll_device(index, args.device, public_key, SystemClock().now().wall_us, args.replace))
    return EXIT_OK


def _show_key(config: StationConfig, args: argparse.Namespace) -> int:
    key = load_or_create_device_key(config.key)
    print(key.public_raw.hex() if args.hex else public_key_pem(key.public_key), end="" if not args.hex else "\n")
    return EXIT_OK


def _status(config: StationConfig, args: argparse.Namespace) -> int:
    index = _open_index(config)
    try:
        check = _check_now(config, index)
        statuses = device_statuses(index, SystemClock().now().wall_us)
        enrolled = {s.device.id for s in statuses}
        stray = [p for p in index.problems() if p.resolved_us is None and p.device not in enrolled]
    finally:
        index.close()
    fingerprint = load_device_key(config.key).fingerprint if config.key.exists() else None
    if args.json:
        print(json.dumps({"station": config.station_id, "key_fingerprint": fingerprint,
                          "overdue_check": check_dict(check, config.overdue, config.deadline.working_days),
                          "devices": [s.to_dict() for s in statuses], "other_open_problems": len(stray)}, indent=2))
    else:
        print(render_status(config.station_id, fingerprint, statuses, len(stray)))
        print(render_check(check, config.overdue, config.deadline.working_days))
    # Exit 1 on open problems or a degraded/failed health report; a stale report alone does not (see
    # sync.station.report.STALE_AFTER_US).
    return EXIT_PROBLEMS if stray or any(s.faulty for s in statuses) else EXIT_OK


def _problems(config: StationConfig, args: argparse.Namespace) -> int:
    index = _open_index(config)
    try:
        _check_now(config, index)
        problems = index.problems(args.device)
    finally:
        index.close()
    if args.json:
        print(json.dumps([p.to_dict() for p in problems], indent=2))
    else:
        print(render_problems(problems))
    return EXIT_PROBLEMS if any(p.resolved_us is None for p in problems) else EXIT_OK


def _check_now(config: StationConfig, index: Index) -> CheckResult:
    """The overdue check, as serve runs it on its timer: a station without a receiver running still reports."""
    store = open_store(config.data)
    return OverdueCheck(config=config, index=index, store=store,
                        profiles=load_profiles()).run(SystemClock().now().wall_us)


def _timeline(config: StationConfig, args: argparse.Namespace) -> int:
    index = _open_index(config)
    try:
        device = index.device(args.device)
    finally:
        index.close()
    if device is None:
        raise UsageError(f"device {args.device}: not enrolled at this station")
    store = open_store(config.data)
    data = store.read_ledger(args.device)
    if not data:
        print(f"device {args.device}: no records stored yet")
        return EXIT_OK
    # The records were verified on arrival; the chain is checked again here (not the files, which may still
    # be on their way) so that a timeline is never shown from a copy that was altered since.
    report = Report(path=store.ledger_name(args.device))
    lines = data.splitlines(keepends=True)
    verify_lines(lines, report, public_key_from_hex(device.public_key))
    timelines = case_timelines(parse_records(lines), load_profiles(args.profiles))
    if args.json:
        print(json.dumps({"device": args.device, "ledger_intact": report.intact,
                          "problems": [p.to_dict() for p in report.problems],
                          "timeline": [case.to_dict() for case in timelines]}, indent=2))
    else:
        if not report.intact:
            print(f"WARNING: the ledger copy of {args.device} did NOT verify: {printable(str(report.problems[0]))}")
        print(render_timeline(timelines) if timelines else f"device {args.device}: no cases")
    return EXIT_OK if report.intact else EXIT_PROBLEMS


def _scrub(config: StationConfig, args: argparse.Namespace) -> int:
    # No data lock: a running receiver keeps its own; the scrub only reads the store, and SQLite (WAL) lets
    # it add its problems to the index while the receiver writes.
    index = _open_index(config)
    try:
        scrubber = Scrubber(store=open_store(config.data), index=index, problems=ProblemLog(index, SystemClock()),
                            slice_bytes=8 * MIB)
        try:
            summary = scrubber.run()
        finally:
            scrubber.close()
    finally:
        index.close()
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        for text in summary.findings:
            print(f"PROBLEM {printable(text)}")
        print(f"scrub: {summary.devices} device(s), {summary.files} file(s), {summary.bytes} bytes checked: "
              f"{len(summary.findings)} problem(s)")
    return EXIT_PROBLEMS if summary.findings else EXIT_OK


_COMMANDS: dict[str, Callable[[StationConfig, argparse.Namespace], int]] = {
    **PROVISIONING_COMMANDS,
    **ASSIGN_COMMANDS,
    "add-device": _add_device, "show-key": _show_key, "status": _status, "problems": _problems,
    "timeline": _timeline, "scrub": _scrub,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "broker-setup":
            return _broker_setup(args)
        if args.command == "init":
            return station_init(args)
        config = load_station_config(args.config)
        if args.command == "serve" and args.validate_config:
            from sync.station.service import make_client

            make_client(config)  # loads the CA, certificate and key as serve would
            print(f"{config.source}: valid for {PROG} serve (station {config.station_id}, broker "
                  f"{config.broker.host}:{config.broker.port}, data {display_path(config.data)})")
            return EXIT_OK
        if args.command == "serve":
            return serve(config)
        code = _COMMANDS[args.command](config, args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader stopped reading (``| head``): not a station fault, and nothing more to say.
        silence_closed_stdout()
        return EXIT_OK
    except BodycamError as exc:
        print(f"{PROG}: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, sqlite3.Error) as exc:
        print(f"{PROG}: station data cannot be read or written ({printable(str(exc))})", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
