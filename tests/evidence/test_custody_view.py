"""The agent's incremental custody view (agent/evidence/custody_view.py) against a full read of the ledger.

A differential property: random mixes of records (segments, recovered files, checkpoints, cases, flags,
receipts from real signed acks and written raw, purges done and half done, custody boots, damaged and
duplicated lines) go through a real Ledger while a long-lived LedgerCustody records receipts and purges;
after every step its decisions equal those of the full-read functions over ``read_records``, and it never
had to read the ledger in full again. Changes that are not appends (cut, rewritten, replaced) are noticed,
logged and answered by a full read.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import pytest
from custody_support import DEVICE, HOUR_US, IMPOSTOR, KEY, STATION, ack_of
from helpers import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.daemon import custody_handler
from agent.errors import VerificationError
from agent.evidence.ack import AckedFile, SignedAck
from agent.evidence.custody import (
    CUSTODY_BOOT_REASON,
    RetentionPolicy,
    acknowledged,
    check_ack_link,
    is_own,
    long_term_files,
    purge_candidates,
    receipt_news,
    unfinished_purges,
)
from agent.evidence.custody_view import KEPT_TYPES, CustodyView, LedgerCustody
from agent.evidence.keys import DeviceKey, public_key_raw
from agent.evidence.ledger import Ledger
from agent.evidence.record import Record, SignedRecord
from agent.evidence.store import StoreLayout, read_records, segment_file_name
from firmware_config.device_config import SyncSettings

POLICY = RetentionPolicy(purge=True, keep_hours=1, long_term_keep_days=1)
POLICIES = (POLICY, RetentionPolicy(purge=True, keep_hours=0, long_term_keep_days=0))
OPS = ("seg", "seg", "ckpt", "ckpt", "recovered", "reclaim", "open", "close", "flag", "flag-case", "flag-standard",
       "event", "ack", "ack", "bad-ack", "raw-receipt", "raw-receipt", "purge", "raw-purge", "custody-boot",
       "garbage", "dup-line", "same-seq", "wait", "look", "look")
FAKE_HASH = "ab" * 32


def make_ack(target: SignedRecord, files: list[AckedFile], signer: DeviceKey = STATION,
             link: str | None = None) -> SignedAck:
    return ack_of(target, files, signer=signer, key=signer, link=link)


def full_read_link(records: list[SignedRecord], seq: int) -> str | None:
    return next((r.link for r in records if r.seq == seq), None)


def assert_view_equals_full_read(view: CustodyView, store: Path, rng: random.Random, now_us: int) -> None:
    view.refresh()
    records = read_records(store)
    assert view.records == [r for r in records if r.record.type in KEPT_TYPES]
    assert view.acknowledged == acknowledged(records)
    receipts = [r for r in records if r.record.type == "receipt"]
    assert view.last_receipt_seq == max((int(r.record.body["seq"]) for r in receipts), default=0)
    top = max((r.seq for r in records), default=0) + 2
    for seq in range(-1, top):
        assert view.link_of(seq) == full_read_link(records, seq), seq
    for low in range(0, top):
        for high in {low, low + 1, top - 1, rng.randint(low, top)}:
            expected = any(low < r.seq <= high and not is_own(r) for r in records)
            assert view.others_between(low, high) == expected, (low, high)
    layout = StoreLayout(store)
    assert unfinished_purges(layout, view.records) == unfinished_purges(layout, records)
    assert long_term_files(view.records) == long_term_files(records)
    for policy in POLICIES:
        for now in (now_us, now_us + 2 * HOUR_US, now_us + 30 * HOUR_US):
            assert purge_candidates(view.records, policy, now) == purge_candidates(records, policy, now)
    files = [r for r in records if r.record.type in ("segment", "recovered")]
    for _ in range(3):
        target = rng.choice(records)
        named = rng.sample(files, min(len(files), rng.randint(0, 2)))
        ack = make_ack(target, [AckedFile(str(r.record.body["file"]), str(r.record.body["sha256"]),
                                          int(r.record.body["size"])) for r in named]).ack
        view_news = view.others_between(view.last_receipt_seq, ack.seq) or any(
            f.sha256 not in view.acknowledged for f in ack.files)
        assert view_news == receipt_news(ack, records)


class Scenario:
    """A device's ledger written step by step, with the agent's long-lived custody beside the writer."""

    def __init__(self, store: Path, rng: random.Random) -> None:
        self.store = store
        self.rng = rng
        self.clock = FakeClock()
        self.ledger = Ledger.open(store, KEY, DEVICE, self.clock, boot_reason="test")
        self.custody = LedgerCustody(ledger=self.ledger, station_key=STATION.public_key, policy=POLICY)
        self.case: str | None = None
        self.cases = 0
        self.segment = 0

    def records(self) -> list[SignedRecord]:
        return read_records(self.store)

    def claims(self) -> list[SignedRecord]:
        return [r for r in self.records() if r.record.type in ("segment", "recovered")]

    def new_segment(self, record_type: str) -> None:
        self.segment = self.ledger.next_segment_index()
        stored = self.ledger.layout.write_segment(segment_file_name(self.segment, "bin"), b"frames %d" % self.segment)
        body = {"file": stored.name, "sha256": stored.sha256, "size": stored.size}
        self.ledger.append(record_type, body if record_type == "segment" else {**body, "reason": "test"})

    def append_raw(self, line: bytes) -> None:
        with open(self.ledger.layout.ledger_path, "ab") as handle:
            handle.write(line)

    def step(self, op: str) -> None:
        rng, ledger = self.rng, self.ledger
        if op in ("seg", "recovered"):
            self.new_segment("segment" if op == "seg" else "recovered")
        elif op == "ckpt":
            name = f"segments/{segment_file_name(self.segment + 1, 'bin')}"
            ledger.append("checkpoint", {"file": name, "offset": 0, "length": 10, "sha256": FAKE_HASH, "frames": 5})
        elif op == "reclaim" and self.claims():  # a second record claiming a name: never purged
            body = rng.choice(self.claims()).record.body
            ledger.append("segment", {"file": body["file"], "sha256": body["sha256"], "size": body["size"]})
        elif op == "open" and self.case is None:
            self.cases += 1
            self.case = f"{DEVICE}-{self.cases:05d}"
            ledger.append("case-open", {"case_id": self.case, "procedure": "inspection", "officer": "A1"})
        elif op == "close" and self.case is not None:
            ledger.append("case-close", {"case_id": self.case, "officer": "A1", "missing": []})
            self.case = None
        elif op.startswith("flag"):
            body = {"retention_class": "standard" if op == "flag-standard" else "long-term", "reason": "r",
                    "officer": "A1"}
            case = self.case if op != "flag-case" else f"{DEVICE}-{rng.randint(1, self.cases + 1):05d}"
            ledger.append("retention", body if case is None else {**body, "case_id": case})
        elif op == "event":
            ledger.append("event", {"kind": "bookmark"})
        elif op in ("ack", "bad-ack"):
            self.ack(bad=op == "bad-ack")
        elif op == "raw-receipt":
            claims = self.claims()
            files = [str(r.record.body["sha256"]) for r in rng.sample(claims, min(len(claims), rng.randint(0, 3)))]
            ledger.append("receipt", {"station": "station-2", "station_key": IMPOSTOR.fingerprint,
                                      "seq": rng.randint(0, ledger.head[0] + 3), "link": FAKE_HASH,
                                      "files": [*files, FAKE_HASH, 7], "ack": "raw"})
        elif op == "purge":
            self.purge()
        elif op == "raw-purge" and self.claims():  # a purge record whose file is still there (a crash)
            body = rng.choice(self.claims()).record.body
            ledger.append("purge", {"file": body["file"], "sha256": body["sha256"], "reason": "test"})
        elif op == "custody-boot":
            ledger.append("boot", {"public_key": KEY.public_raw.hex(), "software": "test",
                                   "reason": CUSTODY_BOOT_REASON})
        elif op == "garbage":
            self.append_raw(b'{"not": "a record"}\tzz\n')
        elif op == "dup-line":  # a copy of an earlier line: a seq twice (the first one counts)
            lines = ledger.layout.ledger_path.read_bytes().splitlines(keepends=True)
            self.append_raw(rng.choice(lines))
        elif op == "same-seq":
            self.fork(rng.randint(1, ledger.head[0]), own=rng.random() < 0.5)
        elif op == "wait":
            self.clock.wall_us += rng.choice((HOUR_US // 2, 2 * HOUR_US, 30 * HOUR_US))
        elif op == "look":
            assert_view_equals_full_read(self.custody.view, self.store, rng, self.clock.wall_us)

    def fork(self, seq: int, own: bool) -> None:
        """Another record under an existing seq (custody's own or not), as a forked ledger would hold."""
        body = {"station": "station-3", "station_key": FAKE_HASH, "seq": seq, "link": FAKE_HASH, "files": [],
                "ack": "forked"}
        record = Record(seq, FAKE_HASH, "receipt" if own else "event", DEVICE, KEY.fingerprint, self.clock.wall_us,
                        self.clock.mono_us, self.clock.boot_id, body if own else {"kind": "forked"})
        self.append_raw(SignedRecord(record, record.to_payload(), KEY.sign(record.to_payload())).to_line())

    def ack(self, bad: bool) -> None:
        records = self.records()
        target = self.rng.choice(records)
        claims = self.claims()
        named = self.rng.sample(claims, min(len(claims), self.rng.randint(0, 3)))
        files = [AckedFile(str(r.record.body["file"]), str(r.record.body["sha256"]), int(r.record.body["size"]))
                 for r in named]
        signed = make_ack(target, files, link=FAKE_HASH if bad else None)
        try:
            check_ack_link(signed.ack, records)
        except VerificationError:
            with pytest.raises(VerificationError, match="with a link this ledger does not have"):
                self.custody.record_receipt(signed.to_line())
            return
        news = receipt_news(signed.ack, records)
        outcome = self.custody.record_receipt(signed.to_line())
        assert ("recorded as receipt" in outcome) is news, outcome

    def purge(self) -> None:
        records = self.records()
        unfinished = [str(r.record.body["file"]) for r in unfinished_purges(self.ledger.layout, records)]
        # The custody's purge reads the clock once; FakeClock steps on every now().
        candidates = purge_candidates(records, POLICY, self.clock.wall_us + self.clock.step_us)
        outcome = self.custody.purge()
        assert outcome.refused == []
        assert outcome.purged == unfinished + [c.file for c in candidates]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=45), seed=st.integers(0, 2**32 - 1))
