"""What the station tells its operator: per-device status, the problems found, enrolment of device keys.

Read-only over the index and the store, except :func:`enroll_device`, which writes the devices table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import UsageError
from agent.evidence.keys import fingerprint, public_key_raw
from agent.timeline import utc
from firmware_config.station_config import OverdueSettings
from sync.broker import RESERVED_IDS
from sync.station.index import Index
from sync.station.model import CHECK_KINDS, FORK, GAP, ROLLBACK, DeviceRow, HealthRow, ProblemRow
from sync.station.problems import printable
from sync.station.watch import CheckResult

# At most this many of a device's open overdue findings are listed by ``status`` (all: ``problems``).
SHOWN_FINDINGS = 10


def enroll_device(index: Index, device: str, public_key: Ed25519PublicKey, now_us: int, replace: bool) -> str:
    """Enroll (or with ``replace``, re-enroll) a device's public key; returns what was done, in words."""
    if device in RESERVED_IDS:
        raise UsageError(f"device {device}: reserved for the station's own identities ({', '.join(RESERVED_IDS)}); "
                         "nothing enrolled")
    raw = public_key_raw(public_key)
    row = DeviceRow(device, raw.hex(), fingerprint(raw), now_us, revoked=False)
    existing = index.device(device)
    if existing is not None and existing.public_key == row.public_key and not existing.revoked:
        return f"device {device}: already enrolled with key {row.fingerprint}"
    if existing is not None and existing.public_key != row.public_key and not replace:
        raise UsageError(f"device {device}: already enrolled with key {existing.fingerprint[:16]}...; pass --replace "
                         f"to enroll key {row.fingerprint[:16]}... instead")
    index.put_device(row)
    verb = "re-enrolled" if existing is not None else "enrolled"
    return f"device {device}: {verb} with key {row.fingerprint}"


# A health report older than this is shown as stale. It does not change ``status``'s exit code: a device
# reports only while it reaches the broker, so one out on a shift or switched off on a shelf is stale
# without anything being wrong; a fault it reported before going quiet stays an open problem (exit 1).
STALE_AFTER_US = 24 * 3600 * 1_000_000
HEALTH_FAULT_STATES = ("degraded", "failed")


@dataclass(frozen=True)
class HealthView:
    """The device's newest health report as the operator sees it: how old, and whether it is stale."""

    row: HealthRow
    age_us: int  # from the device's report time if its clock was trusted, else from when the station got it
    stale: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.row.to_dict(), "at_utc": utc(self.row.at_wall_us), "received_utc": utc(self.row.received_us),
                "age_s": self.age_us // 1_000_000, "stale": self.stale}


def health_view(row: HealthRow | None, now_us: int) -> HealthView | None:
    """Pure: how old a report is and whether it is stale at ``now_us`` (the station's clock)."""
    if row is None:
        return None
    since = row.at_wall_us if row.clock_trusted else row.received_us
    # A trusted device clock ahead of the station's still gives an age of 0, not a negative one.
    age = max(0, now_us - since)
    return HealthView(row, age, age > STALE_AFTER_US)


