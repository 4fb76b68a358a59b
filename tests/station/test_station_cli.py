"""``bodycam-station``: add-device, show-key, status, problems, timeline; exit codes 0/1/2, one-line errors."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from helpers import FakeClock, seeded_key, stand_in_store
from station_support import DeviceSide, Station, StoreFactory

from agent.evidence.keys import DeviceKey, load_device_key, public_key_pem
from agent.evidence.ledger import Ledger
from sync.protocol import Done
from sync.station.cli import main
from sync.station.model import CaseRow, CaseStage

DEVICE = "dev-0001"


def recent_us() -> int:
    """An hour ago: status and problems run the overdue check on the system clock, so a device that synced
    in these tests must have synced recently (or it is rightly reported as unseen)."""
    return time.time_ns() // 1000 - 3600 * 1_000_000


@pytest.fixture
def make_store(tmp_path: Path) -> StoreFactory:
    """tests/conftest.py's make_store, recorded an hour ago instead of in 2023."""
    base = recent_us()

    def factory(seed: int = 1, device_id: str = DEVICE, seconds: int = 5) -> tuple[Path, DeviceKey]:
        store, key = tmp_path / f"store-{device_id}", seeded_key(seed)
        stand_in_store(store, key, device_id, seconds, clock=FakeClock(wall_us=base))
        return store, key

    return factory


def recent_station(data: Path) -> Station:
    return Station(data, clock=FakeClock(wall_us=recent_us(), step_us=1000))


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "station.toml"
    path.write_text(f'[station]\nid = "station-test"\ndata = "{tmp_path / "data"}"\nkey = "{tmp_path / "ack.key"}"\n'
                    + extra)
    return path


def pem_file(tmp_path: Path, key: DeviceKey, name: str = "dev.pub") -> Path:
    path = tmp_path / name
    path.write_text(public_key_pem(key.public_key))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    return text[:-1]


def test_add_device_enrolls_and_refuses_a_second_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path)
    key, other = seeded_key(1), seeded_key(2)
    code, out, _ = run(capsys, "add-device", "--config", config, "--device", DEVICE, "--pubkey",
                       pem_file(tmp_path, key))
    assert (code, out) == (0, f"device {DEVICE}: enrolled with key {key.fingerprint}\n")
    code, out, _ = run(capsys, "add-device", "--config", config, "--device", DEVICE, "--pubkey",
                       pem_file(tmp_path, key))
    assert (code, out) == (0, f"device {DEVICE}: already enrolled with key {key.fingerprint}\n")
    code, out, err = run(capsys, "add-device", "--config", config, "--device", DEVICE, "--pubkey",
                         pem_file(tmp_path, other, "other.pub"))
    assert (code, out) == (2, "")
    assert one_line(err) == (f"bodycam-station: device {DEVICE}: already enrolled with key {key.fingerprint[:16]}..."
                             f"; pass --replace to enroll key {other.fingerprint[:16]}... instead")
    code, out, _ = run(capsys, "add-device", "--config", config, "--device", DEVICE, "--pubkey",
                       pem_file(tmp_path, other, "other.pub"), "--replace")
    assert (code, out) == (0, f"device {DEVICE}: re-enrolled with key {other.fingerprint}\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root (a technician's sudo) creates files others own")
def test_add_device_under_sudo_leaves_the_index_to_the_data_folders_owner(capsys: pytest.CaptureFixture[str],
                                                                         tmp_path: Path) -> None:
    config = write_config(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 4242, 4242)  # the receiver's user owns its data folder
    code, _, _ = run(capsys, "add-device", "--config", config, "--device", DEVICE, "--pubkey",
                     pem_file(tmp_path, seeded_key(1)))
    assert code == 0
    files = sorted(data.glob("index.sqlite*"))
    assert files and all((f.stat().st_uid, f.stat().st_gid) == (4242, 4242) for f in files), files


def test_add_device_with_an_unreadable_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    code, out, err = run(capsys, "add-device", "--config", write_config(tmp_path), "--device", DEVICE,
                         "--pubkey", bad)
    assert (code, out) == (2, "") and "not a PEM, hex or raw Ed25519 public key" in one_line(err)


def test_show_key_creates_the_station_key_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code, pem, _ = run(capsys, "show-key", "--config", config)
    key_file = tmp_path / "ack.key"
    assert code == 0 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = load_device_key(key_file)
    assert pem == public_key_pem(key.public_key)
    code, hex_out, _ = run(capsys, "show-key", "--config", config, "--hex")
    assert hex_out == key.public_raw.hex() + "\n"
    assert "PRIVATE" not in pem + hex_out


def test_reports_need_a_station_that_has_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for command in ("status", "problems"):
        code, out, err = run(capsys, command, "--config", write_config(tmp_path))
        assert (code, out) == (2, "")
        assert one_line(err) == f"bodycam-station: station data {tmp_path / 'data'}: no index yet (run add-device " \
                                "or serve first)"


def test_config_errors_exit_2_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, "[limits]\nmax_pending_records = 0\n")
    code, out, err = run(capsys, "status", "--config", config)
    assert (code, out) == (2, "")
    assert one_line(err) == f"bodycam-station: {config}: key 'limits.max_pending_records': value 0: " \
                            "expected 1..10000000"
    code, _, err = run(capsys, "serve", "--config", write_config(tmp_path))
    assert code == 2 and "key 'broker.ca': value \"\": expected a file path: required to serve" in one_line(err)


