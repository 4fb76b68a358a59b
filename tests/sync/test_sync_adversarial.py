"""A misbehaving or unlucky device against the real station: a raw MQTT client, a real broker, a real receiver.

Each test plays a device with a paho client (``connect(world.broker, "dev-a")``) that sends what the real
uploader never would: duplicates and batches out of order, forged, spliced and forked records, holes, garbage,
oversized payloads, another device's topics. ``bodycam-station serve`` runs as its own process; the assertions
read what it stored (ledger copy, objects, SQLite index) and what it sent back on the device's down topics.

The receiver handles messages one at a time in arrival order, so a ``hello`` (same session, a fresh ``t1_us``)
is a barrier: once its reply arrives, everything published before it has been handled.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from broker_fixture import Delivery, TestClient, connect
from helpers import DeviceFile, vouched_files, wait_for
from sync_world import SyncWorld, ledger_lines

from agent.evidence.ack import SignedAck, parse_ack, verify_ack
from agent.evidence.encoding import canonical_json, parse_canonical_json
from agent.evidence.keys import DeviceKey, load_or_create_device_key
from agent.evidence.ledger import Ledger
from agent.evidence.record import SignedRecord, parse_line
from agent.evidence.store import segment_file_name
from agent.evidence.verify import verify_store
from sync.protocol import (
    ChunkHeader,
    ClockReport,
    Done,
    ErrorNotice,
    FileOffer,
    FileStatus,
    Hello,
    HelloReply,
    down_subscription,
    down_topic,
    encode_chunk,
    up_topic,
)

DEVICE, OTHER = "dev-a", "dev-b"
SESSION = "adv-1"
NOT_AUTHORIZED = 135
REPLY_TIMEOUT_S = 15.0
QUIET_S = 1.0


# ---------------------------------------------------------------------------------------------- device stores


@dataclass
class DeviceStore:
    """A real device store (agent.evidence.ledger.Ledger, signed by ``key``) and what the tests read of it."""

    root: Path
    key: DeviceKey
    key_path: Path
    device: str

    def lines(self) -> list[bytes]:
        return ledger_lines(self.root)

    def ledger_bytes(self) -> bytes:
        return b"".join(self.lines())

    def head(self) -> tuple[int, str]:
        last = parse_line(self.lines()[-1])
        return last.seq, last.link

    def link_of(self, seq: int) -> str:
        return parse_line(self.lines()[seq - 1]).link

    def files(self) -> list[DeviceFile]:
        return vouched_files(self.root)

    def content(self, file: DeviceFile) -> bytes:
        return (self.root / file.name).read_bytes()


def make_store(tmp_path: Path, device: str, records: int, segments: dict[int, int] | None = None,
               name: str | None = None, seed: int = 7) -> DeviceStore:
    """A store of ``records`` records: a boot record, then events; ``segments`` maps a seq to a segment of that
    many random bytes recorded there."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    key_path = tmp_path / f"{device}.key"
    key = load_or_create_device_key(key_path)
    root = tmp_path / (name or f"{device}-store")
    rng = random.Random(seed)
    with Ledger.open(root, key, device, boot_reason="test") as ledger:
        append_records(ledger, records, segments or {}, rng)
    return DeviceStore(root, key, key_path, device)


def append_records(ledger: Ledger, upto: int, segments: dict[int, int], rng: random.Random, tag: str = "e") -> None:
    while ledger.head[0] < upto:
        seq = ledger.head[0] + 1
        if seq in segments:
            index = ledger.next_segment_index()
            stored = ledger.layout.write_segment(segment_file_name(index, "ts"), rng.randbytes(segments[seq]))
            ledger.append("segment", {"file": stored.name, "sha256": stored.sha256, "size": stored.size})
        else:
            ledger.append("event", {"kind": f"{tag}-{seq}"})


def resigned(line: bytes, signer: DeviceKey, **header: object) -> bytes:
    """The record of ``line`` with header fields replaced, signed by ``signer``."""
    original = parse_line(line)
    record = replace(original.record, **header)  # type: ignore[arg-type]
    payload = record.to_payload()
    return SignedRecord(record, payload, signer.sign(payload)).to_line()


