"""System stops (issue 12, fault 4): a stop the system causes inside a case is signed, with its cause, first.

SIGTERM (``systemctl stop``), SIGINT, a shutdown or a fatal fault stop the camera without the officer: the
machine turns that into a ``stop-reason`` record with ``source: system`` and the cause, before the recording
stops; the case stays open and resumes at the next start as after a power loss. Pure machine, no IO.
"""

from __future__ import annotations

import signal

import pytest
from workflow_driver import DEVICE, OFFICER, Driver, R, S, kinds, records

from agent.stopping import system_stop_cause
from agent.workflow.events import OpenCase, StopRecording, SystemStop
from agent.workflow.machine import replay, resume

CASE = f"{DEVICE}-00001"
TERM = SystemStop("service-stop", "service stopped (SIGTERM)")


def test_a_system_stop_inside_a_case_signs_its_cause_before_the_camera_stops(driver: Driver) -> None:
    driver.press(S, long=True)
    driver.press(S)
    effects = driver.send(TERM)
    assert kinds(effects) == ["record:stop-reason", "rec:off", "RECORDING_OFF"]
    [(kind, body)] = records(effects)
    assert (kind, body) == ("stop-reason", {
        "case_id": CASE, "code": 0, "reason": "service stopped (SIGTERM)", "officer": OFFICER,
        "source": "system", "cause": "service-stop",
    })  # fmt: skip
    [off] = [e for e in effects if hasattr(e, "on")]
    assert off.reason == "system stop: service stopped (SIGTERM)"
    assert driver.state.case is not None and not driver.state.recording  # the case stays open


def test_the_case_resumes_at_the_next_start_as_after_a_power_loss(driver: Driver) -> None:
    driver.press(S, long=True)
    driver.press(S)
    driver.send(TERM)
    state, effects = resume(replay(driver.records, driver.config))
    assert state.case is not None and state.case.next_stage is not None
    assert state.case.next_stage.name == "credentials-shown" and state.recording
    assert kinds(effects) == ["record:event:case-resumed", "rec:on", "RECORDING_ON", "CASE_OPEN"]


def test_a_system_stop_ends_a_reason_selection_first(driver: Driver) -> None:
    driver.press(S, long=True)
    driver.press(R)  # the stop guard: a selection opens
    driver.press(S)
    effects = driver.send(SystemStop("shutdown", "system shutdown (SIGTERM)"))
    assert kinds(effects) == ["record:event:stop-cancelled", "REASON_TIMEOUT", "record:stop-reason", "rec:off",
                              "RECORDING_OFF"]
    assert records(effects)[0][1]["cause"] == "system stop: system shutdown (SIGTERM)"
    assert driver.state.selection is None


def test_outside_a_case_or_with_the_camera_off_nothing_is_signed(driver: Driver) -> None:
    driver.press(R)
    effects = driver.send(TERM)
    assert kinds(effects) == ["rec:off", "RECORDING_OFF"]  # the recorder's own stop names the cause
    assert driver.send(TERM) == []
    driver.send(OpenCase("walk"))  # first stage needs no recording: the camera stays off
    assert driver.send(TERM) == []
    driver.press(S)
    driver.send(StopRecording("party asked for a pause"))
    assert driver.send(TERM) == []


@pytest.mark.parametrize(
    ("signum", "system_state", "fault", "cause", "text"),
    [
        (signal.SIGTERM, None, None, "service-stop", "service stopped (SIGTERM)"),
        (signal.SIGTERM, "running", None, "service-stop", "service stopped (SIGTERM)"),
        (signal.SIGTERM, "stopping", None, "shutdown", "system shutdown (SIGTERM)"),
        (signal.SIGINT, None, None, "interrupt", "interrupted (SIGINT)"),
        (None, None, None, "service-stop", "daemon stopped"),
        (signal.SIGTERM, None, RuntimeError("socket\nthread died"), "fault",
         "fatal fault: RuntimeError: socket\\nthread died"),
    ],
)
def test_the_cause_named(signum: int | None, system_state: str | None, fault: BaseException | None, cause: str,
                         text: str) -> None:
    assert system_stop_cause(signum, system_state, fault) == SystemStop(cause, text)
