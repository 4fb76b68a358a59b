"""Power loss in the middle of a case: replay from the ledger, resume; and the stop guard as a property."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FakeClock, seeded_key
from hypothesis import given, settings
from hypothesis import strategies as st
from workflow_driver import DEVICE, OFFICER, WALK, Driver, M, R, S, kinds, make_config, records

from agent.errors import ConfigError
from agent.evidence.ledger import Ledger
from agent.evidence.store import read_records
from agent.workflow.events import (
    AdvanceStage,
    Bookmark,
    CloseCase,
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
    Tick,
)
from agent.workflow.machine import CaseState, WorkflowState, replay, resume, step
from agent.workflow.state import WorkflowConfig

CASE = f"{DEVICE}-00001"


def test_replay_of_an_empty_ledger_is_the_initial_state(config: WorkflowConfig) -> None:
    assert replay([], config) == WorkflowState()


def test_power_loss_mid_case_resumes_at_the_next_stage(driver: Driver) -> None:
    driver.press(S, long=True)
    driver.press(S)  # arrival
    driver.press(S, long=True)  # credentials-shown skipped
    driver.press(M, long=True)  # flagged long-term
    driver.press(R)  # a stop refused; selection in progress when the power goes
    driver.press(S)
    live = driver.state
    # ... power lost. The daemon restarts, reads the ledger back:
    state = replay(driver.records, driver.config)
    assert state == WorkflowState(
        recording=False,
        case=CaseState(
            case_id=CASE,
            procedure=driver.config.procedures["inspection"],
            officer=OFFICER,
            next_index=2,
            done=("arrival",),
            skipped=("credentials-shown",),
            retention=True,
        ),
        selection=None,
        cases_opened=1,
    )
    assert state.case == live.case
    state, effects = resume(state)
    assert effects == [
        RecordEffect(
            "event",
            {"kind": "case-resumed", "case_id": CASE, "next_stage": "party-informed", "index": 3, "officer": OFFICER},
        ),
        RecordingEffect(on=True, reason="resumed after restart"),
        FeedbackEffect(Feedback.RECORDING_ON),
        FeedbackEffect(Feedback.CASE_OPEN),
    ]
    assert state.recording
    # The case goes on where it was; the guard still holds; the case ends normally.
    resumed = Driver(driver.config, state)
    assert kinds(resumed.press(R)) == ["REFUSED", "record:event:stop-refused"]
    resumed.press(S, long=True)  # cancel the selection
    for _ in range(4):  # party-informed, inspection, record-signed, departure
        resumed.press(S)
    assert resumed.records[-2][1]["stage"] == "departure"
    # credentials-shown was skipped: the close needs a reason (the close guard), chosen as a stop's is.
    assert resumed.records[-1][1]["kind"] == "stop-refused" and resumed.records[-1][1]["stops"] == "case"
    resumed.press(S)
    resumed.press(R)
    assert resumed.records[-2][0] == "stop-reason" and resumed.records[-2][1]["code"] == 1
    assert resumed.records[-1] == (
        "case-close",
        {
            "case_id": CASE,
            "officer": OFFICER,
            "missing": ["credentials-shown"],
            "skipped": ["credentials-shown"],
            "not_reached": [],
            "early": False,
            "reason": driver.config.stop_reasons[0],
        },
    )


def test_resume_leaves_the_camera_off_when_nothing_needs_it(config: WorkflowConfig) -> None:
    driver = Driver(config)
    driver.send(OpenCase("walk"))
    driver.press(S)
    driver.press(S)  # talk done: next is "note", which needs no recording, in a per-stage procedure
    state, effects = resume(replay(driver.records, config))
    assert kinds(effects) == ["record:event:case-resumed", "CASE_OPEN"]
    assert not state.recording
    assert state.case is not None and state.case.procedure == WALK and state.case.next_index == 2


def test_resume_without_an_open_case_does_nothing(driver: Driver) -> None:
    driver.press(S, long=True)
    driver.send(CloseCase("called away"))
    state = replay(driver.records, driver.config)
    assert state == WorkflowState(cases_opened=1)
    assert resume(state) == (state, [])
    # The counter continues: no case id is ever used twice.
    again = Driver(driver.config, state)
    assert records(again.press(S, long=True))[0][1]["case_id"] == f"{DEVICE}-00002"


def test_a_last_stage_without_its_close_record_is_closed_at_resume(driver: Driver) -> None:
    driver.send(OpenCase("walk"))
    for _ in range(4):
        driver.press(S)
    ledger = driver.records[:-1]  # power lost between the last stage record and the case-close record
    state = replay(ledger, driver.config)
    assert state.case is not None and state.case.next_stage is None
    state, effects = resume(state)
    assert state.case is None
    assert effects == [
        RecordEffect(
            "case-close",
            {
                "case_id": CASE,
                "officer": OFFICER,
                "missing": [],
                "skipped": [],
                "not_reached": [],
                "early": False,
                "note": "last stage recorded before a restart",
            },
        ),
        FeedbackEffect(Feedback.CASE_CLOSED),
    ]


def test_replay_keeps_the_stage_list_the_case_was_opened_with(driver: Driver) -> None:
    driver.send(OpenCase("walk"))
    driver.press(S)
    without_walk = make_config(procedures={"inspection": driver.config.procedures["inspection"]})
    state = replay(driver.records, without_walk)
    assert state.case is not None and state.case.procedure == WALK


def test_a_case_whose_procedure_is_unknown_is_not_forgotten_silently(config: WorkflowConfig) -> None:
    foreign = [("case-open", {"case_id": CASE, "procedure": "audit", "officer": OFFICER})]
    with pytest.raises(ConfigError, match=r"open case dev-0001-00001 uses procedure 'audit'"):
        replay(foreign, config)
    # Without a stage list in the record, the loaded profile is used.
    known = [("case-open", {"case_id": CASE, "procedure": "penalty", "officer": OFFICER})]
    case = replay(known, config).case
    assert case is not None and case.procedure == config.procedures["penalty"]


def test_replay_ignores_other_cases_and_unrelated_records(driver: Driver) -> None:
    driver.press(S, long=True)
    driver.send(CloseCase("called away"))
    driver.press(S, long=True)
    driver.press(S)
    noise = [
        ("stage", {"case_id": CASE, "stage": "inspection", "status": "done", "officer": OFFICER}),
        ("retention", {"retention_class": "long-term", "reason": "x", "officer": OFFICER}),
        ("event", {"kind": "recording-start", "reason": "record button"}),
        ("stage", {"case_id": f"{DEVICE}-00002", "stage": "unknown-stage", "status": "done", "officer": OFFICER}),
    ]
    state = replay(driver.records + noise, driver.config)
    assert state.case is not None and state.case.case_id == f"{DEVICE}-00002"
    assert state.case.next_index == 1 and not state.case.retention and state.cases_opened == 2


def test_power_loss_with_a_real_ledger(tmp_path: Path, config: WorkflowConfig) -> None:
    """The daemon's path: effects appended to the ledger, the device dies, the ledger reopens and is replayed."""
    store, key = tmp_path / "store", seeded_key(1)
    ledger = Ledger.open(store, key, DEVICE, FakeClock())
    state = WorkflowState()
    for event in (Press(S, True, 1), Press(S, False, 2), Press(S, False, 3), Press(M, True, 4)):
        state, effects = step(state, event, config)
        for effect in effects:
            if isinstance(effect, RecordEffect):
                ledger.append(effect.record_type, effect.body)
    ledger.close()  # as if the power went: no close record, nothing else written
    with Ledger.open(store, key, DEVICE, FakeClock(wall_us=1_800_000_000_000_000)) as reopened:
        rebuilt = replay(((r.record.type, r.record.body) for r in read_records(store)), config)
        assert rebuilt == WorkflowState(case=state.case, cases_opened=1)
        rebuilt, effects = resume(rebuilt)
        for effect in effects:
            if isinstance(effect, RecordEffect):
                reopened.append(effect.record_type, effect.body)
    types = [(r.record.type, r.record.body.get("kind")) for r in read_records(store)]
    assert types[-2:] == [("boot", None), ("event", "case-resumed")]


