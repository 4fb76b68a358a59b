"""Control-socket commands go through the same machine: same records, refusals with an error text."""

from __future__ import annotations

import pytest
from workflow_driver import DEVICE, OFFICER, Driver, M, R, S, errors, kinds, recording_changes, records

from agent.workflow.events import (
    AdvanceStage,
    Bookmark,
    CloseCase,
    ErrorEffect,
    Feedback,
    FeedbackEffect,
    FlagRetention,
    OpenCase,
    RecordEffect,
    RecordingEffect,
    StartRecording,
    StopRecording,
)
from agent.workflow.machine import status

CASE = f"{DEVICE}-00001"


def test_open_case_with_a_named_procedure(driver: Driver) -> None:
    effects = driver.send(OpenCase("penalty"))
    assert kinds(effects) == ["ACK", "record:case-open", "rec:on", "RECORDING_ON", "CASE_OPEN"]
    body = records(effects)[0][1]
    assert body["procedure"] == "penalty" and body["source"] == "control" and body["continuous_recording"] is False


def test_open_case_without_a_name_uses_the_default(driver: Driver) -> None:
    assert records(driver.send(OpenCase()))[0][1]["procedure"] == "inspection"


def test_an_unknown_procedure_is_refused_with_a_clear_message(driver: Driver) -> None:
    before = driver.state
    effects = driver.send(OpenCase("inspecton"))
    assert effects == [
        FeedbackEffect(Feedback.ERROR),
        ErrorEffect(
            "unknown procedure 'inspecton' (known: coercive-measure, inspection, licensing-site-check, penalty, walk)"
        ),
    ]
    assert driver.state == before


def test_a_second_case_while_one_is_open_is_refused_and_the_open_case_is_untouched(driver: Driver) -> None:
    driver.send(OpenCase())
    driver.press(S)
    before = driver.state
    for command in (OpenCase(), OpenCase("penalty")):
        effects = driver.send(command)
        assert effects == [
            FeedbackEffect(Feedback.ERROR),
            ErrorEffect(f"case {CASE} is open; close it before opening another"),
        ]
        assert driver.state == before
    # With the buttons a hold skips the next stage instead (there is no way to open a second case).
    assert records(driver.press(S, long=True))[0][1]["status"] == "skipped"


def test_advance_stage_done_and_skipped(driver: Driver) -> None:
    driver.send(OpenCase())
    assert records(driver.send(AdvanceStage()))[0][1]["status"] == "done"
    assert records(driver.send(AdvanceStage(skip=True)))[0][1]["status"] == "skipped"
    case = driver.state.case
    assert case is not None and case.done == ("arrival",) and case.skipped == ("credentials-shown",)


@pytest.mark.parametrize("command", [AdvanceStage(), AdvanceStage(skip=True), CloseCase()])
def test_case_commands_without_a_case_are_refused(driver: Driver, command: object) -> None:
    effects = driver.send(command)  # type: ignore[arg-type]
    assert effects == [FeedbackEffect(Feedback.ERROR), ErrorEffect("no case is open")]


def test_start_and_stop_recording_without_a_case(driver: Driver) -> None:
    assert kinds(driver.send(StartRecording())) == ["ACK", "rec:on", "RECORDING_ON"]
    assert errors(driver.send(StartRecording())) == ["recording is already on"]
    assert recording_changes(driver.send(StopRecording())) == [RecordingEffect(on=False, reason="control socket")]
    driver.send(StartRecording())
    assert recording_changes(driver.send(StopRecording(" "))) == [RecordingEffect(on=False, reason="control socket")]
    assert errors(driver.send(StopRecording())) == ["recording is off"]
    driver.send(StartRecording())
    assert recording_changes(driver.send(StopRecording("end of shift"))) == [
        RecordingEffect(on=False, reason="end of shift")
    ]


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_stop_without_a_reason_in_a_case_is_refused_like_the_button(driver: Driver, reason: str | None) -> None:
    driver.send(OpenCase())
    effects = driver.send(StopRecording(reason))
    assert effects == [
        FeedbackEffect(Feedback.REFUSED),
        RecordEffect("event", {"kind": "stop-refused", "case_id": CASE, "officer": OFFICER, "source": "control"}),
        ErrorEffect(f"case {CASE} is open: stopping needs a reason (the stop guard)"),
    ]
    assert driver.state.recording
    assert driver.state.selection is None  # a command carries no time: no window is opened


