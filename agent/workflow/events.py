"""What goes into the workflow machine and what comes out of it.

Inputs are button presses (from gpiozero, or from the control socket), clock ticks and control commands;
outputs are effects the daemon carries out: ledger records to append, recording to start or stop, and
feedback patterns for the LED and buzzer. The machine itself does no IO.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Button(enum.Enum):
    RECORD = "record"
    STAGE = "stage"
    MARK = "mark"


@dataclass(frozen=True)
class Press:
    """A button released: ``long`` when it was held past its hold time."""

    button: Button
    long: bool
    at_us: int  # CLOCK_MONOTONIC microseconds


@dataclass(frozen=True)
class Tick:
    """Time passes (ends the stop-reason window when nothing is pressed)."""

    at_us: int


class Feedback(enum.Enum):
    """Named patterns; the controls layer maps each to LED blinks and buzzer beeps (docs/field-workflow.md)."""

    ACK = "ack"  # any press registered: one short blink + click
    RECORDING_ON = "recording-on"
    RECORDING_OFF = "recording-off"
    CASE_OPEN = "case-open"
    STAGE = "stage"
    CASE_CLOSED = "case-closed"
    REFUSED = "refused"  # the stop guard: distinct warning pattern
    REASON = "reason"  # reason selection: beep count = reason number (see FeedbackEffect.count)
    REASON_TIMEOUT = "reason-timeout"
    RETENTION = "retention"  # long-term retention flagged: distinct confirmation
    BOOKMARK = "bookmark"
    ERROR = "error"


@dataclass(frozen=True)
class FeedbackEffect:
    pattern: Feedback
    count: int = 1  # beeps, for REASON


@dataclass(frozen=True)
class RecordEffect:
    """Append a signed ledger record of ``record_type`` with ``body``."""

    record_type: str
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordingEffect:
    """Start (``on``) or stop the recording."""

    on: bool
    reason: str


Effect = FeedbackEffect | RecordEffect | RecordingEffect