def test_the_view_decides_as_a_full_read_after_every_append(
    tmp_path_factory: pytest.TempPathFactory, ops: list[str], seed: int
) -> None:
    scenario = Scenario(tmp_path_factory.mktemp("store"), random.Random(seed))
    try:
        for op in [*ops, "look"]:
            scenario.step(op)
    finally:
        scenario.ledger.close()
    assert scenario.custody.view.full_reads == 1  # appends alone never send the view back to the start


def test_a_seq_written_twice_counts_as_in_a_full_read(tmp_path: Path) -> None:
    """The first line of a seq gives its link; any line of it that is not custody's own makes it news."""
    scenario = Scenario(tmp_path / "store", random.Random(3))
    try:
        for op in ("seg", "ack", "raw-receipt", "custody-boot", "event"):
            scenario.step(op)
        own_seqs = [r.seq for r in scenario.records() if is_own(r)]
        plain_seq = next(r.seq for r in scenario.records() if not is_own(r))
        assert len(own_seqs) >= 3
        scenario.fork(own_seqs[0], own=False)  # an own seq that now also holds another record
        scenario.fork(plain_seq, own=True)
        scenario.step("look")
        scenario.fork(own_seqs[1], own=True)
        scenario.fork(own_seqs[2], own=False)
        scenario.step("look")
    finally:
        scenario.ledger.close()
    assert scenario.custody.view.full_reads == 1


