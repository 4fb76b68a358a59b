"""Storage policy and write errors: the pure policy, a really full disk (a small tmpfs), a floor reached
first, and injected EIO at each place a write can fail (packet, checkpoint sync, close).

On every path the recorder must stop cleanly: keep what reached the disk, sign it (or leave it for the
next open to recover), say why in a storage-full record, open nothing new, and leave a store that verifies.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from helpers import FakeClock
from recorder_support import (
    DEVICE,
    RecorderFactory,
    barrier,
    decode,
    decode_prefix,
    expected_ticks,
    of_type,
    packets,
    push,
    records,
    segment_files,
    settings,
    sha256,
)

from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.evidence.verify import verify_store
from agent.recorder import segment_file, segmenter
from agent.recorder.segment_file import HashingWriter
from agent.recorder.segmenter import RecorderState
from agent.recorder.storage import StorageState, StorageThresholds, free_bytes, storage_state

KIB = 1024

# --- the pure policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "state"),
    [
        (0, StorageState.FULL),
        (100, StorageState.FULL),  # at the floor: full, not low
        (101, StorageState.LOW),
        (1000, StorageState.LOW),  # at the low mark: low
        (1001, StorageState.OK),
        (10**15, StorageState.OK),
    ],
)
def test_storage_state_boundaries(free: int, state: StorageState) -> None:
    assert storage_state(free, StorageThresholds(low_bytes=1000, floor_bytes=100)) is state


def test_storage_state_defaults_and_zero_thresholds() -> None:
    defaults = StorageThresholds()
    assert defaults.floor_bytes < defaults.low_bytes
    assert storage_state(defaults.floor_bytes, defaults) is StorageState.FULL
    assert storage_state(defaults.floor_bytes + 1, defaults) is StorageState.LOW
    assert storage_state(defaults.low_bytes + 1, defaults) is StorageState.OK
    zero = StorageThresholds(low_bytes=0, floor_bytes=0)
    assert storage_state(0, zero) is StorageState.FULL  # a disk with nothing left is full whatever the floor
    assert storage_state(1, zero) is StorageState.OK


def test_free_bytes_reads_the_file_system(tmp_path: Path) -> None:
    # Other tests write to the same disk meanwhile: the reading lies between one taken before and one after.
    before = os.statvfs(tmp_path)
    measured = free_bytes(tmp_path)
    after = os.statvfs(tmp_path)
    readings = (before.f_bavail * before.f_frsize, after.f_bavail * after.f_frsize)
    assert min(readings) <= measured <= max(readings)
    assert measured % before.f_frsize == 0  # whole blocks that are free to a user, not bytes guessed


# --- shared checks ---------------------------------------------------------------------------------


def assert_halted_cleanly(root: Path, seg: segmenter.Segmenter, key: DeviceKey, reason_part: str) -> None:
    """HALTED; the last record is the one storage-full, naming ``reason_part``; no recorder fault; every
    segment file has its record, hashes as signed and is read-only; the store verifies."""
    assert seg.state is RecorderState.HALTED, seg.halt_reason
    recs = records(root)
    full = of_type(recs, "storage-full")
    assert len(full) == 1, [dict(r.body) for r in full]
    assert recs[-1] == full[0]
    assert reason_part in full[0].body["reason"] and reason_part in (seg.halt_reason or "")
    assert not of_type(recs, "event", "recorder-fault"), [dict(r.body) for r in of_type(recs, "event")]
    named = [r.body["file"] for r in of_type(recs, "segment")]
    files = segment_files(root)
    assert named == [f"segments/{p.name}" for p in files], "a segment file without its record (or the reverse)"
    for record in of_type(recs, "segment"):
        path = root / record.body["file"]
        data = path.read_bytes()
        assert (record.body["size"], record.body["sha256"]) == (len(data), sha256(data))
        assert stat.S_IMODE(path.stat().st_mode) == 0o444, f"{path.name} is recorded but still writable"
    report = verify_store(root, key.public_key)
    assert report.intact, [str(p) for p in report.problems]


def assert_partial_segment_decodes(root: Path, record_body: dict[str, object], pushed_from: int, scratch: Path) -> None:
    """The incomplete segment decodes up to its cut: at least the frames its record counts, in order."""
    path = root / str(record_body["file"])
    frames, _error = decode_prefix(path.read_bytes(), scratch)
    count = int(str(record_body["frames"]))
    assert len(frames) >= count
    assert [f.pts for f in frames][:count] == expected_ticks(packets(900)[pushed_from : pushed_from + count])


# --- injected write errors (no root needed) ----------------------------------------------------------


def eio() -> OSError:
    return OSError(errno.EIO, os.strerror(errno.EIO))


def test_eio_while_writing_a_packet_signs_the_partial_segment_and_halts(
    recorder: RecorderFactory, monkeypatch: pytest.MonkeyPatch, key: DeviceKey
) -> None:
    real_write = HashingWriter.write
    written = [0]

    def failing_write(self: HashingWriter, data: bytes | memoryview) -> int:
        if written[0] > 100 * KIB:  # the card fails in the middle of the third segment
            raise eio()
        written[0] += len(data)
        return real_write(self, data)

    monkeypatch.setattr(HashingWriter, "write", failing_write)
    ledger, seg = recorder(segment_seconds=4.0)
    root = ledger.layout.root
    pushed = packets(900)[:450]
    assert seg.start_recording().wait(10)
    push(seg, pushed)
    barrier(seg)
    assert_halted_cleanly(root, seg, key, "write failed: EIO")
    recs = records(root)
    *closed, partial = of_type(recs, "segment")
    assert partial.body["incomplete"] == "write failed (Input/output error)"
    assert all("incomplete" not in r.body for r in closed) and len(closed) == 2
    assert [f.pts for r in closed for f in decode(root / r.body["file"])] == expected_ticks(pushed[:240])
    assert_partial_segment_decodes(root, dict(partial.body), 240, root.parent / "partial.ts")
    # Every frame is accounted for: written, or arrived after the halt.
    assert seg.stats.frames_written + seg.stats.frames_after_halt == len(pushed) == seg.stats.frames_in
    assert seg.stats.frames_written == 240 + partial.body["frames"]
    # Halted stays halted: a start does nothing, frames are only counted.
    assert seg.start_recording().wait(10)
    push(seg, packets(900)[450:480])
    barrier(seg)
    assert seg.state is RecorderState.HALTED and len(segment_files(root)) == 3


def test_eio_at_a_checkpoint_sync_halts_without_opening_a_new_segment(
    recorder: RecorderFactory, monkeypatch: pytest.MonkeyPatch, key: DeviceKey
) -> None:
    calls = [0]

    def failing_sync(fd: int) -> None:
        calls[0] += 1
        if calls[0] == 5:  # the second checkpoint of the second segment
            raise eio()
        os.fdatasync(fd)

    monkeypatch.setattr(segment_file, "_sync_data", failing_sync)
    ledger, seg = recorder(segment_seconds=4.0)
    root = ledger.layout.root
    pushed = packets(900)[:360]
    assert seg.start_recording().wait(10)
    push(seg, pushed)
    barrier(seg)
    assert_halted_cleanly(root, seg, key, "write failed: EIO")
    first, second = of_type(records(root), "segment")
    assert "incomplete" not in first.body and second.body["incomplete"] == "write failed (Input/output error)"
    assert second.body["frames"] == 60 and second.body["last_ts_us"] == pushed[179][2]
    assert [f.pts for f in decode(root / second.body["file"])] == expected_ticks(pushed[120:180])
    assert seg.stats.frames_written + seg.stats.frames_after_halt == len(pushed)


def test_eio_when_closing_a_segment_signs_it_as_incomplete_and_halts(
    recorder: RecorderFactory, monkeypatch: pytest.MonkeyPatch, key: DeviceKey
) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to tell a segment's descriptor from the ledger's")
    real_fsync = os.fsync
    failed: list[str] = []

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.endswith("000002.ts") and not failed:  # fsync at the close of the second segment
            failed.append(target)
            raise eio()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ledger, seg = recorder(segment_seconds=4.0)
    root = ledger.layout.root
    pushed = packets(900)[:360]
    assert seg.start_recording().wait(10)
    push(seg, pushed)
    barrier(seg)
    assert failed
    assert_halted_cleanly(root, seg, key, "write failed: EIO")
    first, second = of_type(records(root), "segment")
    assert "incomplete" not in first.body
    assert second.body["incomplete"] == "write failed (Input/output error)" and second.body["frames"] == 120
    assert [f.pts for f in decode(root / second.body["file"])] == expected_ticks(pushed[120:240])
    assert seg.stats.frames_written + seg.stats.frames_after_halt == len(pushed)


# --- storage policy through the segmenter with a scripted free space (no root needed) ----------------


def test_low_then_floor_with_scripted_free_space(
    recorder: RecorderFactory, monkeypatch: pytest.MonkeyPatch, key: DeviceKey
) -> None:
    """Free space falls by what the segments take: one storage-low event, then a clean stop at the floor."""
    start_free = 1_000_000
    thresholds = StorageThresholds(low_bytes=start_free - 60_000, floor_bytes=start_free - 150_000)
    ledger, seg_ = recorder(segment_seconds=4.0, thresholds=thresholds)
    root = ledger.layout.root
    seen: list[StorageState] = []
    seg_._on_storage = seen.append  # what RecordingSession passes to drive the LED and health status

    def scripted_free(path: Path) -> int:
        return start_free - sum(p.stat().st_size for p in segment_files(root))

    monkeypatch.setattr(segmenter, "free_bytes", scripted_free)
    pushed = packets(900)
    assert seg_.start_recording().wait(10)
    push(seg_, pushed)
    barrier(seg_)
    assert seen == [StorageState.LOW, StorageState.FULL]
    recs = records(root)
    (low,) = of_type(recs, "event", "storage-low")
    assert start_free - 150_000 < low.body["free_bytes"] <= start_free - 60_000
    assert_halted_cleanly(root, seg_, key, "is at the floor")
    (full,) = of_type(recs, "storage-full")
    assert full.body["free_bytes"] <= start_free - 150_000
    assert full.body["reason"] == f"free space {full.body['free_bytes']} bytes is at the floor"
    assert low.seq < full.seq
    # Stopped at a keyframe: the last segment is closed whole, not marked incomplete.
    segments = of_type(recs, "segment")
    assert all("incomplete" not in r.body for r in segments)
    decoded = [f.pts for r in segments for f in decode(root / r.body["file"])]
    assert decoded == expected_ticks(pushed[: len(decoded)]) and len(decoded) % 30 == 0
    assert seg_.stats.frames_written == len(decoded)
    assert seg_.stats.frames_written + seg_.stats.frames_after_halt == len(pushed)


# --- a really full disk: a small tmpfs ----------------------------------------------------------------


def leave_free(fs: Path, name: str, free: int) -> Path:
    """Fill ``fs`` with a file until about ``free`` bytes are left."""
    filler = fs / name
    size = free_bytes(fs) - free
    assert size > 0, f"only {free_bytes(fs)} bytes free"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())
    return filler


@pytest.mark.parametrize("room_kib", [200, 236, 290])  # where the disk fills shifts the ledger's last page
def test_disk_really_full_stops_cleanly_or_leaves_the_segment_for_recovery(
    small_fs: Path, key: DeviceKey, room_kib: int, tmp_path: Path
) -> None:
    root = small_fs / "store"
    filler = leave_free(small_fs, "filler", room_kib * KIB)
    ledger = Ledger.open(root, key, DEVICE, clock=FakeClock())
    seg = segmenter.Segmenter(ledger=ledger, settings=settings(thresholds=StorageThresholds(low_bytes=0,
                                                                                            floor_bytes=0)))
    seg.start()
    pushed = packets(900)
    try:
        assert seg.start_recording().wait(10)
        push(seg, pushed)
        barrier(seg)
        assert seg.state is RecorderState.HALTED
        assert free_bytes(root) < 8 * KIB  # the disk really filled
        recs = records(root)
        ledger_took_the_records = "ledger" not in (seg.halt_reason or "")
    finally:
        seg.stop()
        ledger.close()
    # Nothing closed earlier is damaged: every whole segment hashes as signed and decodes in order.
    whole = [r for r in of_type(recs, "segment") if "incomplete" not in r.body]
    assert whole, "the disk filled before one segment closed: make room_kib larger"
    decoded = [f.pts for r in whole for f in decode(root / r.body["file"])]
    assert decoded == expected_ticks(pushed[: len(decoded)])
    for record in whole:
        assert sha256((root / record.body["file"]).read_bytes()) == record.body["sha256"]
    partial_name = f"segments/{segment_files(root)[-1].name}"
    assert partial_name not in {r.body["file"] for r in whole}, "no partial segment was kept"

    if ledger_took_the_records:
        # The closing records fitted: the partial segment is signed as incomplete, then storage-full.
        last = of_type(recs, "segment")[-1]
        assert last.body["file"] == partial_name
        assert last.body["incomplete"] == "write failed (No space left on device)"
        assert_halted_cleanly(root, seg, key, "write failed: ENOSPC")
        assert_partial_segment_decodes(root, dict(last.body), len(decoded), tmp_path / "partial.ts")
        filler.unlink()
        with Ledger.open(root, key, DEVICE) as reopened:
            assert reopened.recovered_segments == [] and reopened.recovery_records == []
    else:
        # The ledger itself hit ENOSPC on a closing record: recording stopped, the record is a torn tail,
        # and the partial segment waits for the next open. Only that is wrong with the store now.
        problems = [str(p) for p in verify_store(root, key.public_key).problems]
        assert len(problems) == 2, problems
        label = f"segment {partial_name.split('/')[1]}"
        assert problems[0].endswith(f"{label}: segment left open: checkpoints but no closing record (a crash not "
                                    "yet recovered)") or problems[0] == f"{label}: no record covers this file", problems
        assert "incomplete record at the end of the ledger" in problems[1], problems
        filler.unlink()  # an officer or the station makes room
        with Ledger.open(root, key, DEVICE) as reopened:
            assert [r.record.body["file"] for r in reopened.recovered_segments] == [partial_name]
            assert len(reopened.recovery_records) == 1  # the torn closing record, moved aside
        report = verify_store(root, key.public_key)
        assert report.intact, [str(p) for p in report.problems]
        recs = records(root)
        (recovered,) = of_type(recs, "recovered")
        signed = [r for r in of_type(recs, "checkpoint") if r.body["file"] == partial_name]
        assert recovered.body["signed_bytes"] == sum(r.body["length"] for r in signed)
        frames, _ = decode_prefix((root / partial_name).read_bytes(), tmp_path / "partial.ts")
        assert len(frames) >= sum(r.body["frames"] for r in signed)
        assert [f.pts for f in frames] == expected_ticks(pushed[len(decoded) : len(decoded) + len(frames)])
    print(f"\nroom {room_kib} KiB: {'signed at halt' if ledger_took_the_records else 'recovered at next open'}")


def test_floor_reached_before_the_disk_fills_stops_cleanly_with_a_low_warning_first(
    small_fs: Path, key: DeviceKey
) -> None:
    root = small_fs / "store"
    leave_free(small_fs, "filler", 400 * KIB)
    ledger = Ledger.open(root, key, DEVICE, clock=FakeClock())
    free = free_bytes(root)
    low, floor = free - 80 * KIB, free - 200 * KIB
    seg = segmenter.Segmenter(ledger=ledger, settings=settings(thresholds=StorageThresholds(low_bytes=low,
                                                                                            floor_bytes=floor)))
    seg.start()
    pushed = packets(900)
    try:
        assert seg.start_recording().wait(10)
        push(seg, pushed)
        barrier(seg)
        assert_halted_cleanly(root, seg, key, "is at the floor")
    finally:
        seg.stop()
        ledger.close()
    assert free_bytes(root) > 150 * KIB  # stopped well before the disk filled
    recs = records(root)
    (low_event,) = of_type(recs, "event", "storage-low")
    (full,) = of_type(recs, "storage-full")
    assert floor < low_event.body["free_bytes"] <= low and low_event.seq < full.seq
    assert full.body["free_bytes"] <= floor
    assert full.body["reason"] == f"free space {full.body['free_bytes']} bytes is at the floor"
    segments = of_type(recs, "segment")
    assert segments and all("incomplete" not in r.body for r in segments)
    decoded = [f.pts for r in segments for f in decode(root / r.body["file"])]
    assert decoded == expected_ticks(pushed[: len(decoded)])
    with Ledger.open(root, key, DEVICE) as reopened:
        assert reopened.recovered_segments == []  # nothing was left open




def test_a_start_while_halted_is_refused_with_a_signed_record(recorder: RecorderFactory, key: DeviceKey) -> None:
    ledger, seg = recorder(thresholds=StorageThresholds(low_bytes=2**62, floor_bytes=2**61))  # always "full"
    pushed = packets(60)
    assert seg.start_recording("first").wait(10)
    push(seg, pushed)
    barrier(seg)
    assert seg.state is RecorderState.HALTED
    assert seg.start_recording("again").wait(10)
    assert seg.state is RecorderState.HALTED
    refused = of_type(records(ledger.layout.root), "event", "recording-refused")
    assert len(refused) == 1 and "halted" in str(refused[0].body["reason"])
    assert verify_store(ledger.layout.root, key.public_key).intact
