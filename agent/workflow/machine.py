"""The field workflow as a pure state machine: cases, stages, the stop guard and reason selection.

``step(state, event, config) -> (state, effects)`` does no IO and reads no clock: times arrive in the events
(CLOCK_MONOTONIC microseconds). The daemon carries the effects out **in list order** and stops at the first
that fails: a ``stop-reason`` record always precedes the ``RecordingEffect(on=False)`` it justifies, so a stop
whose reason could not be signed never happens (SPEC invariant 4).

Buttons (``long`` = held past the hold time; ``record`` long acts like short):

| state | input | effects (in order) | new state |
|---|---|---|---|
| not recording | record | ACK, rec on, RECORDING_ON | recording |
| recording, no case | record | ACK, rec off, RECORDING_OFF | not recording |
| recording, case open | record | REFUSED, event stop-refused | selection until now + window |
| selection, none chosen | record | REFUSED | window extended to now + window |
| selection, reason k | record | ACK, stop-reason (code k), rec off, RECORDING_OFF | not recording, case open |
| selection | stage short | ACK, REASON x k (k = 1 first, then next, wrapping) | reason k chosen |
| selection | stage long | ACK, event stop-cancelled (cancelled), REASON_TIMEOUT | no selection, recording |
| selection | Tick or press at/after deadline | event stop-cancelled (timeout), REASON_TIMEOUT (1) | no selection |
| no case | stage long | ACK, case-open, [rec on, RECORDING_ON] (2), CASE_OPEN | case open at stage 1 |
| no case | stage short | ERROR | unchanged |
| case open | stage short | ACK, stage (done), [rec on, RECORDING_ON] (2), STAGE | next stage |
| case open | stage long | ACK, stage (skipped), [rec on, RECORDING_ON] (2), STAGE | next stage |
| last stage | stage short/long | ACK, stage, case-close (3), CASE_CLOSED | no case, recording unchanged |
| last stage, a required missing | stage | ACK, stage, REFUSED, event stop-refused (stops: case) | close selection |
| close selection, reason k | record | ACK, stop-reason (code k, stops: case), case-close (3), CASE_CLOSED | no case |
| any | mark short | ACK, event bookmark, BOOKMARK | unchanged |
| any | mark long | ACK, retention (long-term), RETENTION | case flagged |

(1) A press that finds its deadline passed is then handled as if there had been no selection.
(2) See below. (3) ``missing`` lists the required stages not done.

Mark presses work during reason selection and leave it running. Recording is switched on ("[rec on]" above)
only when it is off and: opening a case whose procedure is recorded throughout or whose first stage
needs recording; marking done a stage that needs recording (it was not recorded: the stage record says
``recording: false``); advancing to a stage that needs recording; advancing in a procedure recorded
throughout. Nothing ever stops recording on its own: closing a case leaves the camera on, and the officer
stops it with a plain ``record`` press (no case, no guard). Recording can always be resumed.

Control-socket commands go through the same transitions; a refused command gets ERROR feedback and an
``ErrorEffect`` with the text for the client. ``OpenCase`` with a case open or an unknown procedure is
refused, the open case untouched. ``StopRecording`` with a case open needs a free-text reason: it then stops
at once with a ``stop-reason`` record of code 0; without one it is refused like the button (REFUSED, event
stop-refused) but opens no selection window (a command carries no time). ``CloseCase`` closes early, listing
the required stages not done as missing. ``RecordingStopped`` (the recorder stopped by itself) turns the
machine's view off and gives RECORDING_OFF and ERROR.

The close guard (issue 12): closing a case while a required stage is not done (skipped or not reached) is a
stop in the middle of the procedure and needs a reason, chosen like a stop's (the selection's ``purpose`` is
``case``; cancelling or the window running out leaves the case open, the next stage press asks again).
``CloseCase`` then needs a free-text reason (refused like ``StopRecording`` without one); ``AdvanceStage``
onto the end leaves the case open for it. ``SystemStop`` (SIGTERM, SIGINT, a shutdown, a fatal fault) ends
a selection, and while recording in a case signs a ``stop-reason`` with ``source: system`` and the cause
before the recording stops; the case stays open for ``resume``.

After a restart (agent/workflow/replay.py, re-exported here), ``replay`` rebuilds the state from the ledger
(an open case stays open at its next stage; recording is off) and ``resume`` says what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, assert_never

from agent.workflow.events import (
    AdvanceStage,
    Bookmark,
    Button,
    CloseCase,
    Effect,
    ErrorEffect,
    Event,
    Feedback,
    FeedbackEffect,
    FlagRetention,
    OpenCase,
    Press,
    RecordEffect,
    RecordingEffect,
    RecordingStopped,
    StartRecording,
    StopRecording,
    SystemStop,
    Tick,
)
from agent.workflow.replay import replay, resume, status
from agent.workflow.state import (
    DEFAULT_STOP_REASONS,
    FIELD_RETENTION_REASON,
    LONG_TERM,
    MAX_STOP_REASONS,
    MAX_TEXT_CHARS,
    STOPS_CASE,
    CaseState,
    ReasonSelection,
    WorkflowConfig,
    WorkflowState,
    close_body,
)

__all__ = [
    "DEFAULT_STOP_REASONS",
    "FIELD_RETENTION_REASON",
    "LONG_TERM",
    "MAX_STOP_REASONS",
    "MAX_TEXT_CHARS",
    "CaseState",
    "ReasonSelection",
    "WorkflowConfig",
    "WorkflowState",
    "replay",
    "resume",
    "status",
    "step",
]


@dataclass
class _Step:
    """One step under construction: the state so far and the effects in order (local to ``step``)."""

    state: WorkflowState
    config: WorkflowConfig
    effects: list[Effect] = field(default_factory=list)

    def feedback(self, pattern: Feedback, count: int = 1) -> None:
        self.effects.append(FeedbackEffect(pattern, count))

    def record(self, record_type: str, body: dict[str, Any]) -> None:
        self.effects.append(RecordEffect(record_type, body))

    def refuse(self, message: str | None) -> None:
        self.feedback(Feedback.ERROR)
        if message is not None:
            self.effects.append(ErrorEffect(message))

    def set(self, **changes: Any) -> None:
        self.state = replace(self.state, **changes)


def step(state: WorkflowState, event: Event, config: WorkflowConfig) -> tuple[WorkflowState, list[Effect]]:
    """Apply one event; returns the new state and the effects to carry out in order."""
    s = _Step(state, config)
    if isinstance(event, Press | Tick) and state.selection is not None and event.at_us >= state.selection.deadline_us:
        _end_selection(s, "no reason confirmed in time")
    match event:
        case Press():
            _press(s, event)
        case Tick():
            pass
        case RecordingStopped():
            if s.state.recording:
                s.set(recording=False, selection=None)
                s.feedback(Feedback.RECORDING_OFF)
                s.feedback(Feedback.ERROR)
        case OpenCase(procedure=name):
            _open_case(s, config.default_procedure if name is None else name, from_socket=True)
        case AdvanceStage(skip=skip):
            if s.state.case is None:
                s.refuse("no case is open")
            else:
                _advance(s, skip, at_us=None)
        case StartRecording():
            if s.state.recording:
                s.refuse("recording is already on")
            else:
                s.feedback(Feedback.ACK)
                _start(s, "control socket")
        case StopRecording(reason_text=text):
            _stop_command(s, text)
        case Bookmark(note=note):
            problem = None if note is None or not note.strip() else _text_problem(note, "note")
            if problem:
                s.refuse(problem)
            else:
                _bookmark(s, note.strip() if note else None)  # a blank note is no note
        case FlagRetention(reason=reason):
            problem = _text_problem(reason, "reason")
            if problem:
                s.refuse(problem)
            else:
                _flag_retention(s, reason.strip())
        case CloseCase(reason_text=text):
            _close_command(s, text)
        case SystemStop():
            _system_stop(s, event)
        case _:
            assert_never(event)
    if s.state.case is None and s.state.selection is not None:
        s.set(selection=None)  # the guard protects a case; without one there is nothing to choose a reason for
    return s.state, s.effects


def _officer(s: _Step) -> str:
    """The officer in effect: the newest assignment in the ledger, else the config's ``device.officer``."""
    return s.state.officers.current(s.config.officer_id)


