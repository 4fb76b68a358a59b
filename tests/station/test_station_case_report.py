"""The station's case report (``bodycam-station timeline``) shows system stops and reasoned closes (issue 12).

The device's ledger is written through the real workflow machine (a SIGTERM in the middle of a case, then
the case goes on, a stage is skipped and it is closed early with a reason), synced into a station, and
reported from the station's copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import FakeClock, seeded_key
from station_support import DeviceSide, Station

from agent.evidence.ledger import Ledger
from agent.workflow.events import Button, CloseCase, Press, RecordEffect, RecordingEffect, SystemStop
from agent.workflow.machine import WorkflowState, step
from agent.workflow.state import WorkflowConfig
from firmware_config.profiles import load_profiles
from sync.station.cli import main

DEVICE, OFFICER = "dev-0001", "A1234"
S, R = Button.STAGE, Button.RECORD


def _carry_out(ledger: Ledger, state: WorkflowState, events: list[Any]) -> WorkflowState:
    config = WorkflowConfig(procedures=load_profiles(), device_id=DEVICE, officer_id=OFFICER)
    for event in events:
        state, effects = step(state, event, config)
        for effect in effects:
            if isinstance(effect, RecordEffect):
                ledger.append(effect.record_type, effect.body)
            elif isinstance(effect, RecordingEffect):  # the recorder's own event stands in for it
                kind = "recording-start" if effect.on else "recording-stop"
                ledger.append("event", {"kind": kind, "reason": effect.reason})
    return state


def test_the_station_report_shows_a_system_stop_and_a_reasoned_close(capsys: pytest.CaptureFixture[str],
                                                                     tmp_path: Path) -> None:
    key = seeded_key(3)
    root = tmp_path / "device"
    with Ledger.open(root, key, DEVICE, FakeClock()) as ledger:
        state = _carry_out(ledger, WorkflowState(), [
            Press(S, True, 1_000_000), Press(S, False, 2_000_000),
            SystemStop("service-stop", "service stopped (SIGTERM)"),
        ])  # fmt: skip
        _carry_out(ledger, state, [Press(S, True, 3_000_000), CloseCase("party left the premises")])
    station = Station(tmp_path / "data")
    station.enroll(DEVICE, key)
    DeviceSide(station, root, DEVICE).sync()
    station.close()
    config = tmp_path / "station.toml"
    config.write_text(f'[station]\nid = "station-test"\ndata = "{tmp_path / "data"}"\nkey = "{tmp_path / "ack.key"}"\n')

    assert main(["timeline", "--config", str(config), "--device", DEVICE]) == 0
    out = capsys.readouterr().out
    assert "NOT RECORDED" in out and "(system stop: service stopped (SIGTERM))" in out, out
    assert "system stop: service stopped (SIGTERM) (not by the officer; the case stays open)" in out, out
    assert "case closed with required stages not done, free-text reason: party left the premises" in out, out

    assert main(["timeline", "--config", str(config), "--device", DEVICE, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    [case] = result["timeline"]
    assert [(n["source"], n.get("cause"), n.get("stops")) for n in case["stop_reasons"]] == [
        ("system", "service-stop", None), ("control", None, "case")]
    assert case["closed"]["seq"] > case["stop_reasons"][1]["at"]["seq"]  # the close reason was signed first
