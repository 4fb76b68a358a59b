"""Case timelines from a ledger: what happened in each case, and what was and was not recorded (issue 4, art. 24).

Per case: opening and closing, the stages with their times and status, the recorded and unrecorded intervals
inside the case, stop reasons, refused and cancelled stops, bookmarks, the retention class, and the required
stages that are missing. Built from records alone (no footage is read); times are the records' wall clocks in
UTC. Recording switches come from the recorder's ``recording-start``/``recording-stop`` events, its halts
(``storage-full``, ``recorder-fault``) and restarts (a ``boot`` while recording ends the recording at the record
before it; a ``gap`` record names why). A ``stop-reason`` with ``source: system`` is a system stop (SIGTERM,
a shutdown, a fault: agent/stopping.py); one with ``stops: case`` is the reason a case was closed with
required stages not done (the close guard), not a recording stop. A case's stage list comes from its
``case-open`` record when it carries one (what the device used), else from the loaded profiles. Which
records are about which case is :func:`agent.evidence.cases.cases_in` (shared with the workflow's replay).

This reads, it does not verify: run it on a ledger ``bodycam-verify`` found intact, or treat it with care.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.evidence.cases import cases_in
from agent.evidence.procedure import Procedure, StageSpec, procedure_from_case_open
from agent.evidence.record import SignedRecord

STOPS_CASE = "case"  # a stop-reason, stop-refused or stop-cancelled about closing a case (the close guard)
STANDARD_RETENTION = "standard"  # kept as long as the case file (art. 18)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(wall_us: int) -> str:
    """``2023-11-14T22:13:20.000Z``: a record's wall clock in UTC, to the millisecond."""
    moment = _EPOCH + timedelta(microseconds=wall_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Moment:
    """When a record was written: its sequence number and wall clock."""

    seq: int
    wall_us: int

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "wall_us": self.wall_us, "utc": utc(self.wall_us)}


@dataclass
class StageLine:
    index: int  # 1-based
    spec: StageSpec
    status: str = "pending"  # done, skipped, pending (case open) or not reached (case closed)
    at: Moment | None = None
    recorded: bool | None = None  # was the camera recording when the stage was marked

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.spec.name,
            "title": self.spec.title,
            "required": self.spec.required,
            "needs_recording": self.spec.needs_recording,
            "status": self.status,
            "at": None if self.at is None else self.at.to_dict(),
            "recorded": self.recorded,
        }


@dataclass(frozen=True)
class Interval:
    from_wall_us: int
    to_wall_us: int
    recorded: bool
    reason: str  # why recording was on or off during it

    @property
    def duration_us(self) -> int:
        return self.to_wall_us - self.from_wall_us

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_wall_us": self.from_wall_us,
            "from_utc": utc(self.from_wall_us),
            "to_wall_us": self.to_wall_us,
            "to_utc": utc(self.to_wall_us),
            "duration_us": self.duration_us,
            "recorded": self.recorded,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Note:
    """A point event in a case: a stop reason, a refused or cancelled stop, a bookmark, a retention flag."""

    at: Moment
    fields: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.to_dict(), **self.fields}


@dataclass
class CaseTimeline:
    case_id: str
    procedure: str
    procedure_title: str
    officer: str
    opened: Moment
    stages: list[StageLine]
    closed: Moment | None = None
    closed_early: bool = False
    intervals: list[Interval] = field(default_factory=list)
    stop_reasons: list[Note] = field(default_factory=list)
    stops_refused: list[Note] = field(default_factory=list)
    stops_cancelled: list[Note] = field(default_factory=list)
    bookmarks: list[Note] = field(default_factory=list)
    retention_flags: list[Note] = field(default_factory=list)
    resumed: list[Note] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # records that do not fit the case (never hidden)

    @property
    def retention_class(self) -> str:
        return str(self.retention_flags[-1].fields["retention_class"]) if self.retention_flags else STANDARD_RETENTION

    @property
    def missing(self) -> list[str]:
        """Required stages skipped, or not reached by a closed case (an open case's pending ones are not yet)."""
        return [s.spec.name for s in self.stages if s.spec.required and s.status in ("skipped", "not reached")]

    @property
    def unrecorded_stages(self) -> list[str]:
        """Stages that need recording but were marked done while the camera was off."""
        return [s.spec.name for s in self.stages if s.spec.needs_recording and s.status == "done" and not s.recorded]

    def total_us(self, recorded: bool) -> int:
        return sum(i.duration_us for i in self.intervals if i.recorded is recorded)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "procedure": self.procedure,
            "procedure_title": self.procedure_title,
            "officer": self.officer,
            "opened": self.opened.to_dict(),
            "closed": None if self.closed is None else self.closed.to_dict(),
            "closed_early": self.closed_early,
            "stages": [stage.to_dict() for stage in self.stages],
            "intervals": [interval.to_dict() for interval in self.intervals],
            "recorded_us": self.total_us(True),
            "unrecorded_us": self.total_us(False),
            "stop_reasons": [n.to_dict() for n in self.stop_reasons],
            "stops_refused": [n.to_dict() for n in self.stops_refused],
            "stops_cancelled": [n.to_dict() for n in self.stops_cancelled],
            "bookmarks": [n.to_dict() for n in self.bookmarks],
            "retention_class": self.retention_class,
            "retention_flags": [n.to_dict() for n in self.retention_flags],
            "resumed": [n.to_dict() for n in self.resumed],
            "missing": self.missing,
            "unrecorded_stages": self.unrecorded_stages,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class _Switch:
    """Recording switched on or off, as the ledger shows it."""

    seq: int
    wall_us: int
    on: bool
    reason: str


