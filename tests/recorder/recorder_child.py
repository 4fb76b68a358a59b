"""A recorder process for the crash tests: opens the ledger (recovery happens there), then records.

    python recorder_child.py STORE KEY_SEED DEVICE RUN PACKETS_PICKLE PACE_MS SEGMENT_SECONDS MODE

It prints one JSON line once the ledger is open (what recovery found), then waits for "go" on stdin, so
the parent can inspect the store while nobody writes. MODE ``all`` records every packet (PACE_MS apart)
and stops cleanly; ``kill-after:N`` records N packets, waits until the worker has handled them, and
SIGKILLs itself, a crash at an exact place in the stream.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import time
from pathlib import Path

from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger
from agent.recorder.segmenter import Segmenter, SegmenterSettings
from agent.recorder.storage import StorageThresholds


def main() -> None:
    store, seed, device, run, packets_file, pace_ms, segment_seconds, mode = sys.argv[1:9]
    key = DeviceKey.from_seed(bytes([int(seed)]) * 32)  # tests/helpers.py seeded_key
    ledger = Ledger.open(Path(store), key, device, boot_reason=f"run {run}")
    assert ledger.boot_record is not None
    with open(packets_file, "rb") as handle:
        packets = pickle.load(handle)
    print(
        json.dumps(
            {
                "boot_seq": ledger.boot_record.seq,
                "recoveries": len(ledger.recovery_records),
                "recovered": [dict(r.record.body) for r in ledger.recovered_segments],
            }
        ),
        flush=True,
    )
    if sys.stdin.readline().strip() != "go":
        ledger.close()
        return
    segmenter = Segmenter(
        ledger=ledger,
        settings=SegmenterSettings(
            segment_seconds=float(segment_seconds),
            prebuffer_seconds=0.0,
            width=160,
            height=120,
            fps=30,
            thresholds=StorageThresholds(low_bytes=0, floor_bytes=0),
        ),
    )
    segmenter.start()
    segmenter.start_recording(f"run {run}").wait()
    pace = float(pace_ms) / 1000
    count = int(mode.split(":")[1]) if mode.startswith("kill-after:") else len(packets)
    for data, keyframe, timestamp in packets[:count]:
        segmenter.outputframe(data, keyframe, timestamp)
        if pace:
            time.sleep(pace)
    if mode.startswith("kill-after:"):
        segmenter._command("barrier", "crash test").wait()
        os.kill(os.getpid(), signal.SIGKILL)
    segmenter.stop_recording().wait()
    segmenter.stop()
    ledger.close()
    print(json.dumps({"done": True, "written": segmenter.stats.frames_written}), flush=True)


if __name__ == "__main__":
    main()
