"""Issue 12, fault 2: the station's copy is verified as an archive, through a real sync.

bodycam-sync -> Mosquitto -> bodycam-station serve, the device purging what the station acknowledged; then
footage is deleted from (or changed in) a copy of the station's folder, and ``bodycam-verify`` must say so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import wait_for, writable_tree
from sync_world import BIN, SyncWorld
from test_sync_end_to_end import DEVICE, enrolled_store, segment_files, simulated_store

from agent.evidence.keys import load_or_create_device_key
from agent.evidence.store import read_records


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "bodycam-verify"), *map(str, args)], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def purged_copy(world: SyncWorld, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(a copy of the station's folder for dev-a, the device's public key, the device's store) after a sync
    in which the device purged every acknowledged segment."""
    store, key_path = enrolled_store(world, tmp_path)
    result = world.sync_once(world.device_config(DEVICE, store, key_path, purge=True))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list((store / "segments").iterdir())
    copy = tmp_path / "copy"
    writable_tree(Path(shutil.copytree(world.device_copy(DEVICE), copy)))
    assert any(r.record.type == "purge" for r in read_records(copy)), "the copy holds the device's purge records"
    return copy, tmp_path / f"{DEVICE}.pub", store


def test_segment_deleted_from_the_station_copy_is_not_intact(purged_copy: tuple[Path, Path, Path]) -> None:
    copy, pub, _store = purged_copy
    assert verify(copy, "--pubkey", pub).returncode == 0
    (copy / "segments" / "000002.ts").unlink()

    result = verify(copy, "--pubkey", pub)

    assert result.returncode == 1, result.stdout
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1 and "segment 000002.ts: file missing from this archive copy" in problems[0]
    assert "the device purged its own copy" in problems[0]
    assert "verified as an archive" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("NOT INTACT: 1 problem(s)")


def test_every_segment_deleted_names_each(purged_copy: tuple[Path, Path, Path]) -> None:
    copy, pub, _store = purged_copy
    names = sorted(p.name for p in (copy / "segments").iterdir())
    shutil.rmtree(copy / "segments")

    result = verify(copy, "--pubkey", pub, "--json")

    assert result.returncode == 1
    assert all(f"segment {name}: file missing" in result.stdout for name in names)


def test_segment_changed_in_the_station_copy_is_not_intact(purged_copy: tuple[Path, Path, Path]) -> None:
    copy, pub, _store = purged_copy
    target = copy / "segments" / "000002.ts"
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))

    result = verify(copy, "--pubkey", pub)

    assert result.returncode == 1
    assert "segment 000002.ts: sha256 mismatch" in result.stdout


def test_device_store_mode_is_refused_on_a_station_copy(purged_copy: tuple[Path, Path, Path]) -> None:
    """The copy carries the station's signed acks: claiming it is a device store does not excuse anything."""
    copy, pub, store = purged_copy
    (copy / "segments" / "000002.ts").unlink()

    result = verify(copy, "--pubkey", pub, "--device-store")

    assert result.returncode == 1
    assert "it is a station copy" in result.stdout
    # The device's own store, where the purge records do excuse the removed files, verifies as one.
    device = verify(store, "--pubkey", pub, "--device-store")
    assert device.returncode == 0, device.stdout
    assert "verified as a device's own store" in device.stdout
    # ... and not as an archive, which it is not; the verdict says how to verify a device's own store.
    archive = verify(store, "--pubkey", pub)
    assert archive.returncode == 1
    assert "hint: if PATH is a device's own store" in archive.stdout and "--device-store" in archive.stdout


def test_station_key_checks_the_acks_the_copy_carries(world: SyncWorld,
                                                      purged_copy: tuple[Path, Path, Path]) -> None:
    copy, pub, _store = purged_copy
    intact = verify(copy, "--pubkey", pub, "--station-key", world.station_pub, "--json")
    assert intact.returncode == 0, intact.stdout
    # Cutting the ledger back (and removing the footage its records named) leaves a shorter chain that
    # verifies on its own; the station's signed acks show what is gone.
    lines = (copy / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    first_segment = next(r.seq for r in read_records(copy) if r.record.type == "segment")
    (copy / "ledger.jsonl").chmod(0o644)
    (copy / "ledger.jsonl").write_bytes(b"".join(lines[: first_segment - 1]))
    shutil.rmtree(copy / "segments")

    result = verify(copy, "--pubkey", pub, "--station-key", world.station_pub)

    assert result.returncode == 1
    assert "which this ledger copy does not hold" in result.stdout
    assert "no record in this copy vouches for it" in result.stdout
    # Without the acks log and with the station key given, the copy cannot be shown complete.
    (copy / "station-acks.jsonl").unlink()
    assert "no station-acks.jsonl" in verify(copy, "--pubkey", pub, "--station-key", world.station_pub).stdout


def test_station_copy_still_holds_what_the_device_purged(world: SyncWorld,
                                                         purged_copy: tuple[Path, Path, Path]) -> None:
    copy, _pub, _store = purged_copy
    assert segment_files(copy) == segment_files(world.device_copy(DEVICE))


def test_serve_scrubs_at_its_interval(world: SyncWorld, tmp_path: Path) -> None:
    """``bodycam-station serve`` with ``scrub.interval_seconds = 1``: footage deleted from the station's
    folder while it runs becomes a missing-evidence problem naming device, seq and file."""
    with open(world.config, "a") as config:
        config.write("\n[scrub]\ninterval_seconds = 1\nslice_mib = 1\n")
    store, key_path = simulated_store(tmp_path)
    world.enroll(DEVICE, load_or_create_device_key(key_path))
    world.start_station()
    result = world.sync_once(world.device_config(DEVICE, store, key_path, purge=True))
    assert result.returncode == 0, result.stderr[-3000:]
    [(seq, name)] = world.query("SELECT seq, name FROM files WHERE device = ? AND name LIKE ?", DEVICE,
                                "segments/000002.%")
    segment = world.device_copy(DEVICE) / name
    segment.parent.chmod(0o750)  # what root, or the station's user on purpose, can do
    segment.unlink()

    wait_for(lambda: any(kind == "missing-evidence" for kind, _seq, _reason in world.problems(DEVICE)), 20,
             "the scrub to report the deleted segment")
    [(object_name, found_seq)] = world.query("SELECT object, seq FROM problems WHERE kind = 'missing-evidence'")
    assert (object_name, found_seq) == (name, seq)
    assert "scrub: 1 device(s)" in world.log_text()
    assert world.stop_station() == 0