def case_timelines(
    signed_records: Iterable[SignedRecord], procedures: Mapping[str, Procedure] | None = None
) -> list[CaseTimeline]:
    """One timeline per case opened in the ledger, in the order the cases were opened."""
    records = sorted(signed_records, key=lambda r: r.seq)
    switches = _recording_switches(records)
    timelines: list[CaseTimeline] = []
    for found in cases_in([(r.record.type, r.record.body) for r in records]):
        opening = records[found.opened].record
        case = _new_case(found.case_id, opening.body, Moment(opening.seq, opening.wall_us), procedures or {})
        for position in found.positions[1:]:
            record = records[position].record
            if record.type == "case-open":
                case.problems.append(f"seq {record.seq}: the case is opened a second time")
                continue
            if case.closed is not None and record.type != "case-close":
                case.problems.append(f"seq {record.seq}: {record.type} record after the case was closed")
            _apply(case, record.type, record.body, Moment(record.seq, record.wall_us), switches)
        timelines.append(case)
    end = Moment(records[-1].seq, records[-1].record.wall_us) if records else None
    for case in timelines:
        close = case.closed
        for stage in case.stages:
            if stage.status == "pending" and close is not None:
                stage.status = "not reached"
        assert end is not None  # a case exists only if there were records
        case.intervals = _intervals(switches, case.opened, close or end, still_open=close is None)
    return timelines


def _new_case(case_id: str, body: Mapping[str, Any], at: Moment, procedures: Mapping[str, Procedure]) -> CaseTimeline:
    name = str(body.get("procedure", "?"))
    procedure = procedure_from_case_open(body) or procedures.get(name)
    stages = [StageLine(n, spec) for n, spec in enumerate(procedure.stages, start=1)] if procedure else []
    return CaseTimeline(
        case_id=case_id,
        procedure=name,
        procedure_title=procedure.title if procedure else name,
        officer=str(body.get("officer", "?")),
        opened=at,
        stages=stages,
    )


def _apply(case: CaseTimeline, record_type: str, body: Mapping[str, Any], at: Moment, switches: list[_Switch]) -> None:
    kind = body.get("kind") if record_type == "event" else None
    if record_type == "stage":
        _apply_stage(case, body, at, switches)
    elif record_type == "case-close":
        if case.closed is None:
            case.closed = at
            case.closed_early = body.get("early") is True
        else:
            case.problems.append(f"seq {at.seq}: the case is closed a second time")
    elif record_type == "stop-reason":
        fields = {"code": body["code"], "reason": body["reason"], "officer": body["officer"]}
        fields.update({key: body[key] for key in ("stops", "cause") if isinstance(body.get(key), str)})
        case.stop_reasons.append(Note(at, {**fields, "source": body.get("source")}))
    elif record_type == "retention":
        fields = {"retention_class": body["retention_class"], "reason": body["reason"], "officer": body["officer"]}
        case.retention_flags.append(Note(at, fields))
    elif kind == "bookmark":
        note = body.get("note")
        case.bookmarks.append(Note(at, {"note": note if isinstance(note, str) else None}))
    elif kind == "stop-refused":
        missing = body.get("missing")
        closing = {"stops": STOPS_CASE, "missing": [str(m) for m in missing] if isinstance(missing, list) else []}
        case.stops_refused.append(Note(at, closing if body.get("stops") == STOPS_CASE else {}))
    elif kind == "stop-cancelled":
        closing = {"stops": STOPS_CASE} if body.get("stops") == STOPS_CASE else {}
        case.stops_cancelled.append(Note(at, {"cause": str(body.get("cause", "")), **closing}))
    elif kind == "case-resumed":
        case.resumed.append(Note(at, {"next_stage": body.get("next_stage")}))


