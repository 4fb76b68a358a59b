"""The upload deadline (art. 17): working days after the recording's local date, and late uploads reported."""

from __future__ import annotations

import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import FakeClock, seeded_key, stand_in_store
from station_support import DeviceSide, Station

from firmware_config.station_config import DeadlineSettings
from sync.station.deadline import WorkingCalendar, to_us

UTC = datetime.UTC
AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def calendar(days: int = 2, weekend: frozenset[int] = frozenset({5, 6}), holidays: tuple[str, ...] = (),
             zone: str = "UTC") -> WorkingCalendar:
    return WorkingCalendar.from_settings(DeadlineSettings(
        days, weekend, frozenset(datetime.date.fromisoformat(h) for h in holidays), zone))


def us(year: int, month: int, day: int, hour: int = 12, minute: int = 0, zone: datetime.tzinfo = UTC) -> int:
    return to_us(datetime.datetime(year, month, day, hour, minute, tzinfo=zone))


# 2023-11-13 is a Monday; 2023-11-17 a Friday.
@pytest.mark.parametrize(("recorded", "last_day"), [
    ((2023, 11, 13), "2023-11-15"),  # Monday -> Wednesday
    ((2023, 11, 16), "2023-11-20"),  # Thursday -> Friday, Monday
    ((2023, 11, 17), "2023-11-21"),  # Friday: the weekend does not count
    ((2023, 11, 18), "2023-11-21"),  # Saturday -> Monday, Tuesday
    ((2023, 11, 19), "2023-11-21"),  # Sunday likewise
])
def test_deadline_is_the_end_of_the_nth_working_day_after(recorded: tuple[int, int, int], last_day: str) -> None:
    cal = calendar()
    deadline = cal.upload_deadline(us(*recorded))
    end = datetime.datetime.combine(datetime.date.fromisoformat(last_day) + datetime.timedelta(days=1),
                                    datetime.time(0), tzinfo=UTC)
    assert deadline == to_us(end)


def test_the_last_microsecond_is_on_time_and_midnight_is_late() -> None:
    cal = calendar()
    recorded = us(2023, 11, 17)
    deadline = cal.upload_deadline(recorded)
    assert not cal.is_late(recorded, deadline - 1)
    assert cal.is_late(recorded, deadline)
    assert not cal.is_late(recorded, recorded)


def test_holidays_are_skipped() -> None:
    # Friday 2023-12-22 with Christmas and Boxing Day off: Wednesday 27th and Thursday 28th.
    cal = calendar(holidays=("2023-12-25", "2023-12-26"))
    assert cal.last_day(datetime.date(2023, 12, 22)) == datetime.date(2023, 12, 28)
    assert calendar().last_day(datetime.date(2023, 12, 22)) == datetime.date(2023, 12, 26)


def test_another_weekend_and_more_days() -> None:
    cal = calendar(days=3, weekend=frozenset({4, 5}))  # Friday and Saturday off
    assert cal.last_day(datetime.date(2023, 11, 16)) == datetime.date(2023, 11, 21)  # Thu -> Sun, Mon, Tue


def test_local_date_comes_from_the_time_zone() -> None:
    # Friday 23:30 UTC is already Saturday in Amsterdam: the deadline moves to the end of Tuesday (CET).
    recorded = us(2023, 11, 17, 23, 30)
    assert calendar(zone="Europe/Amsterdam").local_date(recorded) == datetime.date(2023, 11, 18)
    assert calendar().local_date(recorded) == datetime.date(2023, 11, 17)
    deadline = calendar(zone="Europe/Amsterdam").upload_deadline(recorded)
    assert deadline == to_us(datetime.datetime(2023, 11, 22, 0, 0, tzinfo=AMSTERDAM))
    assert deadline == us(2023, 11, 21, 23, 0)  # midnight CET is 23:00 UTC


def test_daylight_saving_change_inside_the_window() -> None:
    # Amsterdam leaves summer time on Sunday 2023-10-29: the deadline is still local midnight.
    cal = calendar(zone="Europe/Amsterdam")
    deadline = cal.upload_deadline(us(2023, 10, 27, 10, 0, AMSTERDAM))
    assert deadline == to_us(datetime.datetime(2023, 11, 1, 0, 0, tzinfo=AMSTERDAM)) == us(2023, 10, 31, 23, 0)


def test_describe_names_the_recording_date_and_the_last_day() -> None:
    assert calendar().describe(us(2023, 11, 17)) == "recorded 2023-11-17 (UTC), due by the end of 2023-11-21"


# --- late uploads at the receiver -------------------------------------------------------------------------


FRIDAY_NOON = us(2023, 11, 17)


def late_station(tmp_path: Path, stored_at: int) -> tuple[Station, DeviceSide]:
    """A device store recorded on Friday 2023-11-17 and a station whose clock reads ``stored_at``."""
    key = seeded_key(1)
    root = tmp_path / "device"
    stand_in_store(root, key, "dev-0001", 2, clock=FakeClock(wall_us=FRIDAY_NOON))
    station = Station(tmp_path / "data", clock=FakeClock(wall_us=stored_at, step_us=1000))
    station.enroll("dev-0001", key)
    # The device's clock is right: at its hello it reads what the station's reads.
    return station, DeviceSide(station, root, "dev-0001", device_clock_us=stored_at)


def test_segments_uploaded_after_the_weekend_and_two_working_days_are_late(tmp_path: Path) -> None:
    station, side = late_station(tmp_path, us(2023, 11, 22, 0, 0))  # Wednesday, 00:00: just too late
    try:
        side.sync()
        problems = station.problems()
        assert [(p.kind, p.seq, p.object) for p in problems] == [
            ("late-upload", f.seq, f.name) for f in side.files()]
        assert problems[0].reason == "uploaded late: recorded 2023-11-17 (UTC), due by the end of 2023-11-21"
        assert all(p.repeats == 2 for p in problems)  # the record and then its file: one problem each
        assert problems[0].text.startswith("device dev-0001 seq 3: segments/000001.bin: uploaded late")
        assert side.files() and all(station.index.stored_file("dev-0001", f.name) for f in side.files())
    finally:
        station.close()


def test_segments_uploaded_on_the_last_day_are_on_time(tmp_path: Path) -> None:
    station, side = late_station(tmp_path, us(2023, 11, 21, 23, 0))  # Tuesday evening
    try:
        side.sync()
        assert station.problems() == []
    finally:
        station.close()


def test_a_file_arriving_after_its_deadline_is_late_even_if_its_record_was_not(tmp_path: Path) -> None:
    station, side = late_station(tmp_path, us(2023, 11, 20))  # Monday: the records are on time
    try:
        side.hello()
        side.records(side.lines())
        assert station.problems() == []
        station.clock.wall_us = us(2023, 11, 23)  # the bytes come on Thursday
        file = side.files()[0]
        assert side.upload(file).stored
        [problem] = station.problems()
        assert (problem.kind, problem.seq, problem.object) == ("late-upload", file.seq, file.name)
    finally:
        station.close()
