"""``bodycam-sync`` and ``bodycam-station``: entry points of the MQTT uploader and receiver.

``bodycam-sync`` is sync/uploader/cli.py; ``bodycam-station`` is sync/station/cli.py. Each is imported only
when its command runs, so one side never loads the other's modules.
"""

from __future__ import annotations


def sync_main(argv: list[str] | None = None) -> int:
    from sync.uploader.cli import main

    return main(argv)


def station_main(argv: list[str] | None = None) -> int:
    from sync.station.cli import main

    return main(argv)
