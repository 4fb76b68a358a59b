"""Every daemon has --validate-config: a good file says so (exit 0), a bad one names the file and the key,
and neither starts anything nor creates anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.evidence.keys import DeviceKey, public_key_pem
from agent.evidence.ledger import Ledger
from sync.broker import write_broker_setup

BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=60)


@pytest.fixture
def configs(tmp_path: Path) -> dict[str, Path]:
    broker = write_broker_setup(tmp_path / "broker", port=18883, devices=["cam-1"])
    station_pub = tmp_path / "station.pub"
    station_pub.write_text(public_key_pem(DeviceKey.generate().public_key))
    cert, key = broker.clients["cam-1"]
    device = tmp_path / "device.toml"
    device.write_text(
        f'[device]\nid = "cam-1"\nofficer = "A1"\nstore = "{tmp_path / "store"}"\nkey = "{tmp_path / "k.key"}"\n'
        f'[camera]\nbackend = "synthetic"\n'
        f'[sync]\nbroker_host = "127.0.0.1"\nca = "{broker.ca_cert}"\ncert = "{cert}"\nkey = "{key}"\n'
        f'station_key = "{station_pub}"\n')
    station = tmp_path / "station.toml"
    station.write_text(
        f'[station]\nid = "st-1"\ndata = "{tmp_path / "data"}"\nkey = "{tmp_path / "ack.key"}"\n'
        f'[broker]\nhost = "127.0.0.1"\nca = "{broker.ca_cert}"\ncert = "{broker.station_cert}"\n'
        f'key = "{broker.station_key}"\n')
    return {"device": device, "station": station}


COMMANDS = {
    "agent": ("bodycam-agent", "run", "--config", "{device}", "--validate-config"),
    "sync": ("bodycam-sync", "--config", "{device}", "--validate-config"),
    "station": ("bodycam-station", "serve", "--config", "{station}", "--validate-config"),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_good_config_is_reported_valid_and_nothing_starts(name: str, configs: dict[str, Path],
                                                           tmp_path: Path) -> None:
    expected = set()
    if name == "sync":  # the uploader reads a store the agent has already made
        with Ledger.open(tmp_path / "store", DeviceKey.generate(), "cam-1"):
            pass
        expected = {"store"}
    args = [a.format(device=configs["device"], station=configs["station"]) for a in COMMANDS[name]]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    for created in {"store", "store.sync-spool", "k.key", "data", "ack.key"} - expected:
        assert not (tmp_path / created).exists(), created


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_bad_config_names_the_file_and_the_key(name: str, configs: dict[str, Path], tmp_path: Path) -> None:
    which = "station" if name == "station" else "device"
    table = "station" if name == "station" else "sync" if name == "sync" else "camera"
    configs[which].write_text(configs[which].read_text().replace(f"[{table}]\n", f"[{table}]\nbogus = 1\n", 1))
    args = [a.format(device=configs["device"], station=configs["station"]) for a in COMMANDS[name]]
    result = run(*args)
    assert result.returncode == 2, result.stderr  # every daemon: 2 for a bad config
    assert f"{table}.bogus" in result.stderr and configs[which].name in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists() and not (tmp_path / "data").exists()
