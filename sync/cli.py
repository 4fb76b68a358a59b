"""``bodycam-sync`` and ``bodycam-station``: entry points reserved for the MQTT uploader and receiver.

They are not built yet; each says so plainly and exits 2 rather than pretending to work.
"""

from __future__ import annotations

import sys


def _not_yet(prog: str, what: str) -> int:
    print(f"{prog}: {what} is not built yet (see the project's open issues); nothing was done", file=sys.stderr)
    return 2


def sync_main(argv: list[str] | None = None) -> int:
    return _not_yet("bodycam-sync", "the device uploader")


def station_main(argv: list[str] | None = None) -> int:
    return _not_yet("bodycam-station", "the station receiver")
