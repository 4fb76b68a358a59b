"""The overdue check (art. 9, 17, 24): files never received, devices that stop syncing, cases left open or
closed incomplete; found without anything arriving, recorded once, resolved when the condition clears; and
the recording time every deadline is judged by corrected with the clock offset the station measured."""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import DeviceFile, FakeClock, seeded_key, stand_in_store, vouched_files
from station_support import DeviceSide, Station

from agent.evidence.ledger import Ledger
from agent.evidence.store import read_records
from firmware_config.profiles import load_profiles
from firmware_config.station_config import DeadlineSettings, OverdueSettings
from sync.station.deadline import WorkingCalendar, offset_at, recorded_us, recording_time, to_us
from sync.station.index import SqliteIndex
from sync.station.model import (
    CASE_INCOMPLETE,
    CASE_OPEN_TOO_LONG,
    DEVICE_FAULT,
    DEVICE_UNSEEN,
    LATE_UPLOAD,
    OVERDUE_FILE,
    Claim,
    DeviceRow,
    ProblemRow,
)
from sync.station.overdue import CaseFacts, DeviceFacts, Finding, missing_stages, overdue_findings, reconcile
from sync.station.service import StationService
from sync.station.watch import CheckResult, OverdueCheck, overdue_task

DEVICE = "dev-0001"
HOUR = 3600 * 1_000_000
DAY = 24 * HOUR
CAL = WorkingCalendar.from_settings(DeadlineSettings())  # 2 working days, Saturday and Sunday off, UTC
SETTINGS = OverdueSettings(check_interval_seconds=1, device_unseen_working_days=5, max_case_open_hours=12)


def us(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> int:
    return to_us(datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.UTC))


# 2023-11-17 is a Friday: footage recorded then is due by the end of Tuesday 2023-11-21.
FRIDAY = us(2023, 11, 17)
WEDNESDAY_MIDNIGHT = us(2023, 11, 22, 0, 0)


def device_row(revoked: bool = False, enrolled_us: int = FRIDAY) -> DeviceRow:
    return DeviceRow(DEVICE, "00" * 32, "ff" * 32, enrolled_us, revoked)


def claim(seq: int = 3, wall_us: int = FRIDAY, name: str = "segments/000001.bin", kind: str = "segment") -> Claim:
    return Claim(DEVICE, name, "ab" * 32, 10, seq, kind, wall_us)


def facts(**fields: Any) -> DeviceFacts:
    values: dict[str, Any] = {"device": device_row(), "last_seen_us": us(2023, 11, 20), "last_session": "s9"}
    values.update(fields)
    return DeviceFacts(**values)


def kinds(findings: list[Finding]) -> list[tuple[str, int | None, str | None]]:
    return [(f.kind, f.seq, f.object) for f in findings]


# --- the one judge of the recording time -------------------------------------------------------------------


def test_the_recording_time_is_the_device_clock_corrected_by_its_sessions_offset() -> None:
    offsets = [(100, 5), (200, -7), (300, 11)]
    assert [offset_at(offsets, at) for at in (99, 100, 199, 200, 299, 10**9)] == [None, 5, 5, -7, -7, 11]
    assert recording_time(1_000, offsets, 250) == 250  # 1_000 - 7 is later than the record reached the station
    assert recording_time(100, offsets, 250) == 93
    assert recording_time(100, [], 250) == 100  # no offset measured: the device's clock as it is
    # A clock set into the future cannot push the deadline out, nor stamps of any size make it overflow.
    assert recorded_us(10**30, None, 500) == 500 and recorded_us(5, -(10**30), 500) == 0


# --- the pure decision ------------------------------------------------------------------------------------


def test_a_file_not_received_is_overdue_from_its_deadline_on() -> None:
    waiting = ((claim(), us(2023, 11, 20)),)  # its record came on Monday
    assert overdue_findings([facts(waiting=waiting)], CAL, WEDNESDAY_MIDNIGHT - 1, SETTINGS) == []
    [found] = overdue_findings([facts(waiting=waiting)], CAL, WEDNESDAY_MIDNIGHT, SETTINGS)
    assert found == Finding(OVERDUE_FILE, DEVICE, 3, "segments/000001.bin",
                            "not received: recorded 2023-11-17 (UTC), due by the end of 2023-11-21")


