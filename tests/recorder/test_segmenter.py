"""The segmenter with real libx264 packets: cuts, checkpoints, stop, restart and a slow disk.

Every file is decoded with PyAV on its own; frame times are compared in the 90 kHz ticks the files store.
"""

from __future__ import annotations

import stat
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest
from recorder_support import (
    FPS,
    RecorderFactory,
    barrier,
    checkpoints_of,
    decode,
    expected_ticks,
    first_packet_is_keyframe,
    of_type,
    packets,
    push,
    records,
    segment_files,
    sha256,
    ticks,
)

from agent.evidence.keys import DeviceKey
from agent.evidence.verify import verify_store
from agent.recorder.segment_file import SegmentFile
from agent.recorder.segmenter import RecorderState

DISK_S = 0.004  # the slow disk's time per frame
ONE_FRAME_TICKS = 90_000 // FPS  # 3000; µs -> tick rounding moves a step by at most one tick


def assert_frames_continuous(all_ticks: list[int]) -> None:
    steps = [b - a for a, b in pairwise(all_ticks)]
    odd = [(i, s) for i, s in enumerate(steps) if abs(s - ONE_FRAME_TICKS) > 1]
    assert not odd, f"frames lost or repeated at steps {odd[:5]}"


def test_cuts_decode_alone_with_no_frame_lost_or_repeated(recorder: RecorderFactory, key: DeviceKey) -> None:
    ledger, seg = recorder(segment_seconds=4.0)
    root = ledger.layout.root
    pushed = packets(360)  # 12 s at 30 fps, a keyframe every second
    assert seg.start_recording().wait(10)
    push(seg, pushed)
    assert seg.stop_recording().wait(30)
    assert seg.stats.frames_written == len(pushed) == seg.stats.frames_in

    files = segment_files(root)
    assert [p.name for p in files] == ["000001.ts", "000002.ts", "000003.ts"]
    recs = records(root)
    segment_records = {r.body["file"]: r for r in of_type(recs, "segment")}
    assert sorted(segment_records) == [f"segments/{p.name}" for p in files]
    # Cut at the first keyframe at or after every 4 s: 0-4, 4-8, 8-12 s.
    starts = [segment_records[f"segments/{p.name}"].body["first_ts_us"] for p in files]
    assert starts == [pushed[0][2], pushed[120][2], pushed[240][2]]

    all_ticks: list[int] = []
    for path in files:
        name = f"segments/{path.name}"
        body = segment_records[name].body
        frames = decode(path)  # each file on its own
        assert frames and frames[0].key, f"{path.name} does not start with a keyframe"
        assert first_packet_is_keyframe(path)
        assert body["frames"] == len(frames)
        assert ticks(body["first_ts_us"]) == frames[0].pts
        assert ticks(body["last_ts_us"]) == frames[-1].pts
        data = path.read_bytes()
        assert (body["size"], body["sha256"]) == (len(data), sha256(data))
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        assert "incomplete" not in body

        # Checkpoints cover the file contiguously from byte 0, in the ledger before the segment record.
        cps = checkpoints_of(recs, name)
        assert cps and all(cp.seq < segment_records[name].seq for cp in cps)
        offset = 0
        for cp in cps:
            assert cp.body["offset"] == offset
            offset += cp.body["length"]
            assert cp.body["sha256"] == sha256(data[cp.body["offset"] : offset])
        assert 0 < offset < len(data)  # the last GOP is signed by the segment record itself
        assert sum(cp.body["frames"] for cp in cps) < body["frames"]
        all_ticks += [f.pts for f in frames]

    assert all_ticks == expected_ticks(pushed)  # every pushed frame once, in order
    assert_frames_continuous(all_ticks)
    assert len(all_ticks) == seg.stats.frames_written == len(pushed)
    report = verify_store(root, key.public_key)
    assert report.intact, [str(p) for p in report.problems]
    assert report.notes == [] and report.segments == 3