def _apply_stage(case: CaseTimeline, body: Mapping[str, Any], at: Moment, switches: list[_Switch]) -> None:
    name = body["stage"]
    line = next((s for s in case.stages if s.spec.name == name), None)
    if line is None:
        # A stage the procedure does not list: shown, never dropped (required unknown, so not counted missing).
        line = StageLine(len(case.stages) + 1, StageSpec(name, name, required=False, needs_recording=False))
        case.stages.append(line)
        case.problems.append(f"seq {at.seq}: stage {name!r} is not in procedure {case.procedure!r}")
    elif line.at is not None:
        case.problems.append(f"seq {at.seq}: stage {name!r} is marked a second time")
    line.status = str(body["status"])
    line.at = at
    line.recorded = _recording_at(switches, at.seq)


def _recording_switches(records: list[SignedRecord]) -> list[_Switch]:
    switches: list[_Switch] = []
    on = False
    stop_reason: str | None = None  # the signed reason a following recording-stop carries out
    previous_wall: int | None = None
    for signed in records:
        record, body = signed.record, signed.record.body
        kind = body.get("kind") if record.type == "event" else None
        switch: _Switch | None = None
        if kind == "recording-start":
            # The footage begins with the pre-event buffer: that much before the start was pressed.
            began = record.wall_us - int(body.get("prebuffer_us", 0))
            switch = _Switch(record.seq, began, True, str(body.get("reason", "recording started")))
            stop_reason = None
        elif kind == "recording-stop":
            reason = stop_reason or str(body.get("reason", "recording stopped"))
            switch = _Switch(record.seq, record.wall_us, False, reason)
            stop_reason = None
        elif record.type == "stop-reason" and body.get("stops") != STOPS_CASE:  # a close's reason stops nothing
            code, text = body["code"], body["reason"]
            if body.get("source") == "system":
                stop_reason = f"system stop: {text}"
            else:
                stop_reason = f"stop reason {code}: {text}" if code else f"stop reason (free text): {text}"
        elif record.type == "storage-full" or kind == "recorder-fault":
            detail = body.get("reason", body.get("error", ""))
            switch = _Switch(record.seq, record.wall_us, False, f"recorder halted: {detail}")
        elif record.type == "boot" and on:
            # A restart while recording: the footage ends with the last record before the boot.
            wall = previous_wall if previous_wall is not None else record.wall_us
            switch = _Switch(record.seq, wall, False, "device restarted while recording")
        elif record.type == "gap" and not on and switches and switches[-1].reason == "device restarted while recording":
            last = switches[-1]
            switches[-1] = _Switch(last.seq, last.wall_us, False, f"device restarted: {body['reason']}")
        if switch is not None and switch.on != on:
            switches.append(switch)
            on = switch.on
        previous_wall = record.wall_us
    return switches


def _recording_at(switches: list[_Switch], seq: int) -> bool:
    on = False
    for switch in switches:
        if switch.seq > seq:
            break
        on = switch.on
    return on


def _intervals(switches: list[_Switch], start: Moment, end: Moment, still_open: bool) -> list[Interval]:
    """Recorded and unrecorded intervals from ``start`` to ``end`` (the case's open and close records).

    Empty intervals are left out, except the last one of a case still open: it says how the ledger ends.
    """
    on, reason = False, "off when the case opened"
    for switch in switches:
        if switch.seq > start.seq:
            break
        on = switch.on
        # An earlier stop's reason belongs to the time before the case, not to the case's first minutes.
        reason = switch.reason if on else "off when the case opened"
    intervals: list[Interval] = []
    begin = start.wall_us
    for switch in switches:
        if switch.seq <= start.seq or switch.seq > end.seq:
            continue
        at = max(switch.wall_us, begin)  # a wall clock stepped back never makes a negative interval
        intervals.append(Interval(begin, at, on, reason))
        begin, on, reason = at, switch.on, switch.reason
    intervals.append(Interval(begin, max(end.wall_us, begin), on, reason))
    last = len(intervals) - 1
    kept = [i for n, i in enumerate(intervals) if i.duration_us > 0 or (n == last and still_open)]
    return kept or intervals[-1:]


def render_timeline(timelines: list[CaseTimeline]) -> str:
    """The timelines as text for people; every ledger string is made printable first."""
    if not timelines:
        return "timeline: no cases in this ledger"
    lines = [f"timeline: {len(timelines)} case(s)"]
    for case in timelines:
        lines.extend(_render_case(case))
    return "\n".join(lines)


