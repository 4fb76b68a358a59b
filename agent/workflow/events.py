"""What goes into the workflow machine and what comes out of it.

Inputs are button presses (from gpiozero, or from the control socket), clock ticks, control commands and the
recorder's own stops; outputs are effects the daemon carries out, in list order: ledger records to append,
recording to start or stop, feedback patterns for the LED and buzzer, and an error text for the control socket.
The machine itself does no IO (agent/workflow/machine.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# The device's buttons are named in its configuration ([controls.buttons.*]); named here, as the machine's input.
from firmware_config.settings import Button as Button


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
    FAULT = "fault"  # device health: a self-test or runtime check failed (agent/health); distinct from ERROR


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


@dataclass(frozen=True)
class ErrorEffect:
    """A refused command: the text the control socket returns to its client (buttons get ERROR feedback)."""

    message: str


Effect = FeedbackEffect | RecordEffect | RecordingEffect | ErrorEffect


# --- commands from the control socket (``bodycam-agent ctl ...``): the same operations as the buttons ---------


@dataclass(frozen=True)
class OpenCase:
    """Open a case; ``procedure`` None means the configured default."""

    procedure: str | None = None


@dataclass(frozen=True)
class AdvanceStage:
    """The next stage is done (or ``skip``: skipped, recorded as skipped)."""

    skip: bool = False


@dataclass(frozen=True)
class StartRecording:
    pass


@dataclass(frozen=True)
class StopRecording:
    """Stop recording. With a case open ``reason_text`` is required (the stop guard, SPEC invariant 4)."""

    reason_text: str | None = None


@dataclass(frozen=True)
class Bookmark:
    note: str | None = None


@dataclass(frozen=True)
class FlagRetention:
    """Flag the open case (or the current footage) for long-term retention (art. 19); ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class CloseCase:
    """Close the open case early; the required stages not done are listed as missing in ``case-close``.

    While a required stage is not done, closing is a stop in the middle of the procedure: ``reason_text`` is
    required (the close guard, issue 12), as a stop's is.
    """

    reason_text: str | None = None


Command = OpenCase | AdvanceStage | StartRecording | StopRecording | Bookmark | FlagRetention | CloseCase


@dataclass(frozen=True)
class RecordingStopped:
    """The recorder stopped on its own (storage full, a fault, a start it refused): keeps the machine in step.

    The recorder signs its own records about it; the machine only updates its view and tells the officer.
    """

    reason: str


@dataclass(frozen=True)
class SystemStop:
    """The system stops the device (service stop, SIGINT, shutdown, a fatal fault): not the officer.

    ``cause`` is a slug for machines (``service-stop``, ``interrupt``, ``shutdown``, ``fault``), ``detail`` the
    words for people (``service stopped (SIGTERM)``). Inside a case the machine signs it as a stop reason
    before the recording stops (agent/stopping.py names it).
    """

    cause: str
    detail: str


Event = Press | Tick | Command | RecordingStopped | SystemStop
