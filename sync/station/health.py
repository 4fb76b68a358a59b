"""The station's intake of device health reports (``bodycam/<device>/up/health``, retained).

A report is verified with the device's enrolled key (a bad one is refused like any other message and
nothing is stored), kept only if it is the device's newest (by the device's ``at_wall_us``: a retained copy
delivered again, or an older report arriving late, changes nothing), and turned into problems: one open
``device-fault`` per device and failing check, updated (not repeated) while later reports still show it,
resolved by the first newer report in which that check passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.errors import ProtocolError, VerificationError
from agent.evidence.keys import public_key_from_hex
from agent.health.report import HealthReport, verify_report
from sync.station.index import Index
from sync.station.model import DeviceRow, HealthRow
from sync.station.problems import printable

log = logging.getLogger(__name__)
# The problem object of a non-ok report that names no failing check.
STATE_OBJECT = "health"


def fault_object(check: str) -> str:
    return f"health check {check}"


@dataclass(frozen=True)
class HealthOutcome:
    stored: bool
    opened: tuple[str, ...] = ()  # problem objects newly opened
    resolved: tuple[str, ...] = ()


def faults_of(report: HealthReport) -> dict[str, str]:
    """The problems a report stands for: object -> reason (none for an ok report). Pure."""
    if report.state == "ok":
        return {}
    failing = report.failing_checks()
    if not failing:
        return {STATE_OBJECT: f"device {report.state}: {report.summary}"}
    return {fault_object(c.name): f"device {report.state}: {c.name}: {c.detail}" for c in failing}


class HealthIntake:
    def __init__(self, index: Index) -> None:
        self.index = index

    def take(self, device: DeviceRow, payload: bytes, topic: str, received_us: int) -> HealthOutcome:
        """Verify and keep a report; ProtocolError (nothing stored) when it is not the device's signed report."""
        try:
            report = verify_report(payload, public_key_from_hex(device.public_key), device.id)
        except VerificationError as exc:
            raise ProtocolError(str(exc)) from None
        row = HealthRow(device.id, report.at_wall_us, report.boot, report.state, report.summary, report.clock_trusted,
                        [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks],
                        dict(report.metrics), payload, received_us)
        if not self.index.put_health(row):
            log.debug("device %s: health report of %d not newer than the one kept; ignored", device.id,
                      report.at_wall_us)
            return HealthOutcome(False)
        faults = faults_of(report)
        resolved = self.index.resolve_device_faults(device.id, list(faults), received_us)
        opened = [obj for obj, reason in faults.items()
                  if self.index.open_device_fault(device.id, obj, printable(reason), printable(topic), received_us)]
        level = logging.INFO if report.state == "ok" else logging.WARNING
        changes = (f"; opened {', '.join(opened)}" if opened else "") + \
            (f"; resolved {', '.join(resolved)}" if resolved else "")
        log.log(level, "device %s: health %s: %s%s", device.id, report.state, printable(report.summary), changes)
        return HealthOutcome(True, tuple(opened), tuple(resolved))