def flipped_signature(line: bytes) -> bytes:
    payload, _, sig = line.rstrip(b"\n").rpartition(b"\t")
    first = b"0" if sig[:1] != b"0" else b"1"
    return payload + b"\t" + first + sig[1:] + b"\n"


# ---------------------------------------------------------------------------------------------- the raw device


class RawDevice:
    """A device that speaks the protocol by hand, message by message, and keeps everything it receives."""

    def __init__(self, world: SyncWorld, device: str = DEVICE, session: str = SESSION) -> None:
        self.world = world
        self.device = device
        self.session = session
        self.client: TestClient = connect(world.broker, device)
        codes = self.client.subscribe_wait(down_subscription(device))
        assert not codes[0].is_failure, codes
        self.received: list[Delivery] = []
        self._t1 = 1_700_000_000_000_000

    def publish(self, kind: str, payload: bytes, topic: str | None = None) -> None:
        result = self.client.publish_wait(topic or up_topic(self.device, kind), payload, timeout=REPLY_TIMEOUT_S)
        assert result.reason_code is not None and not result.reason_code.is_failure, result.reason_code

    def hello(self) -> HelloReply:
        """Publish a hello and wait for its reply: a barrier (every earlier message has been handled)."""
        self._t1 += 1
        t1 = self._t1
        self.publish("hello", Hello(self.session, t1).encode())
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while True:
            message = self.client.next_message(timeout=max(0.01, deadline - time.monotonic()))
            if message is None:
                raise AssertionError(f"no hello reply within {REPLY_TIMEOUT_S} s; station log:\n"
                                     f"{self.world.log_text()[-3000:]}")
            self.received.append(message)
            if message.topic == down_topic(self.device, "hello"):
                reply = HelloReply.decode(message.payload)
                if reply.t1_us == t1:
                    return reply

    barrier = hello

    def clock(self, reply: HelloReply) -> None:
        report = ClockReport(self.session, reply.t1_us, reply.t2_us, reply.t3_us, reply.t3_us + 500)
        self.publish("clock", report.encode())

    def records(self, lines: list[bytes]) -> None:
        self.publish("records", b"".join(lines))

    def offer(self, file: DeviceFile) -> None:
        self.publish("file", FileOffer(self.session, file.name, file.sha256, file.size).encode())

    def chunk(self, file: DeviceFile, content: bytes, offset: int, length: int) -> None:
        data = content[offset:offset + length]
        header = ChunkHeader(file.name, file.sha256, file.size, offset, len(data), hashlib.sha256(data).hexdigest())
        self.publish("chunk", encode_chunk(header, data))

    def upload(self, file: DeviceFile, content: bytes, chunk: int = 8192) -> None:
        self.offer(file)
        for offset in range(0, file.size, chunk):
            self.chunk(file, content, offset, chunk)

    def done(self, head_seq: int, head_link: str) -> None:
        self.publish("done", Done(self.session, head_seq, head_link).encode())

    def of_kind(self, kind: str) -> list[Delivery]:
        return [m for m in self.received if m.topic == down_topic(self.device, kind)]

    def acks(self) -> list[SignedAck]:
        """Every ack received, each parsed and checked against the station's key and this device."""
        found = []
        for message in self.of_kind("ack"):
            signed = parse_ack(message.payload)
            verify_ack(signed, self.world.station_key.public_key, self.device)
            found.append(signed)
        return found

    def ack_seqs(self) -> list[int]:
        return [a.ack.seq for a in self.acks()]

    def errors(self) -> list[ErrorNotice]:
        return [ErrorNotice.decode(m.payload) for m in self.of_kind("error")]

    def statuses(self) -> list[FileStatus]:
        return [FileStatus.decode(m.payload) for m in self.of_kind("file")]

    def forget(self) -> None:
        """Start counting replies afresh (after a barrier)."""
        self.received.clear()


def running_world(world: SyncWorld, *stores: DeviceStore) -> None:
    for store in stores:
        world.enroll(store.device, store.key)
    world.start_station()


def stored_seqs(world: SyncWorld, device: str = DEVICE) -> list[int]:
    return [s for (s,) in world.query("SELECT seq FROM records WHERE device = ? ORDER BY seq", device)]


