"""The receiver over whole sessions: what it stores, what it acknowledges and what it reports about records.

Driven through Receiver.handle with messages from sync/protocol.py and real ledgers (tests/helpers.py).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from helpers import FakeClock, seeded_key, stand_in_store
from station_support import STATION_ID, DeviceSide, Station, StoreFactory, hello_reply

import agent.evidence.verify as verify_module
import sync.station.intake as intake_module
from agent.evidence import keys
from agent.evidence.keys import DeviceKey
from agent.evidence.record import parse_line
from agent.evidence.store import StoreLayout, read_records
from agent.evidence.verify import verify_store
from sync.protocol import ClockReport, Done, ErrorNotice, Hello, down_topic, up_topic
from sync.station.model import DeviceRow

DEVICE = "dev-0001"


def synced(station: Station, make_store: StoreFactory, seconds: int = 5) -> tuple[DeviceSide, DeviceKey]:
    root, key = make_store(seconds=seconds)
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.sync()
    return side, key


def ledger_copy(station: Station, device: str = DEVICE) -> bytes:
    path = StoreLayout(station.device_root(device)).ledger_path
    return path.read_bytes() if path.exists() else b""


# --- a whole store ----------------------------------------------------------------------------------------


def test_full_store_synced_verifies_and_is_byte_identical(station: Station, make_store: StoreFactory) -> None:
    side, key = synced(station, make_store)
    copy = station.device_root(DEVICE)
    report = verify_store(copy, key.public_key)
    assert report.intact, [str(p) for p in report.problems]
    assert (report.records, report.segments) == (9, 5)
    assert ledger_copy(station) == StoreLayout(side.root).ledger_path.read_bytes()
    for file in side.files():
        stored = copy / file.name
        assert stored.read_bytes() == (side.root / file.name).read_bytes()
        assert stored.stat().st_mode & 0o777 == 0o444
        obj = station.store.object_path(file.sha256)
        assert os.path.samefile(stored, obj) and obj.stat().st_nlink == 2  # one object, linked once
    assert len(list((station.data / "objects").rglob("*/*/*"))) == 5
    assert station.problems() == []


def test_acks_are_signed_and_name_the_chain_and_the_files(station: Station, make_store: StoreFactory) -> None:
    side, _ = synced(station, make_store)
    acks = station.acks(DEVICE)
    records = read_records(side.root)
    links = {r.seq: r.link for r in records}
    for signed in acks:
        ack = signed.ack
        assert (ack.station, ack.key, ack.device, ack.session) == (STATION_ID, station.ack_key.fingerprint, DEVICE,
                                                                   "s1")
        assert links[ack.seq] == ack.link
    # The records came in batches of 4: 1-4, 5-8, 9; then one ack per stored file at the head.
    assert [a.ack.seq for a in acks if not a.ack.files] == [4, 8, 9]
    named = [(f.file, f.sha256, f.size) for a in acks for f in a.ack.files]
    assert named == [(f.name, f.sha256, f.size) for f in side.files()]
    assert all(a.ack.seq == 9 for a in acks if a.ack.files)


def test_hello_reply_carries_the_watermark_and_the_stations_stamps(station: Station,
                                                                  make_store: StoreFactory) -> None:
    side, _ = synced(station, make_store)
    head = read_records(side.root)[-1]
    out = station.send(DEVICE, "hello", Hello("s2", 123).encode())
    reply = hello_reply(out, DEVICE)
    assert (reply.session, reply.t1_us, reply.seq, reply.link) == ("s2", 123, head.seq, head.link)
    assert reply.t2_us < reply.t3_us  # received, then answered
    row = station.index.session(DEVICE, "s2")
    assert row is not None and row.t2_us == reply.t2_us


def test_first_hello_reports_nothing_held(station: Station) -> None:
    station.enroll(DEVICE, seeded_key(1))
    reply = hello_reply(station.send(DEVICE, "hello", Hello("s1", 5).encode()), DEVICE)
    assert (reply.seq, reply.link) == (0, "0" * 64)


def test_clock_offset_and_delay_from_the_four_stamps(station: Station) -> None:
    station.enroll(DEVICE, seeded_key(1))
    station.receiver.handle(up_topic(DEVICE, "hello"), Hello("s1", 1_000).encode(), received_us=5_000)
    # The device is 3.9 ms behind; 0.2 ms of the 0.4 ms round trip was the station's own processing.
    assert station.send(DEVICE, "clock", ClockReport("s1", 1_000, 5_000, 5_200, 1_400).encode()) == []
    row = station.index.session(DEVICE, "s1")
    assert row is not None
    assert (row.t1_us, row.t2_us, row.t3_us, row.t4_us) == (1_000, 5_000, 5_200, 1_400)
    assert (row.offset_us, row.delay_us) == (3_900, 200)


def test_a_clock_report_cannot_change_the_stations_own_stamps(station: Station) -> None:
    """t2 is the station's stamp: a device that rewrites it (or t1, or a t3 far after t2) would choose its
    own clock offset, and with it how its deadlines are judged."""
    station.enroll(DEVICE, seeded_key(1))
    station.receiver.handle(up_topic(DEVICE, "hello"), Hello("s1", 1_000).encode(), received_us=5_000)
    for stamps in ((1_000, 9_000_000_000, 9_000_000_100, 1_400), (2_000, 5_000, 5_200, 1_400),
                   (1_000, 5_000, 5_000 + 3_600_000_000, 1_400), (1_000, 5_000, 5_200, 900)):
        out = station.send(DEVICE, "clock", ClockReport("s1", *stamps).encode())
        [notice] = [ErrorNotice.decode(m.payload) for m in out if m.topic == down_topic(DEVICE, "error")]
        assert notice.reason.startswith("clock: session s1: "), notice
    row = station.index.session(DEVICE, "s1")
    assert row is not None and row.offset_us is None


def test_clock_for_a_session_never_opened_is_rejected(station: Station) -> None:
    station.enroll(DEVICE, seeded_key(1))
    out = station.send(DEVICE, "clock", ClockReport("nope", 1, 2, 3, 4).encode())
    [notice] = [ErrorNotice.decode(m.payload) for m in out if m.topic == down_topic(DEVICE, "error")]
    assert "never opened" in notice.reason
    assert [p.kind for p in station.problems()] == ["rejected-message"]


def test_a_second_session_sends_only_what_is_new(station: Station, make_store: StoreFactory, tmp_path: Path) -> None:
    root, key = make_store(seconds=2)
    station.enroll(DEVICE, key)
    DeviceSide(station, root, DEVICE).sync()
    later = FakeClock(wall_us=1_700_000_100_000_000, boot_id="0b0c0000-0000-4000-8000-000000000002")
    stand_in_store(root, key, DEVICE, 2, clock=later)  # the device ran again: 5 more records, 2 more segments
    side = DeviceSide(station, root, DEVICE, session="s2")
    reply = side.sync()
    assert reply.seq == 5
    report = verify_store(station.device_root(DEVICE), key.public_key)
    assert report.intact and report.records == len(side.lines()) and report.segments == 4
    session = station.index.session(DEVICE, "s2")
    assert session is not None and (session.records, session.files_stored, session.duplicate_records) == (5, 2, 0)
    assert station.problems() == []


# --- duplicates and order ---------------------------------------------------------------------------------


def test_duplicate_records_are_stored_once(station: Station, make_store: StoreFactory) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.hello()
    lines = side.lines()
    side.records(lines)
    before = station.evidence_digest()
    again = side.records(lines[2:7])  # a redelivery overlapping what is stored
    assert ledger_copy(station) == b"".join(lines)
    assert station.evidence_digest() == before
    assert station.problems() == []
    session = station.index.session(DEVICE, "s1")
    assert session is not None and (session.records, session.duplicate_records) == (9, 5)
    # A message of duplicates only is answered with the same ack again (the first may have been lost).
    assert {(a.ack.seq, a.ack.link) for a in station.acks(DEVICE, again)} == {(9, read_records(root)[-1].link)}


def test_out_of_order_batches_are_drained_in_order(station: Station, make_store: StoreFactory) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.hello()
    lines = side.lines()
    assert side.records(lines[6:]) == []  # held: nothing stored, nothing acknowledged
    assert side.records(lines[3:6]) == []
    assert ledger_copy(station) == b""
    out = side.records(lines[:3])
    assert [a.ack.seq for a in station.acks(DEVICE, out)] == [9]
    assert ledger_copy(station) == b"".join(lines)
    assert station.receiver.intake.pending(DEVICE) == []
    assert station.problems() == []


def test_held_records_are_bounded_per_device(tmp_path: Path, make_store: StoreFactory) -> None:
    station = Station(tmp_path / "data", limits={"max_pending_records": 2})
    try:
        root, key = make_store()
        station.enroll(DEVICE, key)
        side = DeviceSide(station, root, DEVICE)
        side.hello()
        lines = side.lines()
        side.records(lines[3:])  # seq 4..9: only two are held
        assert station.receiver.intake.pending(DEVICE) == [4, 5]
        out = side.records(lines[:3])
        assert [a.ack.seq for a in station.acks(DEVICE, out)] == [5]
        side.records(lines[5:])  # the device sends the rest again later
        assert ledger_copy(station) == b"".join(lines)
    finally:
        station.close()


def test_gap_is_reported_at_done_once_and_nothing_is_acked_past_it(station: Station,
                                                                   make_store: StoreFactory) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.hello()
    lines = side.lines()
    head = read_records(root)[-1]
    side.records(lines[:3] + lines[5:])  # seq 4 and 5 lost on the way
    side.done(head.seq, head.link)
    side.done(head.seq, head.link)  # a second done (or its redelivery): the same hole, one problem
    [gap] = station.problems("gap")
    assert (gap.device, gap.seq, gap.reason, gap.repeats, gap.resolved_us) == (DEVICE, 4, "records 4..5 missing", 2,
                                                                                None)
    assert max(a.ack.seq for a in station.acks(DEVICE)) == 3
    assert ledger_copy(station) == b"".join(lines[:3])
    side.records(lines[3:5])  # the hole fills: the held records follow, the gap is resolved
    assert ledger_copy(station) == b"".join(lines)
    [gap] = station.problems("gap")
    assert gap.resolved_us is not None


def test_done_reports_a_missing_tail(station: Station, make_store: StoreFactory) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.hello()
    side.records(side.lines()[:2])
    side.done(9, read_records(root)[-1].link)
    assert [(p.seq, p.reason) for p in station.problems()] == [(3, "records 3..9 missing")]
    session = station.index.session(DEVICE, "s1")
    assert session is not None and session.ended_us is not None


def test_done_with_a_huge_head_does_not_hang(station: Station) -> None:
    station.enroll(DEVICE, seeded_key(1))
    station.send(DEVICE, "done", Done("s1", 2**53 - 1, "0" * 64).encode())
    assert [p.reason for p in station.problems()] == [f"records 1..{2**53 - 1} missing"]


# --- records that are not the device's chain ----------------------------------------------------------------


def other_chain(tmp_path: Path, key: DeviceKey, device: str = DEVICE, name: str = "other") -> list[bytes]:
    """A second, different ledger: same key and device id, other times (so other records)."""
    root = tmp_path / name
    stand_in_store(root, key, device, 5, clock=FakeClock(wall_us=1_700_000_500_000_000))
    return StoreLayout(root).ledger_path.read_bytes().splitlines(keepends=True)


def test_fork_of_a_stored_record_is_reported_and_changes_nothing(station: Station, make_store: StoreFactory,
                                                                 tmp_path: Path) -> None:
    _, key = synced(station, make_store)
    before = station.evidence_digest()
    forked = other_chain(tmp_path, key)
    assert station.send(DEVICE, "records", forked[1]) == []
    [fork] = station.problems()
    assert (fork.kind, fork.seq) == ("fork", 2) and fork.reason.startswith("fork: the station holds a different")
    assert station.evidence_digest() == before


def test_fork_at_the_next_record_is_reported(station: Station, make_store: StoreFactory, tmp_path: Path) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.hello()
    side.records(side.lines()[:3])
    station.send(DEVICE, "records", other_chain(tmp_path, key)[3])  # seq 4 of another history
    [fork] = station.problems()
    assert (fork.kind, fork.seq) == ("fork", 4) and "prev hash does not match the link of seq 3" in fork.reason
    assert ledger_copy(station) == b"".join(side.lines()[:3])


def test_record_signed_by_another_key_is_not_stored(station: Station, make_store: StoreFactory,
                                                    tmp_path: Path) -> None:
    station.enroll(DEVICE, seeded_key(1))
    forged = other_chain(tmp_path, seeded_key(7))  # right device id, wrong key
    assert station.send(DEVICE, "records", b"".join(forged)) == []
    [problem] = station.problems()
    assert (problem.kind, problem.seq, problem.device) == ("wrong-key", 1, DEVICE)
    assert ledger_copy(station) == b"" and station.acks(DEVICE) == []


def test_record_with_a_bad_signature_is_not_stored(station: Station, make_store: StoreFactory) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    lines = StoreLayout(root).ledger_path.read_bytes().splitlines(keepends=True)
    payload, _, sig = lines[2].rstrip(b"\n").rpartition(b"\t")
    tampered = payload + b"\t" + (b"0" if sig[:1] != b"0" else b"1") + sig[1:] + b"\n"
    out = station.send(DEVICE, "records", lines[0] + lines[1] + tampered + lines[3])
    assert [(p.kind, p.seq, p.reason) for p in station.problems()] == [("bad-signature", 3, "signature invalid")]
    assert ledger_copy(station) == lines[0] + lines[1]  # what came before it is stored, nothing after
    assert [a.ack.seq for a in station.acks(DEVICE, out)] == [2]


def test_a_signature_is_verified_once_and_a_forged_link_is_a_bad_signature_not_a_fork(
        station: Station, make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    lines = StoreLayout(root).ledger_path.read_bytes().splitlines(keepends=True)
    checked: list[bytes] = []

    def counting(public_key: Ed25519PublicKey, payload: bytes, signature: bytes) -> bool:
        checked.append(payload)
        return keys.verify_signature(public_key, payload, signature)

    monkeypatch.setattr(verify_module, "verify_signature", counting)
    monkeypatch.setattr(intake_module, "verify_signature", counting)
    station.send(DEVICE, "records", lines[0] + lines[1])
    assert len(checked) == 2  # one Ed25519 verification per record, not one per check
    # seq 3 with its prev hash altered: off the chain, and not signed as it stands: a forgery, not a fork.
    prev = parse_line(lines[2]).record.prev
    forged = lines[2].replace(prev.encode(), prev[::-1].encode())
    assert forged != lines[2]
    station.send(DEVICE, "records", forged)
    assert [(p.kind, p.seq, p.reason) for p in station.problems()] == [("bad-signature", 3, "signature invalid")]
    assert ledger_copy(station) == lines[0] + lines[1]


def test_spliced_record_of_another_device_is_refused(station: Station, make_store: StoreFactory,
                                                     other_store: tuple[Path, DeviceKey]) -> None:
    _, key = make_store()
    other_root, other_key = other_store
    station.enroll(DEVICE, key)
    station.enroll("dev-0002", other_key)
    theirs = StoreLayout(other_root).ledger_path.read_bytes().splitlines(keepends=True)
    assert station.send(DEVICE, "records", theirs[0]) == []
    [problem] = station.problems()
    assert (problem.kind, problem.device, problem.seq) == ("spliced", DEVICE, 1)
    assert "dev-0002" in problem.reason
    assert not (station.data / "devices").exists()


def test_unknown_and_revoked_devices_store_nothing(station: Station, make_store: StoreFactory) -> None:
    root, key = make_store()
    lines = StoreLayout(root).ledger_path.read_bytes()
    out = station.send(DEVICE, "records", lines)
    [notice] = [ErrorNotice.decode(m.payload) for m in out]
    assert "not enrolled" in notice.reason
    row = DeviceRow(DEVICE, key.public_raw.hex(), key.fingerprint, 1, revoked=True)
    station.index.put_device(row)
    station.send(DEVICE, "hello", Hello("s1", 1).encode())
    assert [(p.kind, p.reason) for p in station.problems()] == [
        ("unknown-device", "device not enrolled: message refused, nothing stored"),
        ("unknown-device", "device revoked: message refused, nothing stored"),
    ]
    assert not (station.data / "devices").exists() and not (station.data / "objects").exists()


def test_malformed_line_is_reported_and_ends_the_message(station: Station, make_store: StoreFactory) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    lines = StoreLayout(root).ledger_path.read_bytes().splitlines(keepends=True)
    station.send(DEVICE, "records", lines[0] + b"{not a record}\tabc\n" + lines[1])
    [problem] = station.problems()
    assert problem.kind == "malformed" and problem.reason.startswith("malformed record")
    assert ledger_copy(station) == lines[0]


def test_records_vouch_for_files_before_their_bytes_arrive(station: Station, make_store: StoreFactory) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.hello()
    side.records(side.lines())
    waiting = station.index.claims_waiting(DEVICE)
    assert [(c.name, c.sha256, c.size, c.seq) for c in waiting] == [(f.name, f.sha256, f.size, f.seq)
                                                                   for f in side.files()]
    content = (root / waiting[0].name).read_bytes()
    assert hashlib.sha256(content).hexdigest() == waiting[0].sha256


def test_a_genuine_record_with_an_inconsistent_content_is_stored_and_reported(station: Station,
                                                                              make_store: StoreFactory) -> None:
    root, key = make_store(seconds=1)
    station.enroll(DEVICE, key)
    # A second run under the same boot id with the monotonic clock started again: the verifier objects.
    stand_in_store(root, key, DEVICE, 1, clock=FakeClock(wall_us=1_700_000_100_000_000))
    side = DeviceSide(station, root, DEVICE)
    side.sync()
    [problem] = station.problems()
    assert (problem.kind, problem.seq) == ("inconsistent", 5)
    assert problem.reason.startswith("monotonic time went backwards")
    assert ledger_copy(station) == b"".join(side.lines())  # the station's copy is still the device's ledger
    report = verify_store(station.device_root(DEVICE), key.public_key)
    assert [str(p) for p in report.problems] == [f"seq 5: {problem.reason}"]  # the auditor sees the same