@dataclass(frozen=True)
class DeviceStatus:
    device: DeviceRow
    head_seq: int
    head_link: str
    files: int
    file_bytes: int
    files_waiting: int
    bytes_waiting: int
    last_session: dict[str, Any] | None
    open_problems: int
    problem_kinds: dict[str, int]
    holes: list[str]
    health: HealthView | None
    # The officer the station last assigned (bodycam-station assign), with when it was issued; None: never.
    assigned_officer: tuple[str, int] | None = None
    # Open rollback and fork problems, word for word: the device and the station disagree on evidence.
    custody_alerts: tuple[str, ...] = ()
    # The device's open findings of the overdue check (sync/station/overdue.py), as "kind: object: reason".
    overdue: tuple[str, ...] = ()

    @property
    def faulty(self) -> bool:
        """Open problems, or the newest health report says degraded or failed (what makes status exit 1)."""
        return bool(self.open_problems) or (self.health is not None and self.health.row.state in HEALTH_FAULT_STATES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device.id, "key_fingerprint": self.device.fingerprint, "revoked": self.device.revoked,
            "enrolled_us": self.device.enrolled_us, "records": self.head_seq, "watermark_seq": self.head_seq,
            "watermark_link": self.head_link, "files_stored": self.files, "bytes_stored": self.file_bytes,
            "files_waiting": self.files_waiting, "backlog": {"files": self.files_waiting, "bytes": self.bytes_waiting},
            "last_session": self.last_session, "health": None if self.health is None else self.health.to_dict(),
            "open_problems": self.open_problems, "open_problem_kinds": self.problem_kinds, "holes": self.holes,
            "custody_alerts": list(self.custody_alerts),
            "overdue": list(self.overdue),
            "assigned_officer": None if self.assigned_officer is None else {
                "officer": self.assigned_officer[0], "issued_us": self.assigned_officer[1],
                "issued_utc": utc(self.assigned_officer[1])},
        }


def device_statuses(index: Index, now_us: int) -> list[DeviceStatus]:
    problems = [p for p in index.problems() if p.resolved_us is None]
    assigned = index.latest_assignments()
    statuses = []
    for device in index.devices():
        head = index.head(device.id)
        files, size = index.file_totals(device.id)
        waiting = index.claims_waiting(device.id)
        session = index.last_session(device.id)
        mine = [p for p in problems if p.device == device.id]
        statuses.append(DeviceStatus(
            device=device, head_seq=head.seq, head_link=head.link, files=files, file_bytes=size,
            files_waiting=len(waiting), bytes_waiting=sum(c.size for c in waiting),
            last_session=None if session is None else {
                "session": session.id, "started_us": session.started_us, "started_utc": utc(session.started_us),
                "offset_us": session.offset_us, "delay_us": session.delay_us, "ended_us": session.ended_us,
                "records": session.records, "files_stored": session.files_stored,
                "chunks_written": session.chunks_written,
                "duplicates": session.duplicate_records + session.duplicate_chunks,
            },
            open_problems=len(mine), problem_kinds=dict(sorted(Counter(p.kind for p in mine).items())),
            holes=[p.reason for p in mine if p.kind == GAP],
            custody_alerts=tuple(p.reason for p in mine if p.kind in (ROLLBACK, FORK)),
            health=health_view(index.health(device.id), now_us),
            assigned_officer=None if device.id not in assigned else (
                assigned[device.id].officer, assigned[device.id].issued_us),
            overdue=tuple(": ".join([p.kind, *([p.object] if p.object else []), p.reason])
                          for p in mine if p.kind in CHECK_KINDS),
        ))
    return statuses


def _age(us: int) -> str:
    seconds = us // 1_000_000
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86_400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} days"


_METRIC_FORMATS = {"fps": "{} fps", "write_latency_ms": "write {} ms", "free_bytes": "free {} bytes",
                   "temperature_c": "{} C", "battery_percent": "battery {}%"}


def render_metrics(metrics: dict[str, int | float | None]) -> str:
    shown = [_METRIC_FORMATS.get(name, name + " {}").format(f"{value:g}" if isinstance(value, float) else value)
             for name, value in metrics.items() if value is not None]
    return ", ".join(shown)


def render_health(view: HealthView | None) -> str:
    if view is None:
        return "  health: no report received yet"
    row = view.row
    clock = "clock trusted" if row.clock_trusted else "clock NOT trusted"
    stale = f"; STALE (no report for over {STALE_AFTER_US // 3_600_000_000} h)" if view.stale else ""
    metrics = render_metrics(row.metrics)
    return (f"  health: {row.state.upper() if row.state != 'ok' else 'ok'}: {printable(row.summary)} "
            f"(reported {utc(row.at_wall_us)}, {_age(view.age_us)} ago, {clock}){stale}"
            + (f"\n    {metrics}" if metrics else ""))


