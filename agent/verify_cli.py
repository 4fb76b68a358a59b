"""``bodycam-verify PATH [--pubkey FILE] [--station-key FILE] [--device-store] [--json] [--timeline]``:
is this evidence intact?

PATH is verified as an archive (the station's copy, or any copy of it: every file a record names must be
present, whatever the device purged) unless ``--device-store`` says it is the device's own store, where
a signed purge record excuses a removed file (agent/evidence/archive.py says why the operator, not the
folder, decides). The verdict names the mode used.

``--timeline`` adds the case timelines (agent/timeline.py) after the verification (in ``--json``: a
``timeline`` key); it does not change the exit code (an unreadable ``--profiles`` folder is exit 2).

Exit 0: intact. Exit 1: something is wrong; every problem is listed with its record and file.
Exit 2: the input cannot be read or the arguments are wrong; one line says why. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.cliargs import UsageParser, silence_closed_stdout
from agent.errors import BodycamError
from agent.evidence.archive import ARCHIVE, ARCHIVE_PURGED_MISSING, DEVICE_STORE, MODE_WORDS
from agent.evidence.fsutil import display_path
from agent.evidence.keys import load_public_key
from agent.evidence.store import read_records
from agent.evidence.text import printable
from agent.evidence.verify import Report, verify_store
from agent.timeline import case_timelines, render_timeline
from firmware_config.profiles import load_profiles

EXIT_INTACT, EXIT_PROBLEMS, EXIT_UNREADABLE = 0, 1, 2



def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="bodycam-verify", description="Verify a body-camera evidence store offline.")
    parser.add_argument("path", type=Path, help="the station's copy DATA/devices/ID, a copy of it, or (with "
                        "--device-store) a device's store: a folder holding ledger.jsonl")
    parser.add_argument("--pubkey", type=Path, help="the device's public key (PEM, hex or raw) to pin the identity")
    parser.add_argument("--station-key", type=Path, help="the station's public acknowledgement key (PEM, hex or "
                        "raw; bodycam-station show-key): check the station's signed acks in the copy")
    parser.add_argument("--device-store", action="store_true", help="PATH is the device's own store: a file "
                        "removed after its signed purge record is not missing (never for the station's copy)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")
    parser.add_argument(
        "--timeline", action="store_true", help="also print each case's stages, recorded intervals and stop reasons"
    )
    parser.add_argument(
        "--profiles", type=Path, help="procedure profiles folder for --timeline (default: the shipped profiles)"
    )
    return parser


_ROUTINE_WORDS = {
    # What a routine note means, in words for someone who is not an expert in the format.
    "file still present after its purge record (checked against its record)":
        "kept here after the device purged its own copy (normal for the station's copy), each checked against "
        "its record",
}
_PURGED = "purged"
_ROUTINE_WORDS[_PURGED] = "purged from the device, each by a signed purge record (its reason in --json)"
_SHOWN_FILES = 3


def _routine_lines(report: Report) -> list[str]:
    """Routine notes, one line per kind: what custody normally leaves behind reads as normal, not as a warning."""
    groups: dict[str, list[str]] = {}
    for note in report.notes:
        if note.routine:
            # Purge notes differ only in their reason (which receipt): one line for all of them.
            kind = _PURGED if note.message.startswith("purged (") else note.message
            groups.setdefault(kind, []).append(note.object or f"seq {note.seq}")
    lines = []
    for message, objects in groups.items():
        shown = ", ".join(printable(name) for name in objects[:_SHOWN_FILES])
        more = f" and {len(objects) - _SHOWN_FILES} more" if len(objects) > _SHOWN_FILES else ""
        words = _ROUTINE_WORDS.get(message, message)
        lines.append(f"ok: {len(objects)} file(s) {printable(words)}: {shown}{more}")
    return lines


def render_text(report: Report) -> str:
    lines = [f"store {printable(report.path)}"]
    if report.device is not None:
        key = report.key_fingerprint[:16] + "..." if report.key_fingerprint else "unknown"
        pinned = "pinned" if report.key_pinned else "not pinned"
        span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "none"
        lines.append(f"device {printable(report.device)}  key {key} ({pinned})  records {report.records} ({span})")
        lines.append(f"segments {report.segments} ({report.segment_bytes} bytes)")
    lines.extend(f"note: {printable(str(note))}" for note in report.notes if not note.routine)
    lines.extend(_routine_lines(report))
    lines.extend(f"PROBLEM {printable(str(problem))}" for problem in report.problems)
    lines.append(f"verified {MODE_WORDS[report.mode]}")
    if report.mode == ARCHIVE and any(ARCHIVE_PURGED_MISSING in str(p) for p in report.problems):
        # A newcomer verifying a device's own store lands here: say how, without excusing anything by default.
        lines.append("hint: if PATH is a device's own store (not the station's copy or a copy of it), its purged "
                     "files are gone by design: verify it with --device-store")
    if report.intact:
        lines.append(f"INTACT: {report.records} records verified, head seq {report.last_seq} {report.head_link}")
    else:
        lines.append(f"NOT INTACT: {len(report.problems)} problem(s); first: {printable(str(report.problems[0]))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        public_key = load_public_key(args.pubkey) if args.pubkey is not None else None
        station_key = load_public_key(args.station_key) if args.station_key is not None else None
        mode = DEVICE_STORE if args.device_store else ARCHIVE
        report = verify_store(args.path, public_key, mode=mode, station_key=station_key)
        timeline = None
        if args.timeline:
            procedures = load_profiles(args.profiles)
            timeline = case_timelines(read_records(args.path), procedures)
    except BodycamError as exc:
        reason = str(exc)
        if args.json:
            print(json.dumps({"path": display_path(args.path), "intact": False, "error": reason}))
        print(f"bodycam-verify: {printable(reason)}", file=sys.stderr)
        return EXIT_UNREADABLE
    verdict = EXIT_INTACT if report.intact else EXIT_PROBLEMS
    try:
        if args.json:
            output = report.to_dict()
            if timeline is not None:
                output["timeline"] = [case.to_dict() for case in timeline]
            print(json.dumps(output, indent=2))
        else:
            print(render_text(report))
            if timeline is not None:
                if not report.intact:
                    print("\nWARNING: the timeline below comes from a ledger that did NOT verify")
                print("\n" + render_timeline(timeline))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped reading (``| head``); the verification itself finished, so its verdict stands.
        silence_closed_stdout()
    return verdict


if __name__ == "__main__":
    sys.exit(main())
