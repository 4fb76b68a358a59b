"""Forwarding the agent's health report to the station (``bodycam/<device>/up/health``, retained, QoS 1).

The agent signs its report and replaces one file atomically; the uploader only forwards the file's line,
byte-exact, when it changed and once on every new connection (so a station that lost the retained copy
gets it back). It checks the line's format and device first, so a damaged file is logged (with its path)
rather than sent; the signature is the station's to verify. Sending does not depend on the agent running:
the last report of an agent whose self-test failed is exactly what the station must see.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agent.errors import RecordFormatError
from agent.evidence.fsutil import display_path
from agent.health.report import parse_report, read_report_file

log = logging.getLogger(__name__)

_FileState = tuple[int, int, int, int]  # device, inode, mtime_ns, size
_UNREADABLE: _FileState = (-1, -1, -1, -1)


class HealthForwarder:
    """Decides what to publish: ``due(conn)`` gives the line to send now (or None), ``sent(conn, line)``
    records that it went out on ``conn``. ``conn`` is any object standing for one connection."""

    def __init__(self, path: Path, device_id: str) -> None:
        self.path = path
        self.device_id = device_id
        self._seen: _FileState | None = None  # the file as last looked at
        self._line: bytes | None = None  # its line when valid
        self._sent_line: bytes | None = None
        self._sent_on: object | None = None

    def due(self, conn: object | None) -> bytes | None:
        self._look()
        if self._line is None:
            return None
        if conn is not None and conn is self._sent_on and self._line == self._sent_line:
            return None
        return self._line

    def sent(self, conn: object, line: bytes) -> None:
        self._sent_on, self._sent_line = conn, line

    def _look(self) -> None:
        """Read the file again only when it changed (an atomic replace makes a new inode)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._line = None, None
            return
        except OSError as exc:
            if self._seen != _UNREADABLE:
                self._refuse(f"cannot be read ({exc.strerror})")
            self._seen = _UNREADABLE
            return
        state = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if state == self._seen:
            return
        self._seen = state
        try:
            line = read_report_file(self.path)
        except OSError as exc:
            self._refuse(f"cannot be read ({exc.strerror})")
            return
        if line is None:
            self._seen, self._line = None, None
            return
        try:
            report = parse_report(line).report
        except RecordFormatError as exc:
            self._refuse(f"not a valid report line ({exc})")
            return
        if report.device != self.device_id:
            self._refuse(f"about device {report.device!r}, not this device {self.device_id!r}")
            return
        self._line = line

    def _refuse(self, why: str) -> None:
        # Called once per version of the file (an unchanged file is not looked at again), not once per scan.
        self._line = None
        log.error("health report file %s: %s; not sent", display_path(self.path), why)
