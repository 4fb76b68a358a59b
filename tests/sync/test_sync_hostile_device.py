"""One enrolled device with a genuine key and certificate, attacking the station's availability.

Every number a device chooses (a file's size, a chunk's offset, how much it stages) is bounded before the
station believes it; what a device's input breaks is that device's problem, never a station fault; a message
that once made the receiver fail is set aside, not redelivered in a loop; and through all of it a second
device keeps being served by the same ``bodycam-station serve`` process.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from helpers import wait_for
from sync_world import SyncWorld
from test_sync_adversarial import DeviceStore, RawDevice, make_store, running_world

from agent.evidence.encoding import MAX_SAFE_INTEGER
from agent.evidence.ledger import Ledger
from sync.protocol import ChunkHeader, encode_chunk

DEVICE, OTHER = "dev-a", "dev-b"


def forge_claim(store_root: Path, key_path: Path, name: str, size: int, sha256: str = "ab" * 32) -> int:
    """The device signs, with its own enrolled key, a segment record for a file it never wrote; its seq."""
    from agent.evidence.keys import load_or_create_device_key

    with Ledger.open(store_root, load_or_create_device_key(key_path), DEVICE, boot_reason="test") as ledger:
        return ledger.append("segment", {"file": name, "sha256": sha256, "size": size}).seq


def other_device_syncs(world: SyncWorld, tmp_path: Path) -> None:
    """dev-b's real uploader syncs everything through the same receiver."""
    store = make_store(tmp_path / "b", OTHER, records=6, segments={3: 20_000}, seed=3)
    if not world.query("SELECT id FROM devices WHERE id = ?", OTHER):
        world.enroll(OTHER, store.key)
    config = world.device_config(OTHER, store.root, store.key_path)
    result = world.sync_once(config, timeout=40)
    assert result.returncode == 0, result.stdout + result.stderr + world.log_text()[-3000:]
    assert world.query("SELECT count(*) FROM files WHERE device = ?", OTHER) == [(1,)]


def records_in_then_station_stopped(world: SyncWorld, tmp_path: Path) -> tuple[DeviceStore, RawDevice]:
    """dev-a's records (one segment among them) stored, its file not sent, and the receiver stopped."""
    store = make_store(tmp_path / "a", DEVICE, records=4, segments={3: 9000})
    running_world(world, store)
    device = RawDevice(world)
    device.clock(device.hello())
    device.records(store.lines())
    device.barrier()
    world.stop_station()
    return store, device


def huge_chunk(device: RawDevice, name: str, size: int, offset: int) -> None:
    data = b"\x00"
    header = ChunkHeader(name, "ab" * 32, size, offset, 1, hashlib.sha256(data).hexdigest())
    device.publish("chunk", encode_chunk(header, data))


def test_a_file_claimed_past_any_real_size_is_refused_and_the_station_keeps_serving(world: SyncWorld,
                                                                                     tmp_path: Path) -> None:
    store = make_store(tmp_path / "a", DEVICE, records=3)
    seq = forge_claim(store.root, store.key_path, "segments/999999.ts", MAX_SAFE_INTEGER)
    running_world(world, store)
    device = RawDevice(world)
    device.clock(device.hello())
    device.records(store.lines())
    huge_chunk(device, "segments/999999.ts", MAX_SAFE_INTEGER, MAX_SAFE_INTEGER - 1)
    device.barrier()
    assert world.station is not None and world.station.poll() is None, world.log_text()[-3000:]
    kinds = [kind for kind, _seq, _reason in world.problems()]
    assert "station-fault" not in kinds, world.problems()
    # The genuine record is kept (it is what the device holds), its claim is refused and said so.
    assert world.query("SELECT max(seq) FROM records WHERE device = ?", DEVICE) == [(seq,)]
    refused = [(k, s, r) for k, s, r in world.problems(DEVICE) if s == seq]
    assert refused and "segments/999999.ts" in refused[0][2] and "limit" in refused[0][2], world.problems()
    assert not (world.data / "staging").exists() or not any((world.data / "staging").rglob("*")), "nothing staged"
    other_device_syncs(world, tmp_path)


def test_a_chunk_past_the_claimed_size_of_a_real_claim_is_refused(world: SyncWorld, tmp_path: Path) -> None:
    store = make_store(tmp_path / "a", DEVICE, records=4, segments={3: 9000})
    running_world(world, store)
    device = RawDevice(world)
    device.clock(device.hello())
    device.records(store.lines())
    [file] = store.files()
    huge_chunk(device, file.name, MAX_SAFE_INTEGER, MAX_SAFE_INTEGER - 1)  # lies about the size as well
    device.barrier()
    assert world.station is not None and world.station.poll() is None
    assert any("chunk" in e.reason or file.name in e.reason for e in device.errors()), device.errors()
    assert "station-fault" not in [k for k, _s, _r in world.problems()]
    other_device_syncs(world, tmp_path)


