"""Crashes while recording, with real processes: a recorder is SIGKILLed and the next one recovers.

The child (recorder_child.py) opens the ledger, which recovers the segment a kill left open (a
``recovered`` record with the checkpointed length and a ``gap`` record), reports what it found, and waits
for "go" while the parent inspects the store; then it records real H.264 packets until it is killed.

Set BODYCAM_CRASH_SEED to replay a run's random kill times (the seed is in every failure message).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import seeded_key
from recorder_support import (
    DEVICE,
    Packet,
    checkpoints_of,
    decode_prefix,
    expected_ticks,
    of_type,
    packets,
    records,
    segment_files,
    sha256,
    ticks,
)

from agent.evidence.keys import DeviceKey
from agent.evidence.record import Record
from agent.evidence.verify import verify_store

CHILD = Path(__file__).with_name("recorder_child.py")
REPO = Path(__file__).resolve().parents[2]
KEY_SEED = 9
KILLED_RUNS = 24
MIN_KILLED_RUNS = 20
TIME_BUDGET_S = 35.0  # stop killing early (never below MIN_KILLED_RUNS) on a slow machine
GOP = 10  # a checkpoint every third of a second
SEGMENT_SECONDS = 1.0  # three GOPs a segment: kills land in every part of a segment's life
PACE_MS = 3.0


def start_child(root: Path, packet_file: Path, run: int, mode: str, log: Path, pace_ms: float = PACE_MS,
                segment_seconds: float = SEGMENT_SECONDS) -> subprocess.Popen[str]:
    args = [str(root), str(KEY_SEED), DEVICE, str(run), str(packet_file), str(pace_ms), str(segment_seconds), mode]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, str(CHILD), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, text=True, cwd=REPO, env=env)


def read_json(proc: subprocess.Popen[str], log: Path, context: str) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise AssertionError(f"{context}: child exited {proc.returncode}:\n{log.read_text()[-3000:]}")
    value: dict[str, object] = json.loads(line)
    return value


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None and not stream.closed:
            stream.close()


def covered_files(recs: list[Record]) -> set[str]:
    return {str(r.body["file"]) for r in recs if r.type in ("segment", "recovered")}


@dataclass
class Recovery:
    """What a recovered segment held: for the statistics."""

    name: str
    size: int
    signed_bytes: int
    checkpoints: int
    frames_decoded: int


def check_recovered(root: Path, pushed: tuple[Packet, ...], name: str, scratch: Path, context: str) -> Recovery:
    """A recovered segment: its records, its checkpoints, and what its bytes decode to."""
    recs = records(root)
    (recovered,) = [r for r in recs if r.type == "recovered" and r.body["file"] == name]
    following = recs[recs.index(recovered) + 1]
    assert following.type == "gap", f"{context}: {following.type} follows the recovered record"
    assert following.body["from_wall_us"] <= following.body["to_wall_us"], context
    assert name in following.body["reason"], context
    assert not of_type(recs, "segment") or all(r.body["file"] != name for r in of_type(recs, "segment")), context
    path = root / name
    data = path.read_bytes()  # kept on disk, never deleted
    assert (recovered.body["size"], recovered.body["sha256"]) == (len(data), sha256(data)), context
    assert stat.S_IMODE(path.stat().st_mode) == 0o444, f"{context}: a recorded segment must be read-only"
    cps = checkpoints_of(recs, name)
    offset = 0
    for cp in cps:
        assert cp.body["offset"] == offset, context
        offset += cp.body["length"]
        assert cp.body["sha256"] == sha256(data[cp.body["offset"] : offset]), context
    assert recovered.body["signed_bytes"] == offset, f"{context}: signed_bytes is not the end of the last checkpoint"
    signed_frames = sum(cp.body["frames"] for cp in cps)

    # The checkpointed prefix decodes alone to exactly the frames the checkpoints signed.
    prefix, error = decode_prefix(data[:offset], scratch)
    if cps:
        assert error is None, f"{context}: the signed prefix of {name} does not decode: {error}"
        first = next(i for i, p in enumerate(pushed) if p[2] == cps[0].body["first_ts_us"])
        assert [f.pts for f in prefix] == expected_ticks(pushed[first : first + signed_frames]), context
        assert prefix[0].key and ticks(cps[-1].body["last_ts_us"]) == prefix[-1].pts, context
    # The whole file decodes up to its cut: at least the signed frames, then consecutive frames.
    whole, _ = decode_prefix(data, scratch)
    assert len(whole) >= signed_frames, f"{context}: {name} decodes to {len(whole)} < {signed_frames} signed frames"
    if whole:
        first = next(i for i, p in enumerate(pushed) if ticks(p[2]) == whole[0].pts)
        assert [f.pts for f in whole] == expected_ticks(pushed[first : first + len(whole)]), context
    return Recovery(name, len(data), offset, len(cps), len(whole))


@dataclass
class Stats:
    kills: int = 0
    open_at_kill: int = 0
    with_checkpoints: int = 0
    empty_files: int = 0
    torn_ledger_tails: int = 0
    recoveries: list[Recovery] = field(default_factory=list)


@pytest.mark.slow
def test_sigkill_while_recording_loses_nothing_signed_and_recovers_the_open_segment(tmp_path: Path) -> None:
    seed = int(os.environ.get("BODYCAM_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    rng = random.Random(seed)
    key = seeded_key(KEY_SEED)
    root = tmp_path / "store"
    pushed = packets(600, gop=GOP)  # 20 s; a paced child needs ~2 s for them, kills come well before
    packet_file = tmp_path / "packets.pickle"
    packet_file.write_bytes(pickle.dumps(pushed))
    log = tmp_path / "children.log"
    scratch = tmp_path / "decode.ts"
    stats = Stats()
    pending: str | None = None  # the segment the last kill left without a record
    on_disk_before: dict[str, bytes] = {}
    started = time.monotonic()
    run = 0
    while True:
        final = run >= KILLED_RUNS or (run >= MIN_KILLED_RUNS and time.monotonic() - started > TIME_BUDGET_S)
        context = f"run {run} (seed {seed})"
        proc = start_child(root, packet_file, run, "all", log, pace_ms=0 if final else PACE_MS)
        try:
            ready = read_json(proc, log, context)
            # --- the store as this child's open left it; nobody writes until "go" ---
            recovered = ready["recovered"]
            assert isinstance(recovered, list)
            assert [body["file"] for body in recovered] == ([pending] if pending else []), context
            stats.torn_ledger_tails += int(ready["recoveries"])  # type: ignore[call-overload]
            if pending:
                stats.recoveries.append(check_recovered(root, pushed, pending, scratch, context))
            # Nothing is ever deleted, and nothing recorded earlier changed (verify_store hashes it all).
            on_disk = {f"segments/{p.name}": p.read_bytes() for p in segment_files(root)}
            assert set(on_disk_before) <= set(on_disk), f"{context}: a segment file disappeared"
            for name, data in on_disk_before.items():
                assert on_disk[name] == data, f"{context}: {name} changed"
            report = verify_store(root, key.public_key)
            assert report.intact, f"{context}: {[str(p) for p in report.problems]}"
            assert covered_files(records(root)) == set(on_disk), context
            on_disk_before = on_disk
            go(proc)
            if final:
                done = read_json(proc, log, context)
                assert done["written"] == len(pushed), context
                assert proc.wait(timeout=60) == 0, f"{context}: final run failed:\n{log.read_text()[-3000:]}"
                break
            time.sleep(rng.uniform(0.0, 0.6))
            proc.send_signal(signal.SIGKILL)
            code = proc.wait(timeout=30)
            assert code == -signal.SIGKILL, f"{context}: child ended on its own ({code}):\n{log.read_text()[-3000:]}"
        finally:
            finish(proc)
        run += 1
        stats.kills += 1
        # --- after the kill: at most the newest segment is without a record ---
        unrecorded = {f"segments/{p.name}" for p in segment_files(root)} - covered_files(records(root))
        assert len(unrecorded) <= 1, f"{context}: several segment files without a record: {unrecorded}"
        pending = unrecorded.pop() if unrecorded else None
        if pending:
            assert pending == f"segments/{segment_files(root)[-1].name}", context
            stats.open_at_kill += 1

    report = verify_store(root, key.public_key)
    assert report.intact, f"seed {seed}: {[str(p) for p in report.problems]}"
    recovered_notes = [n for n in report.notes if "segment file recovered at open" in str(n)]
    assert len(recovered_notes) == stats.open_at_kill == len(stats.recoveries)
    allowed = ("segment file recovered at open", "torn ledger tail", "unfinished write left by a crash")
    assert all(any(a in str(n) for a in allowed) for n in report.notes), [str(n) for n in report.notes]
    recs = records(root)
    assert len(of_type(recs, "gap")) == stats.open_at_kill
    assert len(of_type(recs, "boot")) == stats.kills + 1
    stats.with_checkpoints = sum(r.checkpoints > 0 for r in stats.recoveries)
    stats.empty_files = sum(r.size == 0 for r in stats.recoveries)
    signed = sum(r.signed_bytes for r in stats.recoveries)
    kept = sum(r.size for r in stats.recoveries)
    print(
        f"\nrecorder crash test: {stats.kills} kills, {stats.open_at_kill} with a segment open "
        f"({stats.with_checkpoints} of them with checkpoints, {stats.empty_files} empty), "
        f"{stats.torn_ledger_tails} torn ledger tails; recovered files hold {kept} bytes, {signed} of them signed "
        f"by checkpoints; {len(segment_files(root))} segment files; {time.monotonic() - started:.1f} s, seed {seed}"
    )


def crash_after(tmp_path: Path, frames: int, gop: int, segment_seconds: float) -> tuple[Path, tuple[Packet, ...]]:
    """A store whose recorder was SIGKILLed after ``frames`` frames had been handled (not yet reopened)."""
    root = tmp_path / "store"
    pushed = packets(600, gop=gop)
    packet_file = tmp_path / "packets.pickle"
    packet_file.write_bytes(pickle.dumps(pushed))
    log = tmp_path / "child.log"
    proc = start_child(root, packet_file, 0, f"kill-after:{frames}", log, pace_ms=0, segment_seconds=segment_seconds)
    try:
        read_json(proc, log, "crash_after")
        go(proc)
        assert proc.wait(timeout=60) == -signal.SIGKILL, log.read_text()[-3000:]
    finally:
        finish(proc)
    return root, pushed


def flip(path: Path, offset: int) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_verifier_names_the_checkpoint_whose_bytes_changed_in_a_recovered_file(tmp_path: Path) -> None:
    key: DeviceKey = seeded_key(KEY_SEED)
    # Segments of 2 s (60 frames), a keyframe every 10: killed at frame 85, segment 000002 holds frames
    # 60..84 with checkpoints over 60..69 and 70..79 and an unsigned tail 80..84.
    root, pushed = crash_after(tmp_path, 85, gop=10, segment_seconds=2.0)
    name = "segments/000002.ts"
    recs = records(root)
    first_cp = checkpoints_of(recs, name)[0]
    assert [str(p) for p in verify_store(root, key.public_key).problems] == [
        f"seq {first_cp.seq}: segment 000002.ts: segment left open: checkpoints but no closing record "
        "(a crash not yet recovered)"
    ]

    proc_log = tmp_path / "reopen.log"
    proc = start_child(root, tmp_path / "packets.pickle", 1, "all", proc_log)
    try:
        ready = read_json(proc, proc_log, "reopen")
        assert proc.stdin is not None
        proc.stdin.close()  # no "go": the child closes the ledger without recording
        assert proc.wait(timeout=30) == 0
    finally:
        finish(proc)
    assert [b["file"] for b in ready["recovered"]] == [name]  # type: ignore[union-attr]
    recovery = check_recovered(root, pushed, name, tmp_path / "decode.ts", "reopen")
    assert recovery.checkpoints == 2 and recovery.frames_decoded >= 20
    assert verify_store(root, key.public_key).intact

    recs = records(root)
    cp1, cp2 = checkpoints_of(recs, name)
    (recovered,) = of_type(recs, "recovered")
    path = root / name
    original = path.read_bytes()
    assert cp2.body["offset"] + cp2.body["length"] == recovered.body["signed_bytes"] < len(original)

    flip(path, cp2.body["offset"] + cp2.body["length"] // 2)  # inside the second checkpoint's range
    problems = [str(p) for p in verify_store(root, key.public_key).problems]
    end = cp2.body["offset"] + cp2.body["length"]
    assert problems == [
        f"seq {cp2.seq}: segment 000002.ts: checkpoint bytes {cp2.body['offset']}..{end} sha256 mismatch",
        f"seq {recovered.seq}: segment 000002.ts: sha256 mismatch",
    ]
    assert f"seq {cp1.seq}" not in " ".join(problems)

    path.write_bytes(original)
    flip(path, len(original) - 100)  # in the unsigned tail: only the recovered record's hash says so
    problems = [str(p) for p in verify_store(root, key.public_key).problems]
    assert problems == [f"seq {recovered.seq}: segment 000002.ts: sha256 mismatch"]
