"""Health reports at the station (no MQTT): verified with the enrolled key, newest kept, device-fault problems
opened once per failing check and resolved by a later passing report; ``status`` shows them."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import FakeClock, seeded_key
from station_support import DeviceSide, Station, StoreFactory

from agent.evidence.keys import DeviceKey
from agent.health.report import Check, HealthReport, sign_report
from sync.protocol import ErrorNotice, down_topic
from sync.station.cli import main
from sync.station.model import DeviceRow
from sync.station.report import STALE_AFTER_US, device_statuses, health_view, render_status

DEVICE = "dev-0001"
T0 = 1_700_000_000_000_000
OK = HealthReport(
    device=DEVICE, at_wall_us=T0, boot="0b0c0000-0000-4000-8000-000000000001", state="ok",
    summary="all checks passed", checks=(Check("camera", True, "15.0 fps"), Check("store", True, "writable")),
    clock_trusted=True, metrics={"fps": 15.0, "free_bytes": 10_000_000, "battery_percent": None},
)
FAILED = replace(OK, at_wall_us=T0 + 60_000_000, state="failed", summary="self-test failed: camera: no frames",
                 checks=(Check("camera", False, "no frames in 5 s"), Check("store", True, "writable")))


@pytest.fixture
def enrolled(station: Station) -> DeviceKey:
    key = seeded_key(1)
    station.enroll(DEVICE, key)
    return key


def send(station: Station, report: HealthReport, key: DeviceKey) -> list[object]:
    return list(station.send(report.device, "health", sign_report(report, key)))


def faults(station: Station) -> list[tuple[str | None, str, bool]]:
    return [(p.object, p.reason, p.resolved_us is None) for p in station.problems("device-fault")]


def test_good_report_is_stored_with_its_line(station: Station, enrolled: DeviceKey) -> None:
    line = sign_report(OK, enrolled)
    assert station.send(DEVICE, "health", line) == []  # no reply: health is not a session step
    row = station.index.health(DEVICE)
    assert row is not None and row.line == line
    assert (row.state, row.summary, row.at_wall_us, row.clock_trusted) == ("ok", "all checks passed", T0, True)
    assert row.metrics == {"fps": 15.0, "free_bytes": 10_000_000, "battery_percent": None}
    assert station.problems() == []


def test_older_or_repeated_report_does_not_replace_a_newer_one(station: Station, enrolled: DeviceKey) -> None:
    send(station, FAILED, enrolled)
    send(station, OK, enrolled)  # older (T0 < T0 + 60 s): arrives late, e.g. from the broker's queue
    send(station, FAILED, enrolled)  # the retained copy again
    row = station.index.health(DEVICE)
    assert row is not None and row.state == "failed" and row.at_wall_us == FAILED.at_wall_us
    assert faults(station) == [("health check camera", "device failed: camera: no frames in 5 s", True)]
    assert station.problems("device-fault")[0].repeats == 1


def test_failed_report_opens_one_problem_per_check_until_an_ok_report(station: Station,
                                                                      enrolled: DeviceKey) -> None:
    send(station, FAILED, enrolled)
    for n in range(1, 4):  # heartbeats that still fail: the same problem, updated, not a new one each time
        later = replace(FAILED, at_wall_us=FAILED.at_wall_us + n, checks=(
            Check("camera", False, f"no frames in {5 + n} s"), Check("store", True, "writable")))
        send(station, later, enrolled)
    [problem] = station.problems("device-fault")
    assert (problem.repeats, problem.reason, problem.resolved_us) == (4, "device failed: camera: no frames in 8 s",
                                                                      None)
    assert problem.topic == f"bodycam/{DEVICE}/up/health"
    send(station, replace(OK, at_wall_us=FAILED.at_wall_us + 100), enrolled)
    assert faults(station) == [("health check camera", "device failed: camera: no frames in 8 s", False)]
    send(station, replace(FAILED, at_wall_us=FAILED.at_wall_us + 200), enrolled)  # fails again: a new problem
    assert [f[2] for f in faults(station)] == [False, True]


def test_checks_that_change_open_and_resolve_their_own_problems(station: Station, enrolled: DeviceKey) -> None:
    degraded = replace(OK, state="degraded", summary="hot", checks=(Check("temperature", False, "82 C"),
                                                                    Check("storage", False, "3% free")))
    send(station, degraded, enrolled)
    cooler = replace(degraded, at_wall_us=T0 + 1, checks=(Check("temperature", True, "70 C"),
                                                          Check("storage", False, "2% free")))
    send(station, cooler, enrolled)
    assert faults(station) == [("health check temperature", "device degraded: temperature: 82 C", False),
                               ("health check storage", "device degraded: storage: 2% free", True)]
    no_check = replace(OK, at_wall_us=T0 + 2, state="degraded", summary="clock not synchronised", checks=())
    send(station, no_check, enrolled)
    assert faults(station)[1:] == [("health check storage", "device degraded: storage: 2% free", False),
                                   ("health", "device degraded: clock not synchronised", True)]


@pytest.mark.parametrize("case", ["bad-signature", "other-key", "other-device", "garbage"])
def test_refused_reports_are_problems_and_store_nothing(station: Station, enrolled: DeviceKey, case: str) -> None:
    line = sign_report(FAILED, enrolled)
    if case == "bad-signature":
        line = line.replace(b"no frames in 5 s", b"no frames in 6 s")
    elif case == "other-key":
        line = sign_report(FAILED, seeded_key(2))
    elif case == "other-device":
        line = sign_report(replace(FAILED, device="dev-0002"), enrolled)
    else:
        line = b"not a report\n"
    out = station.send(DEVICE, "health", line)
    [notice] = [ErrorNotice.decode(m.payload) for m in out if m.topic == down_topic(DEVICE, "error")]
    assert notice.topic == f"bodycam/{DEVICE}/up/health" and "health report" in notice.reason
    [problem] = station.problems()
    assert problem.kind == "rejected-message" and "health report" in problem.reason
    assert station.index.health(DEVICE) is None and station.problems("device-fault") == []


@pytest.mark.parametrize("revoked", [False, True])
def test_unknown_or_revoked_device_is_refused(station: Station, enrolled: DeviceKey, revoked: bool) -> None:
    device = "dev-0002"
    key = seeded_key(2)
    if revoked:
        station.index.put_device(DeviceRow(device, key.public_raw.hex(), key.fingerprint, T0, revoked=True))
    station.send(device, "health", sign_report(replace(FAILED, device=device), key))
    assert [p.kind for p in station.problems()] == ["unknown-device"]
    assert station.index.health(device) is None


def test_health_view_age_and_staleness() -> None:
    from sync.station.model import HealthRow

    row = HealthRow(DEVICE, T0, "b", "ok", "fine", True, [], {}, b"", T0 + 5_000_000)
    assert health_view(None, T0) is None
    view = health_view(row, T0 + 10_000_000)
    assert view is not None and (view.age_us, view.stale) == (10_000_000, False)
    # An untrusted device clock: the age counts from when the station received the report.
    untrusted = health_view(replace(row, clock_trusted=False, at_wall_us=1), T0 + 10_000_000)
    assert untrusted is not None and untrusted.age_us == 5_000_000
    assert health_view(row, T0 + STALE_AFTER_US + 1).stale  # type: ignore[union-attr]
    assert health_view(row, T0 - 1).age_us == 0  # type: ignore[union-attr]


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(f'[station]\nid = "station-test"\ndata = "{tmp_path / "data"}"\nkey = "{tmp_path / "ack.key"}"\n')
    return path


def test_status_shows_health_last_sync_backlog_and_problems(tmp_path: Path, make_store: StoreFactory,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    station = Station(tmp_path / "data")
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.hello()
    side.records(side.lines())  # every record, no file yet: the files are the backlog
    degraded = replace(OK, state="degraded", summary="frame rate low",
                       checks=(Check("frame-rate", False, "11.5 fps"),), metrics={"fps": 11.5, "temperature_c": 61})
    send(station, degraded, key)
    statuses = device_statuses(station.index, T0 + 3 * 3_600_000_000)
    text = render_status("station-test", None, statuses, 0)
    station.close()
    lines = text.splitlines()
    assert lines[2].startswith("  health: DEGRADED: frame rate low (reported 2023-11-14T22:13:20")
    assert lines[2].endswith(", 3 h ago, clock trusted)")
    assert lines[3] == "    11.5 fps, 61 C"
    assert lines[4].startswith("  last sync: session s1 at 2023-11-14T22:13:20")
    assert lines[4].endswith(", unfinished (no done): 9 records, 0 files; clock offset not measured")
    assert lines[6] == ("  files 0 stored (0 bytes); backlog 5 files (327680 bytes) recorded and not received "
                        "yet")
    assert lines[7] == "  open problems 1 (device-fault 1)"

    code = main(["status", "--config", str(write_config(tmp_path)), "--json"])
    [device] = json.loads(capsys.readouterr().out)["devices"]
    assert code == 1
    health = device["health"]
    assert (health["state"], health["summary"], health["clock_trusted"]) == ("degraded", "frame rate low", True)
    assert health["metrics"] == {"fps": 11.5, "temperature_c": 61}
    assert health["at_utc"].startswith("2023-11-14T22:13:20") and health["stale"] is True  # years old by now
    assert health["checks"] == [{"name": "frame-rate", "ok": False, "detail": "11.5 fps"}]
    assert device["backlog"] == {"files": 5, "bytes": 327680}
    assert device["last_session"]["records"] == 9 and device["last_session"]["ended_us"] is None
    # The status run also checked what is overdue: years later, the five files never came and the device
    # never synced again.
    assert (device["open_problems"], device["open_problem_kinds"]) == (
        7, {"device-fault": 1, "device-unseen": 1, "overdue-file": 5})
    assert device["overdue"][0].startswith("overdue-file: segments/000001.bin: not received: recorded 2023-11-14")


def test_status_exit_code_ok_health_and_stale_health(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Enrolled just now (enrolled in 2023 and never synced, it would rightly be reported as unseen).
    station = Station(tmp_path / "data", clock=FakeClock(wall_us=time.time_ns() // 1000))
    key = seeded_key(1)
    station.enroll(DEVICE, key)
    send(station, OK, key)
    station.close()
    config = str(write_config(tmp_path))
    # OK_REPORT is from 2023: stale now, shown as such, but stale alone is not a fault (exit 0).
    assert main(["status", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "  health: ok: all checks passed (reported 2023-11-14T22:13:20" in out
    assert "; STALE (no report for over 24 h)" in out and "    15 fps, free 10000000 bytes" in out