# --- changes that are not appends ---------------------------------------------------------------------------


def _store_with_lines(tmp_path: Path, count: int = 12) -> tuple[Path, CustodyView]:
    store = tmp_path / "store"
    with Ledger.open(store, KEY, DEVICE, FakeClock(), boot_reason="test") as ledger:
        for index in range(1, count + 1):
            stored = ledger.layout.write_segment(segment_file_name(index, "bin"), b"frames %d" % index)
            ledger.append("segment", {"file": stored.name, "sha256": stored.sha256, "size": stored.size})
    view = CustodyView(StoreLayout(store))
    view.refresh()
    assert view.full_reads == 1
    return store, view


def _rewrite(path: Path, transform: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(transform)


def _flip_hex(line: bytes) -> bytes:
    """The line with one signature digit changed: it still parses, it is not the same line."""
    last = line.rstrip(b"\n")[-1:]
    return line.rstrip(b"\n")[:-1] + (b"0" if last != b"0" else b"1") + b"\n"


@pytest.mark.parametrize("change, logged", [
    ("cut", "shorter than read before"),
    ("last-line", "changed"),
    ("first-line", "its first line changed"),
    ("replaced", "replaced by another file"),
    ("cut-and-regrown", "changed"),
])
def test_a_change_that_is_not_an_append_sends_the_view_back_to_a_full_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: str, logged: str
) -> None:
    store, view = _store_with_lines(tmp_path)
    path = store / "ledger.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    if change == "cut":
        _rewrite(path, b"".join(lines[:-3]))
    elif change == "last-line":
        _rewrite(path, b"".join([*lines[:-1], _flip_hex(lines[-1])]))
    elif change == "first-line":
        _rewrite(path, b"".join([_flip_hex(lines[0]), *lines[1:]]))
    elif change == "replaced":
        copy = store / "ledger.new"
        copy.write_bytes(b"".join(lines[:-1]))
        os.replace(copy, path)
    elif change == "cut-and-regrown":  # the same length and more, other bytes at the end
        _rewrite(path, b"".join([*lines[:-1], _flip_hex(lines[-1]), lines[3]]))
    with caplog.at_level(logging.WARNING, logger="agent.evidence.custody_view"):
        assert_view_equals_full_read(view, store, random.Random(1), FakeClock().wall_us)
    assert view.full_reads == 2
    assert any(logged in r.getMessage() and "reads it again in full" in r.getMessage() for r in caplog.records)