def test_the_overdue_deadline_uses_the_measured_clock_offset() -> None:
    # The device's clock ran three days ahead: it stamped Monday what it recorded on Friday.
    waiting = ((claim(wall_us=FRIDAY + 3 * DAY), us(2023, 11, 21)),)
    offsets = ((us(2023, 11, 21, 8), -3 * DAY),)
    assert overdue_findings([facts(waiting=waiting)], CAL, WEDNESDAY_MIDNIGHT, SETTINGS) == []
    [found] = overdue_findings([facts(waiting=waiting, offsets=offsets)], CAL, WEDNESDAY_MIDNIGHT, SETTINGS)
    assert found.reason == "not received: recorded 2023-11-17 (UTC), due by the end of 2023-11-21"
    # A clock set years ahead cannot make a file never overdue: it counts from when its record arrived.
    future = ((claim(wall_us=FRIDAY + 999 * DAY), FRIDAY),)
    assert kinds(overdue_findings([facts(waiting=future)], CAL, WEDNESDAY_MIDNIGHT, SETTINGS)) == [
        (OVERDUE_FILE, 3, "segments/000001.bin")]


def test_a_device_unseen_for_more_working_days_than_allowed() -> None:
    # Last seen on Friday 17th; five working days: due to sync by the end of Friday 24th.
    seen = facts(last_seen_us=FRIDAY)
    assert overdue_findings([seen], CAL, us(2023, 11, 24, 23, 59), SETTINGS) == []
    [found] = overdue_findings([seen], CAL, us(2023, 11, 25, 0, 0), SETTINGS)
    assert (found.kind, found.seq, found.object) == (DEVICE_UNSEEN, None, None)
    assert found.reason == ("no sync since 2023-11-17T12:00:00.000Z (session s9): more than 5 working days, due by "
                            "the end of 2023-11-24 (UTC)")
    assert overdue_findings([facts(last_seen_us=FRIDAY, device=device_row(revoked=True))], CAL, us(2024, 1, 1),
                            SETTINGS) == []
    [never] = overdue_findings([facts(last_seen_us=None, last_session=None)], CAL, us(2024, 1, 1), SETTINGS)
    assert never.reason.startswith("never synced since its enrolment at 2023-11-17T12:00:00.000Z: more than 5")


def case(closed_seq: int | None = None, **fields: Any) -> CaseFacts:
    values: dict[str, Any] = {"case_id": "c-1", "procedure": "inspection", "opened_seq": 10,
                              "opened_wall_us": FRIDAY, "opened_stored_us": FRIDAY + HOUR, "closed_seq": closed_seq,
                              "required": ("arrival", "inspection", "departure")}
    values.update(fields)
    return CaseFacts(**values)


def test_a_case_open_longer_than_allowed() -> None:
    assert overdue_findings([facts(cases=(case(),))], CAL, FRIDAY + 12 * HOUR, SETTINGS) == []
    [found] = overdue_findings([facts(cases=(case(),))], CAL, FRIDAY + 12 * HOUR + 1, SETTINGS)
    assert (found.kind, found.seq, found.object) == (CASE_OPEN_TOO_LONG, 10, "case c-1")
    assert found.reason == ("inspection case open since 2023-11-17T12:00:00.000Z, longer than 12 h, and no closing "
                            "record received")
    # Closed, it is no longer open too long (and with every required stage done, nothing at all).
    done = case(14, stages=(("arrival", "done"), ("inspection", "done"), ("departure", "done")))
    assert overdue_findings([facts(cases=(done,))], CAL, FRIDAY + 99 * HOUR, SETTINGS) == []


