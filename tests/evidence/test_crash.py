"""Crash safety with real processes: a writer is SIGKILLed at random moments, again and again.

Each child opens the ledger (recovering whatever the previous kill left), says "ready", and appends in a
tight loop: big event records (~60 KB, so that a kill sometimes lands inside the kernel's copy of a line
and leaves a short write, a real torn tail) and small segment files with their segment records. The parent
checks the store after every kill and at the end runs the verifier over everything.

Set BODYCAM_CRASH_SEED to replay a run's random delays (the seed is printed in every failure message).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.errors import RecordFormatError
from agent.evidence.keys import DeviceKey, load_or_create_device_key, verify_signature
from agent.evidence.ledger import Ledger
from agent.evidence.record import parse_line
from agent.evidence.verify import verify_store

DEVICE = "dev-crash-01"
KILLED_RUNS = 40
TIME_BUDGET_S = 45.0  # stop killing early (never below MIN_KILLED_RUNS) on a slow machine
MIN_KILLED_RUNS = 15
EVENT_PAD = 60_000  # a line of ~60 KB: below the 64 KiB limit, 15 pages for the kernel to copy
FINAL_APPENDS = 6

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from agent.evidence.keys import load_device_key
    from agent.evidence.ledger import Ledger
    from agent.evidence.store import segment_file_name

    store, key_file, device, run, mode, pad_len = sys.argv[1:7]
    ledger = Ledger.open(Path(store), load_device_key(Path(key_file)), device, boot_reason="run " + run)
    print(json.dumps({
        "boot_seq": ledger.boot_record.seq,
        "recoveries": [dict(r.record.body) for r in ledger.recovery_records],
        "recovered": [r.record.body["file"] for r in ledger.recovered_segments],
    }), flush=True)
    index = ledger.layout.next_segment_index()
    pad = "x" * int(pad_len)
    n = 0
    while mode == "loop" or n < int(mode):
        n += 1
        if n % 4 == 0:
            stored = ledger.layout.write_segment(segment_file_name(index, "bin"), os.urandom(2048))
            ledger.append("segment", {"file": stored.name, "sha256": stored.sha256, "size": stored.size})
            index += 1
        else:
            ledger.append("event", {"kind": "load", "run": int(run), "n": n, "pad": pad})
    ledger.close()
    """
)


@dataclass
class StoreState:
    """What the parent sees in the store while no writer runs."""

    last_seq: int
    good_size: int  # bytes of complete lines
    torn: bytes
    claimed: set[str] = field(default_factory=set)
    on_disk: set[str] = field(default_factory=set)
    boots: int = 0
    recoveries: int = 0


def inspect(root: Path, key: DeviceKey, before: StoreState | None, context: str) -> StoreState:
    """Check the lines written since ``before``: each complete line parses, verifies and follows on.

    A kill can only cut the line being written, so every complete line must be sound.
    """
    start = before.good_size if before is not None else 0
    with open(root / "ledger.jsonl", "rb") as handle:
        handle.seek(start)
        data = handle.read()
    body, _, torn = data.rpartition(b"\n")
    state = StoreState(last_seq=0, good_size=start + len(data) - len(torn), torn=torn)
    if before is not None:
        state.claimed, state.boots, state.recoveries = set(before.claimed), before.boots, before.recoveries
    prev_seq = before.last_seq if before is not None else 0
    for number, line in enumerate(body.split(b"\n") if body else [], start=1):
        where = f"{context}: new line {number} after offset {start}"
        try:
            signed = parse_line(line)
        except RecordFormatError as exc:
            raise AssertionError(f"{where} is malformed ({exc})") from None
        assert verify_signature(key.public_key, signed.payload, signed.signature), where
        assert signed.seq == prev_seq + 1, f"{where} has seq {signed.seq}, expected {prev_seq + 1}"
        prev_seq = signed.seq
        kind = signed.record.type
        if kind in ("segment", "recovered"):
            state.claimed.add(str(signed.record.body["file"]))
        state.boots += kind == "boot"
        state.recoveries += kind == "recovery"
    state.last_seq = prev_seq
    state.on_disk = {f"segments/{p.name}" for p in (root / "segments").iterdir() if not p.name.startswith(".")}
    return state


def run_child(root: Path, key_file: Path, run: int, mode: str, log: Path) -> subprocess.Popen[str]:
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(key_file), DEVICE, str(run), mode, str(EVENT_PAD)],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )


def read_ready(proc: subprocess.Popen[str], log: Path, context: str) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise AssertionError(f"{context}: child exited {proc.returncode} before ready:\n{log.read_text()}")
    ready: dict[str, object] = json.loads(line)
    return ready