def copy_bytes(world: SyncWorld, device: str = DEVICE) -> bytes:
    path = world.device_copy(device) / "ledger.jsonl"
    return path.read_bytes() if path.exists() else b""


def drain(client: TestClient, quiet: float = QUIET_S) -> list[Delivery]:
    messages = []
    while (message := client.next_message(timeout=quiet)) is not None:
        messages.append(message)
    return messages


# ---------------------------------------------------------------------------------------------- 1. duplicates


def test_duplicated_and_reordered_records_and_chunks_are_stored_once_in_order(world: SyncWorld,
                                                                               tmp_path: Path) -> None:
    store = make_store(tmp_path, DEVICE, records=20, segments={6: 40_000, 15: 35_000})
    lines = store.lines()
    assert len(lines) == 20
    files = store.files()
    assert [f.seq for f in files] == [6, 15]
    running_world(world, store)
    device = RawDevice(world)

    device.clock(device.hello())
    batch1, batch2, batch3 = lines[:7], lines[7:14], lines[14:]
    for batch in (batch2, batch1, batch3, batch3, batch1):
        device.records(batch)
    device.barrier()
    # batch 2 was held until batch 1 came (one ack for both); the duplicates are acknowledged again. How many
    # acks that makes depends on how the station batched the messages (acks merge within a batch); what
    # never changes: they only go up, never past what is stored, and end at the head.
    seqs = device.ack_seqs()
    assert seqs and seqs == sorted(seqs) and seqs[-1] == 20
    assert set(seqs) <= {14, 20}
    assert stored_seqs(world) == list(range(1, 21))

    chunk = 8192
    rng = random.Random(3)
    sent_chunks: Counter[tuple[str, int]] = Counter()
    for file in reversed(files):  # offers out of order, and twice
        device.offer(file)
        device.offer(file)
    for file in files:
        content = store.content(file)
        offsets = list(range(0, file.size, chunk))
        order = offsets[:]
        rng.shuffle(order)
        order = [order[1], order[0], order[1], *order[2:-1], order[0], order[3]]  # duplicates, last one missing
        for offset in order:
            device.chunk(file, content, offset, chunk)
            sent_chunks[(file.name, offset)] += 1
        device.barrier()
        held = world.query("SELECT offset, length FROM ranges WHERE device = ? AND sha256 = ? ORDER BY offset",
                           DEVICE, file.sha256)
        # Each range staged once, whatever number of times it arrived; the file is not complete yet.
        assert [o for o, _ in held] == sorted(set(order))
        assert world.query("SELECT COUNT(*) FROM files WHERE device = ?", DEVICE)[0][0] == files.index(file)
        last = (set(offsets) - set(order)).pop()
        device.chunk(file, content, last, chunk)
        device.chunk(file, content, order[0], chunk)  # a late duplicate after the file is stored
        sent_chunks[(file.name, last)] += 1
        sent_chunks[(file.name, order[0])] += 1
    device.done(*store.head())
    device.barrier()

    assert copy_bytes(world) == store.ledger_bytes()
    assert [s for (s,) in world.query("SELECT seq FROM records WHERE device = ?", DEVICE)] == list(range(1, 21))
    rows = world.query("SELECT name, sha256, size, seq FROM files WHERE device = ? ORDER BY name", DEVICE)
    assert rows == [(f.name, f.sha256, f.size, f.seq) for f in files]
    for file in files:
        assert (world.device_copy(DEVICE) / file.name).read_bytes() == store.content(file)
    objects = sorted(p.name for p in (world.data / "objects").rglob("*") if p.is_file())
    assert objects == sorted(f.sha256 for f in files)
    assert world.query("SELECT COUNT(*) FROM ranges WHERE device = ?", DEVICE) == [(0,)]
    distinct = len(sent_chunks)
    written, duplicates, dup_records = world.query(
        "SELECT SUM(chunks_written), SUM(duplicate_chunks), SUM(duplicate_records) FROM sessions WHERE device = ?",
        DEVICE)[0]
    assert (written, duplicates) == (distinct, sum(sent_chunks.values()) - distinct)
    assert dup_records == len(batch1) + len(batch3)

    acks = device.acks()
    seqs = [a.ack.seq for a in acks]
    assert seqs == sorted(seqs) and max(seqs) == 20
    assert all(a.ack.link == store.link_of(a.ack.seq) for a in acks)
    named = Counter(f.sha256 for a in acks for f in a.ack.files)
    # Once when stored, once more for the chunk that came after.
    assert named == {f.sha256: 2 for f in files}
    assert world.problems() == []
    report = verify_store(world.device_copy(DEVICE), store.key.public_key)
    assert report.intact, [str(p) for p in report.problems]


