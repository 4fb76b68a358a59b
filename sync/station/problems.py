"""Reporting a problem: one log line naming the device, record and object, and one row in the index."""

from __future__ import annotations

import logging

from agent.evidence.clock import Clock
from sync.station.index import Index

log = logging.getLogger(__name__)
MAX_REASON_CHARS = 300


def printable(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """Text safe for a log line, the index and a canonical-JSON error notice: ASCII, no control characters."""
    safe = text.encode("ascii", "backslashreplace").decode("ascii")
    safe = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in safe)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


class ProblemLog:
    def __init__(self, index: Index, clock: Clock) -> None:
        self._index = index
        self._clock = clock

    def report(self, kind: str, device: str | None, reason: str, seq: int | None = None, obj: str | None = None,
               topic: str | None = None) -> bool:
        """Record a problem; True when it is new (a repeat only counts, and is logged at a lower level)."""
        reason = printable(reason)
        where = f"device {device}" if device else "unknown device"
        if seq is not None:
            where += f" seq {seq}"
        if obj:
            where += f": {obj}"
        new = self._index.add_problem(device, seq, obj, kind, reason, None if topic is None else printable(topic),
                                      self._clock.now().wall_us)
        log.log(logging.WARNING if new else logging.INFO, "%s: %s (%s%s)", where, reason, kind,
                "" if new else ", again")
        return new
