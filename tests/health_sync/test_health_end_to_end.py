"""Health through a real Mosquitto: the uploader forwards the agent's signed report (retained), the station
process verifies and keeps it, and ``bodycam-station status --json`` shows it.

The uploader runs in this process (its evidence transfer included, its report file from the config's
``[health] report_path``) so that the test can publish before the station exists; the station is the real
``bodycam-station serve`` process.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

from broker_fixture import connect
from helpers import FakeClock, seeded_key, stand_in_store, wait_for
from sync_world import SyncWorld

from agent.health.report import Check, HealthReport, sign_report, write_report_file
from firmware_config.device_config import load_device_config
from sync.protocol import up_topic
from sync.uploader.runner import Uploader

DEVICE = "dev-a"
FAILED = HealthReport(
    device=DEVICE, at_wall_us=1_700_000_000_000_000, boot="0b0c0000-0000-4000-8000-000000000001",
    state="failed", summary="self-test failed: camera: no frames in 5 s",
    checks=(Check("camera", False, "no frames in 5 s"), Check("store", True, "writable")), clock_trusted=True,
    metrics={"fps": 0, "free_bytes": 5_000_000_000},
)
OK = replace(FAILED, at_wall_us=FAILED.at_wall_us + 60_000_000, state="ok", summary="all checks passed",
             checks=(Check("camera", True, "15 fps"), Check("store", True, "writable")), metrics={"fps": 15.0})


class NoCustody:
    """Receipts and purges are not what this test is about: accept them without writing the ledger."""

    def record_receipt(self, ack_line: bytes) -> str:
        return "not recorded"

    def purge_acknowledged(self) -> list[str]:
        return []


def stored_line(world: SyncWorld) -> bytes | None:
    rows = world.query("SELECT line FROM health WHERE device=?", DEVICE) if (world.data / "index.sqlite").exists() \
        else []
    return bytes(rows[0][0]) if rows else None


def test_health_reaches_a_station_that_connects_later_and_status_shows_it(world: SyncWorld, tmp_path: Path) -> None:
    key = seeded_key(1)
    world.enroll(DEVICE, key)
    store = tmp_path / "store"
    now_us = time.time_ns() // 1000  # recent footage and reports: no late upload, no stale health
    stand_in_store(store, key, DEVICE, 2, clock=FakeClock(wall_us=now_us - 60_000_000))
    failed = replace(FAILED, at_wall_us=now_us - 30_000_000)
    ok = replace(OK, at_wall_us=now_us - 1_000_000)
    key_path = tmp_path / "device.key"
    key_path.write_bytes(key.private_pem())
    key_path.chmod(0o600)
    report_file = tmp_path / "run" / "health.json"
    config_file = world.device_config(DEVICE, store, key_path)
    config_file.write_text(config_file.read_text() + f'\n[health]\nreport_path = "{report_file}"\n')
    config = load_device_config(config_file)
    failed_line = sign_report(failed, key)
    write_report_file(report_file, failed_line)

    uploader = Uploader(config=config, custody=NoCustody(), station_key=world.station_key.public_key,
                        stop=threading.Event())
    try:
        # The station is not running and has never connected: only the broker's retained copy can reach it.
        assert uploader.forward_health()
        assert uploader.conn is not None and uploader.conn.flush(5)
        world.start_station()
        wait_for(lambda: stored_line(world) == failed_line, 15, "the station to store the retained report")
        assert [(k, r) for k, _s, r in world.problems(DEVICE)] == [
            ("device-fault", "device failed: camera: no frames in 5 s")]

        # Evidence still flows with a report in place; then a newer ok report replaces the failed one.
        assert uploader.run_once(60)
        ok_line = sign_report(ok, key)
        write_report_file(report_file, ok_line)
        assert not uploader.run_pass().failed
        wait_for(lambda: stored_line(world) == ok_line, 15, "the station to store the newer report")
    finally:
        uploader.close()

    status = world.station_cli("status", "--json", check=False)
    assert status.returncode == 0, status.stdout + status.stderr  # the device-fault was resolved
    [device] = json.loads(status.stdout)["devices"]
    assert device["health"]["state"] == "ok" and device["health"]["metrics"] == {"fps": 15.0}
    assert device["health"]["summary"] == "all checks passed" and device["health"]["clock_trusted"] is True
    assert device["health"]["stale"] is False and device["health"]["age_s"] < 600
    assert device["backlog"] == {"files": 0, "bytes": 0} and device["files_stored"] == 2
    assert device["open_problems"] == 0 and device["last_session"]["records"] > 0
    text = world.station_cli("status", check=False).stdout
    assert "  health: ok: all checks passed (reported 20" in text and "s ago, clock trusted)" in text

    # The broker keeps the newest report for any later subscriber (e.g. a station rebuilt from scratch). One
    # connection per certificate identity: the receiver goes first, or the reader would push it off.
    assert world.stop_station() == 0
    late = connect(world.broker, "station", client_id="station-late-reader")
    late.subscribe_wait(up_topic("+", "health"))
    delivery = late.next_message(5)
    assert delivery is not None and delivery.retain and delivery.payload == ok_line
    assert delivery.topic == up_topic(DEVICE, "health")
