"""The overdue check's IO: gather the rows from the index (and case-open records from the ledger copies),
decide with :func:`sync.station.overdue.overdue_findings`, and keep the index's problems in step.

Each finding is one open problem per device, kind and object (found again: only its ``last_us`` moves on);
an open check problem no longer found is resolved. The receiver resolves some at once as well, when the
condition clears in front of it (a file stored, a hello, a case-close record): see transfer.py, receiver.py
and intake.py. Run by ``bodycam-station serve`` every ``overdue.check_interval_seconds`` and by ``status``
and ``problems``, so a station without a receiver running still reports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from agent.errors import RecordFormatError
from agent.evidence.clock import Clock
from agent.evidence.procedure import Procedure, procedure_from_case_open
from agent.evidence.record import parse_line
from firmware_config.station_config import StationConfig
from sync.station.deadline import WorkingCalendar
from sync.station.index import Index
from sync.station.model import CHECK_KINDS, CaseRow, DeviceRow, ProblemRow
from sync.station.overdue import CaseFacts, DeviceFacts, Finding, overdue_findings, reconcile
from sync.station.periodic import Periodic
from sync.station.ports import LedgerCopies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    at_us: int
    findings: list[Finding]
    opened: list[Finding]
    resolved: list[ProblemRow]


class OverdueCheck:
    """One check over every enrolled device; keeps what it learnt of each case's stage list between runs."""

    def __init__(self, *, config: StationConfig, index: Index, store: LedgerCopies,
                 profiles: Mapping[str, Procedure]) -> None:
        self.settings = config.overdue
        self.calendar = WorkingCalendar.from_settings(config.deadline)
        self._index = index
        self._store = store
        self._profiles = profiles
        # (device, case id) -> required stages; a case's stage list is fixed by its case-open record.
        self._required: dict[tuple[str, str], tuple[str, ...] | None] = {}

    def run(self, now_us: int) -> CheckResult:
        """Check now and record the outcome in one transaction."""
        with self._index.batch():
            facts = [self._facts(device) for device in self._index.devices()]
            findings = overdue_findings(facts, self.calendar, now_us, self.settings)
            open_problems = [p for p in self._index.problems() if p.resolved_us is None and p.kind in CHECK_KINDS]
            plan = reconcile(open_problems, findings)
            opened = [f for f in plan.found
                      if self._index.open_check_problem(f.device, f.kind, f.seq, f.object, f.reason, now_us)]
            for problem in plan.resolve:
                assert problem.device is not None  # reconcile only resolves problems of a device
                self._index.resolve_check_problem(problem.device, problem.kind, problem.object, now_us)
        for finding in opened:
            log.warning("device %s%s: %s%s (%s)", finding.device, "" if finding.seq is None else f" seq {finding.seq}",
                        f"{finding.object}: " if finding.object else "", finding.reason, finding.kind)
        for problem in plan.resolve:
            log.info("%s: no longer so (%s resolved)", problem.text, problem.kind)
        log.log(logging.INFO if opened or plan.resolve else logging.DEBUG,
                "overdue check: %d finding(s), %d new, %d resolved", len(findings), len(opened), len(plan.resolve))
        return CheckResult(now_us, findings, opened, plan.resolve)

    def _facts(self, device: DeviceRow) -> DeviceFacts:
        session = self._index.last_session(device.id)
        return DeviceFacts(
            device=device,
            last_seen_us=None if session is None else session.started_us,
            last_session=None if session is None else session.id,
            offsets=tuple(self._index.clock_offsets(device.id)),
            waiting=tuple(self._index.footage_waiting(device.id)),
            cases=tuple(c for c in (self._case(device.id, row) for row in self._index.cases(device.id))
                        if c is not None),
        )

    def _case(self, device: str, row: CaseRow) -> CaseFacts | None:
        opened = self._index.record(device, row.opened_seq)
        if opened is None:
            return None  # cannot be: a case row comes with its case-open record
        key = (device, row.case_id)
        if key not in self._required:
            self._required[key] = self._required_stages(device, opened.offset, opened.length, row.procedure)
        return CaseFacts(
            case_id=row.case_id, procedure=row.procedure, opened_seq=row.opened_seq,
            opened_wall_us=opened.wall_us, opened_stored_us=opened.stored_us, closed_seq=row.closed_seq,
            required=self._required[key],
            stages=tuple((s.stage, s.status) for s in row.stages),
            device_missing=row.missing,
        )

    def _required_stages(self, device: str, offset: int, length: int, name: str) -> tuple[str, ...] | None:
        """The case's own stage list (its case-open record, as the timeline reads it), else the profile's."""
        procedure: Procedure | None = None
        try:
            line = self._store.read_ledger(device, offset, length)
            procedure = procedure_from_case_open(parse_line(line).record.body)
        except RecordFormatError as exc:
            # Verified when it arrived: a copy changed since (a scrub reports it) falls back to the profile.
            log.warning("device %s: case-open record at offset %d cannot be read (%s)", device, offset, exc)
        if procedure is None:
            procedure = self._profiles.get(name)
        return None if procedure is None else procedure.required_names()


def overdue_task(check: OverdueCheck, clock: Clock, interval_s: float) -> Periodic:
    """The check as ``serve`` runs it: at the start and then every ``interval_s`` seconds, on ``clock``."""
    return Periodic("overdue check", interval_s, lambda: check.run(clock.now().wall_us))