def test_a_checkpoint_is_signed_at_every_keyframe_inside_a_segment(recorder: RecorderFactory, key: DeviceKey) -> None:
    ledger, seg = recorder(segment_seconds=4.0)
    root = ledger.layout.root
    pushed = packets(600, gop=15)[:300]  # 10 s, a keyframe every half second: segments of 4, 4 and 2 s
    assert seg.start_recording().wait(10)
    push(seg, pushed)
    assert seg.stop_recording().wait(30)
    recs = records(root)
    files = segment_files(root)
    assert len(files) == 3
    total = 0
    for path in files:
        name = f"segments/{path.name}"
        frames = decode(path)
        keyframe_ticks = [f.pts for f in frames if f.key]
        cps = checkpoints_of(recs, name)
        # One per keyframe except the first: each closes the GOP before it.
        assert len(cps) == len(keyframe_ticks) - 1, (path.name, len(cps), len(keyframe_ticks))
        data = path.read_bytes()
        decoded_so_far = 0
        for cp, (gop_start, next_key) in zip(cps, pairwise(keyframe_ticks), strict=True):
            # A checkpoint describes exactly one GOP: the frames from one keyframe up to the next.
            gop = [f.pts for f in frames if gop_start <= f.pts < next_key]
            assert ticks(cp.body["first_ts_us"]) == gop_start
            assert ticks(cp.body["last_ts_us"]) == gop[-1]
            assert cp.body["frames"] == len(gop) == 15
            decoded_so_far += len(gop)
            # The signed prefix ends on a packet boundary: it decodes to exactly the frames signed so far.
            end = cp.body["offset"] + cp.body["length"]
            prefix = root.parent / "prefix.ts"
            prefix.write_bytes(data[:end])
            assert [f.pts for f in decode(prefix)] == [f.pts for f in frames[:decoded_so_far]]
        total += len(cps)
    assert total == seg.stats.checkpoints == len(of_type(recs, "checkpoint")) == 7 + 7 + 3
    assert verify_store(root, key.public_key).intact


