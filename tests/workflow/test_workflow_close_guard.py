"""The close guard (issue 12, fault 5): a case with required stages not done closes only with a signed reason.

Closing such a case is a stop in the middle of the procedure: the reason is chosen as a stop reason is (stage
presses select, record confirms; or ``close-case --reason`` on the control socket) and signed before the
``case-close`` record. Pure machine, no IO.
"""

from __future__ import annotations

from workflow_driver import DEVICE, OFFICER, WINDOW_US, Driver, R, S, errors, kinds, records

from agent.workflow.events import AdvanceStage, CloseCase, OpenCase, StopRecording
from agent.workflow.machine import replay, resume
from agent.workflow.state import DEFAULT_STOP_REASONS

CASE = f"{DEVICE}-00001"
INSPECTION = ["arrival", "credentials-shown", "party-informed", "inspection", "record-signed", "departure"]


def skip_to_the_end(driver: Driver) -> list[str]:
    """Open an inspection, mark arrival done, then long-press stage five times (the issue's attack)."""
    driver.press(S, long=True)
    driver.press(S)
    out: list[str] = []
    for _ in range(5):
        out = kinds(driver.press(S, long=True))
    return out


def test_five_long_presses_do_not_close_the_case_without_a_reason(driver: Driver) -> None:
    last = skip_to_the_end(driver)
    # The last stage is recorded as skipped; the close is refused and a reason selection opens.
    assert last == ["ACK", "record:stage", "REFUSED", "record:event:stop-refused"]
    assert not any(kind == "case-close" for kind, _ in driver.records)
    case = driver.state.case
    assert case is not None and case.case_id == CASE and case.next_stage is None
    selection = driver.state.selection
    assert selection is not None and selection.purpose == "case"
    assert selection.deadline_us == driver.now_us + WINDOW_US
    refused = driver.records[-1][1]
    assert refused == {"kind": "stop-refused", "case_id": CASE, "officer": OFFICER, "stops": "case",
                       "missing": INSPECTION[1:]}
    # A plain record press now asks for the reason, it does not stop the camera nor close the case.
    assert kinds(driver.press(R)) == ["REFUSED"]
    assert driver.state.recording and driver.state.case is not None


def test_the_reason_is_chosen_with_stage_presses_and_signed_before_the_close(driver: Driver) -> None:
    skip_to_the_end(driver)
    for _ in range(5):
        driver.press(S)  # reason 5: officer safety
    effects = driver.press(R)
    assert kinds(effects) == ["ACK", "record:stop-reason", "record:case-close", "CASE_CLOSED"]
    (_, reason), (_, close) = records(effects)
    assert reason == {"case_id": CASE, "code": 5, "reason": DEFAULT_STOP_REASONS[4], "officer": OFFICER,
                      "source": "button", "stops": "case"}
    assert close["case_id"] == CASE and close["missing"] == INSPECTION[1:] and close["reason"] == reason["reason"]
    assert driver.state.case is None and driver.state.selection is None
    assert driver.state.recording  # closing leaves the camera on; with no case a record press stops it
    assert kinds(driver.press(R)) == ["ACK", "rec:off", "RECORDING_OFF"]


def test_a_cancelled_or_timed_out_close_leaves_the_case_open_and_asks_again(driver: Driver) -> None:
    skip_to_the_end(driver)
    effects = driver.press(S, long=True)  # cancel
    assert kinds(effects) == ["ACK", "record:event:stop-cancelled", "REASON_TIMEOUT"]
    assert records(effects)[0][1]["stops"] == "case"
    assert driver.state.case is not None and driver.state.selection is None
    # Another stage press asks again; letting the window run out cancels again; the case is still open.
    assert kinds(driver.press(S)) == ["ACK", "REFUSED", "record:event:stop-refused"]
    assert kinds(driver.tick(driver.now_us + WINDOW_US)) == ["record:event:stop-cancelled", "REASON_TIMEOUT"]
    assert driver.state.case is not None
    assert not any(kind == "case-close" for kind, _ in driver.records)


def test_a_case_with_every_required_stage_done_closes_without_a_reason(driver: Driver) -> None:
    driver.send(OpenCase("walk"))
    driver.press(S)
    driver.press(S)
    driver.press(S, long=True)  # note: optional
    assert kinds(driver.press(S)) == ["ACK", "record:stage", "record:case-close", "CASE_CLOSED"]


def test_ctl_close_case_needs_a_reason_while_required_stages_are_not_done(driver: Driver) -> None:
    driver.send(OpenCase())
    driver.press(S)
    effects = driver.send(CloseCase())
    assert kinds(effects) == ["REFUSED", "record:event:stop-refused", "error"]
    assert "reason" in errors(effects)[0] and "credentials-shown" in errors(effects)[0]
    assert records(effects)[0][1]["source"] == "control" and records(effects)[0][1]["stops"] == "case"
    assert driver.state.case is not None and driver.state.selection is None  # a command opens no window
    assert errors(driver.send(CloseCase("  "))) == errors(effects)  # blank is no reason
    effects = driver.send(CloseCase("party left the premises"))
    assert kinds(effects) == ["ACK", "record:stop-reason", "record:case-close", "CASE_CLOSED"]
    (_, reason), (_, close) = records(effects)
    assert reason == {"case_id": CASE, "code": 0, "reason": "party left the premises", "officer": OFFICER,
                      "source": "control", "stops": "case"}
    assert close["early"] is True and close["reason"] == "party left the premises"
    assert close["missing"] == INSPECTION[1:]


def test_ctl_close_case_without_missing_stages_needs_no_reason(driver: Driver) -> None:
    driver.send(OpenCase("walk"))
    for _ in range(3):
        driver.press(S)  # approach, talk, note done; sign (required) still to come
    assert kinds(driver.send(CloseCase())) == ["REFUSED", "record:event:stop-refused", "error"]
    driver.press(S)  # sign done: the case closes by itself, nothing missing
    assert driver.state.case is None


def test_ctl_stage_skip_on_the_last_stage_leaves_the_case_open_for_a_reasoned_close(driver: Driver) -> None:
    driver.send(OpenCase())
    for _ in range(6):
        effects = driver.send(AdvanceStage(skip=True))
    assert kinds(effects) == ["ACK", "record:stage", "STAGE"]
    assert errors(effects) == [] and driver.state.case is not None and driver.state.selection is None
    assert errors(driver.send(CloseCase()))
    assert kinds(driver.send(CloseCase("fire alarm: building evacuated")))[-1] == "CASE_CLOSED"


def test_a_restart_during_the_close_guard_does_not_close_the_case(driver: Driver) -> None:
    skip_to_the_end(driver)
    state = replay(driver.records, driver.config)
    assert state.case is not None and state.case.next_stage is None
    state, effects = resume(state)
    assert state.case is not None, "a restart closed a case with required stages missing, without a reason"
    assert not any(e[0] == "case-close" for e in records(effects))
    assert records(effects)[0][1]["kind"] == "case-resumed" and records(effects)[0][1]["next_stage"] is None
    again = Driver(driver.config, state)
    assert kinds(again.press(S))[-2:] == ["REFUSED", "record:event:stop-refused"]


def test_the_stop_guard_is_unchanged_while_stages_remain(driver: Driver) -> None:
    driver.send(OpenCase())
    assert errors(driver.send(StopRecording()))
    selection_free = driver.press(R)
    assert kinds(selection_free) == ["REFUSED", "record:event:stop-refused"]
    assert driver.state.selection is not None and driver.state.selection.purpose == "recording"
    assert "stops" not in records(selection_free)[0][1]
