"""Custody benchmark: a receipt recorded by the agent, full read of the ledger vs the incremental view.

    .venv/bin/python benchmarks/bench_custody.py [--lines N] [--receipts M] [--between K] [--dir DIR] [--json]
        [--keep]

Builds a day's ledger in a fresh temporary folder: N lines (default 50,000), a ``checkpoint`` record for
every second of footage and a ``segment`` record every 10 (segment files are not written: a receipt never
reads them). The build appends through a real ``Ledger`` with fdatasync switched off (it is not timed); the
store is then copied, so that both paths start from the same bytes, and fdatasync is on again.

Then M rounds (default 30), each: K more checkpoints and a segment record appended to both ledgers (the
recorder's work between two acknowledgements; not timed), and one ack of the head naming the new segment,
signed with a station key as the station signs it, recorded on each ledger:

* **full read** (the baseline, the agent's way before): parse the ack, ``read_records`` over the whole
  ledger, ``record_receipt`` (check signature, link, news; append the receipt with fdatasync);
* **view**: one long-lived ``LedgerCustody`` (agent/evidence/custody_view.py): parse the ack, take in the
  lines appended since the previous op, the same checks over the view, the same append.

Each receipt's wall time and the CPU time of the process are measured; the view's first op (it reads the
whole ledger once) is reported apart from the others. Both paths must record every receipt with the same
seq. Not part of the test suite. Exit status: 0 when the run completed, 2 when the two paths disagreed.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchlib import filesystem_of, latency_summary, run_in_workdir  # noqa: E402

import agent.evidence.ledger as ledger_module  # noqa: E402
from agent.evidence.ack import Ack, AckedFile, parse_ack, sign_ack  # noqa: E402
from agent.evidence.custody import RetentionPolicy, receipt_text, record_receipt  # noqa: E402
from agent.evidence.custody_view import LedgerCustody  # noqa: E402
from agent.evidence.keys import DeviceKey  # noqa: E402
from agent.evidence.ledger import Ledger  # noqa: E402
from agent.evidence.record import SignedRecord  # noqa: E402
from agent.evidence.store import read_records, segment_file_name  # noqa: E402

DEVICE_ID = "bench-custody"
SEGMENT_EVERY = 10  # checkpoints per segment: one a second, 10 s segments
POLICY = RetentionPolicy(purge=True, keep_hours=24, long_term_keep_days=30)


class Recorder:
    """Appends what a recording device appends: checkpoints of the open segment, then its segment record."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.index = 1
        self.offset = 0
        self.last_segment: SignedRecord | None = None

    def checkpoint(self) -> None:
        name = f"segments/{segment_file_name(self.index, 'ts')}"
        digest = hashlib.sha256(f"{name}/{self.offset}".encode()).hexdigest()
        self.ledger.append("checkpoint", {"file": name, "offset": self.offset, "length": 250_000, "sha256": digest,
                                          "frames": 30})
        self.offset += 250_000

    def segment(self) -> None:
        name = f"segments/{segment_file_name(self.index, 'ts')}"
        digest = hashlib.sha256(name.encode()).hexdigest()
        self.last_segment = self.ledger.append("segment", {"file": name, "sha256": digest, "size": self.offset})
        self.index += 1
        self.offset = 0

    def lines(self, count: int) -> None:
        for _ in range(count):
            if self.offset // 250_000 >= SEGMENT_EVERY:
                self.segment()
            else:
                self.checkpoint()


def build(store: Path, key: DeviceKey, lines: int) -> None:
    sync_data = ledger_module._sync_data
    ledger_module._sync_data = lambda fd: None  # the build is not timed: no fdatasync per line
    try:
        with Ledger.open(store, key, DEVICE_ID, boot_reason="bench") as ledger:
            Recorder(ledger).lines(lines - 1)  # and the boot record
    finally:
        ledger_module._sync_data = sync_data


def head_ack(ledger: Ledger, segment: SignedRecord, station: DeviceKey) -> bytes:
    seq, link = ledger.head
    body = segment.record.body
    ack = Ack("station-1", station.fingerprint, DEVICE_ID, "session-1", seq, link,
              (AckedFile(str(body["file"]), str(body["sha256"]), int(body["size"])),), 1_800_000_000_000_000)
    return sign_ack(ack, station).to_line()


