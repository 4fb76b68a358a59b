"""Writing the signed health report file the uploader publishes (format: agent/health/report.py).

A report that cannot be written (a full /run, a bad path) is logged and reported on the next try; it never
stops the agent, which keeps recording (SPEC principle 6: recording has priority).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from agent.errors import BodycamError
from agent.evidence.clock import Clock, SystemClock
from agent.evidence.fsutil import display_path
from agent.evidence.keys import DeviceKey
from agent.health.report import MAX_TEXT_CHARS, Check, HealthReport, Metric, sign_report, write_report_file

log = logging.getLogger(__name__)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters (control characters become spaces)."""
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Reporter:
    """Signs and writes this device's health reports to ``path``; ``last`` is the newest one written."""

    def __init__(self, *, path: Path, key: DeviceKey, device: str, boot: str, clock: Clock | None = None) -> None:
        self.path = path
        self.key = key
        self.device = device
        self.boot = boot
        self.clock: Clock = clock or SystemClock()
        self.last: HealthReport | None = None

    def publish(
        self,
        state: str,
        summary: str,
        checks: tuple[Check, ...],
        clock_trusted: bool,
        metrics: Mapping[str, Metric] | None = None,
    ) -> HealthReport | None:
        """Write a new report; the report, or None when it could not be written (logged)."""
        report = HealthReport(
            device=self.device,
            at_wall_us=self.clock.now().wall_us,
            boot=self.boot,
            state=state,
            summary=one_line(summary),
            checks=tuple(Check(c.name, c.ok, one_line(c.detail)) for c in checks),
            clock_trusted=clock_trusted,
            metrics=dict(metrics or {}),
        )
        try:
            write_report_file(self.path, sign_report(report, self.key))
        except OSError as exc:
            log.error("health report %s: cannot write (%s)", display_path(self.path), exc.strerror or exc)
            return None
        except BodycamError as exc:  # a report the format refuses is a bug here; keep recording regardless
            log.error("health report %s: not written: %s", display_path(self.path), exc)
            return None
        self.last = report
        return report
