"""The workflow machine's configuration and state: immutable values, so a step can never half-change them.

See agent/workflow/machine.py for the transitions and agent/workflow/replay.py for the rebuild after a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.errors import ConfigError
from agent.evidence.encoding import is_integer
from agent.evidence.officer import OfficerState
from agent.evidence.procedure import Procedure, StageSpec
from agent.evidence.record import DEVICE_ID_PATTERN, officer_problem

DEFAULT_STOP_REASONS = (
    "device fault",
    "battery critical",
    "party's privacy",
    "legally restricted area",
    "officer safety",
    "case closed elsewhere",
)
MAX_STOP_REASONS = 9  # the reason number is beeped: more than nine beeps cannot be counted in the field
MAX_TEXT_CHARS = 500  # free text from the control socket (reasons, notes)
LONG_TERM = "long-term"
FIELD_RETENTION_REASON = "flagged in the field"


@dataclass(frozen=True, kw_only=True)
class WorkflowConfig:
    """What the machine needs to know; ``source`` names the config file in error messages."""

    procedures: Mapping[str, Procedure]
    device_id: str
    officer_id: str
    default_procedure: str = "inspection"
    stop_reasons: tuple[str, ...] = DEFAULT_STOP_REASONS
    reason_window_us: int = 15_000_000
    source: str = "workflow config"

    def __post_init__(self) -> None:
        where = self.source
        if not self.procedures:
            raise ConfigError(f"{where}: key 'procedures': no procedure profiles loaded")
        if self.default_procedure not in self.procedures:
            known = ", ".join(sorted(self.procedures))
            raise ConfigError(
                f"{where}: key 'default_procedure': {self.default_procedure!r} is not a loaded procedure ({known})"
            )
        if not self.stop_reasons:
            raise ConfigError(f"{where}: key 'stop_reasons': the list is empty; a stop needs reasons to choose")
        if len(self.stop_reasons) > MAX_STOP_REASONS:
            raise ConfigError(f"{where}: key 'stop_reasons': at most {MAX_STOP_REASONS} (each is counted in beeps)")
        for number, reason in enumerate(self.stop_reasons, start=1):
            if not isinstance(reason, str) or not reason.strip() or not reason.isprintable() or len(reason) > 100:
                raise ConfigError(f"{where}: key 'stop_reasons[{number}]': must be printable text of 1-100 chars")
        if len(set(self.stop_reasons)) != len(self.stop_reasons):
            raise ConfigError(f"{where}: key 'stop_reasons': a reason appears twice")
        if not is_integer(self.reason_window_us) or not (
            1_000_000 <= self.reason_window_us <= 120_000_000
        ):
            raise ConfigError(f"{where}: key 'reason_window_us': must be 1 to 120 seconds in microseconds")
        if not DEVICE_ID_PATTERN.match(self.device_id):
            raise ConfigError(f"{where}: key 'device_id': {self.device_id!r} is not a valid device id")
        if officer_problem(self.officer_id) is not None:
            raise ConfigError(f"{where}: key 'officer_id': must be printable text of 1-64 characters")


@dataclass(frozen=True)
class CaseState:
    """The open case: which procedure (as it was when opened), where it stands, and its retention flag."""

    case_id: str
    procedure: Procedure
    officer: str
    next_index: int = 0  # 0-based index of the next stage
    done: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    retention: bool = False  # flagged for long-term retention

    @property
    def next_stage(self) -> StageSpec | None:
        stages = self.procedure.stages
        return stages[self.next_index] if self.next_index < len(stages) else None

    def missing(self) -> list[str]:
        """Required stages not done: skipped, or not reached (when the case closes early)."""
        return [s.name for s in self.procedure.stages if s.required and s.name not in self.done]


STOPS_RECORDING = "recording"
STOPS_CASE = "case"  # closing a case whose required stages are not all done (the close guard)


@dataclass(frozen=True)
class ReasonSelection:
    """The stop guard's reason selection: ``selected`` is a 0-based index into the stop reasons.

    ``purpose`` says what the confirmed reason stops: the recording, or the case (closing it with required
    stages not done, which is a stop in the middle of the procedure).
    """

    deadline_us: int
    selected: int | None = None
    purpose: str = STOPS_RECORDING


@dataclass(frozen=True)
class WorkflowState:
    recording: bool = False
    case: CaseState | None = None
    selection: ReasonSelection | None = None
    cases_opened: int = 0  # numbers case ids; rebuilt by replay so ids never repeat
    # The officer in effect (agent/evidence/assignment.py): from the newest ``officer-assigned`` record, else
    # the config's officer_id. Rebuilt by replay.
    officers: OfficerState = field(default_factory=OfficerState)


def close_body(case: CaseState, officer: str, early: bool, reason: str | None = None) -> dict[str, Any]:
    """The body of a ``case-close`` record for ``case`` as it stands; ``reason``: the signed close reason."""
    body: dict[str, Any] = {
        "case_id": case.case_id,
        "officer": officer,
        "missing": case.missing(),
        "skipped": list(case.skipped),
        "not_reached": [stage.name for stage in case.procedure.stages[case.next_index :]],
        "early": early,
    }
    if reason is not None:
        body["reason"] = reason
    return body