# ---------------------------------------------------------------------------------------------- 1b. overlapping chunks


def test_overlapping_chunk_with_other_bytes_is_never_stored_as_the_file(world: SyncWorld, tmp_path: Path) -> None:
    """A chunk that overlaps one already held and carries other bytes (its own chunk_sha256 right) rewrites part
    of the staged file; the whole file no longer matches its record: reported, discarded, never acknowledged."""
    store = make_store(tmp_path, DEVICE, records=4, segments={3: 40_000})
    (file,) = store.files()
    content = store.content(file)
    running_world(world, store)
    device = RawDevice(world)
    device.hello()
    device.records(store.lines())
    device.offer(file)

    chunk = 8192
    device.chunk(file, content, 0, chunk)
    wrong = bytes(b ^ 0xFF for b in content[4096:4096 + chunk])
    header = ChunkHeader(file.name, file.sha256, file.size, 4096, chunk, hashlib.sha256(wrong).hexdigest())
    device.publish("chunk", encode_chunk(header, wrong))  # bytes 4096..12287, not the file's
    for offset in range(chunk, file.size, chunk):
        device.chunk(file, content, offset, chunk)
    device.barrier()

    for path in (p for p in (world.data / "objects").rglob("*") if p.is_file()):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, "an object's bytes do not match its name"
    assert world.query("SELECT COUNT(*) FROM files WHERE device = ?", DEVICE) == [(0,)]
    assert not [f for a in device.acks() for f in a.ack.files]
    assert [(k, s) for k, s, _ in world.problems(DEVICE)] == [("bad-bytes", file.seq)]

    device.upload(file, content)  # offered again, all of it: now stored, byte for byte
    device.barrier()
    assert (world.device_copy(DEVICE) / file.name).read_bytes() == content


# ---------------------------------------------------------------------------------------------- 2. forgeries

FORGED_AT = 5


@pytest.mark.parametrize(("forgery", "kind"), [
    ("key-field-of-another-key", "wrong-key"),
    ("signature-bytes-flipped", "bad-signature"),
    ("signed-by-another-key", "bad-signature"),
])
def test_forged_record_is_reported_and_nothing_at_or_past_it_is_stored(world: SyncWorld, tmp_path: Path,
                                                                        forgery: str, kind: str) -> None:
    store = make_store(tmp_path, DEVICE, records=10)
    lines = store.lines()
    thief = DeviceKey.generate()
    genuine = lines[FORGED_AT - 1]
    forged = {
        "key-field-of-another-key": lambda: resigned(genuine, thief, key=thief.fingerprint),
        "signature-bytes-flipped": lambda: flipped_signature(genuine),
        "signed-by-another-key": lambda: resigned(genuine, thief),
    }[forgery]()
    assert forged != genuine and parse_line(forged).seq == FORGED_AT
    running_world(world, store)
    device = RawDevice(world)
    device.hello()

    device.records(lines[:FORGED_AT - 1])
    device.records([forged, *lines[FORGED_AT:FORGED_AT + 2]])  # the forgery in place of seq N, then N+1, N+2
    device.records(lines[FORGED_AT:])  # the genuine N+1.. again: held, the hole at N stays
    device.done(*store.head())
    reply = device.barrier()

    problems = world.problems(DEVICE)
    assert problems[0][:2] == (kind, FORGED_AT), problems
    assert {p[0] for p in problems} <= {kind, "gap"} and all(p[1] == FORGED_AT for p in problems), problems
    assert stored_seqs(world) == list(range(1, FORGED_AT))
    assert copy_bytes(world) == b"".join(lines[:FORGED_AT - 1])
    assert max(device.ack_seqs()) == FORGED_AT - 1
    assert reply.seq == FORGED_AT - 1 and reply.link == store.link_of(FORGED_AT - 1)

    # The genuine record N fills the hole: the forgery left nothing behind that blocks the real chain.
    device.records([genuine])
    device.barrier()
    assert copy_bytes(world) == store.ledger_bytes()
    assert max(device.ack_seqs()) == 10