def test_stop_event_is_set_only_after_the_last_segment_is_signed(
    recorder: RecorderFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    closing = threading.Event()
    real_close = SegmentFile.close

    def slow_close(self: SegmentFile):  # type: ignore[no-untyped-def]
        closing.set()
        time.sleep(0.3)  # a slow fsync: the stop must wait for it and for the record after it
        return real_close(self)

    monkeypatch.setattr(SegmentFile, "close", slow_close)
    ledger, seg = recorder(segment_seconds=60.0)
    root = ledger.layout.root
    pushed = packets(360)
    assert seg.start_recording().wait(10)
    push(seg, pushed[:100])  # stop mid-GOP
    done = seg.stop_recording("test stop")
    push(seg, pushed[100:150])  # after the press: into the buffer, not the segment
    assert closing.wait(10)
    assert not done.is_set(), "stop reported done while the last segment was still being closed"
    assert done.wait(10)
    recs = records(root)  # read at once: everything the stop promised must already be there
    assert [r.type for r in recs[-2:]] == ["segment", "event"]
    segment, stop = recs[-2:]
    assert segment.body["file"] == "segments/000001.ts"
    assert stop.body == {"kind": "recording-stop", "reason": "test stop"}
    assert seg.state is RecorderState.ARMED
    # The stop took effect exactly at its place in the stream.
    assert segment.body["frames"] == 100
    assert segment.body["last_ts_us"] == pushed[99][2]
    assert [f.pts for f in decode(root / "segments" / "000001.ts")] == expected_ticks(pushed[:100])


def test_start_stop_start_gives_a_new_segment_and_loses_no_frame(
    recorder: RecorderFactory, key: DeviceKey
) -> None:
    ledger, seg = recorder(segment_seconds=60.0, prebuffer_seconds=0.0)
    root = ledger.layout.root
    pushed = packets(360)  # keyframes at 0, 30, 60, ...
    assert seg.start_recording("first").wait(10)
    push(seg, pushed[:100])
    assert seg.stop_recording("first").wait(10)
    push(seg, pushed[100:200])  # armed: the buffer keeps the GOP in progress (from 180)
    assert seg.start_recording("second").wait(10)
    push(seg, pushed[200:290])
    assert seg.stop_recording("second").wait(10)  # mid-GOP (keyframe 270)
    push(seg, pushed[290:295])
    assert seg.start_recording("third, within the same GOP").wait(10)  # no keyframe since the stop
    push(seg, pushed[295:360])
    assert seg.stop_recording("third").wait(10)

    files = segment_files(root)
    assert [p.name for p in files] == ["000001.ts", "000002.ts", "000003.ts"]
    first, second, third = ([f.pts for f in decode(p)] for p in files)
    assert first == expected_ticks(pushed[:100])
    assert second == expected_ticks(pushed[180:290])  # starts at the keyframe before the press
    # Frames 290..299 belong to a GOP whose keyframe (270) went to the previous recording: they cannot be
    # decoded without it, so the third recording starts again at 270. The 20 frames 270..289 are written
    # twice, in two recordings, rather than 290..299 being lost; they are counted.
    assert third == expected_ticks(pushed[270:360])
    everything = first + second + third
    twice = {tick for tick in everything if everything.count(tick) > 1}
    assert twice == set(expected_ticks(pushed[270:290]))
    assert seg.stats.frames_rewritten == 20
    for path in files:
        assert decode(path)[0].key

    recs = records(root)
    starts = of_type(recs, "event", "recording-start")
    assert [s.body["reason"] for s in starts] == ["first", "second", "third, within the same GOP"]
    assert [s.body["prebuffer_frames"] for s in starts] == [0, 20, 25]
    assert starts[1].body["prebuffer_first_ts_us"] == pushed[180][2]
    assert [r.body["file"] for r in of_type(recs, "segment")] == [f"segments/{p.name}" for p in files]
    assert len(of_type(recs, "event", "recording-stop")) == 3
    assert verify_store(root, key.public_key).intact


def test_a_slow_disk_never_blocks_the_encoder_and_loses_no_frame(
    recorder: RecorderFactory, monkeypatch: pytest.MonkeyPatch, key: DeviceKey
) -> None:
    real_write = SegmentFile.write_packet

    def slow_write(self: SegmentFile, data: bytes, keyframe: bool, timestamp_us: int) -> None:
        time.sleep(DISK_S)  # the disk takes 4 ms a frame
        real_write(self, data, keyframe, timestamp_us)

    monkeypatch.setattr(SegmentFile, "write_packet", slow_write)
    ledger, seg = recorder(segment_seconds=4.0, backlog_warn_frames=60)
    pushed = packets(360)
    assert seg.start_recording().wait(10)
    calls: list[float] = []
    began = time.perf_counter()
    for data, keyframe, timestamp in pushed:
        t0 = time.perf_counter()
        seg.outputframe(data, keyframe, timestamp)
        calls.append(time.perf_counter() - t0)
    pushing = time.perf_counter() - began
    # The worker needs at least 360 * 4 ms = 1.44 s; a call that waited for the disk would take >= 4 ms.
    calls.sort()
    assert pushing < len(pushed) * DISK_S / 4, f"pushing took {pushing:.3f} s"
    assert calls[len(calls) // 2] < DISK_S / 8, f"median outputframe {calls[len(calls) // 2] * 1000:.2f} ms"
    assert calls[-1] < 0.1, f"one outputframe took {calls[-1] * 1000:.1f} ms"
    assert seg.stop_recording().wait(30)
    assert seg.stats.backlog_max >= 200, seg.stats
    assert seg.stats.backlog_warnings >= 1, seg.stats
    assert seg.stats.frames_written == len(pushed) == seg.stats.frames_in
    decoded = [f.pts for p in segment_files(ledger.layout.root) for f in decode(p)]
    assert decoded == expected_ticks(pushed)
    assert verify_store(ledger.layout.root, key.public_key).intact


def test_backlog_warning_comes_when_the_backlog_builds_not_after_it_drains(
    recorder: RecorderFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    warnings_seen: list[int] = []
    real_write = SegmentFile.write_packet
    _ledger, seg = recorder(segment_seconds=60.0, backlog_warn_frames=60)

    def gated_write(self: SegmentFile, data: bytes, keyframe: bool, timestamp_us: int) -> None:
        gate.wait(10)  # the disk stalls (the first write) until the encoder has queued 200 frames
        warnings_seen.append(seg.stats.backlog_warnings)
        real_write(self, data, keyframe, timestamp_us)

    monkeypatch.setattr(SegmentFile, "write_packet", gated_write)
    pushed = packets(360)
    assert seg.start_recording().wait(10)
    push(seg, pushed[:200])
    time.sleep(0.05)
    gate.set()
    barrier(seg)
    assert seg.stats.backlog_max >= 190
    # The worker saw a backlog of ~198 frames at its next frame: the warning belongs there, not 140
    # frames later when the queue has drained back down to the threshold.
    assert warnings_seen[2] == 1, f"warning counted only after {warnings_seen.index(1)} writes"
    assert seg.stats.backlog_warnings == 1
    # A second episode warns again.
    gate.clear()
    push(seg, pushed[200:360])
    time.sleep(0.05)
    gate.set()
    assert seg.stop_recording().wait(30)
    assert seg.stats.backlog_warnings == 2
    assert seg.stats.frames_written == 360


def test_stop_while_armed_and_encoder_stop_while_armed_record_nothing(
    recorder: RecorderFactory, key: DeviceKey
) -> None:
    ledger, seg = recorder()
    root = ledger.layout.root
    assert seg.stop_recording().wait(10)  # armed: nothing to stop, nothing recorded
    push(seg, packets(360)[:45])
    seg.stop()  # the encoder stops while armed: no segment, no stop event
    recs = records(root)
    assert [r.type for r in recs] == ["boot"]
    assert segment_files(root) == []
    assert verify_store(root, key.public_key).intact


def test_encoder_stop_while_recording_closes_and_signs_the_open_segment(
    recorder: RecorderFactory, key: DeviceKey
) -> None:
    ledger, seg = recorder(segment_seconds=4.0)
    root: Path = ledger.layout.root
    pushed = packets(360)[:150]
    assert seg.start_recording().wait(10)
    push(seg, pushed)
    seg.stop()  # picamera2 calls output.stop() when the encoder stops; it returns once all is signed
    recs = records(root)
    assert [r.type for r in recs[-2:]] == ["segment", "event"]
    assert recs[-1].body["kind"] == "recording-stop" and recs[-1].body["reason"] == "encoder stopped"
    decoded = [f.pts for p in segment_files(root) for f in decode(p)]
    assert decoded == expected_ticks(pushed)
    assert verify_store(root, key.public_key).intact


def test_a_fresh_start_writes_nothing_from_before_it(recorder: RecorderFactory, key: DeviceKey) -> None:
    """Resuming inside a case after a reasoned stop: not even the GOP in progress at the stop comes back."""
    ledger, seg = recorder(segment_seconds=60.0, prebuffer_seconds=0.0)
    root = ledger.layout.root
    pushed = packets(240)  # keyframes at 0, 30, 60, ...
    assert seg.start_recording("first").wait(10)
    push(seg, pushed[:100])
    assert seg.stop_recording("privacy").wait(10)  # mid-GOP: keyframe 90
    push(seg, pushed[100:140])  # the stopped interval
    assert seg.start_recording("resume", fresh=True).wait(10)
    push(seg, pushed[140:240])  # no keyframe asked of a packet list: the next one is 150
    assert seg.stop_recording("end").wait(10)

    first, second = ([f.pts for f in decode(p)] for p in segment_files(root))
    assert first == expected_ticks(pushed[:100])
    assert second == expected_ticks(pushed[150:240])  # nothing from 90..149
    assert seg.stats.frames_awaiting_keyframe == 10  # 140..149, counted
    assert seg.stats.frames_rewritten == 0
    starts = of_type(records(root), "event", "recording-start")
    assert starts[1].body["prebuffer_frames"] == 0
    assert verify_store(root, key.public_key).intact
