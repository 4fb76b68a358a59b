"""Messages the receiver must refuse: each one logged, recorded as a problem and answered on down/error when
the device is known from the topic; none of them raises, stops the receiver or changes stored evidence."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from helpers import seeded_key
from station_support import DeviceSide, Station, StoreFactory, statuses

from agent.evidence.store import StoreLayout
from agent.evidence.verify import verify_store
from sync.protocol import UP_KINDS, ChunkHeader, ErrorNotice, FileOffer, down_topic, encode_chunk
from sync.station.model import Outgoing

DEVICE = "dev-0001"


@pytest.fixture
def synced(station: Station, make_store: StoreFactory) -> DeviceSide:
    """dev-0001 enrolled and fully synced (5 segments), so there is evidence that must not change."""
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.sync()
    return side


def notices(out: list[Outgoing], device: str = DEVICE) -> list[ErrorNotice]:
    return [ErrorNotice.decode(m.payload) for m in out if m.topic == down_topic(device, "error")]


def still_works(station: Station, side: DeviceSide) -> None:
    """The receiver answers a proper hello and the stored copy still verifies."""
    reply = side.hello()
    assert reply.seq == 9
    report = verify_store(station.device_root(DEVICE), seeded_key(1).public_key)
    assert report.intact, [str(p) for p in report.problems]


def test_random_bytes_on_every_up_topic_are_rejected(station: Station, synced: DeviceSide) -> None:
    before = station.evidence_digest()
    rng = random.Random(5)
    for kind in UP_KINDS:
        for size in (0, 1, 17, 4096):
            payload = rng.randbytes(size)
            out = station.send(DEVICE, kind, payload)
            if kind == "records" and size == 0:
                assert "empty" in notices(out)[0].reason
            assert len(notices(out)) == 1, (kind, size, out)
    problems = station.problems()
    assert problems and {p.kind for p in problems} == {"rejected-message"}
    assert all(p.device == DEVICE and p.topic and p.topic.startswith("bodycam/dev-0001/up/") for p in problems)
    assert station.evidence_digest() == before
    still_works(station, synced)


def test_json_with_unknown_or_missing_fields_is_rejected(station: Station, synced: DeviceSide) -> None:
    cases = {
        "hello": b'{"extra":1,"session":"s","t1_us":1,"v":1}',
        "clock": b'{"session":"s","v":1}',
        "file": b'{"file":"segments/000001.bin","session":"s","sha256":"00","size":1,"v":1}',
        "done": b'{"head_link":"x","head_seq":-1,"session":"s","v":1}',
    }
    for kind, payload in cases.items():
        assert len(notices(station.send(DEVICE, kind, payload))) == 1, kind
    assert len(station.problems("rejected-message")) == 4
    still_works(station, synced)


def chunk_of(side: DeviceSide, index: int = 0) -> tuple[ChunkHeader, bytes]:
    file = side.files()[index]
    data = (side.root / file.name).read_bytes()[:1000]
    return ChunkHeader(file.name, file.sha256, file.size, 0, len(data), hashlib.sha256(data).hexdigest()), data


def test_broken_chunks_are_rejected(station: Station, make_store: StoreFactory) -> None:
    root, key = make_store()
    station.enroll(DEVICE, key)
    side = DeviceSide(station, root, DEVICE)
    side.hello()
    side.records(side.lines())
    header, data = chunk_of(side)
    good = encode_chunk(header, data)
    wrong_hash = encode_chunk(ChunkHeader(header.file, header.sha256, header.size, 0, len(data), "0" * 64), data)
    reasons = {
        "wrong chunk sha256": wrong_hash,
        "truncated": good[:-10],
        "header garbage": b"\xff\xfe not json\n" + data,
        "no header line": b"x" * 2000,
        "unclaimed file": encode_chunk(ChunkHeader("segments/999999.bin", header.sha256, header.size, 0, len(data),
                                                   header.chunk_sha256), data),
        "past the end": encode_chunk(ChunkHeader(header.file, header.sha256, 500, 0, len(data), header.chunk_sha256),
                                     data),
    }
    for what, payload in reasons.items():
        out = station.send(DEVICE, "chunk", payload)
        assert len(notices(out)) == 1 and statuses(out, DEVICE) == [], what
    assert len(station.problems("rejected-message")) == len(reasons)
    assert "sha256 mismatch" in station.problems()[0].reason
    assert station.index.ranges(DEVICE, header.sha256) == []
    assert not (station.data / "staging").exists()  # nothing was written
    [status] = statuses(station.send(DEVICE, "chunk", good), DEVICE)  # a good chunk still works
    assert status.have == [[0, 1000]]


def test_offer_of_a_file_no_record_vouches_for_is_rejected(station: Station, synced: DeviceSide) -> None:
    file = synced.files()[0]
    wrong = [
        FileOffer("s1", "segments/000099.bin", file.sha256, file.size),
        FileOffer("s1", file.name, "ab" * 32, file.size),
        FileOffer("s1", file.name, file.sha256, file.size + 1),
    ]
    for offer in wrong:
        out = station.send(DEVICE, "file", offer.encode())
        assert statuses(out, DEVICE) == [] and station.acks(DEVICE, out) == []
        assert "vouch" in notices(out)[0].reason
    still_works(station, synced)


def test_oversized_payload_is_refused_unread(tmp_path: Path, make_store: StoreFactory) -> None:
    station = Station(tmp_path / "data", limits={"max_message_bytes": 65_536})
    try:
        root, key = make_store()
        station.enroll(DEVICE, key)
        lines = StoreLayout(root).ledger_path.read_bytes()
        padded = lines + b"x" * 70_000  # a valid start, but too big: nothing of it may be taken
        out = station.send(DEVICE, "records", padded)
        assert "more than the 65536 allowed (not read)" in notices(out)[0].reason
        assert not (station.data / "devices").exists()
        out = station.send(DEVICE, "records", lines)
        assert station.acks(DEVICE, out)  # the receiver goes on
    finally:
        station.close()


@pytest.mark.parametrize("topic", [
    "bodycam/dev-0001/up/unknown", "bodycam/dev-0001/sideways/hello", "bodycam/dev-0001/up/records/extra",
    "other/dev-0001/up/hello", "bodycam/../up/hello", "bodycam/dev-0001/down/ack", "",
])
def test_topics_outside_the_contract_are_rejected(station: Station, synced: DeviceSide, topic: str) -> None:
    before = station.evidence_digest()
    out = station.send_topic(topic, b"{}")
    [problem] = station.problems()
    assert problem.kind == "rejected-message"
    named = topic.startswith("bodycam/dev-0001/")
    assert problem.device == (DEVICE if named else None)
    # A device known from the topic is told why, but never on a station-to-device topic's message.
    assert len(notices(out)) == (1 if named and "/down/" not in topic else 0)
    assert station.evidence_digest() == before
    still_works(station, synced)


def test_rejection_without_a_device_names_no_device(station: Station) -> None:
    assert station.send_topic("bodycam/+/up/hello", b"x") == []
    [problem] = station.problems()
    assert problem.device is None and problem.text.startswith("unknown device: message rejected")


def test_the_same_rejection_repeated_is_one_problem(station: Station, synced: DeviceSide) -> None:
    for _ in range(3):
        station.send(DEVICE, "hello", b"garbage")
    [problem] = station.problems()
    assert problem.repeats == 3
