"""Issue 12, fault 2: the station re-checks what it stored (sync/station/scrub.py), and keeps it read-only.

Real ledgers synced through the receiver (station_support), then evidence deleted or changed on disk the
way someone with access to the data folder would.
"""

from __future__ import annotations

import stat

import pytest
from helpers import writable
from station_support import DeviceSide, Station, StoreFactory

from sync.station import cli
from sync.station.model import ALTERED_EVIDENCE, MISSING_EVIDENCE, FileRow
from sync.station.scrub import Scrubber, ScrubSchedule

DEVICE = "dev-0001"
OTHER = "dev-0002"


def synced(station: Station, make_store: StoreFactory, device: str = DEVICE, seed: int = 1) -> DeviceSide:
    root, key = make_store(seed=seed, device_id=device)
    station.enroll(device, key)
    side = DeviceSide(station, root, device)
    side.sync()
    return side


def scrubber(station: Station, slice_bytes: int = 8 * 1024 * 1024) -> Scrubber:
    return Scrubber(store=station.store, index=station.index, problems=station.receiver.problems,
                    slice_bytes=slice_bytes)


def second_file(station: Station) -> FileRow:
    row = station.index.stored_file(DEVICE, "segments/000002.bin") or next(
        r for r in station.index.files_after(("", ""), 10) if r.name.startswith("segments/000002"))
    return row


def test_a_clean_store_scrubs_clean(station: Station, make_store: StoreFactory) -> None:
    synced(station, make_store)
    summary = scrubber(station).run()
    assert (summary.devices, summary.files, summary.findings) == (1, 5, [])
    assert summary.bytes > 0
    assert station.problems() == []


def test_a_segment_deleted_from_the_device_folder_is_missing_evidence(station: Station,
                                                                      make_store: StoreFactory) -> None:
    synced(station, make_store)
    row = second_file(station)
    writable(station.device_root(DEVICE) / row.name).unlink()

    summary = scrubber(station).run()

    [problem] = station.problems()
    assert (problem.kind, problem.device, problem.seq, problem.object) == (MISSING_EVIDENCE, DEVICE, row.seq, row.name)
    assert problem.text == f"device {DEVICE} seq {row.seq}: {row.name}: gone from the device's folder"
    assert summary.findings == [problem.text]


def test_a_flipped_byte_in_an_object_is_altered_evidence(station: Station, make_store: StoreFactory) -> None:
    synced(station, make_store)
    row = second_file(station)
    path = writable(station.store.object_path(row.sha256))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))  # the same inode: the device folder's hard link changes with it

    scrubber(station).run()

    [problem] = station.problems()
    assert (problem.kind, problem.device, problem.seq, problem.object) == (ALTERED_EVIDENCE, DEVICE, row.seq, row.name)
    assert "sha256 mismatch" in problem.reason
    # Found again at the next pass: counted, not listed twice.
    scrubber(station).run()
    [again] = station.problems()
    assert again.repeats == 2


def test_a_deleted_object_and_a_replaced_name_are_reported(station: Station, make_store: StoreFactory) -> None:
    synced(station, make_store)
    rows = station.index.files_after(("", ""), 10)
    writable(station.store.object_path(rows[0].sha256)).unlink()
    named = writable(station.device_root(DEVICE) / rows[1].name)
    content = named.read_bytes()
    named.unlink()
    named.write_bytes(content)  # same bytes, but no longer the stored object

    scrubber(station).run()

    found = {(p.kind, p.seq, p.object): p.reason for p in station.problems()}
    assert found[(MISSING_EVIDENCE, rows[0].seq, rows[0].name)].endswith("gone from objects/ (the device's "
                                                                          "folder still names a file)")
    assert "names another file" in found[(ALTERED_EVIDENCE, rows[1].seq, rows[1].name)]


def test_a_changed_ledger_line_is_altered_evidence(station: Station, make_store: StoreFactory) -> None:
    synced(station, make_store)
    ledger = writable(station.device_root(DEVICE) / "ledger.jsonl")
    row = station.index.record(DEVICE, 7)
    assert row is not None
    data = bytearray(ledger.read_bytes())
    data[row.offset + 20] ^= 0x01
    ledger.write_bytes(bytes(data))

    scrubber(station).run()

    [problem] = station.problems()
    assert (problem.kind, problem.seq, problem.object) == (ALTERED_EVIDENCE, 7, "ledger.jsonl")


def test_the_scrub_runs_in_slices_and_the_receiver_serves_in_between(station: Station,
                                                                     make_store: StoreFactory) -> None:
    synced(station, make_store)
    scrub = scrubber(station, slice_bytes=1024)
    steps = 0
    while not scrub.step():
        steps += 1
        if steps == 3:  # mid-pass, another device syncs through the same receiver and index
            synced(station, make_store, OTHER, seed=2)
    assert steps > 10
    assert scrub.summary.findings == [] and station.problems() == []


def test_the_schedule_runs_a_pass_at_start_then_at_each_interval(station: Station,
                                                                 make_store: StoreFactory) -> None:
    synced(station, make_store)
    now = [100.0]
    schedule = ScrubSchedule(scrubber(station, slice_bytes=4096), 60, clock=lambda: now[0])
    while schedule.tick():
        pass
    assert schedule.passes == 1
    now[0] += 30
    assert not schedule.tick() and schedule.passes == 1  # not due yet
    writable(station.device_root(DEVICE) / second_file(station).name).unlink()
    now[0] += 31
    while schedule.tick():
        pass
    assert schedule.passes == 2
    assert [p.kind for p in station.problems()] == [MISSING_EVIDENCE]


def test_stored_evidence_is_read_only(station: Station, make_store: StoreFactory) -> None:
    synced(station, make_store)
    root = station.device_root(DEVICE)
    for folder in (root, root / "segments", root / "quarantine"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o550, folder
    for path in (root / "ledger.jsonl", root / "station-acks.jsonl", *(root / "segments").iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o444, path
    for folder in (station.data / "objects" / "sha256").iterdir():
        assert stat.S_IMODE(folder.stat().st_mode) == 0o550, folder
    # Still appendable by the receiver: a new session adds records and acks.
    synced(station, make_store)
    assert stat.S_IMODE((root / "ledger.jsonl").stat().st_mode) == 0o444


@pytest.mark.parametrize("damage", [False, True])
def test_scrub_command(station: Station, make_store: StoreFactory, capsys: pytest.CaptureFixture[str],
                       damage: bool) -> None:
    synced(station, make_store)
    config = station.data.parent / "station.toml"
    config.write_text(f'[station]\nid = "s"\ndata = "{station.data}"\nkey = "{station.data.parent / "ack.key"}"\n')
    if damage:
        row = second_file(station)
        writable(station.device_root(DEVICE) / row.name).unlink()

    code = cli.main(["scrub", "--config", str(config)])

    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("scrub: 1 device(s), 5 file(s), ")
    if damage:
        assert code == cli.EXIT_PROBLEMS
        assert out[0] == f"PROBLEM device {DEVICE} seq {row.seq}: {row.name}: gone from the device's folder"
    else:
        assert code == cli.EXIT_OK and len(out) == 1
