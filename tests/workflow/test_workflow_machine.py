"""The workflow state machine driven by button presses and ticks: every transition, no IO."""

from __future__ import annotations

import pytest
from workflow_driver import (
    DEVICE,
    OFFICER,
    WINDOW_US,
    Driver,
    M,
    R,
    S,
    kinds,
    make_config,
    patterns,
    recording_changes,
    records,
)

from agent.errors import ConfigError
from agent.workflow.events import (
    CloseCase,
    Feedback,
    FeedbackEffect,
    OpenCase,
    Press,
    RecordEffect,
    RecordingEffect,
    RecordingStopped,
    StopRecording,
    Tick,
)
from agent.workflow.machine import WorkflowState, step
from agent.workflow.state import DEFAULT_STOP_REASONS, WorkflowConfig

CASE = f"{DEVICE}-00001"
INSPECTION = ["arrival", "credentials-shown", "party-informed", "inspection", "record-signed", "departure"]


def open_inspection(driver: Driver) -> None:
    driver.press(S, long=True)
    assert driver.state.case is not None and driver.state.recording


def refuse_stop(driver: Driver) -> None:
    effects = driver.press(R)
    assert kinds(effects) == ["REFUSED", "record:event:stop-refused"]


# --- recording without a case ---------------------------------------------------------------------------------


def test_record_starts_and_stops_without_a_case(driver: Driver) -> None:
    effects = driver.press(R)
    assert effects == [
        FeedbackEffect(Feedback.ACK),
        RecordingEffect(on=True, reason="record button"),
        FeedbackEffect(Feedback.RECORDING_ON),
    ]
    assert driver.state.recording
    effects = driver.press(R)
    assert effects == [
        FeedbackEffect(Feedback.ACK),
        RecordingEffect(on=False, reason="record button"),
        FeedbackEffect(Feedback.RECORDING_OFF),
    ]
    assert driver.state == WorkflowState()
    assert driver.records == []  # the recorder signs recording-start/stop itself


def test_a_held_record_button_acts_like_a_short_press(driver: Driver) -> None:
    assert kinds(driver.press(R, long=True)) == ["ACK", "rec:on", "RECORDING_ON"]
    assert kinds(driver.press(R, long=True)) == ["ACK", "rec:off", "RECORDING_OFF"]


# --- cases and stages ---------------------------------------------------------------------------------------


def test_stage_short_press_without_a_case_is_an_error_and_changes_nothing(driver: Driver) -> None:
    assert driver.press(S) == [FeedbackEffect(Feedback.ERROR)]
    assert driver.state == WorkflowState()


def test_stage_hold_opens_a_case_with_the_default_procedure_and_starts_recording(driver: Driver) -> None:
    effects = driver.press(S, long=True)
    assert kinds(effects) == ["ACK", "record:case-open", "rec:on", "RECORDING_ON", "CASE_OPEN"]
    (record_type, body), = records(effects)
    assert record_type == "case-open"
    assert body["case_id"] == CASE and body["procedure"] == "inspection" and body["officer"] == OFFICER
    assert [stage["name"] for stage in body["stages"]] == INSPECTION
    assert body["stages"][0] == {
        "name": "arrival",
        "title": "Arrival: camera on, storefront and surroundings filmed",
        "required": True,
        "needs_recording": True,
    }
    assert body["continuous_recording"] is True and body["source"] == "button"
    assert recording_changes(effects) == [RecordingEffect(on=True, reason=f"case {CASE} opened")]
    case = driver.state.case
    assert case is not None and case.case_id == CASE and case.next_index == 0 and not case.retention
    assert driver.state.cases_opened == 1


def test_opening_a_case_while_recording_does_not_start_recording_again(driver: Driver) -> None:
    driver.press(R)
    assert kinds(driver.press(S, long=True)) == ["ACK", "record:case-open", "CASE_OPEN"]


def test_stage_press_marks_the_next_stage_done(driver: Driver) -> None:
    open_inspection(driver)
    effects = driver.press(S)
    assert effects == [
        FeedbackEffect(Feedback.ACK),
        RecordEffect(
            "stage",
            {"case_id": CASE, "stage": "arrival", "index": 1, "status": "done", "officer": OFFICER, "recording": True},
        ),
        FeedbackEffect(Feedback.STAGE),
    ]
    case = driver.state.case
    assert case is not None and case.next_index == 1 and case.done == ("arrival",)


