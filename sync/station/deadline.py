"""The upload deadline (art. 17): footage must be stored within N working days after it was recorded.

Pure: no clock, no IO. A working day is a day that is neither a weekend day nor a holiday; days are local
dates in the configured time zone. The deadline is the end of the Nth working day *after* the recording's
local date (a Friday recording with N = 2 is due by the end of Tuesday), i.e. the local midnight that starts
the next day: an upload stored at or after that instant is late.

The recording's time is the device's wall clock corrected by the clock offset the station measured
(:func:`recorded_us`), the same way whether the record arrives, its file arrives or nothing arrives at all.
"""

from __future__ import annotations

import bisect
import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from firmware_config.station_config import DeadlineSettings

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# Ten years of consecutive non-working days cannot be configured by accident; the bound only guarantees
# that a calendar made of holidays ends.
_MAX_DAYS_SEARCHED = 3660


def to_datetime(wall_us: int) -> datetime.datetime:
    """An exact UTC datetime for microseconds since the epoch (no float rounding)."""
    return _EPOCH + datetime.timedelta(microseconds=wall_us)


def to_us(moment: datetime.datetime) -> int:
    return (moment - _EPOCH) // datetime.timedelta(microseconds=1)


@dataclass(frozen=True)
class WorkingCalendar:
    working_days: int
    weekend: frozenset[int]  # datetime.date.weekday(): Monday 0 .. Sunday 6
    holidays: frozenset[datetime.date]
    zone: datetime.tzinfo

    @classmethod
    def from_settings(cls, settings: DeadlineSettings) -> WorkingCalendar:
        return cls(settings.working_days, settings.weekend, settings.holidays, ZoneInfo(settings.timezone))

    @property
    def zone_name(self) -> str:
        return str(self.zone)

    def is_working_day(self, day: datetime.date) -> bool:
        return day.weekday() not in self.weekend and day not in self.holidays

    def local_date(self, wall_us: int) -> datetime.date:
        return to_datetime(wall_us).astimezone(self.zone).date()

    def last_day(self, recorded: datetime.date, days: int | None = None) -> datetime.date:
        """The Nth working day after ``recorded`` (N: ``days``, else the upload deadline's): the last day an
        upload is on time."""
        wanted = self.working_days if days is None else days
        day, left = recorded, wanted
        for _ in range(_MAX_DAYS_SEARCHED):
            day += datetime.timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
                if left == 0:
                    return day
        raise ValueError(f"no {wanted} working days within {_MAX_DAYS_SEARCHED} days after {recorded}")

    def upload_deadline(self, recorded_wall_us: int, days: int | None = None) -> int:
        """Microseconds since the epoch of the instant the upload becomes late (local midnight ending the day)."""
        after = self.last_day(self.local_date(recorded_wall_us), days) + datetime.timedelta(days=1)
        midnight = datetime.datetime.combine(after, datetime.time(0), tzinfo=self.zone)
        return to_us(midnight)

    def is_late(self, recorded_us: int, stored_us: int) -> bool:
        return stored_us >= self.upload_deadline(recorded_us)

    def describe(self, recorded_us: int) -> str:
        """``recorded 2023-11-17 (Europe/Amsterdam), due by the end of 2023-11-21``: for problem reasons."""
        recorded = self.local_date(recorded_us)
        return f"recorded {recorded.isoformat()} ({self.zone_name}), due by the end of {self.last_day(recorded)}"


def offset_at(offsets: Sequence[tuple[int, int]], at_us: int) -> int | None:
    """The clock offset (station minus device) measured in the last session started at or before ``at_us``
    that measured one; ``offsets`` are ``(session started_us, offset_us)`` in start order. None: none yet.

    A record is corrected by the session it arrived in (its clock report comes before its records), so the
    answer for a stored record never changes as later sessions come."""
    starts = [started for started, _ in offsets]
    position = bisect.bisect_right(starts, at_us)
    return offsets[position - 1][1] if position else None


def recorded_us(wall_us: int, offset_us: int | None, stored_us: int) -> int:
    """When the device recorded something, on the station's clock: its wall clock plus the measured offset
    (unmeasured: as the device said), never later than the record reached the station (``stored_us``), so a
    clock set into the future cannot push a deadline out past what the station saw, and never before 1970
    (the offset comes from the device's stamps, whatever their size)."""
    return max(0, min(wall_us + (offset_us or 0), stored_us))


def recording_time(wall_us: int, offsets: Sequence[tuple[int, int]], record_stored_us: int) -> int:
    """The one judge of when footage was recorded, for the upload deadline: the record's wall clock corrected
    by the offset of the session it arrived in. Used alike when the record arrives, when its file arrives and
    when neither has (sync/station/intake.py, transfer.py, overdue.py), so all three name the same day."""
    return recorded_us(wall_us, offset_at(offsets, record_stored_us), record_stored_us)
