"""What the station tells its operator: per-device status, the problems found, enrolment of device keys.

Read-only over the index and the store, except :func:`enroll_device`, which writes the devices table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import UsageError
from agent.evidence.keys import fingerprint, public_key_raw
from agent.timeline import utc
from sync.station.index import Index
from sync.station.model import GAP, DeviceRow, ProblemRow
from sync.station.problems import printable


def enroll_device(index: Index, device: str, public_key: Ed25519PublicKey, now_us: int, replace: bool) -> str:
    """Enroll (or with ``replace``, re-enroll) a device's public key; returns what was done, in words."""
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


@dataclass(frozen=True)
class DeviceStatus:
    device: DeviceRow
    head_seq: int
    head_link: str
    files: int
    file_bytes: int
    files_waiting: int
    last_session: dict[str, Any] | None
    open_problems: int
    holes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device.id, "key_fingerprint": self.device.fingerprint, "revoked": self.device.revoked,
            "enrolled_us": self.device.enrolled_us, "records": self.head_seq, "watermark_seq": self.head_seq,
            "watermark_link": self.head_link, "files_stored": self.files, "bytes_stored": self.file_bytes,
            "files_waiting": self.files_waiting, "last_session": self.last_session,
            "open_problems": self.open_problems, "holes": self.holes,
        }


def device_statuses(index: Index) -> list[DeviceStatus]:
    problems = [p for p in index.problems() if p.resolved_us is None]
    statuses = []
    for device in index.devices():
        head = index.head(device.id)
        files, size = index.file_totals(device.id)
        session = index.last_session(device.id)
        mine = [p for p in problems if p.device == device.id]
        statuses.append(DeviceStatus(
            device=device, head_seq=head.seq, head_link=head.link, files=files, file_bytes=size,
            files_waiting=len(index.claims_waiting(device.id)),
            last_session=None if session is None else {
                "session": session.id, "started_us": session.started_us, "started_utc": utc(session.started_us),
                "offset_us": session.offset_us, "delay_us": session.delay_us, "ended_us": session.ended_us,
                "records": session.records, "files_stored": session.files_stored,
            },
            open_problems=len(mine), holes=[p.reason for p in mine if p.kind == GAP],
        ))
    return statuses


def render_status(station_id: str, key_fingerprint: str | None, statuses: list[DeviceStatus],
                  stray_problems: int) -> str:
    key = key_fingerprint or "not created yet (serve or show-key creates it)"
    lines = [f"station {station_id}  ack key {key}"]
    if not statuses:
        lines.append("no devices enrolled (bodycam-station add-device)")
    for status in statuses:
        d = status.device
        lines.append(f"device {d.id}{'  REVOKED' if d.revoked else ''}  key {d.fingerprint[:16]}...")
        lines.append(f"  records {status.head_seq} stored, watermark seq {status.head_seq} {status.head_link[:16]}...")
        lines.append(f"  files {status.files} stored ({status.file_bytes} bytes), {status.files_waiting} awaited")
        session = status.last_session
        if session is None:
            lines.append("  last session: none")
        else:
            offset = "not measured" if session["offset_us"] is None else f"{session['offset_us'] / 1000:+.1f} ms"
            lines.append(f"  last session {session['session']} at {session['started_utc']}, clock offset {offset}")
        lines.append(f"  open problems {status.open_problems}" + (f", holes: {'; '.join(status.holes)}"
                                                                   if status.holes else ""))
    if stray_problems:
        lines.append(f"{stray_problems} open problem(s) about messages from no enrolled device (see problems)")
    return "\n".join(lines)


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