def test_a_complete_inspection_closes_with_its_last_stage_and_leaves_the_camera_on(driver: Driver) -> None:
    open_inspection(driver)
    for name in INSPECTION[:-1]:
        assert kinds(driver.press(S)) == ["ACK", "record:stage", "STAGE"], name
    effects = driver.press(S)
    assert kinds(effects) == ["ACK", "record:stage", "record:case-close", "CASE_CLOSED"]
    assert records(effects)[1] == (
        "case-close",
        {"case_id": CASE, "officer": OFFICER, "missing": [], "skipped": [], "not_reached": [], "early": False},
    )
    assert driver.state == WorkflowState(recording=True, case=None, selection=None, cases_opened=1)
    # No case: the record button now stops at once.
    assert kinds(driver.press(R)) == ["ACK", "rec:off", "RECORDING_OFF"]


def test_held_stage_press_skips_a_stage_and_the_close_lists_required_skipped_stages(driver: Driver) -> None:
    open_inspection(driver)
    driver.press(S)
    effects = driver.press(S, long=True)
    assert kinds(effects) == ["ACK", "record:stage", "STAGE"]
    assert records(effects)[0][1]["status"] == "skipped" and records(effects)[0][1]["stage"] == "credentials-shown"
    for _ in range(4):
        driver.press(S)
    assert driver.records[-1][1]["kind"] == "stop-refused"  # a required stage skipped: the close guard asks
    driver.press(S)
    driver.press(R)
    close = driver.records[-1]
    assert close[0] == "case-close"
    assert close[1]["missing"] == ["credentials-shown"] and close[1]["skipped"] == ["credentials-shown"]
    statuses = [(body["stage"], body["status"]) for kind, body in driver.records if kind == "stage"]
    assert statuses == [(name, "skipped" if name == "credentials-shown" else "done") for name in INSPECTION]


def test_an_optional_skipped_stage_is_not_missing(driver: Driver) -> None:
    driver.send(OpenCase("walk"))
    driver.press(S)
    driver.press(S)
    driver.press(S, long=True)  # note: optional
    effects = driver.press(S)
    assert records(effects)[-1][1]["missing"] == []
    assert records(effects)[-1][1]["skipped"] == ["note"]


def test_stages_that_need_recording_switch_the_camera_on(driver: Driver) -> None:
    effects = driver.send(OpenCase("walk"))  # first stage needs no recording: the camera stays off
    assert kinds(effects) == ["ACK", "record:case-open", "CASE_OPEN"]
    effects = driver.press(S)  # approach done; the next stage (talk) needs recording
    assert kinds(effects) == ["ACK", "record:stage", "rec:on", "RECORDING_ON", "STAGE"]
    assert recording_changes(effects) == [RecordingEffect(on=True, reason="stage talk needs recording")]
    assert records(effects)[0][1]["recording"] is False


def test_marking_an_unrecorded_stage_that_needs_recording_starts_recording(driver: Driver) -> None:
    driver.send(OpenCase("walk"))
    driver.press(S)  # camera on for talk
    driver.send(StopRecording("party asked for a pause"))
    effects = driver.press(S)  # talk marked done while off
    assert records(effects)[0][1] == {
        "case_id": CASE, "stage": "talk", "index": 2, "status": "done", "officer": OFFICER, "recording": False,
    }
    assert recording_changes(effects) == [RecordingEffect(on=True, reason="stage talk needs recording")]


def test_a_procedure_recorded_throughout_switches_back_on_at_the_next_stage(driver: Driver) -> None:
    open_inspection(driver)
    refuse_stop(driver)
    driver.press(S)
    driver.press(R)  # stop with reason 1
    assert not driver.state.recording
    effects = driver.press(S)
    assert recording_changes(effects) == [RecordingEffect(on=True, reason=f"case {CASE} is recorded throughout")]


def test_case_ids_count_up(driver: Driver) -> None:
    open_inspection(driver)
    driver.send(CloseCase("called to an emergency"))
    driver.press(S, long=True)
    assert driver.state.case is not None and driver.state.case.case_id == f"{DEVICE}-00002"


# --- the stop guard -------------------------------------------------------------------------------------------