def _press(s: _Step, press: Press) -> None:
    state, config = s.state, s.config
    if press.button is Button.MARK:
        if press.long:
            _flag_retention(s, FIELD_RETENTION_REASON)
        else:
            _bookmark(s, None)
    elif state.selection is not None:
        _press_in_selection(s, press, state.selection)
    elif press.button is Button.RECORD:
        if not state.recording:
            s.feedback(Feedback.ACK)
            _start(s, "record button")
        elif state.case is None:
            s.feedback(Feedback.ACK)
            _stop(s, "record button")
        else:
            # The stop guard: a case is open, so this press does not stop anything; it asks for a reason.
            s.feedback(Feedback.REFUSED)
            s.record("event", {"kind": "stop-refused", "case_id": state.case.case_id, "officer": _officer(s)})
            s.set(selection=ReasonSelection(deadline_us=press.at_us + config.reason_window_us))
    elif state.case is None:
        if press.long:
            _open_case(s, config.default_procedure, from_socket=False)
        else:
            s.refuse(None)  # nothing to advance: the officer hears that the press did nothing
    else:
        _advance(s, skip=press.long, at_us=press.at_us)


def _press_in_selection(s: _Step, press: Press, selection: ReasonSelection) -> None:
    config = s.config
    if press.button is Button.RECORD:
        if selection.selected is None:
            s.feedback(Feedback.REFUSED)  # still no reason: warn again and give the officer time to choose
            s.set(selection=replace(selection, deadline_us=press.at_us + config.reason_window_us))
            return
        case = s.state.case
        assert case is not None  # a selection exists only while a case is open
        code = selection.selected + 1
        reason = config.stop_reasons[selection.selected]
        s.feedback(Feedback.ACK)
        body = {"case_id": case.case_id, "code": code, "reason": reason, "officer": _officer(s), "source": "button"}
        if selection.purpose == STOPS_CASE:
            s.record("stop-reason", {**body, "stops": STOPS_CASE})
            _close(s, early=case.next_stage is not None, reason=reason)
            s.feedback(Feedback.CASE_CLOSED)
            return
        s.record("stop-reason", body)
        s.set(selection=None)
        _stop(s, f"stop reason {code}: {reason}")
    elif press.long:
        s.feedback(Feedback.ACK)
        _end_selection(s, "cancelled by the officer")
    else:
        chosen = 0 if selection.selected is None else (selection.selected + 1) % len(config.stop_reasons)
        s.feedback(Feedback.ACK)
        s.feedback(Feedback.REASON, chosen + 1)
        s.set(selection=replace(selection, selected=chosen))