def render_status(station_id: str, key_fingerprint: str | None, statuses: list[DeviceStatus],
                  stray_problems: int) -> str:
    key = key_fingerprint or "not created yet (serve or show-key creates it)"
    lines = [f"station {station_id}  ack key {key}"]
    if not statuses:
        lines.append("no devices enrolled (bodycam-station add-device)")
    for status in statuses:
        d = status.device
        lines.append(f"device {d.id}{'  REVOKED' if d.revoked else ''}  key {d.fingerprint[:16]}...")
        lines.append(render_health(status.health))
        if status.assigned_officer is not None:
            officer, issued_us = status.assigned_officer
            lines.append(f"  officer assigned: {printable(officer)} (by this station at {utc(issued_us)})")
        session = status.last_session
        if session is None:
            lines.append("  last sync: none")
        else:
            offset = "not measured" if session["offset_us"] is None else f"{session['offset_us'] / 1000:+.1f} ms"
            ended = "" if session["ended_us"] is not None else ", unfinished (no done)"
            lines.append(f"  last sync: session {session['session']} at {session['started_utc']}{ended}: "
                         f"{session['records']} records, {session['files_stored']} files; clock offset {offset}")
        lines.append(f"  records {status.head_seq} stored, watermark seq {status.head_seq} {status.head_link[:16]}...")
        lines.append(f"  files {status.files} stored ({status.file_bytes} bytes); backlog {status.files_waiting} "
                     f"files ({status.bytes_waiting} bytes) recorded and not received yet")
        kinds = ", ".join(f"{kind} {count}" for kind, count in status.problem_kinds.items())
        lines.append(f"  open problems {status.open_problems}" + (f" ({kinds})" if kinds else "")
                     + (f", holes: {'; '.join(status.holes)}" if status.holes else ""))
        lines.extend(f"  CUSTODY: {printable(alert)}" for alert in status.custody_alerts)
        lines.extend(f"  {printable(text)}" for text in status.overdue[:SHOWN_FINDINGS])
        if len(status.overdue) > SHOWN_FINDINGS:
            lines.append(f"  ... and {len(status.overdue) - SHOWN_FINDINGS} more overdue (see problems)")
    if stray_problems:
        lines.append(f"{stray_problems} open problem(s) about messages from no enrolled device (see problems)")
    return "\n".join(lines)


def check_dict(check: CheckResult, settings: OverdueSettings, working_days: int) -> dict[str, Any]:
    return {"at_us": check.at_us, "at_utc": utc(check.at_us), "findings": len(check.findings),
            "opened": len(check.opened), "resolved": len(check.resolved),
            "upload_working_days": working_days, "device_unseen_working_days": settings.device_unseen_working_days,
            "max_case_open_hours": settings.max_case_open_hours,
            "check_interval_seconds": settings.check_interval_seconds}


def render_check(check: CheckResult, settings: OverdueSettings, working_days: int) -> str:
    """``overdue check at ...: 2 finding(s) (...)``: what was checked, with the configured limits."""
    return (f"overdue check at {utc(check.at_us)}: {len(check.findings)} finding(s) (files due within {working_days} "
            f"working days, devices syncing within {settings.device_unseen_working_days} working days, cases open "
            f"at most {settings.max_case_open_hours} h and closed with their required stages)")


def render_problems(problems: list[ProblemRow]) -> str:
    if not problems:
        return "no problems"
    lines = []
    for problem in problems:
        times = f"at {utc(problem.at_us)}"
        if problem.repeats > 1:
            times += f", {problem.repeats} times, last {utc(problem.last_us)}"
        if problem.resolved_us is not None:
            times += f", resolved {utc(problem.resolved_us)}"
        topic = f" [topic {problem.topic}]" if problem.topic and problem.kind == "rejected-message" else ""
        lines.append(printable(f"{problem.kind}: {problem.text}{topic} ({times})", limit=2000))
    return "\n".join(lines)