def test_record_with_a_case_open_is_refused_and_opens_reason_selection(driver: Driver) -> None:
    open_inspection(driver)
    effects = driver.press(R, at_us=5_000_000)
    assert effects == [
        FeedbackEffect(Feedback.REFUSED),
        RecordEffect("event", {"kind": "stop-refused", "case_id": CASE, "officer": OFFICER}),
    ]
    assert driver.state.recording  # nothing stopped
    selection = driver.state.selection
    assert selection is not None and selection.selected is None and selection.deadline_us == 5_000_000 + WINDOW_US


def test_stage_presses_cycle_through_the_reasons_and_wrap(driver: Driver) -> None:
    open_inspection(driver)
    refuse_stop(driver)
    counts = []
    for _ in range(len(DEFAULT_STOP_REASONS) + 2):
        effects = driver.press(S)
        assert patterns(effects) == [Feedback.ACK, Feedback.REASON]
        assert records(effects) == []  # cycling is not a stage advance
        counts.append(effects[1].count)  # type: ignore[union-attr]
    assert counts == [1, 2, 3, 4, 5, 6, 1, 2]
    case = driver.state.case
    assert case is not None and case.next_index == 0


def test_record_confirms_the_chosen_reason_then_stops(driver: Driver) -> None:
    open_inspection(driver)
    refuse_stop(driver)
    for _ in range(3):
        driver.press(S)
    effects = driver.press(R)
    assert effects == [
        FeedbackEffect(Feedback.ACK),
        RecordEffect(
            "stop-reason",
            {"case_id": CASE, "code": 3, "reason": "party's privacy", "officer": OFFICER, "source": "button"},
        ),
        RecordingEffect(on=False, reason="stop reason 3: party's privacy"),
        FeedbackEffect(Feedback.RECORDING_OFF),
    ]
    assert not driver.state.recording and driver.state.selection is None
    assert driver.state.case is not None  # the case stays open


def test_recording_can_always_be_resumed_in_a_case(driver: Driver) -> None:
    open_inspection(driver)
    refuse_stop(driver)
    driver.press(S)
    driver.press(R)
    assert kinds(driver.press(R)) == ["ACK", "rec:on", "RECORDING_ON"]
    refuse_stop(driver)  # and the guard holds again


def test_record_without_a_chosen_reason_warns_again_and_extends_the_window(driver: Driver) -> None:
    open_inspection(driver)
    driver.press(R, at_us=10_000_000)
    effects = driver.press(R, at_us=20_000_000)
    assert effects == [FeedbackEffect(Feedback.REFUSED)]
    assert driver.state.recording
    assert driver.state.selection is not None and driver.state.selection.deadline_us == 20_000_000 + WINDOW_US


def test_the_window_times_out_on_a_tick_and_nothing_stops(driver: Driver) -> None:
    open_inspection(driver)
    driver.press(R, at_us=10_000_000)
    driver.press(S, at_us=11_000_000)
    deadline = 10_000_000 + WINDOW_US
    assert driver.tick(deadline - 1) == []
    assert driver.state.selection is not None
    effects = driver.tick(deadline)
    assert effects == [
        RecordEffect(
            "event",
            {"kind": "stop-cancelled", "case_id": CASE, "cause": "no reason confirmed in time", "officer": OFFICER},
        ),
        FeedbackEffect(Feedback.REASON_TIMEOUT),
    ]
    assert driver.state.selection is None and driver.state.recording
    assert driver.tick(deadline + 1_000_000) == []


def test_a_press_after_the_deadline_ends_the_selection_first(driver: Driver) -> None:
    open_inspection(driver)
    driver.press(R, at_us=10_000_000)
    driver.press(S, at_us=11_000_000)  # reason 1 chosen, never confirmed
    effects = driver.press(R, at_us=10_000_000 + WINDOW_US + 5)
    # The late confirm does not stop: the window is over, so this press is a new stop attempt.
    assert kinds(effects) == ["record:event:stop-cancelled", "REASON_TIMEOUT", "REFUSED", "record:event:stop-refused"]
    assert driver.state.recording
    selection = driver.state.selection
    assert selection is not None and selection.selected is None


