"""``bodycam-sync`` as a process against a real Mosquitto and a minimal station: ``--once`` with the real
custody (receipts and purges in the ledger), the daemon's clean stop, and resuming after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from broker_fixture import MosquittoBroker
from helpers import seeded_key, wait_for
from upload_helpers import FakeStation, segment_bytes, sync_device

from agent.evidence.archive import DEVICE_STORE
from agent.evidence.keys import DeviceKey
from agent.evidence.store import StoredFile, read_records
from agent.evidence.verify import verify_store
from firmware_config.toml_write import dumps
from sync.uploader import cli as uploader_cli

KIB = 1024
SCRIPT = Path(sys.executable).parent / "bodycam-sync"


def make_device(tmp_path: Path, broker: MosquittoBroker, sizes: list[int],
                **sync: Any) -> tuple[Path, Path, list[StoredFile], DeviceKey]:
    """(config file, store, files, station key) for device "dev-a"."""
    device = sync_device(tmp_path, broker, sizes, **sync)
    config = tmp_path / "device.toml"
    config.write_text(dumps(device.tables))
    return config, device.store, device.files, device.station_key


def test_once_records_receipts_purges_and_exits_0(mosquitto: MosquittoBroker, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config, store, files, station_key = make_device(tmp_path, mosquitto, [100 * KIB, 30 * KIB])
    station = FakeStation(mosquitto, station_key)
    try:
        assert uploader_cli.main(["--config", str(config), "--once", "--timeout", "60"]) == 0
    finally:
        station.close()
    records = read_records(store)
    types = [r.record.type for r in records]
    # Receipts for the acks that brought news, a signed purge record per acknowledged segment, files gone.
    assert "receipt" in types and types.count("purge") == len(files)
    assert not any((store / f.name).exists() for f in files)
    assert {f.name: segment_bytes(i, f.size) for i, f in enumerate(files, start=1)} == station.stored
    # The station holds the whole chain, receipts and purges included, and the store still verifies.
    assert station.seq == records[-1].seq
    assert verify_store(store, seeded_key(1).public_key, mode=DEVICE_STORE).intact

    # Undocked: no broker. The run says so, and that the earlier sync acknowledged everything there is.
    capsys.readouterr()
    mosquitto.stop()
    assert uploader_cli.main(["--config", str(config), "--once", "--timeout", "2"]) == 1
    said = capsys.readouterr().err
    assert "no connection to the station in this run" in said and "cannot connect" in said, said
    assert f"every record up to seq {records[-1].seq} and every file was acknowledged by an earlier sync" in said
    assert capsys.readouterr().out == ""


def test_once_exits_1_when_the_broker_is_unreachable(mosquitto: MosquittoBroker, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    config, store, _, _ = make_device(tmp_path, mosquitto, [10 * KIB])
    mosquitto.stop()
    assert uploader_cli.main(["--config", str(config), "--once", "--timeout", "2"]) == 1
    assert "not everything is acknowledged" in caplog.text and "cannot connect" in caplog.text
    head = read_records(store)[-1].seq
    assert "no connection to the station in this run" in caplog.text
    assert f"not acknowledged yet: records seq 1..{head} and 1 file(s)" in caplog.text


def test_daemon_stops_cleanly_on_sigterm(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    config, _, files, station_key = make_device(tmp_path, mosquitto, [50 * KIB])
    station = FakeStation(mosquitto, station_key)
    process = subprocess.Popen([SCRIPT, "--config", str(config)], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: files[0].name in station.stored, 20, f"{files[0].name} at the station")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
        station.close()
    assert process.returncode == 0, err.decode(errors="replace")
    assert b"Traceback" not in err and b"sync session" in err


def test_resumes_after_sigkill_without_resending_confirmed_chunks(mosquitto: MosquittoBroker,
                                                                  tmp_path: Path) -> None:
    size = 64 * 64 * KIB
    config, _, files, station_key = make_device(tmp_path, mosquitto, [size], chunk_kib=64, window_chunks=4,
                                                purge=False)
    station = FakeStation(mosquitto, station_key)
    first = subprocess.Popen([SCRIPT, "--config", str(config), "--once"], stderr=subprocess.DEVNULL)
    try:
        station.on_chunk = lambda count: os.kill(first.pid, signal.SIGKILL) if count == 20 else None
        assert first.wait(30) == -signal.SIGKILL
        assert files[0].name not in station.stored
        second = subprocess.run([SCRIPT, "--config", str(config), "--once", "--timeout", "60"],
                                capture_output=True, timeout=90, check=False)
        assert second.returncode == 0, second.stderr.decode(errors="replace")
    finally:
        if first.poll() is None:
            first.kill()
        station.close()
    assert station.stored[files[0].name] == segment_bytes(1, size)
    assert not [c for c in station.chunks if c.already_confirmed]
    assert sum(c.length for c in station.chunks) < size + 8 * 64 * KIB  # at most the unconfirmed window again