# ---------------------------------------------------------------------------------------------- 3. splicing


def test_record_spliced_from_another_device_is_refused(world: SyncWorld, tmp_path: Path) -> None:
    ours = make_store(tmp_path / "a", DEVICE, records=6)
    theirs = make_store(tmp_path / "b", OTHER, records=6, seed=8)
    running_world(world, ours, theirs)
    device = RawDevice(world)
    device.hello()
    device.records(ours.lines()[:3])
    device.barrier()
    before = world.evidence_digest()

    device.records([theirs.lines()[3]])  # dev-b's genuine seq 4, signed by dev-b's enrolled key, as dev-a's seq 4
    device.records([theirs.lines()[0]])  # and dev-b's seq 1, a duplicate number
    device.barrier()

    problems = world.problems(DEVICE)
    assert [(k, s) for k, s, _ in problems] == [("spliced", 4), ("spliced", 1)], problems
    assert all(OTHER in reason for _, _, reason in problems)
    assert world.evidence_digest() == before
    assert copy_bytes(world) == b"".join(ours.lines()[:3])
    assert stored_seqs(world) == [1, 2, 3]
    assert stored_seqs(world, OTHER) == [] and not world.device_copy(OTHER).exists()
    assert max(device.ack_seqs()) == 3


# ---------------------------------------------------------------------------------------------- 4. a gap


def test_gap_is_reported_at_done_and_fills_when_the_missing_record_arrives(world: SyncWorld, tmp_path: Path) -> None:
    store = make_store(tmp_path, DEVICE, records=10)
    lines = store.lines()
    running_world(world, store)
    device = RawDevice(world)
    device.hello()

    device.records(lines[:5])
    device.records(lines[6:])
    device.done(*store.head())
    device.done(*store.head())  # delivered twice: still one gap
    reply = device.barrier()

    gaps = world.query("SELECT seq, reason, resolved_us, repeats FROM problems WHERE device = ? AND kind = 'gap'",
                       DEVICE)
    assert len(gaps) == 1, gaps
    seq, reason, resolved, _ = gaps[0]
    assert seq == 6 and re.search(r"\brecords? 6( ?(\.\.|-) ?6)? missing", reason), reason
    assert resolved is None
    assert [k for k, _, _ in world.problems()] == ["gap"]
    assert device.ack_seqs() and max(device.ack_seqs()) == 5
    assert reply.seq == 5 and stored_seqs(world) == [1, 2, 3, 4, 5]
    assert copy_bytes(world) == b"".join(lines[:5])

    device.records([lines[5]])
    reply = device.barrier()

    assert reply.seq == 10
    assert stored_seqs(world) == list(range(1, 11))
    assert copy_bytes(world) == store.ledger_bytes()
    assert max(device.ack_seqs()) == 10
    ((resolved,),) = world.query("SELECT resolved_us FROM problems WHERE device = ? AND kind = 'gap'", DEVICE)
    assert resolved is not None


# ---------------------------------------------------------------------------------------------- 5. a fork