def test_a_case_closed_without_its_required_stages() -> None:
    closed = case(14, stages=(("arrival", "done"), ("inspection", "skipped"), ("inspection", "done")))
    [found] = overdue_findings([facts(cases=(closed,))], CAL, FRIDAY + 2 * HOUR, SETTINGS)
    assert (found.kind, found.seq, found.object) == (CASE_INCOMPLETE, 14, "case c-1")
    assert found.reason == "inspection case closed with required stages missing: departure"
    skipped = case(14, stages=(("arrival", "done"), ("inspection", "skipped")))
    assert missing_stages(skipped) == ["inspection", "departure"]
    # Procedure unknown at the station: the device's own account; the station never reports less than it.
    assert missing_stages(case(14, required=None, device_missing=("report",))) == ["report"]
    assert missing_stages(case(14, stages=(("arrival", "done"), ("inspection", "done"), ("departure", "done")),
                               device_missing=("extra",))) == ["extra"]


def test_reconcile_resolves_only_check_problems_no_longer_found() -> None:
    def row(pid: int, kind: str, obj: str | None) -> ProblemRow:
        return ProblemRow(pid, DEVICE, None, obj, kind, "r", None, 1, 1, 1, None)

    still = Finding(OVERDUE_FILE, DEVICE, 3, "segments/000001.bin", "r")
    gone, kept, other = row(1, OVERDUE_FILE, "segments/000002.bin"), row(2, OVERDUE_FILE, still.object), \
        row(3, DEVICE_FAULT, "health")
    plan = reconcile([gone, kept, other], [still])
    assert plan.found == [still] and plan.resolve == [gone]


# --- through the receiver and the index ---------------------------------------------------------------------


def device_with_cases(root: Path, clock: FakeClock) -> None:
    """A ledger: two segments, a case closed with stages missing (c-1), a case left open (c-2)."""
    stand_in_store(root, seeded_key(1), DEVICE, 2, clock=clock)
    with Ledger.open(root, seeded_key(1), DEVICE, clock) as ledger:
        ledger.append("case-open", {"case_id": "c-1", "procedure": "inspection", "officer": "A1"})
        ledger.append("stage", {"case_id": "c-1", "stage": "arrival", "status": "done", "officer": "A1"})
        ledger.append("case-close", {"case_id": "c-1", "officer": "A1", "missing": []})
        ledger.append("case-open", {"case_id": "c-2", "procedure": "inspection", "officer": "A1"})


def records_only(station: Station, root: Path, session: str, device_clock_us: int) -> DeviceSide:
    """A session that brings the records and no file (hello, clock, records, done)."""
    side = DeviceSide(station, root, DEVICE, session=session, device_clock_us=device_clock_us)
    reply = side.hello()
    side.clock(reply, device_clock_us + 2000)
    side.records(side.lines()[reply.seq:])
    last = read_records(root)[-1]
    side.done(last.seq, last.link)
    return side


def open_problems(station: Station) -> list[tuple[str, int | None, str | None]]:
    return [(p.kind, p.seq, p.object) for p in station.index.problems() if p.resolved_us is None]