def test_a_message_the_receiver_fails_on_is_set_aside_and_the_rest_goes_on(world: SyncWorld,
                                                                             tmp_path: Path) -> None:
    store, device = records_in_then_station_stopped(world, tmp_path)
    # A receiver bug that a chunk triggers (injected): the chunk is set aside, reported against the device that
    # sent it, answered, and settled with the broker; the receiver keeps serving.
    world.start_station(fault=f"raise-on-chunk:{DEVICE}")
    [file] = store.files()
    device.chunk(file, store.content(file), 0, 4096)
    wait_for(lambda: any(k == "poison-message" for k, _s, _r in world.problems(DEVICE)), 20,
             "the set-aside message to be reported")
    assert world.station is not None and world.station.poll() is None, world.log_text()[-3000:]
    [poison] = [r for k, _s, r in world.problems(DEVICE) if k == "poison-message"]
    assert "RuntimeError" in poison and "set aside" in poison, poison
    assert sorted(p.suffix for p in (world.data / "set-aside").glob("*.*")) == [".json", ".msg"]
    device.barrier()
    assert any("set aside" in e.reason for e in device.errors()), device.errors()
    other_device_syncs(world, tmp_path)  # served by the same process, in spite of the bug
    # Settled: a restart does not get it again (the broker had its PUBACK), and with the bug gone the
    # device's own resend goes through.
    world.stop_station()
    world.start_station()
    device.upload(file, store.content(file))
    device.barrier()
    assert world.query("SELECT count(*) FROM files WHERE device = ?", DEVICE) == [(1,)]
    assert [k for k, _s, _r in world.problems(DEVICE)].count("poison-message") == 1
    assert "station-fault" not in [k for k, _s, _r in world.problems()]


def test_staging_per_device_stays_within_its_allowance(world: SyncWorld, tmp_path: Path) -> None:
    """Genuine claims, each started and never finished: the device's staged bytes never pass its allowance
    (its older unfinished files are dropped from staging), and a file it then sends whole is stored."""
    store = make_store(tmp_path / "a", DEVICE, records=2)
    names = [f"segments/{n:06d}.ts" for n in range(1, 5)]
    for name in names:
        forge_claim(store.root, store.key_path, name, 1024 * 1024)
    world.config.write_text(world.config.read_text() + "\n[limits]\nmax_file_bytes = 1048576\n"
                            "max_staging_bytes_per_device = 1048576\n")
    running_world(world, store)
    device = RawDevice(world)
    device.clock(device.hello())
    device.records(store.lines())
    data = os.urandom(400_000)
    for name in names:
        header = ChunkHeader(name, "ab" * 32, 1024 * 1024, 0, len(data), hashlib.sha256(data).hexdigest())
        device.publish("chunk", encode_chunk(header, data))
        device.barrier()
        staged = sum(p.stat().st_size for p in (world.data / "staging").rglob("*") if p.is_file())
        assert staged <= 1024 * 1024, staged
    assert world.query("SELECT sum(length) FROM ranges WHERE device = ?", DEVICE)[0][0] <= 1024 * 1024
    assert "station-fault" not in [k for k, _s, _r in world.problems()]
    other_device_syncs(world, tmp_path)


def test_a_rolled_back_device_is_seen_by_the_station_and_told_plainly(world: SyncWorld, tmp_path: Path) -> None:
    store = make_store(tmp_path / "a", DEVICE, records=12, segments={5: 9000})
    running_world(world, store)
    config = world.device_config(DEVICE, store.root, store.key_path, purge=False)
    first = world.sync_once(config, timeout=40)
    assert first.returncode == 0, first.stdout + first.stderr
    held = world.query("SELECT max(seq) FROM records WHERE device = ?", DEVICE)[0][0]
    assert held >= 12
    # The ledger is cut back to its first 3 records (an old card image restored), then the device records on.
    lines = store.lines()
    (store.root / "ledger.jsonl").write_bytes(b"".join(lines[:3]))
    with Ledger.open(store.root, store.key, DEVICE, boot_reason="test") as ledger:
        ledger.append("event", {"kind": "after-restore"})
    result = world.sync_once(config, timeout=20)
    assert result.returncode == 1
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert "cut back" in last and f"holds seq {held}" in last and "did not answer" not in last, last
    # Recorded on after the cut, its records from seq 4 on are not the station's: a rollback and a fork.
    head, _link = store.head()
    assert 3 < head < held
    rollbacks = [(s, r) for k, s, r in world.problems(DEVICE) if k == "rollback"]
    assert rollbacks == [(head, rollbacks[0][1])], world.problems(DEVICE)
    reason = rollbacks[0][1]
    assert reason.startswith(f"rollback and fork: the device's ledger ends at seq {head}"), reason
    assert f"holds seq {held}" in reason, reason
    status = world.station_cli("status", check=False)
    assert status.returncode == 1
    assert f"CUSTODY: rollback and fork: the device's ledger ends at seq {head}" in status.stdout, status.stdout
    assert world.query("SELECT max(seq) FROM records WHERE device = ?", DEVICE) == [(held,)], "nothing lost"


def test_a_message_that_kills_the_receiver_is_set_aside_after_its_second_death(world: SyncWorld,
                                                                                tmp_path: Path) -> None:
    store, device = records_in_then_station_stopped(world, tmp_path)
    [file] = store.files()
    # A chunk that kills the process outright (injected): no exception is seen, the broker redelivers it.
    world.start_station(fault=f"die-on-chunk:{DEVICE}")
    device.chunk(file, store.content(file), 0, 4096)
    assert world.station is not None and world.station.wait(20) == -9
    world.start_station(fault=f"die-on-chunk:{DEVICE}")  # redelivered, handled alone, dies again
    assert world.station.wait(20) == -9, world.log_text()[-2000:]
    world.start_station(fault=f"die-on-chunk:{DEVICE}")  # two deaths: set aside unhandled, settled
    wait_for(lambda: any(k == "poison-message" for k, _s, _r in world.problems(DEVICE)), 20,
             "the message to be set aside")
    assert world.station.poll() is None, world.log_text()[-3000:]
    [reason] = [r for k, _s, r in world.problems(DEVICE) if k == "poison-message"]
    assert "died 2 times" in reason, reason
    other_device_syncs(world, tmp_path)
    assert world.station.poll() is None
