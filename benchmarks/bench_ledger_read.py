"""Ledger read benchmark: ``read_records`` (strict parse of every line) vs bare ``json.loads`` of the same lines.

    .venv/bin/python benchmarks/bench_ledger_read.py [--lines N] [--repeat R] [--dir DIR] [--json] [--keep]

Builds a day's ledger (N lines, default 20,000: checkpoints and segment records as a recording device writes
them, benchmarks/bench_custody.py's builder) and times, fastest of R rounds, in this process:

* ``read_records`` over the store: split, canonical-JSON check, header and body checks per line -- what the
  agent does at every start (workflow replay), custody's first look and the station's verifier per record;
* the baseline: ``json.loads`` of each line's payload and ``bytes.fromhex`` of its signature, nothing checked.

Reported: microseconds per line for both and their ratio (how many times a bare parse the strict read costs).
No target; the figure is for comparing changes to agent/evidence/encoding.py and record.py on one machine.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_custody import build
from benchlib import run_in_workdir

from agent.evidence.keys import DeviceKey
from agent.evidence.store import StoreLayout, read_records


def bare_parse(data: bytes) -> int:
    count = 0
    for line in data.splitlines():
        payload, _tab, signature = line.rpartition(b"\t")
        json.loads(payload)
        bytes.fromhex(signature.decode("ascii"))
        count += 1
    return count


def fastest(repeat: int, work: Any) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return best


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    store = workdir / "store"
    build(store, DeviceKey.from_seed(bytes(32)), args.lines)
    data = StoreLayout(store).ledger_path.read_bytes()
    lines = bare_parse(data)
    strict_s = fastest(args.repeat, lambda: read_records(store))
    bare_s = fastest(args.repeat, lambda: bare_parse(data))
    return {"lines": lines, "read_records_us_per_line": strict_s / lines * 1e6,
            "bare_json_us_per_line": bare_s / lines * 1e6, "ratio": strict_s / bare_s}


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['lines']} ledger lines, fastest of the rounds")
    print(f"read_records (strict)   {result['read_records_us_per_line']:8.1f} us/line")
    print(f"json.loads (baseline)   {result['bare_json_us_per_line']:8.1f} us/line")
    print(f"strict / bare           {result['ratio']:8.1f}x")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000, help="ledger lines (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the fastest counts (default 3)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder to create the temporary store in (default: the system temp folder)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and print where it is")
    args = parser.parse_args(argv)
    if args.lines < 2 or args.repeat < 1:
        parser.error("--lines must be at least 2 and --repeat at least 1")
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"--dir {args.dir}: not a folder")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    run_in_workdir("bodycam-bench-read-", parse_args(argv), run_benchmark, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
