"""The crash and set-aside tests' fault hook for the receiver (sync/station/faults.py), from a FAULT spec:

- ``kill-after-records`` / ``kill-after-store``: SIGKILL right after the commit of a batch that stored records /
  a file, before any reply leaves (a power cut at the worst moment);
- ``raise-on-KIND`` / ``raise-on-KIND:DEVICE``: a receiver bug that such a message (from that device) triggers;
- ``die-on-KIND:DEVICE``: such a message kills the process outright (no exception is seen).

Used by tests/station/faulty_serve.py (``bodycam-station serve`` with the hook) and tests/station/station_child.py
(a receiver driven in-process); small, so a child process starts quickly.
"""

from __future__ import annotations

import logging
import os
import signal

from sync.protocol import parse_topic
from sync.station.faults import AFTER_RECORDS, AFTER_STORE, ON_MESSAGE

KILL_AFTER = {"kill-after-records": AFTER_RECORDS, "kill-after-store": AFTER_STORE}


class InjectedFaults:
    """The receiver's fault hook for one FAULT spec (see the module docstring)."""

    def __init__(self, spec: str) -> None:
        if spec not in KILL_AFTER and not spec.startswith(("raise-on-", "die-on-")):
            raise ValueError(f"fault {spec!r}: not kill-after-records, kill-after-store, raise-on-KIND[:DEVICE] "
                             "or die-on-KIND:DEVICE")
        self.spec = spec

    def at(self, point: str, topic: str) -> None:
        if point != ON_MESSAGE:
            if KILL_AFTER.get(self.spec) == point:
                self._die()
            return
        parsed = parse_topic(topic)
        if self.spec in (f"raise-on-{parsed.kind}", f"raise-on-{parsed.kind}:{parsed.device}"):
            raise RuntimeError(f"fault injection: {self.spec}")
        if self.spec == f"die-on-{parsed.kind}:{parsed.device}":
            self._die()

    def _die(self) -> None:
        logging.getLogger(__name__).warning("fault injection: %s", self.spec)
        os.kill(os.getpid(), signal.SIGKILL)