def _end_selection(s: _Step, cause: str) -> None:
    case, selection = s.state.case, s.state.selection
    if case is not None:
        body = {"kind": "stop-cancelled", "case_id": case.case_id, "cause": cause, "officer": _officer(s)}
        if selection is not None and selection.purpose == STOPS_CASE:
            body["stops"] = STOPS_CASE
        s.record("event", body)
    s.set(selection=None)
    s.feedback(Feedback.REASON_TIMEOUT)


def _start(s: _Step, reason: str) -> None:
    s.effects.append(RecordingEffect(on=True, reason=reason))
    s.set(recording=True)
    s.feedback(Feedback.RECORDING_ON)


def _stop(s: _Step, reason: str) -> None:
    s.effects.append(RecordingEffect(on=False, reason=reason))
    s.set(recording=False, selection=None)
    s.feedback(Feedback.RECORDING_OFF)


def _stop_command(s: _Step, text: str | None) -> None:
    state = s.state
    if not state.recording:
        s.refuse("recording is off")
        return
    if state.case is None:
        problem = None if text is None or not text.strip() else _text_problem(text, "reason")
        if problem:
            s.refuse(problem)
            return
        s.feedback(Feedback.ACK)
        _stop(s, text.strip() if text and text.strip() else "control socket")
        return
    case = state.case
    if text is None or not text.strip():
        s.feedback(Feedback.REFUSED)
        s.record(
            "event",
            {"kind": "stop-refused", "case_id": case.case_id, "officer": _officer(s), "source": "control"},
        )
        s.effects.append(ErrorEffect(f"case {case.case_id} is open: stopping needs a reason (the stop guard)"))
        return
    problem = _text_problem(text, "reason")
    if problem:
        s.refuse(problem)
        return
    reason = text.strip()
    s.feedback(Feedback.ACK)
    s.record(
        "stop-reason",
        {"case_id": case.case_id, "code": 0, "reason": reason, "officer": _officer(s), "source": "control"},
    )
    _stop(s, f"stop reason: {reason}")


