"""System stops and the close guard in a real daemon process (issue 12, faults 4 and 5).

A real ``bodycam-agent run`` with the synthetic camera receives SIGTERM (as ``systemctl stop`` sends it) and
SIGINT in the middle of an inspection: the cause must be a signed ``stop-reason`` record before the camera's
last segment is closed, the timeline must show a system stop, and the case must resume at the next start.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from helpers import wait_for
from test_daemon import BIN, CASE, OFFICER, Daemon, _env, daemon, events, records, verify

__all__ = ["daemon"]  # the fixture, imported for the tests below


def _stop(daemon: Daemon, signum: int) -> int:
    assert daemon.process is not None
    daemon.process.send_signal(signum)
    code = daemon.process.wait(timeout=30)
    assert "Traceback" not in daemon.output(), daemon.output()
    return code


def _wait_for_footage_after(daemon: Daemon, seq: int) -> None:
    wait_for(lambda: any(s > seq and t == "checkpoint" for s, t, _ in records(daemon.store)), 15,
             "a checkpoint of the open segment")


def _system_stop_records(store: Path, first_seq: int) -> tuple[dict[str, object], int, int, dict[str, object]]:
    """The system stop-reason after ``first_seq`` and the recorder's records that follow it."""
    after = [(s, t, b) for s, t, b in records(store) if s > first_seq]
    [(reason_seq, _, reason)] = [(s, t, b) for s, t, b in after if t == "stop-reason"]
    segment_seq = max(s for s, t, _ in after if t == "segment")
    [(stop_seq, stop)] = [(s, b) for s, t, b in after if t == "event" and b["kind"] == "recording-stop"]
    assert reason_seq < segment_seq < stop_seq, (reason_seq, segment_seq, stop_seq)  # signed before the camera
    return reason, segment_seq, stop_seq, stop


def test_sigterm_mid_case_signs_a_system_stop_and_the_case_resumes(daemon: Daemon) -> None:
    daemon.start()
    daemon.ok("open-case")
    daemon.ok("stage")  # arrival
    wait_for(lambda: daemon.status()["recorder"] == "recording", 10, "the recorder to record")
    _wait_for_footage_after(daemon, next(s for s, t, _ in records(daemon.store) if t == "stage"))

    assert _stop(daemon, signal.SIGTERM) == 0
    reason, _, _, stop = _system_stop_records(daemon.store, 0)
    assert reason == {"case_id": CASE, "code": 0, "reason": "service stopped (SIGTERM)", "officer": OFFICER,
                      "source": "system", "cause": "service-stop"}
    assert stop["reason"] == "system stop: service stopped (SIGTERM)"
    assert not any(t == "case-close" for _, t, _ in records(daemon.store))
    verified, report = verify(daemon.store)
    assert verified == 0 and report["intact"] is True, report["problems"]
    [case] = report["timeline"]
    assert case["closed"] is None
    assert case["intervals"][-1]["recorded"] is False
    assert case["intervals"][-1]["reason"] == "system stop: service stopped (SIGTERM)"
    last_seq = records(daemon.store)[-1][0]

    # The next start resumes the case as after a power loss: same case, next stage, camera back on.
    daemon.start()
    status = daemon.status()
    assert status["case"]["case_id"] == CASE and status["case"]["next_stage"] == "credentials-shown"
    assert status["recording"] is True
    resumed = [body for seq, body in events(daemon.store, "case-resumed") if seq > last_seq]
    assert [body["next_stage"] for body in resumed] == ["credentials-shown"]
    wait_for(lambda: daemon.status()["recorder"] == "recording", 10, "recording to restart")
    _wait_for_footage_after(daemon, last_seq)

    # Ctrl-C on a daemon run by hand: the same, named as an interrupt.
    assert _stop(daemon, signal.SIGINT) == 0
    reason, _, _, stop = _system_stop_records(daemon.store, last_seq)
    assert (reason["source"], reason["cause"], reason["reason"]) == ("system", "interrupt", "interrupted (SIGINT)")
    assert stop["reason"] == "system stop: interrupted (SIGINT)"

    verified, report = verify(daemon.store)
    assert verified == 0 and report["intact"] is True, report["problems"]
    [case] = report["timeline"]
    assert [(n["source"], n["cause"]) for n in case["stop_reasons"]] == [("system", "service-stop"),
                                                                          ("system", "interrupt")]
    assert [n["next_stage"] for n in case["resumed"]] == ["credentials-shown"]
    text = subprocess.run([str(BIN / "bodycam-verify"), str(daemon.store), "--timeline"], capture_output=True,
                          text=True, env=_env(), timeout=60, check=False).stdout
    assert "NOT RECORDED" in text and "(system stop: service stopped (SIGTERM))" in text, text
    assert "system stop: service stopped (SIGTERM) (not by the officer; the case stays open)" in text, text
    assert "system stop: interrupted (SIGINT)" in text, text
    assert "encoder stopped" not in text


def test_close_case_over_the_socket_needs_a_reason_while_required_stages_are_not_done(daemon: Daemon) -> None:
    daemon.start()
    daemon.ok("open-case")
    daemon.ok("stage")
    code, reply, _ = daemon.ctl("close-case")
    assert code == 1 and reply["ok"] is False and "needs a reason" in reply["error"], reply
    assert reply["status"]["case"]["case_id"] == CASE  # still open
    [(_, refused)] = events(daemon.store, "stop-refused")
    assert (refused["stops"], refused["source"]) == ("case", "control")
    status = daemon.ok("close-case", "--reason", "called to a traffic accident")
    assert status["case"] is None and status["recording"] is True
    kinds = [t for _, t, _ in records(daemon.store)]
    assert kinds.index("stop-reason") < kinds.index("case-close")
    assert _stop(daemon, signal.SIGTERM) == 0
    verified, report = verify(daemon.store)
    assert verified == 0, report["problems"]
    [case] = report["timeline"]
    [reason] = case["stop_reasons"]
    assert (reason["stops"], reason["code"], reason["reason"]) == ("case", 0, "called to a traffic accident")
    # No case was open at the SIGTERM: no stop record, but the recorder's stop still names the cause.
    last = records(daemon.store)[-1][2]
    assert last == {"kind": "recording-stop", "reason": "system stop: service stopped (SIGTERM)"}
