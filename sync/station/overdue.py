"""What is overdue now: the station's own check for what never arrived and for cases left open (art. 9, 17, 24).

Pure: rows in, findings out, no clock and no IO (sync/station/watch.py gathers the rows and records the
findings). Lateness is otherwise judged only when something arrives; this finds what has not:

- ``overdue-file``: a file a stored footage record vouches for, not stored, its upload deadline passed (the
  recording time as :func:`sync.station.deadline.recording_time` judges it, as for ``late-upload``);
- ``device-unseen``: an enrolled, not revoked device with no sync session (hello) for more than the
  configured working days (from its enrolment when it never synced);
- ``case-open-too-long``: a case whose opening record is stored and whose closing record is not, open longer
  than the configured hours;
- ``case-incomplete``: a closed case whose required stages (the stage list its ``case-open`` record carries,
  else the procedure profile of that name) were not all marked done.

A finding is identified by device, kind and object: found again it is the same problem, and a problem no
longer found is resolved.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.timeline import utc
from firmware_config.station_config import OverdueSettings
from sync.station.deadline import WorkingCalendar, recording_time
from sync.station.model import (
    CASE_INCOMPLETE,
    CASE_OPEN_TOO_LONG,
    CHECK_KINDS,
    DEVICE_UNSEEN,
    OVERDUE_FILE,
    Claim,
    DeviceRow,
    ProblemRow,
)
from sync.station.problems import printable

HOUR_US = 3600 * 1_000_000
# A case id is the device's text: bounded here so that a problem's object stays one readable line.
MAX_CASE_ID_CHARS = 100


def case_object(case_id: str) -> str:
    """The problem object naming a case (``case c-17``)."""
    return f"case {printable(case_id, MAX_CASE_ID_CHARS)}"


@dataclass(frozen=True)
class CaseFacts:
    """A case as the index holds it, with what the check needs of its opening record."""

    case_id: str
    procedure: str
    opened_seq: int
    opened_wall_us: int  # the case-open record's wall clock (the device's)
    opened_stored_us: int  # when the station stored it
    closed_seq: int | None
    # The required stages of its procedure (from the case-open record, else the profile); None: unknown.
    required: tuple[str, ...] | None
    stages: tuple[tuple[str, str], ...] = ()  # (stage, status) in record order
    device_missing: tuple[str, ...] = ()  # what the device's case-close record says is missing


@dataclass(frozen=True)
class DeviceFacts:
    device: DeviceRow
    last_seen_us: int | None  # the station's clock at the device's last hello; None: never synced
    last_session: str | None
    offsets: tuple[tuple[int, int], ...] = ()  # (session started_us, offset_us), measured ones, in order
    waiting: tuple[tuple[Claim, int], ...] = ()  # footage claims not stored, with their record's stored_us
    cases: tuple[CaseFacts, ...] = ()


@dataclass(frozen=True)
class Finding:
    kind: str
    device: str
    seq: int | None
    object: str | None
    reason: str

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.device, self.kind, self.object)


@dataclass(frozen=True)
class Reconciled:
    """What the index has to do: problems to open (or refresh) and open problems to resolve."""

    found: list[Finding] = field(default_factory=list)
    resolve: list[ProblemRow] = field(default_factory=list)


def overdue_findings(devices: Iterable[DeviceFacts], calendar: WorkingCalendar, now_us: int,
                     settings: OverdueSettings) -> list[Finding]:
    """Everything overdue at ``now_us`` (the station's clock), per device in order: files, unseen, cases."""
    findings: list[Finding] = []
    for facts in devices:
        findings.extend(_overdue_files(facts, calendar, now_us))
        if not facts.device.revoked:
            findings.extend(_unseen(facts, calendar, now_us, settings))
        for case in facts.cases:
            findings.extend(_case(facts.device.id, case, facts.offsets, now_us, settings))
    return findings


def _overdue_files(facts: DeviceFacts, calendar: WorkingCalendar, now_us: int) -> list[Finding]:
    found = []
    for claim, record_stored_us in facts.waiting:
        recorded = recording_time(claim.wall_us, facts.offsets, record_stored_us)
        if now_us >= calendar.upload_deadline(recorded):
            found.append(Finding(OVERDUE_FILE, facts.device.id, claim.seq, claim.name,
                                 f"not received: {calendar.describe(recorded)}"))
    return found


def _unseen(facts: DeviceFacts, calendar: WorkingCalendar, now_us: int, settings: OverdueSettings) -> list[Finding]:
    days = settings.device_unseen_working_days
    since = facts.last_seen_us if facts.last_seen_us is not None else facts.device.enrolled_us
    if now_us < calendar.upload_deadline(since, days):
        return []
    last_day = calendar.last_day(calendar.local_date(since), days)
    if facts.last_seen_us is None:
        what = f"never synced since its enrolment at {utc(since)}"
    else:
        what = f"no sync since {utc(since)} (session {printable(facts.last_session or '?', 64)})"
    return [Finding(DEVICE_UNSEEN, facts.device.id, None, None,
                    f"{what}: more than {days} working days, due by the end of {last_day} ({calendar.zone_name})")]


def _case(device: str, case: CaseFacts, offsets: Sequence[tuple[int, int]], now_us: int,
          settings: OverdueSettings) -> list[Finding]:
    obj = case_object(case.case_id)
    procedure = printable(case.procedure, 48)
    if case.closed_seq is None:
        opened = recording_time(case.opened_wall_us, offsets, case.opened_stored_us)
        hours = settings.max_case_open_hours
        if now_us - opened <= hours * HOUR_US:
            return []
        return [Finding(CASE_OPEN_TOO_LONG, device, case.opened_seq, obj,
                        f"{procedure} case open since {utc(opened)}, longer than {hours} h, and no closing record "
                        "received")]
    missing = missing_stages(case)
    if not missing:
        return []
    names = ", ".join(printable(name, 48) for name in missing)
    return [Finding(CASE_INCOMPLETE, device, case.closed_seq, obj,
                    f"{procedure} case closed with required stages missing: {names}")]


def missing_stages(case: CaseFacts) -> list[str]:
    """The required stages a closed case did not mark done (its last mark of each counts), as the case
    timeline judges them; with the procedure unknown, what the device's closing record says is missing.
    Anything else the device says is missing is added: the station never reports less than the device."""
    status = {name: mark for name, mark in case.stages}
    judged = [] if case.required is None else [name for name in case.required if status.get(name) != "done"]
    return judged + [name for name in case.device_missing if name not in judged]


def reconcile(open_problems: Iterable[ProblemRow], findings: Sequence[Finding]) -> Reconciled:
    """Pure: the findings to record, and the open check problems (of :data:`CHECK_KINDS`) no longer found."""
    found = list(findings)
    keys = {f.key for f in found}
    resolve = [p for p in open_problems if p.kind in CHECK_KINDS and p.resolved_us is None and p.device is not None
               and (p.device, p.kind, p.object) not in keys]
    return Reconciled(found, resolve)
