"""The whole sync through a real Mosquitto: bodycam-sync -> broker (TLS, ACL) -> bodycam-station serve.

Every process is real (the broker, the receiver, the uploader); faults are real kills.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import wait_for
from sync_world import BIN, SyncWorld, big_segment_store, ledger_lines

from agent.evidence.archive import DEVICE_STORE
from agent.evidence.keys import DeviceKey, load_or_create_device_key, public_key_pem
from agent.evidence.store import read_records
from agent.evidence.verify import verify_store

DEVICE = "dev-a"


def simulated_store(root: Path, device_id: str = DEVICE) -> tuple[Path, Path]:
    store, key = root / f"{device_id}-store", root / f"{device_id}.key"
    subprocess.run([str(BIN / "bodycam-agent"), "simulate", "--store", str(store), "--key", str(key),
                    "--device-id", device_id, "--seconds", "9", "--fast", "--segment-seconds", "3",
                    "--width", "320", "--height", "240"], check=True, capture_output=True, timeout=120)
    return store, key


def enrolled_store(world: SyncWorld, root: Path) -> tuple[Path, Path]:
    """A simulated store of dev-a and its key file, the device enrolled and the station running."""
    store, key_path = simulated_store(root)
    world.enroll(DEVICE, load_or_create_device_key(key_path))
    world.start_station()
    return store, key_path


def segment_files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((store / "segments").iterdir())}


def test_full_sync_station_copy_verifies_and_is_byte_identical(world: SyncWorld, tmp_path: Path) -> None:
    store, key_path = enrolled_store(world, tmp_path)
    before = segment_files(store)
    assert len(before) >= 3
    config = world.device_config(DEVICE, store, key_path, purge=False)

    result = world.sync_once(config)

    assert result.returncode == 0, result.stderr[-3000:]
    copy = world.device_copy(DEVICE)
    verify = subprocess.run([str(BIN / "bodycam-verify"), str(copy), "--pubkey", str(tmp_path / f"{DEVICE}.pub")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert segment_files(copy) == before
    device_lines = ledger_lines(store)
    copy_lines = ledger_lines(copy)
    # The device appended receipts after the station's copy was taken; the copy is a byte-exact prefix.
    assert copy_lines == device_lines[: len(copy_lines)]
    assert len(copy_lines) >= len(device_lines) - 1
    assert world.problems(DEVICE) == []
    # Receipts name every segment; nothing was purged (purge = false).
    receipts = [r for r in read_records(store) if r.record.type == "receipt"]
    acked = {sha for r in receipts for sha in r.record.body["files"]}
    assert {r.record.body["sha256"] for r in read_records(store) if r.record.type == "segment"} <= acked
    assert segment_files(store) == before
    # The clock offset of the session was measured and kept.
    offsets = world.query("SELECT offset_us, delay_us FROM sessions WHERE device = ? AND t4_us IS NOT NULL", DEVICE)
    assert offsets and all(abs(o) < 5_000_000 and d >= 0 for o, d in offsets)


def test_device_purges_only_acknowledged_segments_with_signed_records(world: SyncWorld, tmp_path: Path) -> None:
    store, key_path = enrolled_store(world, tmp_path)
    before = segment_files(store)
    config = world.device_config(DEVICE, store, key_path, purge=True)

    result = world.sync_once(config)

    assert result.returncode == 0, result.stderr[-3000:]
    records = read_records(store)
    purged = {r.record.body["file"].rsplit("/", 1)[-1] for r in records if r.record.type == "purge"}
    assert purged == set(before)
    assert not list((store / "segments").iterdir())
    report = verify_store(store, load_or_create_device_key(key_path).public_key, mode=DEVICE_STORE)
    assert report.intact, [str(p) for p in report.problems]
    # The station still holds every purged segment, byte for byte.
    assert segment_files(world.device_copy(DEVICE)) == before


def test_acks_signed_by_another_key_are_refused_and_nothing_is_purged(world: SyncWorld, tmp_path: Path) -> None:
    store, key_path = enrolled_store(world, tmp_path)
    impostor = tmp_path / "impostor.pub"
    impostor.write_text(public_key_pem(DeviceKey.generate().public_key))
    before = segment_files(store)
    config = world.device_config(DEVICE, store, key_path, purge=True, station_key=str(impostor))

    result = world.sync_once(config, timeout=8)

    assert result.returncode == 1
    assert "signed by another station key" in result.stderr
    assert not [r for r in read_records(store) if r.record.type in ("receipt", "purge")]
    assert segment_files(store) == before


CHUNK = 64 * 1024
WINDOW = 4


def one_big_segment(world: SyncWorld, tmp_path: Path, size: int) -> tuple[Path, Path]:
    """dev-a's store holding one segment of ``size`` random bytes, enrolled, the station running; returns the
    segment and a device config sending it in small chunks with a small window (so a kill lands mid-file)."""
    key_path = tmp_path / "dev-a.key"
    key = load_or_create_device_key(key_path)
    store = tmp_path / "dev-a-store"
    (segment,) = big_segment_store(store, key, DEVICE, [size])
    world.enroll(DEVICE, key)
    world.start_station()
    config = world.device_config(DEVICE, store, key_path, purge=False, chunk_kib=CHUNK // 1024,
                                 window_chunks=WINDOW)
    return segment, config


def chunks_written(world: SyncWorld) -> int:
    return int(world.query("SELECT COALESCE(SUM(chunks_written), 0) FROM sessions")[0][0])


def test_broker_killed_mid_segment_resumes_without_storing_a_chunk_twice(world: SyncWorld, tmp_path: Path) -> None:
    segment, config = one_big_segment(world, tmp_path, 24 * 1024 * 1024)
    uploader = world.start_uploader(config, timeout=150)

    wait_for(lambda: chunks_written(world) >= 40, 60, "the first chunks to be stored")
    world.broker.kill()
    at_kill = chunks_written(world)
    world.broker.start()

    assert uploader.wait(150) == 0, world.uploader_log(config)[-3000:]
    total_chunks = -(-segment.stat().st_size // CHUNK)
    assert at_kill < total_chunks
    assert chunks_written(world) == total_chunks  # every chunk written exactly once, across the outage
    copy = world.device_copy(DEVICE) / "segments" / segment.name
    assert copy.read_bytes() == segment.read_bytes()
    assert world.query("SELECT COUNT(*) FROM files WHERE device = ?", DEVICE)[0][0] == 1


def test_uploader_sigkilled_mid_segment_resumes_where_it_stopped(world: SyncWorld, tmp_path: Path) -> None:
    segment, config = one_big_segment(world, tmp_path, 16 * 1024 * 1024)
    first = world.start_uploader(config)
    wait_for(lambda: chunks_written(world) >= 30, 60, "the first chunks to be stored")
    first.kill()
    first.wait(10)
    held = world.query("SELECT COALESCE(SUM(length), 0) FROM ranges WHERE device = ?", DEVICE)[0][0]
    assert held > 0

    second = world.sync_once(config)

    assert second.returncode == 0, second.stderr[-3000:]
    total_chunks = -(-segment.stat().st_size // CHUNK)
    assert chunks_written(world) == total_chunks
    duplicates = world.query("SELECT COALESCE(SUM(duplicate_chunks), 0) FROM sessions")[0][0]
    assert duplicates <= WINDOW * 2  # at most what was in flight when the uploader died
    assert (world.device_copy(DEVICE) / "segments" / segment.name).read_bytes() == segment.read_bytes()


def test_station_killed_between_storing_and_acknowledging(world: SyncWorld, tmp_path: Path) -> None:
    key_path = tmp_path / "dev-a.key"
    key = load_or_create_device_key(key_path)
    store = tmp_path / "dev-a-store"
    segments = big_segment_store(store, key, DEVICE, [512 * 1024, 256 * 1024])
    world.enroll(DEVICE, key)
    station = world.start_station(fault="kill-after-store")
    config = world.device_config(DEVICE, store, key_path, purge=False)
    uploader = world.start_uploader(config, timeout=120)

    assert station.wait(60) == -9  # it killed itself right after storing (one batch's worth of) files
    stored = world.query("SELECT name, sha256 FROM files WHERE device = ?", DEVICE)
    assert 1 <= len(stored) <= 2
    receipts = [r for r in read_records(store) if r.record.type == "receipt"]
    assert not {sha for _n, sha in stored} & {sha for r in receipts for sha in r.record.body["files"]}

    world.start_station()
    assert uploader.wait(120) == 0, world.uploader_log(config)[-3000:]
    names = [n for (n,) in world.query("SELECT name FROM files WHERE device = ? ORDER BY name", DEVICE)]
    assert names == [f"segments/{p.name}" for p in segments]
    objects = [p for p in (world.data / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 2
    receipts = [r for r in read_records(store) if r.record.type == "receipt"]
    acked = {sha for r in receipts for sha in r.record.body["files"]}
    assert {sha for _n, sha in world.query("SELECT name, sha256 FROM files")} <= acked

