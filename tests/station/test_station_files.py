"""Files: staged chunk by chunk, stored write-once after the whole file matches its record, acknowledged after.

Includes the restarts: a new receiver on the same folder (a clean restart) and a receiver killed by its fault
hook right after it stored something and before it acknowledged it (a crash at the worst moment).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import writable
from station_support import DeviceSide, Station, StoreFactory, statuses

from agent.evidence.keys import public_key_from_hex
from agent.evidence.verify import verify_store
from sync.protocol import FileOffer

DEVICE = "dev-0001"
CHILD = Path(__file__).with_name("station_child.py")
REPO = Path(__file__).resolve().parents[2]


def records_sent(station: Station, make_store: StoreFactory) -> DeviceSide:
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.hello()
    side.records(side.lines())
    return side


def object_count(station: Station) -> int:
    folder = station.data / "objects"
    return len([p for p in folder.rglob("*") if p.is_file()]) if folder.exists() else 0


def acked_files(station: Station) -> list[str]:
    return [f.file for a in station.acks(DEVICE) for f in a.ack.files]


def test_bytes_that_do_not_match_the_record_are_not_stored(station: Station, make_store: StoreFactory) -> None:
    side = records_sent(station, make_store)
    file = side.files()[0]
    path = side.root / file.name
    os.chmod(path, 0o644)
    path.write_bytes(bytes(file.size))  # same size, other bytes (the chunks themselves are consistent)
    status = side.upload(file)
    assert (status.stored, status.have) == (False, [])
    [problem] = station.problems()
    assert (problem.kind, problem.device, problem.seq, problem.object) == ("bad-bytes", DEVICE, file.seq, file.name)
    assert "do not match the record" in problem.reason
    assert acked_files(station) == []
    assert object_count(station) == 0 and not (station.device_root(DEVICE) / file.name).exists()
    assert station.index.ranges(DEVICE, file.sha256) == []
    assert list((station.data / "staging" / DEVICE).iterdir()) == []  # the staged copy is discarded


def test_restart_in_the_middle_of_a_file_resumes_from_the_ranges_held(station: Station,
                                                                      make_store: StoreFactory) -> None:
    side = records_sent(station, make_store)
    file = side.files()[0]
    side.chunk(file, 0)
    side.chunk(file, 2 * side.chunk_bytes)
    station.restart()
    side.session = "s2"
    reply = side.hello()
    assert reply.seq == 9  # the watermark came back from the index
    status = side.offer(file)
    assert (status.stored, status.have) == (False, [[0, side.chunk_bytes], [2 * side.chunk_bytes, side.chunk_bytes]])
    final = side.upload(file)
    assert final.stored
    assert acked_files(station) == [file.name]
    assert object_count(station) == 1
    assert (station.device_root(DEVICE) / file.name).read_bytes() == (side.root / file.name).read_bytes()
    first, second = station.index.session(DEVICE, "s1"), station.index.session(DEVICE, "s2")
    assert first is not None and second is not None
    assert (first.chunks_written, second.chunks_written, second.duplicate_chunks) == (2, 2, 0)


def test_a_file_offered_again_after_it_was_stored_is_acknowledged_again(station: Station,
                                                                        make_store: StoreFactory) -> None:
    side = records_sent(station, make_store)
    file = side.files()[0]
    assert side.upload(file).stored
    before = station.evidence_digest()
    station.restart()
    out = side.send("file", FileOffer("s9", file.name, file.sha256, file.size).encode())
    [status] = statuses(out, DEVICE)
    assert (status.stored, status.have, status.session) == (True, [], "s9")
    [ack] = station.acks(DEVICE, out)
    assert [(f.file, f.sha256, f.size) for f in ack.ack.files] == [(file.name, file.sha256, file.size)]
    assert (ack.ack.seq, ack.ack.session) == (9, "s1")  # the last hello's session, also after the restart
    assert station.evidence_digest() == before
    assert station.index.file_totals(DEVICE) == (1, file.size)


def test_duplicate_chunks_are_written_once(station: Station, make_store: StoreFactory) -> None:
    side = records_sent(station, make_store)
    file = side.files()[0]
    [first] = statuses(side.chunk(file, 0), DEVICE)
    staged = station.data / "staging" / DEVICE / f"{file.sha256}.part"
    stamp = staged.stat().st_mtime_ns
    [again] = statuses(side.chunk(file, 0), DEVICE)
    assert first.have == again.have == [[0, side.chunk_bytes]]
    assert staged.stat().st_mtime_ns == stamp  # not written a second time
    session = station.index.session(DEVICE, "s1")
    assert session is not None and (session.chunks_written, session.duplicate_chunks) == (1, 1)
    assert side.upload(file).stored
    [status] = statuses(side.chunk(file, 0), DEVICE)  # a late duplicate of a stored file
    assert status.stored and object_count(station) == 1


def test_chunks_of_another_size_fill_the_holes(station: Station, make_store: StoreFactory) -> None:
    side = records_sent(station, make_store)
    file = side.files()[0]
    side.chunk(file, 0)  # 16 KiB
    side.chunk_bytes = 10_000  # the broker's limit changed: the device cuts smaller chunks
    for offset in range(10_000, file.size, 10_000):
        [status] = statuses(side.chunk(file, offset), DEVICE)
    assert status.stored
    assert (station.device_root(DEVICE) / file.name).read_bytes() == (side.root / file.name).read_bytes()


def run_child(station: Station, side: DeviceSide, step: str, fault: str) -> subprocess.CompletedProcess[str]:
    station.close()  # the child is the receiver now
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO / "tests" / "station"), str(REPO)])}
    return subprocess.run([sys.executable, str(CHILD), str(station.data), str(side.root), DEVICE, step, fault],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=60, check=False)


def test_killed_after_storing_a_file_before_its_ack(station: Station, make_store: StoreFactory) -> None:
    side = records_sent(station, make_store)
    file = side.files()[0]
    result = run_child(station, side, "file", "kill-after-store")
    assert result.returncode == -signal.SIGKILL, result.stderr
    station.restart()
    assert station.index.stored_file(DEVICE, file.name) is not None  # stored and indexed before the kill
    assert acked_files(station) == []
    # The broker delivers the last chunk again (never acknowledged to it): stored, and now acknowledged.
    last = (file.size - 1) // side.chunk_bytes * side.chunk_bytes
    out = side.chunk(file, last)
    [status] = statuses(out, DEVICE)
    assert status.stored
    assert [f.file for a in station.acks(DEVICE, out) for f in a.ack.files] == [file.name]
    assert object_count(station) == 1 and station.index.file_totals(DEVICE) == (1, file.size)
    assert side.offer(file).stored  # and offered again in a later session: the same answer


def test_killed_after_storing_records_before_their_ack(station: Station, make_store: StoreFactory) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    result = run_child(station, side, "records", "kill-after-records")
    assert result.returncode == -signal.SIGKILL, result.stderr
    station.restart()
    lines = side.lines()
    assert side.hello().seq == 4  # the first batch was stored before the kill
    out = side.records(lines[:4])  # redelivered: duplicates, acknowledged now
    assert [(a.ack.seq, a.ack.session) for a in station.acks(DEVICE, out)] == [(4, "s1")]
    side.records(lines[4:])
    ledger = station.device_root(DEVICE) / "ledger.jsonl"
    assert ledger.read_bytes() == b"".join(lines)
    assert station.problems() == []


def test_a_ledger_copy_longer_than_the_index_has_its_tail_set_aside(station: Station,
                                                                       make_store: StoreFactory) -> None:
    side = records_sent(station, make_store)
    ledger = station.device_root(DEVICE) / "ledger.jsonl"
    stored = ledger.read_bytes()
    with open(writable(ledger), "ab") as handle:
        handle.write(b'{"half a line')  # as if the index write had not happened before a crash
    station.restart()
    assert ledger.read_bytes() == stored
    [aside] = (station.data / "ledger-pieces" / DEVICE).glob(f"0001-keep-{len(stored)}-*.jsonl")
    assert aside.read_bytes() == stored + b'{"half a line'  # the whole copy, its tail marked: nothing cut
    assert side.hello().seq == 9
    side.sync()
    enrolled = station.index.device(DEVICE)
    assert enrolled is not None
    report = verify_store(station.device_root(DEVICE), public_key_from_hex(enrolled.public_key))
    assert report.intact, report.problems  # the device's folder is still a store the verifier checks