def test_fork_from_a_copied_store_is_reported_and_changes_nothing(world: SyncWorld, tmp_path: Path) -> None:
    fork_at = 6
    key_path = tmp_path / f"{DEVICE}.key"
    key = load_or_create_device_key(key_path)
    root_a, root_b = tmp_path / "store-a", tmp_path / "store-b"
    rng = random.Random(1)
    with Ledger.open(root_a, key, DEVICE, boot_reason="test") as ledger:
        append_records(ledger, fork_at - 1, {}, rng)
        shutil.copytree(root_a, root_b)  # the same key and the same first N-1 records...
        append_records(ledger, 9, {}, rng, tag="a")  # ...then different records in each copy
    with Ledger.open(root_b, key, DEVICE, boot_reason="test") as ledger:
        append_records(ledger, 12, {}, rng, tag="b")
    a, b = DeviceStore(root_a, key, key_path, DEVICE), DeviceStore(root_b, key, key_path, DEVICE)
    assert a.lines()[:fork_at - 1] == b.lines()[:fork_at - 1] and a.lines()[fork_at - 1] != b.lines()[fork_at - 1]
    running_world(world, a)
    device = RawDevice(world)
    device.hello()
    device.records(a.lines())
    device.done(*a.head())
    device.barrier()
    assert copy_bytes(world) == a.ledger_bytes()
    before = world.evidence_digest()
    device.forget()

    device.records([b.lines()[fork_at - 1]])  # the other history's seq N: a stored number, different record
    device.records(b.lines()[fork_at - 1:])  # and all of it from N
    device.records([b.lines()[9]])  # seq 10, just past the stored head, chained to the other history
    device.done(*b.head())
    reply = device.barrier()

    problems = world.problems(DEVICE)
    forks = [(s, r) for k, s, r in problems if k == "fork"]
    assert forks and forks[0][0] == fork_at, problems
    assert 10 in [s for s, _ in forks], problems  # the prev link of seq 10 does not match the stored seq 9
    assert {k for k, _, _ in problems} <= {"fork", "gap"}, problems
    assert world.evidence_digest() == before
    assert copy_bytes(world) == a.ledger_bytes()
    assert stored_seqs(world) == list(range(1, 10))
    assert all(s <= 9 for s in device.ack_seqs())
    assert (reply.seq, reply.link) == a.head()


# ---------------------------------------------------------------------------------------------- 6. garbage


def _with_extra_field(payload: bytes) -> bytes:
    value = parse_canonical_json(payload)
    value["extra"] = 1
    return canonical_json(value)


def _random_bytes(rng: random.Random, size: int) -> bytes:
    data = bytearray(rng.randbytes(size))
    data[-1] = 0x7F if data[-1] == 0x0A else data[-1]  # never a complete line by accident
    return bytes(data)


