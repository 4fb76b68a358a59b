"""Case timelines from a real ledger written through the workflow machine, and ``bodycam-verify --timeline``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import DEFAULT_WALL_US, FakeClock, seeded_key

from agent import verify_cli
from agent.evidence.ledger import Ledger
from agent.evidence.store import read_records
from agent.timeline import case_timelines, render_timeline
from agent.workflow.events import Button, Press, RecordEffect, RecordingEffect, SystemStop
from agent.workflow.machine import WorkflowState, resume, step
from agent.workflow.replay import replay
from agent.workflow.state import WorkflowConfig
from firmware_config.profiles import load_profiles

DEVICE, OFFICER = "dev-0001", "A1234"
R, S, M = Button.RECORD, Button.STAGE, Button.MARK
# With FakeClock (1 s per record, from DEFAULT_WALL_US) record seq N is written at 22:13:(20 + N).

# A complete inspection: opened (camera on), two stages, a stop refused and then stopped with reason 3 (three
# stage presses choose it), a bookmark, recording resumed, one stage skipped, flagged long-term, the rest done,
# the close refused for the skipped required stage until reason 3 is chosen and confirmed (the close guard), and
# the camera stopped after the case closed.
PRESSES = [
    (S, True), (S, False), (S, False),
    (R, False), (S, False), (S, False), (S, False), (R, False),
    (M, False), (R, False), (S, True), (M, True),
    (S, False), (S, False), (S, False), (S, False), (S, False), (S, False), (R, False),
    (R, False),
]  # fmt: skip

TEXT = """\
timeline: 1 case(s)
case dev-0001-00001: inspection (Inspection), officer A1234
  opened  2023-11-14T22:13:22.000Z (seq 2)
  closed  2023-11-14T22:13:38.000Z (seq 18)
  stages
    1. arrival            done         2023-11-14T22:13:24.000Z  recorded
    2. credentials-shown  done         2023-11-14T22:13:25.000Z  recorded
    3. party-informed     skipped      2023-11-14T22:13:31.000Z  REQUIRED, MISSING
    4. inspection         done         2023-11-14T22:13:33.000Z  recorded
    5. record-signed      done         2023-11-14T22:13:34.000Z  recorded
    6. departure          done         2023-11-14T22:13:35.000Z  recorded
  recording
    2023-11-14T22:13:22.000Z .. 2023-11-14T22:13:23.000Z  NOT RECORDED 1 s  (off when the case opened)
    2023-11-14T22:13:23.000Z .. 2023-11-14T22:13:28.000Z  recorded     5 s
    2023-11-14T22:13:28.000Z .. 2023-11-14T22:13:30.000Z  NOT RECORDED 2 s  (stop reason 3: party's privacy)
    2023-11-14T22:13:30.000Z .. 2023-11-14T22:13:38.000Z  recorded     8 s
    total recorded 13 s, not recorded 3 s
  events
    2023-11-14T22:13:26.000Z  stop refused: a case is open
    2023-11-14T22:13:27.000Z  stop with reason 3: party's privacy (officer A1234)
    2023-11-14T22:13:29.000Z  bookmark
    2023-11-14T22:13:32.000Z  retention long-term: flagged in the field (officer A1234)
    2023-11-14T22:13:36.000Z  close refused: required stages not done (party-informed); closing needs a reason
    2023-11-14T22:13:37.000Z  case closed with required stages not done, reason 3: party's privacy (officer A1234)
  retention class: long-term
  missing required stages: party-informed"""


def at(seq: int) -> dict[str, Any]:
    return {"seq": seq, "wall_us": DEFAULT_WALL_US + seq * 1_000_000, "utc": f"2023-11-14T22:13:{20 + seq}.000Z"}


def stage(index: int, name: str, title: str, status: str, seq: int) -> dict[str, Any]:
    return {
        "index": index, "name": name, "title": title, "required": True, "needs_recording": True,
        "status": status, "at": at(seq), "recorded": True,
    }  # fmt: skip


def interval(first: int, last: int, recorded: bool, reason: str) -> dict[str, Any]:
    return {
        "from_wall_us": at(first)["wall_us"], "from_utc": at(first)["utc"],
        "to_wall_us": at(last)["wall_us"], "to_utc": at(last)["utc"],
        "duration_us": (last - first) * 1_000_000, "recorded": recorded, "reason": reason,
    }  # fmt: skip


JSON = [
    {
        "case_id": "dev-0001-00001",
        "procedure": "inspection",
        "procedure_title": "Inspection",
        "officer": "A1234",
        "opened": at(2),
        "closed": at(18),
        "closed_early": False,
        "stages": [
            stage(1, "arrival", "Arrival: camera on, storefront and surroundings filmed", "done", 4),
            stage(2, "credentials-shown", "Identity and law-enforcement credentials shown", "done", 5),
            stage(3, "party-informed", "Party informed that audio and video are being recorded", "skipped", 11),
            stage(4, "inspection", "Inspection of the premises, goods and documents", "done", 13),
            stage(5, "record-signed", "On-site inspection record checked and signed by the party", "done", 14),
            stage(6, "departure", "Departure: storefront filmed again on leaving", "done", 15),
        ],
        "intervals": [
            interval(2, 3, False, "off when the case opened"),
            interval(3, 8, True, "case dev-0001-00001 opened"),
            interval(8, 10, False, "stop reason 3: party's privacy"),
            interval(10, 18, True, "record button"),
        ],
        "recorded_us": 13_000_000,
        "unrecorded_us": 3_000_000,
        "stop_reasons": [
            {"at": at(7), "code": 3, "reason": "party's privacy", "officer": "A1234", "source": "button"},
            {"at": at(17), "code": 3, "reason": "party's privacy", "officer": "A1234", "source": "button",
             "stops": "case"},
        ],
        "stops_refused": [{"at": at(6)}, {"at": at(16), "stops": "case", "missing": ["party-informed"]}],
        "stops_cancelled": [],
        "bookmarks": [{"at": at(9), "note": None}],
        "retention_class": "long-term",
        "retention_flags": [
            {"at": at(12), "retention_class": "long-term", "reason": "flagged in the field", "officer": "A1234"}
        ],
        "resumed": [],
        "missing": ["party-informed"],
        "unrecorded_stages": [],
        "problems": [],
    }
]


def config() -> WorkflowConfig:
    return WorkflowConfig(procedures=load_profiles(), device_id=DEVICE, officer_id=OFFICER)


def run(ledger: Ledger, state: WorkflowState, presses: list[tuple[Button, bool]]) -> WorkflowState:
    """What the daemon does: each effect in order; the recorder's own start/stop events stand in for it."""
    for number, (button, long) in enumerate(presses, start=1):
        state, effects = step(state, Press(button, long, number * 1_000_000), config())
        apply(ledger, effects)
    return state


def apply(ledger: Ledger, effects: list[Any]) -> None:
    for effect in effects:
        if isinstance(effect, RecordEffect):
            ledger.append(effect.record_type, effect.body)
        elif isinstance(effect, RecordingEffect):
            kind = "recording-start" if effect.on else "recording-stop"
            ledger.append("event", {"kind": kind, "reason": effect.reason})


@pytest.fixture
def inspection_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    with Ledger.open(store, seeded_key(1), DEVICE, FakeClock()) as ledger:
        run(ledger, WorkflowState(), PRESSES)
    return store


def test_the_timeline_of_an_inspection_with_a_reasoned_stop(inspection_store: Path) -> None:
    timelines = case_timelines(read_records(inspection_store), load_profiles())
    assert render_timeline(timelines) == TEXT
    assert [case.to_dict() for case in timelines] == JSON
    assert json.loads(json.dumps(JSON)) == JSON  # plain JSON values only


def test_a_case_open_across_a_power_loss(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Ledger.open(store, seeded_key(1), DEVICE, FakeClock()) as ledger:
        run(ledger, WorkflowState(), [(S, True), (S, False)])  # seq 2 case-open, 3 rec start, 4 arrival
    # Power lost while recording. The daemon restarts: boot (seq 5, 22:13:36), replay, resume.
    with Ledger.open(store, seeded_key(1), DEVICE, FakeClock(wall_us=DEFAULT_WALL_US + 15_000_000)) as ledger:
        state = replay(((r.record.type, r.record.body) for r in read_records(store)), config())
        state, effects = resume(state)
        apply(ledger, effects)  # seq 6 case-resumed, 7 rec start
    text = render_timeline(case_timelines(read_records(store)))
    assert text == """\
timeline: 1 case(s)
case dev-0001-00001: inspection (Inspection), officer A1234
  opened  2023-11-14T22:13:22.000Z (seq 2)
  closed  NOT CLOSED: the case is still open at the end of the ledger
  stages
    1. arrival            done         2023-11-14T22:13:24.000Z  recorded
    2. credentials-shown  pending
    3. party-informed     pending
    4. inspection         pending
    5. record-signed      pending
    6. departure          pending
  recording
    2023-11-14T22:13:22.000Z .. 2023-11-14T22:13:23.000Z  NOT RECORDED 1 s  (off when the case opened)
    2023-11-14T22:13:23.000Z .. 2023-11-14T22:13:24.000Z  recorded     1 s
    2023-11-14T22:13:24.000Z .. 2023-11-14T22:13:38.000Z  NOT RECORDED 14 s  (device restarted while recording)
    2023-11-14T22:13:38.000Z .. 2023-11-14T22:13:38.000Z  recorded     0 s
    total recorded 1 s, not recorded 15 s
  events
    2023-11-14T22:13:37.000Z  resumed after a restart at stage credentials-shown
  retention class: standard
  missing required stages: none
  required stages still pending (the case is open): credentials-shown, party-informed, inspection, \
record-signed, departure"""


def test_a_case_without_a_stage_list_uses_the_profiles_and_odd_records_are_shown(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Ledger.open(store, seeded_key(1), DEVICE, FakeClock()) as ledger:
        ledger.append("case-open", {"case_id": "c1", "procedure": "penalty", "officer": OFFICER})
        ledger.append("stage", {"case_id": "c1", "stage": "dance", "status": "done", "officer": OFFICER})
        ledger.append("case-close", {"case_id": "c1", "officer": OFFICER, "missing": [], "early": True})
        ledger.append("event", {"kind": "bookmark", "case_id": "c1"})
    (case,) = case_timelines(read_records(store), load_profiles())
    assert [line.status for line in case.stages] == ["not reached"] * 8 + ["done"]
    assert case.missing == [
        "credentials-shown", "party-informed", "facts-stated", "rights-informed", "statement-heard",
        "decision-delivered", "party-signs",
    ]  # fmt: skip
    assert case.problems == [
        "seq 3: stage 'dance' is not in procedure 'penalty'",
        "seq 5: event record after the case was closed",
    ]
    text = render_timeline([case])
    assert "  closed  2023-11-14T22:13:24.000Z (seq 4, early)" in text
    assert "  PROBLEM seq 3: stage 'dance' is not in procedure 'penalty'" in text


def test_a_ledger_without_cases(store: tuple[Path, object], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = store  # the stand-in store: segments and bookmarks, no case
    assert case_timelines(read_records(path)) == []
    assert verify_cli.main([str(path), "--timeline"]) == verify_cli.EXIT_INTACT
    assert capsys.readouterr().out.endswith("\n\ntimeline: no cases in this ledger\n")


# --- bodycam-verify --timeline ------------------------------------------------------------------------------


def test_verify_with_timeline_prints_the_verification_then_the_timeline(
    inspection_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify_cli.main([str(inspection_store), "--timeline"]) == verify_cli.EXIT_INTACT
    out = capsys.readouterr().out
    verification, timeline = out.split("\n\n", 1)
    assert verification.startswith(f"store {inspection_store}\n")
    assert verification.splitlines()[-1].startswith("INTACT: 19 records verified")
    assert timeline == TEXT + "\n"


def test_verify_json_with_timeline(inspection_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_cli.main([str(inspection_store), "--json", "--timeline"]) == verify_cli.EXIT_INTACT
    report = json.loads(capsys.readouterr().out)
    assert report["intact"] is True and report["timeline"] == JSON
    assert verify_cli.main([str(inspection_store), "--json"]) == verify_cli.EXIT_INTACT
    assert "timeline" not in json.loads(capsys.readouterr().out)


def test_verify_keeps_its_exit_code_and_warns_when_the_ledger_does_not_verify(
    inspection_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = inspection_store / "ledger.jsonl"
    data = ledger.read_bytes()
    ledger.write_bytes(data.replace(b"party's privacy", b"party's privacz", 1))
    assert verify_cli.main([str(inspection_store), "--timeline"]) == verify_cli.EXIT_PROBLEMS
    out = capsys.readouterr().out
    assert "NOT INTACT" in out
    assert "WARNING: the timeline below comes from a ledger that did NOT verify" in out
    assert "stop with reason 3: party's privacz (officer A1234)" in out


def test_verify_with_an_unreadable_profiles_folder_is_exit_2(
    inspection_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = verify_cli.main([str(inspection_store), "--timeline", "--profiles", str(tmp_path / "none")])
    assert code == verify_cli.EXIT_UNREADABLE
    assert "profiles folder" in capsys.readouterr().err


def test_a_system_stop_mid_case_is_shown_as_one_and_the_case_resumes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Ledger.open(store, seeded_key(1), DEVICE, FakeClock()) as ledger:
        state = run(ledger, WorkflowState(), [(S, True), (S, False)])  # seq 2 case-open, 3 rec start, 4 arrival
        state, effects = step(state, SystemStop("service-stop", "service stopped (SIGTERM)"), config())
        apply(ledger, effects)  # seq 5 stop-reason (system), 6 rec stop
    with Ledger.open(store, seeded_key(1), DEVICE, FakeClock(wall_us=DEFAULT_WALL_US + 15_000_000)) as ledger:
        state, effects = resume(replay(((r.record.type, r.record.body) for r in read_records(store)), config()))
        apply(ledger, effects)  # seq 7 boot, 8 case-resumed, 9 rec start
    [case] = case_timelines(read_records(store))
    lines = render_timeline([case]).splitlines()
    assert "    2023-11-14T22:13:26.000Z .. 2023-11-14T22:13:38.000Z  NOT RECORDED 12 s  " \
           "(system stop: service stopped (SIGTERM))" in lines
    assert "    2023-11-14T22:13:25.000Z  system stop: service stopped (SIGTERM) (not by the officer; the case stays " \
           "open)" in lines
    assert "    2023-11-14T22:13:37.000Z  resumed after a restart at stage credentials-shown" in lines
    [stop] = case.to_dict()["stop_reasons"]
    assert (stop["source"], stop["cause"], stop["code"]) == ("system", "service-stop", 0)
    assert case.closed is None and case.problems == []