def test_overdue_check_over_real_sessions(tmp_path: Path) -> None:
    root = tmp_path / "device"
    device_with_cases(root, FakeClock(wall_us=FRIDAY))
    station = Station(tmp_path / "data", clock=FakeClock(wall_us=FRIDAY + HOUR, step_us=1000))
    station.enroll(DEVICE, seeded_key(1))
    check = OverdueCheck(config=station.config, index=station.index, store=station.store, profiles=load_profiles())
    try:
        side = records_only(station, root, "s1", FRIDAY + HOUR)
        files = side.files()
        records = read_records(root)
        [c1_close] = [r.seq for r in records if r.record.type == "case-close"]
        [c2_open] = [r.seq for r in records if r.record.type == "case-open" and r.record.body["case_id"] == "c-2"]
        # An hour later: nothing is late yet; the case closed without its stages is found at once.
        result = check.run(FRIDAY + 2 * HOUR)
        assert kinds(result.findings) == [(CASE_INCOMPLETE, c1_close, "case c-1")]
        assert result.findings[0].reason == ("inspection case closed with required stages missing: credentials-shown, "
                                             "party-informed, inspection, record-signed, departure")
        # Wednesday: the files are overdue and c-2 has been open far too long. Checked twice: recorded once.
        for _ in range(2):
            check.run(WEDNESDAY_MIDNIGHT)
        expected = [(CASE_INCOMPLETE, c1_close, "case c-1"), *[(OVERDUE_FILE, f.seq, f.name) for f in files],
                    (CASE_OPEN_TOO_LONG, c2_open, "case c-2")]
        assert open_problems(station) == expected
        assert all(p.repeats == 1 for p in station.index.problems())
        # A file arrives: its overdue problem is resolved at once, and its lateness recorded.
        station.clock.wall_us = WEDNESDAY_MIDNIGHT + HOUR
        side.session = "s2"
        side.hello()
        assert side.upload(files[0]).stored
        assert (OVERDUE_FILE, files[0].seq, files[0].name) not in open_problems(station)
        assert (LATE_UPLOAD, files[0].seq, files[0].name) in open_problems(station)
        # A week on without a sync: the device is unseen; c-2's closing record comes: it is no longer open.
        station.clock.wall_us = us(2023, 12, 1)
        assert (DEVICE_UNSEEN, None, None) in kinds(check.run(us(2023, 12, 1)).opened)
        with Ledger.open(root, seeded_key(1), DEVICE, FakeClock(wall_us=us(2023, 12, 1))) as ledger:
            ledger.append("case-close", {"case_id": "c-2", "officer": "A1", "missing": []})
        records_only(station, root, "s3", us(2023, 12, 1))
        still_open = open_problems(station)
        assert (DEVICE_UNSEEN, None, None) not in still_open and (CASE_OPEN_TOO_LONG, c2_open, "case c-2") not in \
            still_open
        # The next check finds c-2 closed without its stages, and the second file still missing.
        result = check.run(us(2023, 12, 1, 13))
        assert [f.kind for f in result.opened] == [CASE_INCOMPLETE]
        assert [(f.kind, f.object) for f in result.findings if f.kind == OVERDUE_FILE] == [
            (OVERDUE_FILE, files[1].name)]
    finally:
        station.close()


def test_late_upload_uses_the_measured_clock_offset(tmp_path: Path) -> None:
    """A device whose clock runs three days ahead stamps Friday's footage Monday: uploaded on Wednesday it is
    late, and the station says so (before, it judged the device's own stamp and found it on time)."""
    root = tmp_path / "device"
    stand_in_store(root, seeded_key(1), DEVICE, 2, clock=FakeClock(wall_us=FRIDAY + 3 * DAY))
    station = Station(tmp_path / "data", clock=FakeClock(wall_us=WEDNESDAY_MIDNIGHT, step_us=1000))
    station.enroll(DEVICE, seeded_key(1))
    try:
        DeviceSide(station, root, DEVICE, device_clock_us=WEDNESDAY_MIDNIGHT + 3 * DAY).sync()
        problems = [p for p in station.problems() if p.kind == LATE_UPLOAD]
        assert [(p.seq, p.object) for p in problems] == [(f.seq, f.name) for f in vouched(root)]
        assert problems[0].reason == "uploaded late: recorded 2023-11-17 (UTC), due by the end of 2023-11-21"
        assert all(p.repeats == 2 for p in problems)  # record and file judged alike: one problem each
    finally:
        station.close()


def test_a_slow_clock_is_not_made_late(tmp_path: Path) -> None:
    """The other way round: three days behind, Monday's footage stamped Friday is on time on Wednesday."""
    root = tmp_path / "device"
    stand_in_store(root, seeded_key(1), DEVICE, 2, clock=FakeClock(wall_us=FRIDAY))
    station = Station(tmp_path / "data", clock=FakeClock(wall_us=WEDNESDAY_MIDNIGHT, step_us=1000))
    station.enroll(DEVICE, seeded_key(1))
    try:
        DeviceSide(station, root, DEVICE, device_clock_us=WEDNESDAY_MIDNIGHT - 3 * DAY).sync()
        assert station.problems() == []
    finally:
        station.close()


def vouched(root: Path) -> list[DeviceFile]:
    return vouched_files(root)


# --- on serve's timer ---------------------------------------------------------------------------------------