def test_a_held_stage_press_cancels_the_selection(driver: Driver) -> None:
    open_inspection(driver)
    refuse_stop(driver)
    driver.press(S)
    effects = driver.press(S, long=True)
    assert kinds(effects) == ["ACK", "record:event:stop-cancelled", "REASON_TIMEOUT"]
    assert records(effects)[0][1]["cause"] == "cancelled by the officer"
    assert driver.state.selection is None and driver.state.recording
    case = driver.state.case
    assert case is not None and case.next_index == 0  # no stage was skipped


def test_mark_presses_work_during_selection_and_keep_it(driver: Driver) -> None:
    open_inspection(driver)
    refuse_stop(driver)
    driver.press(S)
    before = driver.state.selection
    assert kinds(driver.press(M)) == ["ACK", "record:event:bookmark", "BOOKMARK"]
    assert kinds(driver.press(M, long=True)) == ["ACK", "record:retention", "RETENTION"]
    assert driver.state.selection == before
    assert kinds(driver.press(R)) == ["ACK", "record:stop-reason", "rec:off", "RECORDING_OFF"]


def test_a_custom_window_and_reason_list() -> None:
    driver = Driver(make_config(stop_reasons=("fault", "privacy"), reason_window_us=2_000_000))
    open_inspection(driver)
    driver.press(R, at_us=3_000_000)
    assert driver.state.selection is not None and driver.state.selection.deadline_us == 5_000_000
    driver.press(S)
    driver.press(S)
    effects = driver.press(S)
    assert effects[1] == FeedbackEffect(Feedback.REASON, 1)  # wrapped after two
    effects = driver.press(R)
    assert records(effects)[0][1]["reason"] == "fault"


# --- mark -------------------------------------------------------------------------------------------------------


def test_mark_without_a_case(driver: Driver) -> None:
    assert records(driver.press(M)) == [("event", {"kind": "bookmark", "officer": OFFICER})]
    assert records(driver.press(M, long=True)) == [
        ("retention", {"retention_class": "long-term", "reason": "flagged in the field", "officer": OFFICER})
    ]
    assert driver.state == WorkflowState()


def test_mark_in_a_case_names_the_case_and_flags_it(driver: Driver) -> None:
    open_inspection(driver)
    assert records(driver.press(M)) == [("event", {"kind": "bookmark", "officer": OFFICER, "case_id": CASE})]
    effects = driver.press(M, long=True)
    assert patterns(effects) == [Feedback.ACK, Feedback.RETENTION]
    assert records(effects) == [
        (
            "retention",
            {"retention_class": "long-term", "reason": "flagged in the field", "officer": OFFICER, "case_id": CASE},
        )
    ]
    assert driver.state.case is not None and driver.state.case.retention


# --- the recorder stopping on its own -----------------------------------------------------------------------


def test_a_recorder_stop_turns_the_machine_off_and_ends_a_selection(driver: Driver) -> None:
    open_inspection(driver)
    refuse_stop(driver)
    effects = driver.send(RecordingStopped("storage full"))
    assert patterns(effects) == [Feedback.RECORDING_OFF, Feedback.ERROR]
    assert not driver.state.recording and driver.state.selection is None
    assert driver.send(RecordingStopped("again")) == []


# --- purity and configuration ----------------------------------------------------------------------------------


def test_step_is_pure(config: WorkflowConfig) -> None:
    state = WorkflowState(recording=True)
    first = step(state, Press(S, True, 1), config)
    second = step(state, Press(S, True, 1), config)
    assert first == second and state == WorkflowState(recording=True)
    assert step(state, Tick(5), config) == (state, [])


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"stop_reasons": ()}, "stop_reasons"),
        ({"stop_reasons": tuple(f"r{n}" for n in range(10))}, "stop_reasons"),
        ({"stop_reasons": ("a", "a")}, "stop_reasons"),
        ({"stop_reasons": ("ok", "")}, "stop_reasons[2]"),
        ({"default_procedure": "nope"}, "default_procedure"),
        ({"procedures": {}}, "procedures"),
        ({"reason_window_us": 0}, "reason_window_us"),
        ({"device_id": "bad id"}, "device_id"),
        ({"officer_id": ""}, "officer_id"),
    ],
)
def test_bad_workflow_config_is_refused_naming_the_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(source="/etc/bodycam/device.toml", **changes)
    assert str(caught.value).startswith(f"/etc/bodycam/device.toml: key '{key}'")
