"""Work ``bodycam-station serve`` does on a timer, between message batches, on the receiver's own thread
(the index is one SQLite connection used by one thread)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Periodic:
    """``action`` at the first poll and then every ``interval_s`` seconds (monotonic clock)."""

    name: str
    interval_s: float
    action: Callable[[], object]
    due_s: float | None = None  # None: at the first poll

    def poll(self, now_s: float) -> None:
        if self.due_s is not None and now_s < self.due_s:
            return
        # Scheduled from when it ran, not from when it was due: a slow run never piles up runs behind it.
        self.due_s = now_s + self.interval_s
        try:
            self.action()
        except Exception:
            # Advisory work: a failure is logged and tried again at the next interval; receiving goes on (a
            # storage failure makes the receiver itself stop at its next message).
            log.exception("%s failed; trying again in %g s", self.name, self.interval_s)
