"""A receiver process for the crash tests: it is killed (SIGKILL) by the receiver's own fault hook.

    python station_child.py DATA DEVICE_STORE DEVICE STEP FAULT

with FAULT kill-after-records or kill-after-store (injected_faults.InjectedFaults is the receiver's hook). STEP
``records`` sends a hello and every ledger line; ``file`` sends a hello and every chunk of the first file. The
device must be enrolled and, for ``file``, its records stored. Reaching the end alive is a failure (exit 3).
"""

from __future__ import annotations

import sys
from pathlib import Path

from injected_faults import InjectedFaults
from station_support import DeviceSide, Station


def main() -> int:
    data, store, device, step, fault = sys.argv[1:6]
    station = Station(Path(data), faults=InjectedFaults(fault))
    side = DeviceSide(station, Path(store), device, session="crash")
    side.hello()
    if step == "records":
        side.records(side.lines())
    else:
        first = side.files()[0]
        for offset in range(0, first.size, side.chunk_bytes):
            side.chunk(first, offset)
    print("the fault hook did not fire", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