def test_garbage_truncated_and_oversized_payloads_change_nothing(world: SyncWorld, tmp_path: Path) -> None:
    station_limit = 65536
    world.config.write_text(world.config.read_text() + f"\n[limits]\nmax_message_bytes = {station_limit}\n")
    store = make_store(tmp_path, DEVICE, records=8, segments={3: 20_000, 6: 100_000})
    lines = store.lines()
    first, second = store.files()
    running_world(world, store)
    device = RawDevice(world)
    device.clock(device.hello())
    device.records(lines)
    device.upload(first, store.content(first))  # some evidence stored; the second file's record waits for it
    device.barrier()
    assert world.query("SELECT COUNT(*) FROM files WHERE device = ?", DEVICE) == [(1,)]
    before = world.evidence_digest()
    device.forget()

    rng = random.Random(11)
    data = store.content(second)[:8192]
    header = ChunkHeader(second.name, second.sha256, second.size, 0, len(data), hashlib.sha256(data).hexdigest())
    valid = {
        "hello": Hello(SESSION, 5).encode(),
        "clock": ClockReport(SESSION, 1, 2, 3, 4).encode(),
        "records": lines[-1],
        "file": FileOffer(SESSION, second.name, second.sha256, second.size).encode(),
        "chunk": encode_chunk(header, data),
        "done": Done(SESSION, *store.head()).encode(),
        "nonsense": Hello(SESSION, 6).encode(),
    }
    rejected: list[tuple[str, bytes]] = []
    for kind, payload in valid.items():
        rejected += [(kind, _random_bytes(rng, 300)), (kind, b""), (kind, payload[: len(payload) // 2])]
        if kind == "chunk":
            header_line, _, body = payload.partition(b"\n")
            rejected.append((kind, _with_extra_field(header_line) + b"\n" + body))
        elif kind != "records":
            rejected.append((kind, _with_extra_field(payload)))
    whole = store.content(second)
    whole_header = ChunkHeader(second.name, second.sha256, second.size, 0, second.size,
                               hashlib.sha256(whole).hexdigest())
    ledger = b"".join(lines)
    rejected += [
        ("chunk", encode_chunk(header, data)[:-1]),  # one byte short of the header's length
        ("chunk", encode_chunk(replace(header, chunk_sha256=hashlib.sha256(b"other").hexdigest()), data)),
        # Well-formed but over the station's limit (under the broker's): refused unread, so nothing of it staged.
        ("chunk", encode_chunk(whole_header, whole)),
        # Genuine duplicate lines up to just under the broker's maximum packet size: refused unread too.
        ("records", ledger * ((world.broker.max_packet_bytes - 4096) // len(ledger))),
    ]
    assert station_limit < len(rejected[-2][1]) and len(rejected[-1][1]) > world.broker.max_packet_bytes - 8192
    # A ledger line (genuinely signed) whose payload carries an extra field: a malformed record, not stored.
    extra_payload = _with_extra_field(parse_line(lines[-1]).payload)
    extra_line = extra_payload + b"\t" + store.key.sign(extra_payload).hex().encode() + b"\n"

    for kind, payload in rejected:
        device.publish(kind, payload)
    device.publish("records", extra_line)
    device.barrier()

    # Over the broker's maximum packet size: the broker drops the connection before anything reaches the station.
    # From the other device: a second connection as DEVICE would push ``device`` off (client id = certificate name).
    big = connect(world.broker, "dev-b")
    big.publish(up_topic("dev-b", "records"), b"y" * (world.broker.max_packet_bytes + 1), qos=1)
    wait_for(lambda: big.disconnect_reason is not None, 10, "the broker to drop the oversized publisher")
    big.close()
    assert "disconnected due to oversize packet" in world.broker.log_path.read_text(errors="replace")
    device.barrier()

    assert world.station is not None and world.station.poll() is None, world.log_text()[-3000:]
    assert world.evidence_digest() == before
    assert world.query("SELECT COUNT(*) FROM ranges WHERE device = ?", DEVICE) == [(0,)]
    assert stored_seqs(world) == list(range(1, 9))
    topics = [up_topic(DEVICE, kind) for kind, _ in rejected]
    assert Counter(e.topic for e in device.errors()) == Counter(topics)
    problem_rows = world.query("SELECT kind, topic, reason FROM problems WHERE device = ?", DEVICE)
    kinds = Counter(k for k, _, _ in problem_rows)
    assert set(kinds) == {"rejected-message", "malformed"}, problem_rows
    assert kinds["malformed"] == 1
    assert {t for k, t, _ in problem_rows if k == "rejected-message"} == set(topics)
    assert any(str(station_limit) in r for k, _, r in problem_rows if k == "rejected-message")
    assert not any(str(world.broker.max_packet_bytes + 1) in r for _, _, r in problem_rows)

    config = world.device_config(DEVICE, store.root, store.key_path, purge=False, chunk_kib=16, batch_kib=16)
    result = world.sync_once(config, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (world.device_copy(DEVICE) / second.name).read_bytes() == store.content(second)
    copy = ledger_lines(world.device_copy(DEVICE))
    assert copy == store.lines()[: len(copy)] and len(copy) >= 8
    assert world.station.poll() is None


# ---------------------------------------------------------------------------------------------- 7. ACL


def test_another_device_can_neither_write_nor_read_a_devices_topics(world: SyncWorld, tmp_path: Path) -> None:
    ours = make_store(tmp_path / "a", DEVICE, records=6, segments={4: 10_000})
    theirs = make_store(tmp_path / "b", OTHER, records=3, seed=8)
    running_world(world, ours, theirs)
    intruder = connect(world.broker, OTHER)

    refused = intruder.publish_wait(up_topic(DEVICE, "records"), b"".join(ours.lines()))
    assert refused.reason_code is not None and refused.reason_code.value == NOT_AUTHORIZED
    observer = RawDevice(world)
    observer.barrier()
    assert stored_seqs(world) == [] and not world.device_copy(DEVICE).exists()
    assert world.problems() == []

    intruder.subscribe_wait(down_subscription(DEVICE))
    intruder.subscribe_wait("bodycam/+/down/#")
    # One connection per certificate identity: the uploader's would push the observer off.
    observer.client.close()
    result = world.sync_once(world.device_config(DEVICE, ours.root, ours.key_path, purge=False), timeout=60)
    # --once ends 0 only once every record and file is acknowledged: the acks went out on dev-a's down topics.
    assert result.returncode == 0, result.stderr[-3000:]

    assert copy_bytes(world).startswith(b"".join(ours.lines()[:6]))
    # dev-b saw none of them.
    assert drain(intruder) == []
