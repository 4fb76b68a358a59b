"""``bodycam-station serve`` with a fault hook installed: the station of the crash and set-aside tests.

    python faulty_serve.py FAULT --config FILE

builds what ``bodycam-station serve --config FILE`` builds (sync.station.cli.serve) with ``InjectedFaults(FAULT)``
(tests/station/injected_faults.py: the FAULTs) as the receiver's hook (sync/station/faults.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from injected_faults import InjectedFaults

from firmware_config.station_config import load_station_config
from sync.station.cli import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faulty_serve")
    parser.add_argument("fault")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    faults = InjectedFaults(args.fault)  # a bad spec fails before the station starts
    return serve(load_station_config(args.config), faults=faults)


if __name__ == "__main__":
    sys.exit(main())