# --- the stop guard as a property over any sequence of inputs (SPEC invariant 4) --------------------------


_EVENTS = st.one_of(
    st.builds(Press, st.sampled_from([R, S, M]), st.booleans(), st.just(0)),
    st.builds(Tick, st.just(0)),
    st.sampled_from(
        [
            OpenCase(),
            OpenCase("walk"),
            OpenCase("nope"),
            AdvanceStage(),
            AdvanceStage(skip=True),
            StartRecording(),
            StopRecording(),
            StopRecording("officer safety"),
            Bookmark(),
            FlagRetention("complaint"),
            CloseCase(),
            CloseCase("called away"),
            RecordingStopped("storage full"),
        ]
    ),
)


_PROPERTY_CONFIG = make_config()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_EVENTS, st.integers(0, 20_000_000)), max_size=60))
def test_nothing_stops_inside_a_case_without_a_signed_reason_and_replay_agrees(
    steps: list[tuple[Event, int]],
) -> None:
    config = _PROPERTY_CONFIG
    state = WorkflowState()
    ledger: list[tuple[str, dict[str, object]]] = []
    now = 0
    for event, delay in steps:
        now += delay
        if isinstance(event, Press):
            event = Press(event.button, event.long, now)
        elif isinstance(event, Tick):
            event = Tick(now)
        before = state
        state, effects = step(state, event, config)
        for index, effect in enumerate(effects):
            if isinstance(effect, RecordingEffect) and not effect.on and before.case is not None:
                reasons = [e for e in effects[:index] if isinstance(e, RecordEffect) and e.record_type == "stop-reason"]
                assert reasons and reasons[-1].body["case_id"] == before.case.case_id
        switches = [e.on for e in effects if isinstance(e, RecordingEffect)]
        if switches:
            assert state.recording == switches[-1]
        # A stop's selection needs the camera on; a close's (the close guard) needs only the case.
        assert state.selection is None or (
            state.case is not None and (state.recording or state.selection.purpose == "case")
        )
        for index, effect in enumerate(effects):  # never a close with required stages missing without a reason
            if isinstance(effect, RecordEffect) and effect.record_type == "case-close" and effect.body["missing"]:
                before_close = [e for e in effects[:index] if isinstance(e, RecordEffect)]
                assert before_close and before_close[-1].record_type == "stop-reason", effects
                assert before_close[-1].body["stops"] == "case"
        ledger.extend((e.record_type, dict(e.body)) for e in effects if isinstance(e, RecordEffect))
        rebuilt = replay(ledger, config)
        assert rebuilt.case == state.case and rebuilt.cases_opened == state.cases_opened