def _render_case(case: CaseTimeline) -> list[str]:
    p = _printable
    lines = [f"case {p(case.case_id)}: {p(case.procedure)} ({p(case.procedure_title)}), officer {p(case.officer)}"]
    lines.append(f"  opened  {utc(case.opened.wall_us)} (seq {case.opened.seq})")
    if case.closed is None:
        lines.append("  closed  NOT CLOSED: the case is still open at the end of the ledger")
    else:
        early = ", early" if case.closed_early else ""
        lines.append(f"  closed  {utc(case.closed.wall_us)} (seq {case.closed.seq}{early})")
    lines.append("  stages")
    width = max((len(s.spec.name) for s in case.stages), default=0)
    for stage in case.stages:
        when = utc(stage.at.wall_us) if stage.at else " " * 24
        flags = []
        if stage.status == "done" and stage.spec.needs_recording:
            flags.append("recorded" if stage.recorded else "NOT RECORDED")
        if stage.spec.required and stage.status in ("skipped", "not reached"):
            flags.append("REQUIRED, MISSING")
        tail = f"  {', '.join(flags)}" if flags else ""
        lines.append(f"    {stage.index}. {p(stage.spec.name):<{width}}  {stage.status:<11}  {when}{tail}".rstrip())
    lines.append("  recording")
    for interval in case.intervals:
        state = "recorded    " if interval.recorded else "NOT RECORDED"
        why = "" if interval.recorded else f"  ({p(interval.reason)})"
        lines.append(
            f"    {utc(interval.from_wall_us)} .. {utc(interval.to_wall_us)}  {state} "
            f"{_seconds(interval.duration_us)}{why}"
        )
    lines.append(
        f"    total recorded {_seconds(case.total_us(True))}, not recorded {_seconds(case.total_us(False))}"
    )
    events = _event_lines(case)
    if events:
        lines.append("  events")
        lines.extend(text for _, text in sorted(events, key=lambda item: item[0]))
    lines.append(f"  retention class: {p(case.retention_class)}")
    lines.append(f"  missing required stages: {', '.join(map(p, case.missing)) or 'none'}")
    pending = [s.spec.name for s in case.stages if s.spec.required and s.status == "pending"]
    if pending:
        lines.append(f"  required stages still pending (the case is open): {', '.join(map(p, pending))}")
    if case.unrecorded_stages:
        unrecorded = ", ".join(map(p, case.unrecorded_stages))
        lines.append(f"  stages that needed recording but were not recorded: {unrecorded}")
    lines.extend(f"  PROBLEM {p(problem)}" for problem in case.problems)
    return lines


def _event_lines(case: CaseTimeline) -> list[tuple[int, str]]:
    """The point events of a case as (seq, text), to be shown in ledger order."""
    p = _printable
    events: list[tuple[int, str]] = []

    def add(note: Note, text: str) -> None:
        events.append((note.at.seq, f"    {utc(note.at.wall_us)}  {text}"))

    for note in case.stops_refused:
        if note.fields.get("stops") == STOPS_CASE:
            missing = ", ".join(map(p, note.fields["missing"]))
            add(note, f"close refused: required stages not done ({missing}); closing needs a reason")
        else:
            add(note, "stop refused: a case is open")
    for note in case.stop_reasons:
        code, reason, officer = note.fields["code"], p(str(note.fields["reason"])), p(str(note.fields["officer"]))
        label = f"reason {code}" if code else "free-text reason"
        if note.fields.get("source") == "system":
            add(note, f"system stop: {reason} (not by the officer; the case stays open)")
        elif note.fields.get("stops") == STOPS_CASE:
            add(note, f"case closed with required stages not done, {label}: {reason} (officer {officer})")
        else:
            add(note, f"stop with {label}: {reason} (officer {officer})")
    for note in case.stops_cancelled:
        what = "no close" if note.fields.get("stops") == STOPS_CASE else "no stop"
        add(note, f"{what}, reason selection ended: {p(str(note.fields['cause']))}")
    for note in case.bookmarks:
        text = f": {p(str(note.fields['note']))}" if note.fields["note"] else ""
        add(note, f"bookmark{text}")
    for note in case.retention_flags:
        add(
            note,
            f"retention {p(str(note.fields['retention_class']))}: {p(str(note.fields['reason']))} "
            f"(officer {p(str(note.fields['officer']))})",
        )
    for note in case.resumed:
        stage = note.fields["next_stage"]
        if stage is None:
            add(note, "resumed after a restart: every stage marked, the close still needs a reason")
        else:
            add(note, f"resumed after a restart at stage {p(str(stage))}")
    return events


def _seconds(us: int) -> str:
    text = f"{us / 1_000_000:.3f}".rstrip("0").rstrip(".")
    return f"{text} s"


def _printable(text: str) -> str:
    """Ledger text, safe for a terminal: control characters shown as escapes (as bodycam-verify does)."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