def _open_case(s: _Step, name: str, from_socket: bool) -> None:
    state, config = s.state, s.config
    if state.case is not None:
        s.refuse(f"case {state.case.case_id} is open; close it before opening another")
        return
    procedure = config.procedures.get(name)
    if procedure is None:
        s.refuse(f"unknown procedure {name[:64]!r} (known: {', '.join(sorted(config.procedures))})")
        return
    number = state.cases_opened + 1
    case = CaseState(case_id=f"{config.device_id}-{number:05d}", procedure=procedure, officer=_officer(s))
    s.feedback(Feedback.ACK)
    s.record(
        "case-open",
        {
            "case_id": case.case_id,
            "procedure": procedure.name,
            "title": procedure.title,
            "officer": _officer(s),
            "continuous_recording": procedure.continuous_recording,
            # The stage list as used, so a ledger describes its own cases even after a profile changes.
            "stages": [stage.to_body() for stage in procedure.stages],
            "source": "control" if from_socket else "button",
        },
    )
    s.set(case=case, cases_opened=number)
    if not state.recording and (procedure.continuous_recording or procedure.stages[0].needs_recording):
        _start(s, f"case {case.case_id} opened")
    s.feedback(Feedback.CASE_OPEN)


def _advance(s: _Step, skip: bool, at_us: int | None) -> None:
    """The next stage done or skipped; ``at_us`` None: from the control socket (no selection window)."""
    case = s.state.case
    assert case is not None
    stage = case.next_stage
    s.feedback(Feedback.ACK)
    if stage is None:  # every stage marked, the close still waiting for its reason (or a lost close record)
        _close_after_last_stage(s, at_us)
        return
    s.record(
        "stage",
        {
            "case_id": case.case_id,
            "stage": stage.name,
            "index": case.next_index + 1,  # 1-based position in the procedure
            "status": "skipped" if skip else "done",
            "officer": _officer(s),
            "recording": s.state.recording,
        },
    )
    case = replace(
        case,
        next_index=case.next_index + 1,
        done=case.done if skip else (*case.done, stage.name),
        skipped=(*case.skipped, stage.name) if skip else case.skipped,
    )
    s.set(case=case)
    following = case.next_stage
    if following is None:
        _close_after_last_stage(s, at_us)
        return
    if not s.state.recording:
        if case.procedure.continuous_recording:
            _start(s, f"case {case.case_id} is recorded throughout")
        elif following.needs_recording:
            _start(s, f"stage {following.name} needs recording")
        elif stage.needs_recording and not skip:
            _start(s, f"stage {stage.name} needs recording")
    s.feedback(Feedback.STAGE)


