"""The workflow machine's configuration and state: immutable values, so a step can never half-change them.

See agent/workflow/machine.py for the transitions and agent/workflow/replay.py for the rebuild after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.evidence.officer import OfficerState
from agent.evidence.procedure import Procedure, StageSpec

# What the machine is configured with is the configuration's type (the device depends on its configuration);
# named here, where the workflow's readers look for it.
from firmware_config.settings import DEFAULT_STOP_REASONS as DEFAULT_STOP_REASONS
from firmware_config.settings import MAX_STOP_REASONS as MAX_STOP_REASONS
from firmware_config.settings import WorkflowConfig as WorkflowConfig

MAX_TEXT_CHARS = 500  # free text from the control socket (reasons, notes)
LONG_TERM = "long-term"
FIELD_RETENTION_REASON = "flagged in the field"


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

