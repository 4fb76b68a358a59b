"""The pre-event buffer: alone (synthetic frames, a property test) and through the segmenter (real H.264)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from recorder_support import (
    FPS,
    RecorderFactory,
    decode,
    expected_ticks,
    of_type,
    packets,
    push,
    records,
    segment_files,
)

from agent.evidence.keys import DeviceKey
from agent.evidence.verify import verify_store
from agent.recorder.prebuffer import EncodedFrame, PreEventBuffer

FRAME_US = 1_000_000 // FPS
SECOND = 1_000_000


def frames(count: int, gop: int = 30, first: int = 0) -> list[EncodedFrame]:
    return [
        EncodedFrame(bytes([i % 251]) * (1 + i % 7), i % gop == 0, i * FRAME_US) for i in range(first, first + count)
    ]


def fill(buffer: PreEventBuffer, items: list[EncodedFrame]) -> None:
    for item in items:
        buffer.add(item)


# --- PreEventBuffer alone --------------------------------------------------------------------------


def test_after_20_s_a_15_s_buffer_starts_at_the_keyframe_15_to_16_s_back() -> None:
    buffer = PreEventBuffer(15)
    fed = frames(600)  # 20 s, keyframe every second
    fill(buffer, fed)
    assert buffer.bytes == sum(len(f.data) for f in fed[120:])
    held = buffer.drain()
    now = fed[-1].timestamp_us
    assert held[0].keyframe
    assert now - held[0].timestamp_us >= 15 * SECOND  # covers the whole duration
    assert now - held[0].timestamp_us < 15 * SECOND + SECOND  # but not a GOP more than it needs
    assert held == fed[120:]  # a suffix of what was fed, in order
    assert len(buffer) == 0 and buffer.bytes == 0 and buffer.drain() == []


def test_frames_before_the_first_keyframe_are_never_kept() -> None:
    buffer = PreEventBuffer(15)
    fill(buffer, frames(20, first=10))  # starts mid-GOP: frames 10..29, no keyframe
    assert len(buffer) == 0 and buffer.bytes == 0
    fill(buffer, frames(5, first=30))
    held = buffer.drain()
    assert [f.timestamp_us for f in held] == [i * FRAME_US for i in range(30, 35)] and held[0].keyframe


def test_zero_seconds_keeps_only_the_gop_in_progress() -> None:
    buffer = PreEventBuffer(0)
    fed = frames(100)
    fill(buffer, fed)
    assert buffer.drain() == fed[90:]
    fill(buffer, frames(1, first=120))  # a keyframe alone
    assert [f.timestamp_us for f in buffer.drain()] == [120 * FRAME_US]


@st.composite
def streams(draw: st.DrawFn) -> list[EncodedFrame]:
    """Irregular GOPs (at most ``cap`` frames), maybe starting mid-GOP, with irregular frame spacing."""
    rolls = draw(st.lists(st.integers(0, 9), min_size=1, max_size=300))  # 0: a keyframe
    jitter = draw(st.lists(st.integers(0, 100_000), min_size=len(rolls), max_size=len(rolls)))
    cap = draw(st.integers(1, 40))
    spacing = draw(st.integers(10_000, 70_000))
    ts = draw(st.integers(0, 10 * SECOND))
    out: list[EncodedFrame] = []
    since_key = 0
    for i, (roll, extra) in enumerate(zip(rolls, jitter, strict=True)):
        key = roll == 0 or (i > 0 and since_key >= cap - 1)
        since_key = 0 if key else since_key + 1
        out.append(EncodedFrame(bytes(1 + i % 5), key, ts))
        ts += spacing + extra
    return out


@given(stream=streams(), seconds=st.sampled_from([0, 0.5, 1, 2.5, 5]), cut=st.integers(0, 300))
@settings(max_examples=100, deadline=None)
def test_buffer_invariants_for_any_stream(stream: list[EncodedFrame], seconds: float, cut: int) -> None:
    buffer = PreEventBuffer(seconds)
    fed = stream[: min(cut, len(stream))] if cut else stream
    fill(buffer, fed)
    size = buffer.bytes
    held = buffer.drain()
    assert size == sum(len(f.data) for f in held)
    keyed = [i for i, f in enumerate(fed) if f.keyframe]
    if not keyed:
        assert held == []
        return
    assert held, "a keyframe was fed but nothing is held"
    assert held[0].keyframe, "the buffer would hand over a first frame no decoder can use"
    start = fed.index(held[0])
    assert held == fed[start:], "not a contiguous suffix of the stream"
    now = fed[-1].timestamp_us
    duration = int(seconds * 1_000_000)
    later_keys = [fed[i] for i in keyed if i > start]
    if duration == 0:
        assert later_keys == []  # exactly the GOP in progress
    else:
        # Covers the duration when the stream is long enough, and drops every GOP it does not need.
        assert now - held[0].timestamp_us >= duration or start == keyed[0]
        if later_keys:
            assert now - later_keys[0].timestamp_us < duration


# --- through the segmenter -------------------------------------------------------------------------


def test_start_after_20_s_armed_begins_15_s_back_and_runs_on_into_live(
    recorder: RecorderFactory, key: DeviceKey
) -> None:
    ledger, seg = recorder(segment_seconds=4.0, prebuffer_seconds=15.0)
    root = ledger.layout.root
    pushed = packets(720)  # 24 s, keyframe every second
    push(seg, pushed[:600])  # 20 s armed
    assert seg.start_recording("button").wait(10)
    push(seg, pushed[600:])  # 4 s live
    assert seg.stop_recording().wait(30)

    press_us = pushed[600][2]
    recs = records(root)
    (start,) = of_type(recs, "event", "recording-start")
    first_ts = start.body["prebuffer_first_ts_us"]
    assert press_us - 15 * SECOND - SECOND <= first_ts <= press_us - 15 * SECOND  # within one GOP
    first_index = next(i for i, p in enumerate(pushed) if p[2] == first_ts)
    assert pushed[first_index][1], "the buffer started on a frame that is not a keyframe"
    assert start.body["prebuffer_frames"] == 600 - first_index

    files = segment_files(root)
    first_segment = next(r for r in of_type(recs, "segment") if r.body["file"] == f"segments/{files[0].name}")
    assert first_segment.body["first_ts_us"] == first_ts
    decoded = [decode(p) for p in files]
    assert all(d[0].key for d in decoded)
    # Continuous from the buffer into the live frames: every frame since the buffer's keyframe, once.
    assert [f.pts for d in decoded for f in d] == expected_ticks(pushed[first_index:])
    assert seg.stats.frames_written == 720 - first_index
    assert verify_store(root, key.public_key).intact


def expected_first(pushed: tuple[tuple[bytes, bool, int], ...], begin: int, end: int, seconds: float) -> int:
    """Where a buffer fed pushed[begin:end] must start: the newest keyframe at least ``seconds`` old,
    else the oldest keyframe it has (a model of the buffer written from its description)."""
    keys = [i for i in range(begin, end) if pushed[i][1]]
    now = pushed[end - 1][2]
    old_enough = [i for i in keys if now - pushed[i][2] >= seconds * SECOND]
    return old_enough[-1] if old_enough else keys[0]


def test_buffer_wraps_on_whole_gops_and_each_recording_starts_on_a_keyframe(
    recorder: RecorderFactory, key: DeviceKey
) -> None:
    ledger, seg = recorder(segment_seconds=4.0, prebuffer_seconds=2.0)
    root = ledger.layout.root
    pushed = packets(600, gop=15)  # 20 s, a keyframe every half second
    presses = [37, 200, 250, 400, 580]  # short and long armed stretches; the buffer wraps in the long ones
    position = 0
    for press in presses:
        push(seg, pushed[position:press])
        assert seg.start_recording().wait(10)
        push(seg, pushed[press : press + 20])
        assert seg.stop_recording().wait(10)
        position = press + 20
    recs = records(root)
    starts = of_type(recs, "event", "recording-start")
    files = segment_files(root)
    assert len(starts) == len(files) == len(presses)
    begin = 0
    for start, press, path in zip(starts, presses, files, strict=True):
        # After a stop the buffer holds on to the GOP in progress (its later frames need its keyframe),
        # so it starts from the last keyframe at or before the stop, then wraps as usual.
        first = expected_first(pushed, begin, press, 2.0)
        assert start.body["prebuffer_first_ts_us"] == pushed[first][2]
        assert start.body["prebuffer_frames"] == press - first
        decoded = decode(path)
        assert decoded[0].key, f"{path.name} starts with a frame that is not a keyframe"
        assert [f.pts for f in decoded] == expected_ticks(pushed[first : press + 20])
        begin = max(i for i in range(press + 20) if pushed[i][1])  # the GOP in progress at the stop
    assert verify_store(root, key.public_key).intact


def test_zero_second_buffer_starts_at_the_last_keyframe(recorder: RecorderFactory, key: DeviceKey) -> None:
    ledger, seg = recorder(segment_seconds=4.0, prebuffer_seconds=0.0)
    root = ledger.layout.root
    pushed = packets(360)
    push(seg, pushed[:100])  # press mid-GOP: the last keyframe was frame 90
    assert seg.start_recording().wait(10)
    push(seg, pushed[100:160])
    assert seg.stop_recording().wait(10)
    (start,) = of_type(records(root), "event", "recording-start")
    assert start.body["prebuffer_frames"] == 10
    assert start.body["prebuffer_first_ts_us"] == pushed[90][2]
    (path,) = segment_files(root)
    decoded = decode(path)
    assert decoded[0].key
    assert [f.pts for f in decoded] == expected_ticks(pushed[90:160])  # nothing undecodable, nothing lost
    assert verify_store(root, key.public_key).intact
