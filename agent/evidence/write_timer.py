"""Timing durable writes for the health watch, cheaply enough to sit in the ledger's append path.

The ledger times each write + fdatasync; the monitor takes the longest since it last looked. A write still
in progress counts with its age so far, so a disk that hangs is seen while it hangs, not only once it returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class WriteTimer:
    """The longest durable write since the last :meth:`take`, in seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # its own lock: taking a reading never waits for the ledger's fsync
        self._started: float | None = None
        self._longest = 0.0
        self._writes = 0

    @contextmanager
    def timing(self) -> Iterator[None]:
        started = time.monotonic()
        with self._lock:
            self._started = started
        try:
            yield
        finally:
            took = time.monotonic() - started
            with self._lock:
                self._started = None
                self._longest = max(self._longest, took)
                self._writes += 1

    def take(self) -> float | None:
        """The longest write (or the one in progress) since the last call; None when nothing was written."""
        with self._lock:
            if self._started is None and self._writes == 0:
                return None
            longest = self._longest
            if self._started is not None:
                longest = max(longest, time.monotonic() - self._started)
            self._longest = 0.0
            self._writes = 0
            return longest
