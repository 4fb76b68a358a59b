"""End to end through a real Mosquitto: ``bodycam-station assign`` -> the retained message -> ``bodycam-sync``
-> the running agent's control socket -> a signed ledger record -> the station's ledger copy after a sync.

Real processes: the station receiver, the agent (``bodycam-agent run``, synthetic camera, mock pins) and the
uploader. Also: a second assignment while a case is open waits until the case closes; a dock assignment
and a restart keep the newest officer; the retained message seen again is not recorded twice.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from broker_fixture import connect
from helpers import wait_for
from sync_world import BIN, SyncWorld
from test_daemon import OFFICER, Daemon, daemon_config

from agent.evidence.keys import load_device_key
from agent.evidence.store import read_records
from sync.protocol import down_topic

DEVICE = "cam-0001"


def device_toml(world: SyncWorld, folder: Path, socket_path: Path) -> Path:
    """The daemon's test config (tests/test_daemon.py) with [sync] pointing at the world's broker."""
    path = daemon_config(folder, socket_path)
    ca, cert, key = world.broker.client_tls(DEVICE)
    text = path.read_text(encoding="utf-8")
    for old, new in {
        '\nbroker_host = ""': '\nbroker_host = "127.0.0.1"',
        "\nbroker_port = 8883": f"\nbroker_port = {world.broker.port}",
        '\nca = ""': f'\nca = "{ca}"', '\ncert = ""': f'\ncert = "{cert}"', '\nkey = ""': f'\nkey = "{key}"',
        '\nstation_key = ""': f'\nstation_key = "{world.station_pub}"',
        "\nscan_seconds = 5 ": "\nscan_seconds = 0.5 ", "\nretry_seconds = 5 ": "\nretry_seconds = 0.5 ",
    }.items():
        assert text.count(old) == 1, f"device.example.toml changed: {old!r} not found exactly once"
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


def assigned(store: Path) -> list[dict[str, Any]]:
    return [dict(r.record.body) for r in read_records(store)
            if r.record.type == "event" and r.record.body.get("kind") == "officer-assigned"]


def station_assign(world: SyncWorld, device: str, officer: str) -> subprocess.CompletedProcess[str]:
    result = world.station_cli("assign", "--device", device, "--officer", officer, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_station_assignment_reaches_the_agent_and_comes_back_in_the_stations_copy(
    world: SyncWorld, tmp_path: Path, short_folder: Path
) -> None:
    config = device_toml(world, tmp_path, short_folder / "control.sock")
    daemon = Daemon(config, short_folder / "control.sock", tmp_path / "store", tmp_path)
    world.start_station()
    daemon.start()
    try:
        world.enroll(DEVICE, load_device_key(tmp_path / "identity" / "device.key"))
        # Refused, nothing published: an unknown device, an unusable officer id.
        for device, officer, why in (("cam-0404", "B5678", "not enrolled"), (DEVICE, "bad\tid", "officer id")):
            result = station_assign(world, device, officer)
            assert result.returncode == 2 and why in result.stderr, result.stderr
        observer = connect(world.broker, DEVICE, client_id="observer")
        observer.subscribe_wait(down_topic(DEVICE, "assignment"))
        assert observer.next_message(timeout=0.5) is None  # nothing retained yet
        observer.close()

        result = station_assign(world, DEVICE, "B5678")
        assert result.returncode == 0 and "B5678" in result.stdout, result.stderr
        assert world.query("SELECT device, officer FROM assignments") == [(DEVICE, "B5678")]
        uploader = world.start_uploader(config, once=False)
        wait_for(lambda: daemon.status()["officer"] == "B5678", 30, "the agent to take the station's officer")
        [first] = assigned(daemon.store)
        assert first["by"] == "station station-t" and first["previous_officer"] == OFFICER

        # In a case: the next assignment waits (the uploader keeps it) until the case is closed.
        assert daemon.ctl("open-case")[0] == 0
        assert station_assign(world, DEVICE, "C0002").returncode == 0
        wait_for(lambda: "kept pending" in world.uploader_log(config), 30, "the uploader to keep it pending")
        assert daemon.status()["officer"] == "B5678" and len(assigned(daemon.store)) == 1
        assert daemon.ctl("close-case", "--reason", "end of shift")[0] == 0
        wait_for(lambda: daemon.status()["officer"] == "C0002", 30, "the pending assignment after the case")
        opened = [dict(r.record.body) for r in read_records(daemon.store) if r.record.type == "case-open"]
        assert opened[-1]["officer"] == "B5678"

        # The station's ledger copy holds both records after the sync.
        copy = world.device_copy(DEVICE)
        wait_for(lambda: len(assigned(copy)) == 2, 30, "the station's copy to hold the assignments")
        assert [b["officer"] for b in assigned(copy)] == ["B5678", "C0002"]

        # At the dock; then a restart of the agent keeps it (not the config's, not the retained station one).
        code, reply, _ = daemon.ctl("assign", "--officer", "D0001")
        assert code == 0 and reply["result"]["by"] == "dock", reply
        code, _ = daemon.terminate()
        assert code == 0, daemon.output()
        daemon.start()
        assert daemon.status()["officer"] == "D0001"
        uploader.kill()
        uploader.wait(10)
        sync = world.sync_once(config, timeout=60)  # a new connect: the retained message comes again
        assert sync.returncode == 0, sync.stderr[-2000:]
        assert [(b["officer"], b["by"]) for b in assigned(daemon.store)] == [
            ("B5678", "station station-t"), ("C0002", "station station-t"), ("D0001", "dock")]
        assert daemon.status()["officer"] == "D0001"
        assert [b["officer"] for b in assigned(copy)] == ["B5678", "C0002", "D0001"]
    finally:
        daemon.stop_if_running()
    verify = subprocess.run([str(BIN / "bodycam-verify"), str(daemon.store), "--device-store", "--json"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout[-2000:]
    assert json.loads(verify.stdout)["intact"] is True