@pytest.fixture
def synced_station(tmp_path: Path, make_store: StoreFactory) -> tuple[Path, DeviceSide]:
    """A config file whose data folder holds dev-0001 fully synced (made in-process, then closed)."""
    config = write_config(tmp_path)
    station = recent_station(tmp_path / "data")
    started = station.clock.wall_us
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE, device_clock_us=started)
    side.sync()
    station.close()
    return config, side


def test_status_of_a_synced_device(capsys: pytest.CaptureFixture[str],
                                   synced_station: tuple[Path, DeviceSide]) -> None:
    config, _ = synced_station
    code, out, _ = run(capsys, "status", "--config", config)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "station station-test  ack key not created yet (serve or show-key creates it)"
    assert lines[1] == f"device {DEVICE}  key {seeded_key(1).fingerprint[:16]}..."
    assert lines[2] == "  health: no report received yet"
    assert lines[3].startswith("  last sync: session s1 at 20")
    assert lines[3].endswith(": 9 records, 5 files; clock offset +1.5 ms")
    assert lines[4].startswith("  records 9 stored, watermark seq 9 ")
    assert lines[5] == "  files 5 stored (327680 bytes); backlog 0 files (0 bytes) recorded and not received yet"
    assert lines[6] == "  open problems 0"
    code, out, _ = run(capsys, "status", "--config", config, "--json")
    [device] = json.loads(out)["devices"]
    assert (device["records"], device["files_stored"], device["bytes_stored"], device["open_problems"]) == (
        9, 5, 327680, 0)
    assert device["last_session"]["session"] == "s1" and device["last_session"]["offset_us"] == 1500


def test_bodycam_verify_checks_the_station_copy(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                synced_station: tuple[Path, DeviceSide]) -> None:
    from agent import verify_cli

    copy = tmp_path / "data" / "devices" / DEVICE
    assert verify_cli.main([str(copy), "--pubkey", str(pem_file(tmp_path, seeded_key(1)))]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("INTACT: 9 records verified")


def test_problems_list_and_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  make_store: StoreFactory) -> None:
    config = write_config(tmp_path)
    station = recent_station(tmp_path / "data")
    started = station.clock.wall_us
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE, device_clock_us=started)
    side.hello()
    side.records(side.lines()[:2])
    station.send(DEVICE, "done", Done("s1", 9, "0" * 64).encode())
    station.send("dev-0009", "hello", b"{}")
    station.close()
    code, out, _ = run(capsys, "problems", "--config", config)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"gap: device {DEVICE} seq 3: records 3..9 missing (at 20")
    assert lines[1].startswith("unknown-device: device dev-0009: device not enrolled")
    code, out, _ = run(capsys, "problems", "--config", config, "--device", DEVICE, "--json")
    assert code == 1
    assert [(p["kind"], p["seq"], p["reason"]) for p in json.loads(out)] == [("gap", 3, "records 3..9 missing")]
    code, out, _ = run(capsys, "status", "--config", config)
    assert code == 1 and "  open problems 1 (gap 1), holes: records 3..9 missing" in out.splitlines()
    assert "1 open problem(s) about messages from no enrolled device (see problems)" in out


def test_problems_none(capsys: pytest.CaptureFixture[str], synced_station: tuple[Path, DeviceSide]) -> None:
    config, _ = synced_station
    assert run(capsys, "problems", "--config", config)[:2] == (0, "no problems\n")


def test_timeline_of_the_station_copy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path)
    key = seeded_key(3)
    root = tmp_path / "device"
    with Ledger.open(root, key, DEVICE, FakeClock()) as ledger:
        ledger.append("case-open", {"case_id": "case-7", "procedure": "inspection", "officer": "A1"})
        ledger.append("stage", {"case_id": "case-7", "stage": "announce", "status": "done", "officer": "A1"})
        ledger.append("case-close", {"case_id": "case-7", "officer": "A1", "missing": ["report"]})
    station = Station(tmp_path / "data")
    station.enroll(DEVICE, key)
    DeviceSide(station, root, DEVICE).sync()
    assert station.index.cases(DEVICE) == [CaseRow(
        device=DEVICE, case_id="case-7", procedure="inspection", opened_seq=2, closed_seq=4, missing=("report",),
        stages=(CaseStage("announce", "done", 3),),
    )]
    station.close()
    code, out, _ = run(capsys, "timeline", "--config", config, "--device", DEVICE)
    assert code == 0 and "case-7" in out and "WARNING" not in out
    code, out, _ = run(capsys, "timeline", "--config", config, "--device", DEVICE, "--json")
    result = json.loads(out)
    assert result["ledger_intact"] and [c["case_id"] for c in result["timeline"]] == ["case-7"]
    code, _, err = run(capsys, "timeline", "--config", config, "--device", "dev-0404")
    assert code == 2 and one_line(err) == "bodycam-station: device dev-0404: not enrolled at this station"


def test_timeline_warns_about_an_altered_copy(capsys: pytest.CaptureFixture[str],
                                              synced_station: tuple[Path, DeviceSide]) -> None:
    config, _ = synced_station
    ledger = config.parent / "data" / "devices" / DEVICE / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.chmod(0o644)  # read-only as stored (sync/station/sealing.py): what root or the owner can undo
    ledger.write_bytes(b"".join(lines[:3] + lines[4:]))  # one record cut out after it was stored
    code, out, _ = run(capsys, "timeline", "--config", config, "--device", DEVICE)
    assert code == 1 and out.startswith(f"WARNING: the ledger copy of {DEVICE} did NOT verify")
