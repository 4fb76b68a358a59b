"""The upload deadline (art. 17): footage must be stored within N working days after it was recorded.

Pure: no clock, no IO. A working day is a day that is neither a weekend day nor a holiday; days are local
dates in the configured time zone. The deadline is the end of the Nth working day *after* the recording's
local date (a Friday recording with N = 2 is due by the end of Tuesday), i.e. the local midnight that starts
the next day: an upload stored at or after that instant is late.
"""

from __future__ import annotations

import datetime
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

    def last_day(self, recorded: datetime.date) -> datetime.date:
        """The Nth working day after ``recorded``: the last day an upload is on time."""
        day, left = recorded, self.working_days
        for _ in range(_MAX_DAYS_SEARCHED):
            day += datetime.timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
                if left == 0:
                    return day
        raise ValueError(f"no {self.working_days} working days within {_MAX_DAYS_SEARCHED} days after {recorded}")

    def upload_deadline(self, recorded_wall_us: int) -> int:
        """Microseconds since the epoch of the instant the upload becomes late (local midnight ending the day)."""
        after = self.last_day(self.local_date(recorded_wall_us)) + datetime.timedelta(days=1)
        midnight = datetime.datetime.combine(after, datetime.time(0), tzinfo=self.zone)
        return to_us(midnight)

    def is_late(self, recorded_us: int, stored_us: int) -> bool:
        return stored_us >= self.upload_deadline(recorded_us)

    def describe(self, recorded_us: int) -> str:
        """``recorded 2023-11-17 (Europe/Amsterdam), due by the end of 2023-11-21``: for problem reasons."""
        recorded = self.local_date(recorded_us)
        return f"recorded {recorded.isoformat()} ({self.zone_name}), due by the end of {self.last_day(recorded)}"
