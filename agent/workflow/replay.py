"""Rebuilding the workflow state from the ledger after a restart, and resuming an open case.

A restart (power loss, crash, update) must never close or forget an open case (issue 4): ``replay`` reads the
case records back, ``resume`` says what the daemon does next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from agent.errors import ConfigError
from agent.evidence.cases import case_id_of, open_case
from agent.evidence.officer import officer_state
from agent.evidence.procedure import procedure_from_case_open
from agent.workflow.events import Effect, Feedback, FeedbackEffect, RecordEffect, RecordingEffect
from agent.workflow.state import LONG_TERM, CaseState, WorkflowConfig, WorkflowState, close_body


def replay(records: Iterable[tuple[str, Mapping[str, Any]]], config: WorkflowConfig) -> WorkflowState:
    """Rebuild the state from the ledger's ``(record_type, body)`` pairs, oldest first.

    The officer in effect comes from the newest ``officer-assigned`` record (the config's officer_id before
    any). An open case stays open at its next stage with its retention flag (never closed or forgotten by a
    restart); the case counter continues. Recording is off (the daemon decides, see ``resume``) and a reason
    selection in progress is dropped: it was never confirmed, so nothing stopped. The case keeps the stage list
    its ``case-open`` record carries; a record without one falls back to the loaded profile, and a procedure
    neither provides is a ConfigError rather than a case silently dropped. Which records are about the open
    case is :func:`agent.evidence.cases.open_case` (the derivation the timeline and the station share).
    """
    pairs = list(records)
    opened = 0
    last_opened: CaseState | None = None
    for record_type, body in pairs:
        case_id = case_id_of(body)
        if record_type == "case-open" and case_id is not None:
            opened = max(opened + 1, _case_number(case_id, config.device_id))
            last_opened = _replayed_case(case_id, body, config)  # every open: an unknown procedure is refused
    current = open_case(pairs)  # the last open's case, unless its close is recorded
    case = last_opened if current is not None else None
    for position in current.after if current is not None else ():
        record_type, body = pairs[position]
        if case is not None and record_type == "stage":
            case = _replayed_stage(case, body)
        elif case is not None and record_type == "retention":
            case = replace(case, retention=True)
    # A case whose last stage is recorded but whose case-close is not (power lost between the two records)
    # stays open here: ``resume`` writes the missing close, so it is never closed without a record.
    return WorkflowState(recording=False, case=case, selection=None, cases_opened=opened,
                         officers=officer_state(pairs))


def _replayed_case(case_id: str, body: Mapping[str, Any], config: WorkflowConfig) -> CaseState:
    procedure = procedure_from_case_open(body)
    name = body.get("procedure")
    if procedure is None and isinstance(name, str):
        procedure = config.procedures.get(name)
    if procedure is None:
        raise ConfigError(
            f"{config.source}: key 'procedures': the ledger's open case {case_id} uses procedure {name!r}, "
            "which no loaded profile defines; refusing to forget the case"
        )
    officer = body.get("officer")
    return CaseState(case_id, procedure, officer if isinstance(officer, str) else config.officer_id)


def _replayed_stage(case: CaseState, body: Mapping[str, Any]) -> CaseState:
    name, status = body.get("stage"), body.get("status")
    if not isinstance(name, str):
        return case
    index = case.procedure.index_of(name)
    if index is None or index < case.next_index:
        return case  # unknown or already handled: the ledger's own order wins, nothing moves backwards
    return replace(
        case,
        next_index=index + 1,
        done=(*case.done, name) if status == "done" else case.done,
        skipped=(*case.skipped, name) if status != "done" else case.skipped,
    )


def _case_number(case_id: str, device_id: str) -> int:
    prefix, _, digits = case_id.rpartition("-")
    return int(digits) if prefix == device_id and digits.isdigit() else 0


def resume(state: WorkflowState) -> tuple[WorkflowState, list[Effect]]:
    """What to do about an open case after ``replay``: say it resumed, and switch the camera on if it must be.

    Recording restarts when the procedure is recorded throughout or the next stage needs recording.
    """
    case = state.case
    if case is None:
        return state, []
    stage = case.next_stage
    if stage is None and not case.missing():
        body = {**close_body(case, case.officer, early=False), "note": "last stage recorded before a restart"}
        closed = replace(state, case=None, selection=None)
        return closed, [RecordEffect("case-close", body), FeedbackEffect(Feedback.CASE_CLOSED)]
    # Every stage marked but required ones not done: the close needs a reason (the close guard), which a
    # restart cannot give, so the case stays open and the officer is asked again at the next stage press.
    where: dict[str, Any] = {"next_stage": None} if stage is None else {
        "next_stage": stage.name, "index": case.next_index + 1}
    effects: list[Effect] = [
        RecordEffect("event", {"kind": "case-resumed", "case_id": case.case_id, **where, "officer": case.officer})
    ]
    if not state.recording and (case.procedure.continuous_recording or (stage is not None and stage.needs_recording)):
        effects.append(RecordingEffect(on=True, reason="resumed after restart"))
        effects.append(FeedbackEffect(Feedback.RECORDING_ON))
        state = replace(state, recording=True)
    effects.append(FeedbackEffect(Feedback.CASE_OPEN))
    return state, effects


def status(state: WorkflowState, config: WorkflowConfig) -> dict[str, Any]:
    """The state as plain data, for the control socket's status command."""
    case = state.case
    selection = state.selection
    return {
        "officer": state.officers.current(config.officer_id),
        "officer_by": state.officers.by,
        "recording": state.recording,
        "cases_opened": state.cases_opened,
        "case": None
        if case is None
        else {
            "case_id": case.case_id,
            "procedure": case.procedure.name,
            "next_stage": case.next_stage.name if case.next_stage else None,
            "done": list(case.done),
            "skipped": list(case.skipped),
            "retention": LONG_TERM if case.retention else None,
        },
        "reason_selection": None
        if selection is None
        else {
            "deadline_us": selection.deadline_us,
            "selected": None if selection.selected is None else selection.selected + 1,
            "reason": None if selection.selected is None else config.stop_reasons[selection.selected],
        },
        "stop_reasons": list(config.stop_reasons),
    }