def test_stop_with_a_free_text_reason_stops_at_once_with_code_zero(driver: Driver) -> None:
    driver.send(OpenCase())
    driver.press(R)  # a selection open on the buttons is ended by the command's stop
    effects = driver.send(StopRecording("  witness asked not to be filmed  "))
    assert effects == [
        FeedbackEffect(Feedback.ACK),
        RecordEffect(
            "stop-reason",
            {
                "case_id": CASE,
                "code": 0,
                "reason": "witness asked not to be filmed",
                "officer": OFFICER,
                "source": "control",
            },
        ),
        RecordingEffect(on=False, reason="stop reason: witness asked not to be filmed"),
        FeedbackEffect(Feedback.RECORDING_OFF),
    ]
    assert not driver.state.recording and driver.state.selection is None and driver.state.case is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("line one\nline two", "the reason holds control characters (one line of text only)"),
        ("x" * 501, "the reason is longer than 500 characters"),
    ],
)
def test_unusable_free_text_is_refused(driver: Driver, text: str, message: str) -> None:
    driver.send(OpenCase())
    before = driver.state
    assert driver.send(StopRecording(text)) == [FeedbackEffect(Feedback.ERROR), ErrorEffect(message)]
    assert errors(driver.send(FlagRetention(text))) == [message]
    assert errors(driver.send(Bookmark(text))) == [message.replace("reason", "note")]
    assert driver.state == before


def test_bookmark_with_a_note_and_retention_with_a_reason(driver: Driver) -> None:
    driver.send(OpenCase())
    assert records(driver.send(Bookmark("party shows licence"))) == [
        ("event", {"kind": "bookmark", "officer": OFFICER, "case_id": CASE, "note": "party shows licence"})
    ]
    for blank in (None, "", "  "):
        assert records(driver.send(Bookmark(blank))) == [
            ("event", {"kind": "bookmark", "officer": OFFICER, "case_id": CASE})
        ]
    effects = driver.send(FlagRetention("party disputes the findings"))
    assert kinds(effects) == ["ACK", "record:retention", "RETENTION"]
    assert records(effects)[0][1] == {
        "retention_class": "long-term",
        "reason": "party disputes the findings",
        "officer": OFFICER,
        "case_id": CASE,
    }
    assert driver.state.case is not None and driver.state.case.retention
    assert errors(driver.send(FlagRetention(" "))) == ["the reason is empty"]


def test_close_case_early_lists_the_required_stages_not_done(driver: Driver) -> None:
    driver.send(OpenCase())
    driver.press(S)
    driver.press(S, long=True)
    driver.press(R)  # a selection in progress ends with the case
    effects = driver.send(CloseCase("called to an emergency"))
    assert effects == [
        FeedbackEffect(Feedback.ACK),
        RecordEffect(
            "stop-reason",
            {"case_id": CASE, "code": 0, "reason": "called to an emergency", "officer": OFFICER,
             "source": "control", "stops": "case"},
        ),
        RecordEffect(
            "case-close",
            {
                "case_id": CASE,
                "officer": OFFICER,
                "missing": ["credentials-shown", "party-informed", "inspection", "record-signed", "departure"],
                "skipped": ["credentials-shown"],
                "not_reached": ["party-informed", "inspection", "record-signed", "departure"],
                "early": True,
                "reason": "called to an emergency",
            },
        ),
        FeedbackEffect(Feedback.CASE_CLOSED),
    ]
    assert driver.state.case is None and driver.state.selection is None and driver.state.recording
    assert kinds(driver.press(R)) == ["ACK", "rec:off", "RECORDING_OFF"]  # no case, no guard


def test_status_for_the_control_socket(driver: Driver) -> None:
    driver.send(OpenCase())
    driver.press(S)
    driver.press(M, long=True)
    driver.press(R, at_us=50_000_000)
    driver.press(S, at_us=51_000_000)
    assert status(driver.state, driver.config) == {
        "officer": OFFICER,
        "officer_by": "config",
        "recording": True,
        "cases_opened": 1,
        "case": {
            "case_id": CASE,
            "procedure": "inspection",
            "next_stage": "credentials-shown",
            "done": ["arrival"],
            "skipped": [],
            "retention": "long-term",
        },
        "reason_selection": {"deadline_us": 65_000_000, "selected": 1, "reason": "device fault"},
        "stop_reasons": list(driver.config.stop_reasons),
    }