def test_a_changed_line_met_by_the_link_check_sends_the_view_back_to_a_full_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, view = _store_with_lines(tmp_path)
    path = store / "ledger.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5] = b"x" * (len(lines[5]) - 1) + b"\n"  # seq 6 overwritten in place: refresh cannot see it
    _rewrite(path, b"".join(lines))
    view.refresh()
    assert view.full_reads == 1
    with caplog.at_level(logging.WARNING, logger="agent.evidence.custody_view"):
        assert view.link_of(6) is None  # the full read has no record seq 6 any more
    assert view.full_reads == 2
    assert any("the line of seq 6" in r.getMessage() for r in caplog.records)
    assert_view_equals_full_read(view, store, random.Random(2), FakeClock().wall_us)


def test_an_incomplete_last_line_waits_until_it_is_complete(tmp_path: Path) -> None:
    store, view = _store_with_lines(tmp_path, 3)
    path = store / "ledger.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    _rewrite(path, b"".join(lines[:-1]) + lines[-1][:40])  # a line being written
    view2 = CustodyView(StoreLayout(store))
    view2.refresh()
    assert [r.seq for r in view2.records] == [r.seq for r in view.records][:-1]
    with open(path, "ab") as handle:
        handle.write(lines[-1][40:])
    view2.refresh()
    assert view2.records == view.records and view2.full_reads == 1


# --- the daemon's handler: one custody, the key file read at every op ---------------------------------------


def test_the_handler_keeps_one_view_and_reads_the_station_key_at_every_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[CustodyView] = []
    real_init = CustodyView.__init__

    def counting_init(self: CustodyView, layout: StoreLayout) -> None:
        made.append(self)
        real_init(self, layout)

    monkeypatch.setattr(CustodyView, "__init__", counting_init)
    key_file = tmp_path / "station-ack.pub"
    key_file.write_text(public_key_raw(STATION.public_key).hex() + "\n", encoding="ascii")
    with Ledger.open(tmp_path / "store", KEY, DEVICE, FakeClock()) as ledger:
        handle = custody_handler(ledger, SyncSettings(station_key=key_file, purge=True, keep_hours=0))
        segments = []
        for index in (1, 2):
            stored = ledger.layout.write_segment(segment_file_name(index, "bin"), b"frames %d" % index)
            segments.append(ledger.append("segment", {"file": stored.name, "sha256": stored.sha256,
                                                      "size": stored.size}))

        def line(signer: DeviceKey, index: int) -> str:
            body = segments[index].record.body
            acked = [AckedFile(str(body["file"]), str(body["sha256"]), int(body["size"]))]
            return make_ack(segments[-1], acked, signer=signer).to_line().decode().rstrip("\n")

        assert "recorded as receipt" in handle("receipt", {"ack": line(STATION, 0)})["outcome"]
        key_file.write_text(public_key_raw(IMPOSTOR.public_key).hex() + "\n", encoding="ascii")
        with pytest.raises(VerificationError, match="signed by another station key"):
            handle("receipt", {"ack": line(STATION, 1)})  # the replaced key counts at once
        assert "recorded as receipt" in handle("receipt", {"ack": line(IMPOSTOR, 1)})["outcome"]
        assert handle("purge", {}) == {"purged": [str(s.record.body["file"]) for s in segments], "refused": []}
    assert len(made) == 1 and made[0].full_reads == 1