class QuietClient:
    """What StationService uses of paho's client, doing nothing (no broker is needed to see the timer)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *_args, **_kwargs: None


def test_serve_runs_the_check_on_its_timer(tmp_path: Path) -> None:
    root = tmp_path / "device"
    stand_in_store(root, seeded_key(1), DEVICE, 2, clock=FakeClock(wall_us=FRIDAY))
    station = Station(tmp_path / "data", clock=FakeClock(wall_us=FRIDAY + HOUR, step_us=1000),
                      overdue={"check_interval_seconds": 1})
    station.enroll(DEVICE, seeded_key(1))
    records_only(station, root, "s1", FRIDAY + HOUR)
    check = OverdueCheck(config=station.config, index=station.index, store=station.store, profiles=load_profiles())
    runs: list[int] = []
    run = check.run

    def counted(now_us: int) -> CheckResult:
        result = run(now_us)
        runs.append(len(result.findings))
        return result

    check.run = counted  # type: ignore[method-assign]
    task = overdue_task(check, station.clock, station.config.overdue.check_interval_seconds)
    service = StationService(config=station.config, receiver=station.receiver, client=QuietClient(), periodic=[task])  # type: ignore[arg-type]
    stop = threading.Event()
    seen: list[str] = []

    def operator() -> None:
        watcher = SqliteIndex(station.config.index_path)  # another connection, as an operator's status would be
        try:
            deadline = time.monotonic() + 10
            while not runs and time.monotonic() < deadline:
                time.sleep(0.02)
            station.clock.wall_us = WEDNESDAY_MIDNIGHT  # the files' deadline passes while serve runs
            while time.monotonic() < deadline and not seen:
                seen.extend(p.object or "" for p in watcher.problems() if p.kind == OVERDUE_FILE)
                time.sleep(0.05)
        finally:
            watcher.close()
            stop.set()

    thread = threading.Thread(target=operator)
    started = time.monotonic()
    thread.start()
    try:
        assert service.run(stop) == 0
        thread.join(timeout=5)
        assert runs[0] == 0 and runs[-1] == 2 and len(runs) >= 2, runs  # at the start, then on the timer
        assert 0.9 <= time.monotonic() - started < 10
        assert seen == [f.name for f in vouched(root)]
    finally:
        station.close()


def test_a_failing_check_is_logged_and_serving_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sync.station.periodic import Periodic

    calls: list[float] = []

    def broken() -> None:
        calls.append(time.monotonic())
        raise RuntimeError("index gone")

    task = Periodic("overdue check", 60, broken)
    task.poll(100.0)
    task.poll(159.0)  # not due yet
    task.poll(160.0)
    assert len(calls) == 2 and "overdue check failed; trying again in 60 s" in caplog.text


def test_bodycam_station_serve_checks_at_start_and_records_once(tmp_path: Path, world: Any) -> None:
    """The real ``serve`` with a real broker: a station whose device synced records in 2023 and then never
    again finds, when it starts, the files that never came and the device that stopped syncing."""
    import tomllib

    from helpers import wait_for

    from firmware_config.toml_write import dumps

    config = tomllib.loads(world.config.read_text())
    config["overdue"] = {"check_interval_seconds": 1}
    world.config.write_text(dumps(config))
    root = tmp_path / "device-a"
    stand_in_store(root, seeded_key(1), "dev-a", 2, clock=FakeClock(wall_us=FRIDAY))
    before = Station(world.data, clock=FakeClock(wall_us=FRIDAY + HOUR, step_us=1000))
    before.enroll("dev-a", seeded_key(1))
    side = DeviceSide(before, root, "dev-a", device_clock_us=FRIDAY + HOUR)
    reply = side.hello()
    side.records(side.lines()[reply.seq:])
    before.close()
    world.start_station()
    try:
        rows = wait_for(lambda: [r for r in world.query("SELECT kind, object, resolved_us FROM problems ORDER BY id")
                                 if r[0] in (OVERDUE_FILE, DEVICE_UNSEEN)] if "overdue check: 3" in world.log_text()
                        else None, 20, "the overdue check to run")
        assert rows == [(OVERDUE_FILE, f.name, None) for f in vouched(root)] + [(DEVICE_UNSEEN, None, None)]
        time.sleep(2.5)  # two more checks on the timer: still one problem each
        assert [r[0] for r in world.query("SELECT kind FROM problems WHERE repeats = 1")] == [r[0] for r in rows]
        assert world.stop_station() == 0
    finally:
        world.kill_station()
    assert "Traceback" not in world.log_text()