@pytest.mark.slow
def test_sigkill_at_random_moments_never_breaks_the_chain(tmp_path: Path) -> None:
    seed = int(os.environ.get("BODYCAM_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    rng = random.Random(seed)
    root = tmp_path / "store"
    key_file = tmp_path / "identity" / "device.key"
    key = load_or_create_device_key(key_file)
    log = tmp_path / "children.log"

    natural_tears = 0  # kills that left a torn tail
    forced_tears = 0
    recoveries_seen = 0  # recovery records the children reported at open
    orphans: set[str] = set()  # segment files whose record the kill prevented, recorded at the next open
    pending_orphans: set[str] = set()
    runs = 0
    started = time.monotonic()
    pending_torn = b""  # the torn tail the next open must move aside
    previous: StoreState | None = None

    while True:
        final = runs >= KILLED_RUNS or (runs >= MIN_KILLED_RUNS and time.monotonic() - started > TIME_BUDGET_S)
        if final and natural_tears == 0:
            # No kill tore a line this time: tear one by hand so the recovery path runs in a real process.
            assert previous is not None
            data = (root / "ledger.jsonl").read_bytes()
            last_line = data[data.rindex(b"\n", 0, len(data) - 1) + 1 :]
            pending_torn = last_line[: len(last_line) // 2]
            (root / "ledger.jsonl").write_bytes(data + pending_torn)
            forced_tears = 1
        context = f"run {runs} (seed {seed})"
        proc = run_child(root, key_file, runs, str(FINAL_APPENDS) if final else "loop", log)
        try:
            ready = read_ready(proc, log, context)
            reported = ready["recoveries"]
            assert isinstance(reported, list)
            assert len(reported) == bool(pending_torn), f"{context}: {reported}"
            recoveries_seen += len(reported)
            if previous is not None:
                assert ready["boot_seq"] == previous.last_seq + 1, context  # boot first, then what was found
            assert set(ready["recovered"]) == pending_orphans, f"{context}: {ready['recovered']}"  # type: ignore[arg-type]
            recovered_now = len(pending_orphans)  # each brings a `recovered` and a `gap` record
            for body in reported:
                assert previous is not None
                assert (body["offset"], body["length"]) == (previous.good_size, len(pending_torn)), context
                assert body["sha256"] == hashlib.sha256(pending_torn).hexdigest(), context
                assert (root / str(body["file"])).read_bytes() == pending_torn, context
            if final:
                assert proc.wait(timeout=60) == 0, f"{context}: final run failed:\n{log.read_text()}"
            else:
                time.sleep(rng.uniform(0.005, 0.150))
                proc.send_signal(signal.SIGKILL)
                code = proc.wait(timeout=30)
                assert code == -signal.SIGKILL, f"{context}: child ended on its own ({code}):\n{log.read_text()}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        runs += 1
        state = inspect(root, key, previous, context)
        assert state.boots == runs, f"{context}: {state.boots} boot records after {runs} runs"
        assert state.recoveries == recoveries_seen, context
        assert b"\n" not in state.torn
        if previous is not None:
            assert state.last_seq > previous.last_seq, f"{context}: the chain did not grow"
        new_orphans = state.on_disk - state.claimed
        assert len(new_orphans) <= 1, f"{context}: several segment files without records: {new_orphans}"
        if new_orphans:
            # Only the segment being written when the kill landed: the highest number on disk.
            assert new_orphans == {max(state.on_disk)}, context
            orphans |= new_orphans
        pending_orphans = new_orphans
        assert state.claimed <= state.on_disk, f"{context}: a recorded segment file is missing"
        if final:
            assert previous is not None and state.torn == b""
            written = 1 + bool(pending_torn) + 2 * recovered_now + FINAL_APPENDS  # boot first, then what was found
            assert state.last_seq == previous.last_seq + written, context
            break
        natural_tears += bool(state.torn)
        pending_torn = state.torn
        previous = state

    report = verify_store(root, key.public_key)
    assert report.intact, f"seed {seed}: {[str(p) for p in report.problems]}"
    recovery_notes = [n for n in report.notes if "torn ledger tail" in str(n)]
    assert len(recovery_notes) == recoveries_seen == natural_tears + forced_tears >= 1
    other_notes = [str(n) for n in report.notes if n not in recovery_notes]
    recovered_notes = [n for n in other_notes if "segment file recovered at open" in n]
    assert len(recovered_notes) == len(orphans), other_notes
    assert all("unfinished write left by a crash" in n or "recovered at open" in n for n in other_notes), other_notes
    assert report.last_seq == state.last_seq
    print(
        f"\ncrash test: {runs} runs ({runs - 1} killed), {natural_tears} torn tails from kills, "
        f"{forced_tears} torn by hand, {recoveries_seen} recoveries, {len(orphans)} segment files recovered "
        f"without a record, {time.monotonic() - started:.1f} s, seed {seed}"
    )


def test_crash_between_segment_file_and_its_record_leaves_a_verifiable_store(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    root = tmp_path / "store"
    with Ledger.open(root, key, DEVICE) as ledger:
        ledger.layout.write_segment("000001.bin", b"footage")
        # The process dies here: everything above is durable, the segment record never gets written.
    assert not verify_store(root, key.public_key).intact  # before the next open: a file no record covers
    with Ledger.open(root, key, DEVICE) as ledger:
        (recovered,) = ledger.recovered_segments
    assert recovered.record.type == "recovered" and recovered.record.body["file"] == "segments/000001.bin"
    assert recovered.record.body["sha256"] == hashlib.sha256(b"footage").hexdigest()
    report = verify_store(root, key.public_key)
    assert report.intact, [str(p) for p in report.problems]
    assert any("segment file recovered at open" in str(n) for n in report.notes)


def test_several_segment_files_without_records_are_not_signed_at_open(tmp_path: Path) -> None:
    """Only the newest file can be a crash's; several unrecorded files mean a cut ledger: left for the verifier."""
    key = DeviceKey.generate()
    root = tmp_path / "store"
    with Ledger.open(root, key, DEVICE) as ledger:
        ledger.layout.write_segment("000001.bin", b"one")
        ledger.layout.write_segment("000002.bin", b"two")
    with Ledger.open(root, key, DEVICE) as ledger:
        assert ledger.recovered_segments == []
    problems = [str(p) for p in verify_store(root, key.public_key).problems]
    assert problems == [
        "segment 000001.bin: no record covers this file",
        "segment 000002.bin: no record covers this file",
    ]