def _close_after_last_stage(s: _Step, at_us: int | None) -> None:
    """Close the case at its end; with required stages not done, only with a reason (the close guard).

    A button press opens the reason selection (as a refused stop does); the control socket's ``stage`` leaves
    the case open for ``close-case --reason``.
    """
    case = s.state.case
    assert case is not None
    if not case.missing():
        _close(s, early=False)
        s.feedback(Feedback.CASE_CLOSED)
        return
    if at_us is None:
        s.feedback(Feedback.STAGE)
        return
    s.feedback(Feedback.REFUSED)
    s.record("event", _close_refused(s, case))
    s.set(selection=ReasonSelection(deadline_us=at_us + s.config.reason_window_us, purpose=STOPS_CASE))


def _close_refused(s: _Step, case: CaseState) -> dict[str, Any]:
    return {"kind": "stop-refused", "case_id": case.case_id, "officer": _officer(s), "stops": STOPS_CASE,
            "missing": case.missing()}


def _close_command(s: _Step, text: str | None) -> None:
    case = s.state.case
    if case is None:
        s.refuse("no case is open")
        return
    given = text is not None and bool(text.strip())
    problem = _text_problem(text, "reason") if text is not None and given else None
    if problem:
        s.refuse(problem)
        return
    reason = text.strip() if text is not None and given else None
    missing = case.missing()
    if missing and reason is None:
        s.feedback(Feedback.REFUSED)
        s.record("event", {**_close_refused(s, case), "source": "control"})
        s.effects.append(ErrorEffect(
            f"case {case.case_id}: required stages not done ({', '.join(missing)}): closing it stops the "
            "procedure in the middle and needs a reason (close-case --reason TEXT)"
        ))
        return
    s.feedback(Feedback.ACK)
    if missing:
        s.record("stop-reason", {"case_id": case.case_id, "code": 0, "reason": reason, "officer": _officer(s),
                                 "source": "control", "stops": STOPS_CASE})
    _close(s, early=True, reason=reason)
    s.feedback(Feedback.CASE_CLOSED)


def _close(s: _Step, early: bool, reason: str | None = None) -> None:
    case = s.state.case
    assert case is not None
    s.record("case-close", close_body(case, _officer(s), early, reason))
    s.set(case=None, selection=None)


def _system_stop(s: _Step, event: SystemStop) -> None:
    """The system stops the device: inside a case the cause is signed as a stop reason before the camera stops."""
    if s.state.selection is not None:
        _end_selection(s, f"system stop: {event.detail}")
    if not s.state.recording:
        return  # nothing is stopped: an open case resumes at the next start all the same
    case = s.state.case
    if case is not None:
        s.record("stop-reason", {"case_id": case.case_id, "code": 0, "reason": event.detail, "officer": _officer(s),
                                 "source": "system", "cause": event.cause})
    _stop(s, f"system stop: {event.detail}")


def _bookmark(s: _Step, note: str | None) -> None:
    body: dict[str, Any] = {"kind": "bookmark", "officer": _officer(s)}
    if s.state.case is not None:
        body["case_id"] = s.state.case.case_id
    if note:
        body["note"] = note
    s.feedback(Feedback.ACK)
    s.record("event", body)
    s.feedback(Feedback.BOOKMARK)


def _flag_retention(s: _Step, reason: str) -> None:
    body: dict[str, Any] = {"retention_class": LONG_TERM, "reason": reason, "officer": _officer(s)}
    case = s.state.case
    if case is not None:
        body["case_id"] = case.case_id
    s.feedback(Feedback.ACK)
    s.record("retention", body)
    if case is not None:
        s.set(case=replace(case, retention=True))
    s.feedback(Feedback.RETENTION)


def _text_problem(text: str, what: str) -> str | None:
    """Why a free text from the control socket is unusable, or None when it is fine."""
    stripped = text.strip()
    if not stripped:
        return f"the {what} is empty"
    if len(stripped) > MAX_TEXT_CHARS:
        return f"the {what} is longer than {MAX_TEXT_CHARS} characters"
    if not stripped.isprintable():
        return f"the {what} holds control characters (one line of text only)"
    return None