def timed(run: Callable[[], str]) -> tuple[int, int, str]:
    cpu, wall = time.process_time_ns(), time.perf_counter_ns()
    result = run()
    return time.perf_counter_ns() - wall, time.process_time_ns() - cpu, result


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    key, station = DeviceKey.generate(), DeviceKey.generate()
    old_store, new_store = workdir / "full-read", workdir / "view"
    start = time.perf_counter()
    build(old_store, key, args.lines)
    build_s = time.perf_counter() - start
    shutil.copytree(old_store, new_store)
    wall: dict[str, list[int]] = {"full": [], "view": []}
    cpu: dict[str, list[int]] = {"full": [], "view": []}
    first_view: tuple[int, int] = (0, 0)
    disagreements: list[str] = []
    with Ledger.open(old_store, key, DEVICE_ID, boot_reason="bench") as old, \
            Ledger.open(new_store, key, DEVICE_ID, boot_reason="bench") as new:
        custody = LedgerCustody(ledger=new, station_key=station.public_key, policy=POLICY)
        recorders = (Recorder(old), Recorder(new))
        lines_at_start = old.head[0]

        def full_read(line: bytes) -> str:
            signed = parse_ack(line)
            record = record_receipt(old, signed, station.public_key, DEVICE_ID, read_records(old.layout.root))
            return receipt_text(record, signed.ack)

        for round_number in range(args.receipts + 1):  # round 0: the view's first op (its one full read)
            lines = []
            for recorder in recorders:
                recorder.lines(args.between)
                recorder.segment()
                assert recorder.last_segment is not None
                lines.append(head_ack(recorder.ledger, recorder.last_segment, station))
            old_wall, old_cpu, old_text = timed(functools.partial(full_read, lines[0]))
            new_wall, new_cpu, new_text = timed(functools.partial(custody.record_receipt, lines[1]))
            if old_text != new_text or "recorded as receipt" not in new_text:
                disagreements.append(f"round {round_number}: full read {old_text!r}, view {new_text!r}")
            if round_number == 0:
                first_view = (new_wall, new_cpu)
                continue
            wall["full"].append(old_wall)
            cpu["full"].append(old_cpu)
            wall["view"].append(new_wall)
            cpu["view"].append(new_cpu)
        lines_at_end = old.head[0]
    paths = {name: {"wall": latency_summary(wall[name]), "cpu": latency_summary(cpu[name])} for name in wall}
    return {
        "lines": args.lines,
        "lines_at_first_receipt": lines_at_start,
        "lines_at_end": lines_at_end,
        "receipts": args.receipts,
        "between": args.between,
        "ledger_bytes": (new_store / "ledger.jsonl").stat().st_size,
        "build_seconds": build_s,
        "store": str(workdir),
        "filesystem": filesystem_of(workdir),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "paths": paths,
        "view_first_op_ms": {"wall": first_view[0] / 1e6, "cpu": first_view[1] / 1e6},
        "view_full_reads": custody.view.full_reads,
        "ratio_wall": paths["full"]["wall"]["mean_ms"] / paths["view"]["wall"]["mean_ms"],
        "ratio_cpu": paths["full"]["cpu"]["mean_ms"] / max(paths["view"]["cpu"]["mean_ms"], 1e-6),
        "disagreements": disagreements,
    }


def print_table(result: dict[str, Any]) -> None:
    fs = result["filesystem"]
    print(f"bodycam custody benchmark: a ledger of {result['lines']} lines ({result['ledger_bytes']} bytes at the "
          f"end), {result['receipts']} receipts, {result['between'] + 1} records appended before each; "
          f"Python {result['python']}, {result['cpus']} CPUs")
    print(f"store: {result['store']} ({fs['type']} on {fs['source']}); build {result['build_seconds']:.1f} s")
    print()
    print(f"{'receipt, per op':<34}{'mean ms':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'CPU ms':>9}")
    for name, label in (("full", "full read (before)"), ("view", "incremental view")):
        row, used = result["paths"][name]["wall"], result["paths"][name]["cpu"]
        print(f"{label:<34}{row['mean_ms']:>9.2f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['max_ms']:>9.2f}"
              f"{used['mean_ms']:>9.2f}")
    first = result["view_first_op_ms"]
    print(f"{'view, first op (reads it all once)':<34}{first['wall']:>9.2f}{'':>27}{first['cpu']:>9.2f}")
    print()
    print(f"full read / view: {result['ratio_wall']:.0f}x wall time, {result['ratio_cpu']:.0f}x CPU time per receipt; "
          f"the view read the ledger in full {result['view_full_reads']} time(s)")
    for problem in result["disagreements"]:
        print(f"DISAGREEMENT: {problem}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=50_000, help="ledger lines before the first ack (50000)")
    parser.add_argument("--receipts", type=int, default=30, help="receipts timed on each path (default 30)")
    parser.add_argument("--between", type=int, default=5, help="checkpoints appended before each ack (default 5)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder to create the temporary stores in (default: the system temp folder)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--keep", action="store_true", help="keep the temporary stores and print where they are")
    args = parser.parse_args(argv)
    if args.lines < 2 or args.receipts < 1 or args.between < 0:
        parser.error("--lines must be at least 2, --receipts at least 1, --between not negative")
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"--dir {args.dir}: not a folder")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run_in_workdir("bodycam-bench-custody-", args, run_benchmark, print_table)
    if result["disagreements"]:
        print("ERROR: the full read and the view recorded different receipts", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
