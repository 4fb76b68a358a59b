"""The three shipped scenarios, end to end: ``bodycam-agent simulate --scenario`` in real processes.

Each scenario drives gpiozero's mock pins at its scripted times through the real device code (debounce, hold
detection, feedback, the workflow machine, the recorder with the synthetic camera, the signed ledger). The
three run at once in their own processes (24-30 s of real time each, so about 35 s for the lot); then
``bodycam-verify --timeline --json`` must find each store intact and its case timeline exactly as scripted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.store import read_records
from agent.scenario import load_scenario
from agent.timeline import case_timelines

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCENARIOS = ROOT / "firmware_config" / "scenarios"
NAMES = ("complete-inspection", "refused-stop", "retention-incident")
OFFICER = "A1234"
STAGES = ("arrival", "credentials-shown", "party-informed", "inspection", "record-signed", "departure")


@dataclass(frozen=True)
class Run:
    store: Path
    returncode: int
    stdout: str
    stderr: str
    verify_code: int
    report: dict[str, Any]  # bodycam-verify --timeline --json

    @property
    def case(self) -> dict[str, Any]:
        timeline = self.report["timeline"]
        assert len(timeline) == 1, timeline
        return dict(timeline[0])

    def records(self) -> list[tuple[int, str, dict[str, Any]]]:
        return [(s.record.seq, s.record.type, dict(s.record.body)) for s in read_records(self.store)]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}
    for name in ("GPIOZERO_PIN_FACTORY", "BODYCAM_CAMERA"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """All three scenarios, started together in separate processes, each then verified with its timeline."""
    root = tmp_path_factory.mktemp("scenarios")
    started: dict[str, tuple[Path, subprocess.Popen[str]]] = {}
    try:
        for name in NAMES:
            store = root / name
            command = [
                str(BIN / "bodycam-agent"), "simulate", "--store", str(store),
                "--scenario", str(SCENARIOS / f"{name}.toml"), "--officer-id", OFFICER,
                "--width", "320", "--height", "192",
            ]  # fmt: skip
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=root
            )
            started[name] = (store, process)
        results: dict[str, Run] = {}
        deadline = time.monotonic() + 150
        for name, (store, process) in started.items():
            out, err = process.communicate(timeout=max(deadline - time.monotonic(), 1))
            verify = subprocess.run(
                [str(BIN / "bodycam-verify"), str(store), "--timeline", "--json"],
                capture_output=True, text=True, env=_env(), timeout=60, check=False,
            )  # fmt: skip
            assert "Traceback" not in verify.stderr, verify.stderr
            results[name] = Run(store, process.returncode, out, err, verify.returncode, json.loads(verify.stdout))
        yield results
    finally:
        for _, process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def stage_statuses(case: dict[str, Any]) -> list[tuple[str, str]]:
    return [(stage["name"], stage["status"]) for stage in case["stages"]]


def seq_of(stage_name: str, case: dict[str, Any]) -> int:
    return int(next(s for s in case["stages"] if s["name"] == stage_name)["at"]["seq"])


# --- every scenario ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_scenario_runs_and_its_store_verifies(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stdout + run.stderr, run.stderr
    title = load_scenario(SCENARIOS / f"{name}.toml").name
    assert f"simulated device sim-0001: scenario {title!r}: wrote " in run.stdout, run.stdout
    assert run.verify_code == 0, run.report
    assert run.report["intact"] is True and run.report["problems"] == []
    assert run.report["segments"] >= 2  # real footage, not only records

    case = run.case
    assert case["procedure"] == "inspection"
    assert case["officer"] == OFFICER
    assert case["closed"] is not None and case["closed_early"] is False
    assert case["problems"] == []
    assert case["resumed"] == []  # no restart happened
    assert case["unrecorded_stages"] == []  # every stage needing the camera was marked while recording
    assert [stage["name"] for stage in case["stages"]] == list(STAGES)
    for stage in case["stages"]:
        assert stage["at"] is not None, stage
        assert stage["recorded"] is True, stage

    records = run.records()
    scenario_events = [body["name"] for _, kind, body in records if kind == "event" and body.get("kind") == "scenario"]
    assert scenario_events == [title]
    # The case was opened by the long stage press (a button, not the socket); the record press after the
    # case closed stopped the camera (no case, no guard): the ledger ends with that stop.
    opens = [body for _, kind, body in records if kind == "case-open"]
    assert [body["source"] for body in opens] == ["button"]
    close_seq = case["closed"]["seq"]
    stops_after = [
        body["reason"] for seq, kind, body in records
        if seq > close_seq and kind == "event" and body.get("kind") == "recording-stop"
    ]  # fmt: skip
    assert stops_after == ["record button"], stops_after


# --- complete inspection --------------------------------------------------------------------------------------


def test_complete_inspection_timeline(runs: dict[str, Run]) -> None:
    case = runs["complete-inspection"].case
    assert stage_statuses(case) == [(name, "done") for name in STAGES]
    assert case["missing"] == []
    assert case["retention_class"] == "standard" and case["retention_flags"] == []
    assert case["stop_reasons"] == [] and case["stops_refused"] == [] and case["stops_cancelled"] == []
    # Recorded from the opening to the close, with no hole.
    assert [interval["recorded"] for interval in case["intervals"]] == [True]
    assert case["unrecorded_us"] == 0
    assert case["recorded_us"] == case["closed"]["wall_us"] - case["opened"]["wall_us"]
    # One bookmark (the mark press at 11 s), between the party-informed (9 s) and inspection (13 s) stages.
    assert len(case["bookmarks"]) == 1 and case["bookmarks"][0]["note"] is None
    assert seq_of("party-informed", case) < case["bookmarks"][0]["at"]["seq"] < seq_of("inspection", case)


# --- refused, then reasoned stop ------------------------------------------------------------------------------


def test_refused_stop_timeline(runs: dict[str, Run]) -> None:
    case = runs["refused-stop"].case
    assert stage_statuses(case) == [(name, "done") for name in STAGES]
    assert case["missing"] == []
    assert case["retention_class"] == "standard" and case["bookmarks"] == []
    assert case["stops_cancelled"] == []

    # The record press at 7 s was refused (the stop guard) ...
    assert len(case["stops_refused"]) == 1
    refused = case["stops_refused"][0]["at"]
    # ... three stage presses chose reason 3 and the record press at 11 s confirmed it.
    assert len(case["stop_reasons"]) == 1
    stop = case["stop_reasons"][0]
    assert (stop["code"], stop["reason"], stop["officer"], stop["source"]) == (3, "party's privacy", OFFICER, "button")
    assert seq_of("credentials-shown", case) < refused["seq"] < stop["at"]["seq"] < seq_of("party-informed", case)
    assert 3.0 <= (stop["at"]["wall_us"] - refused["wall_us"]) / 1e6 <= 5.0

    # Recorded, then not recorded for that reason until the record press at 15 s resumed it, then recorded.
    intervals = case["intervals"]
    assert [interval["recorded"] for interval in intervals] == [True, False, True]
    gap = intervals[1]
    assert gap["reason"] == "stop reason 3: party's privacy"
    assert case["unrecorded_us"] == gap["duration_us"]
    assert gap["from_wall_us"] >= stop["at"]["wall_us"]  # nothing stopped before the reason was signed

    # In the ledger: the stop-reason record comes before the recorder's stop; the record press 4 s after the
    # confirming one started it again, fresh: inside a case nothing from the stopped interval comes back, not
    # even the GOP in progress at the stop (the camera is asked for a new keyframe).
    records = runs["refused-stop"].records()
    walls = {s.record.seq: s.record.wall_us for s in read_records(runs["refused-stop"].store)}
    reason_seq = next(seq for seq, kind, _ in records if kind == "stop-reason")
    stop_seq = next(
        seq for seq, kind, body in records
        if kind == "event" and body.get("kind") == "recording-stop" and seq > reason_seq
    )  # fmt: skip
    start_seq, restart = next(
        (seq, body) for seq, kind, body in records
        if kind == "event" and body.get("kind") == "recording-start" and seq > stop_seq
    )  # fmt: skip
    assert restart["reason"] == "record button"
    assert 3.5 <= (walls[start_seq] - walls[stop_seq]) / 1e6 <= 4.5  # stop at 11 s, resume at 15 s
    assert restart["prebuffer_us"] == 0 and restart["prebuffer_frames"] == 0, restart
    # The timeline's unrecorded interval is exactly that: from the stop to the first frame kept after it.
    assert (gap["from_wall_us"], gap["to_wall_us"]) == (walls[stop_seq], walls[start_seq] - restart["prebuffer_us"])
    assert 3.5 <= gap["duration_us"] / 1e6 <= 4.5, gap  # the whole 4 s


def test_refused_stop_text_timeline(runs: dict[str, Run]) -> None:
    """The people-facing timeline says the same (and case_timelines agrees with the CLI's JSON)."""
    run = runs["refused-stop"]
    text = subprocess.run(
        [str(BIN / "bodycam-verify"), str(run.store), "--timeline"],
        capture_output=True, text=True, env=_env(), timeout=60, check=False,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "stop refused: a case is open" in text.stdout
    assert "stop with reason 3: party's privacy (officer A1234)" in text.stdout
    assert "NOT RECORDED" in text.stdout and "(stop reason 3: party's privacy)" in text.stdout
    assert "retention class: standard" in text.stdout
    assert "missing required stages: none" in text.stdout
    [timeline] = case_timelines(read_records(run.store))
    assert timeline.to_dict() == run.case


# --- incident flagged for long-term retention ----------------------------------------------------------------


def test_retention_incident_timeline(runs: dict[str, Run]) -> None:
    case = runs["retention-incident"].case
    assert stage_statuses(case) == [
        ("arrival", "done"),
        ("credentials-shown", "done"),
        ("party-informed", "skipped"),
        ("inspection", "skipped"),
        ("record-signed", "skipped"),
        ("departure", "done"),
    ]
    assert case["missing"] == ["party-informed", "inspection", "record-signed"]
    assert case["retention_class"] == "long-term"
    assert len(case["retention_flags"]) == 1
    flag = case["retention_flags"][0]
    assert (flag["retention_class"], flag["reason"], flag["officer"]) == ("long-term", "flagged in the field", OFFICER)
    # The bookmark (7 s) came first, then the long mark press (9 s) flagged the case, both before the skips.
    assert len(case["bookmarks"]) == 1
    assert seq_of("credentials-shown", case) < case["bookmarks"][0]["at"]["seq"] < flag["at"]["seq"]
    assert flag["at"]["seq"] < seq_of("party-informed", case)
    # The close guard: departure found required stages skipped, so the close was refused until reason 5 was
    # chosen with the stage button and confirmed with record; the reason is signed before the close.
    [refused] = case["stops_refused"]
    assert (refused["stops"], refused["missing"]) == ("case", ["party-informed", "inspection", "record-signed"])
    assert refused["at"]["seq"] > seq_of("departure", case)
    [reason] = case["stop_reasons"]
    assert (reason["code"], reason["reason"], reason["source"], reason["stops"]) == (5, "officer safety", "button",
                                                                                    "case")
    assert refused["at"]["seq"] < reason["at"]["seq"] < case["closed"]["seq"]
    assert [interval["recorded"] for interval in case["intervals"]] == [True]  # the camera stayed on
    # The case-close record lists the same missing stages as the timeline, and the reason.
    [close] = [body for _, kind, body in runs["retention-incident"].records() if kind == "case-close"]
    assert close["missing"] == case["missing"] and close["skipped"] == case["missing"]
    assert close["not_reached"] == [] and close["early"] is False and close["reason"] == "officer safety"
