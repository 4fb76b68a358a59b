"""The tamper matrix: every kind of damage to a store is found by bodycam-verify, naming the first bad record.

The store is the conftest ``store`` (device "dev-0001", key seed 1, 5 simulated seconds):

    line/seq 1 boot, 2 event, 3-6 segments 000001-000004.bin, 7 bookmark, 8 segment 000005.bin, 9 event
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from helpers import FakeClock

from agent.evidence.keys import DeviceKey, public_key_pem
from agent.evidence.ledger import Ledger
from agent.evidence.record import Record, SignedRecord, parse_line
from agent.evidence.verify import Report, verify_store
from agent.verify_cli import main

DEVICE = "dev-0001"
LAST_SEQ = 9


# --- helpers --------------------------------------------------------------------------------------


def ledger_path(store: Path) -> Path:
    return store / "ledger.jsonl"


def read_lines(store: Path) -> list[bytes]:
    return ledger_path(store).read_bytes().splitlines(keepends=True)


def write_lines(store: Path, lines: list[bytes]) -> None:
    ledger_path(store).write_bytes(b"".join(lines))


def writable(path: Path) -> Path:
    """Segment files are written 0444; a tamperer (or a test not running as root) makes them writable."""
    os.chmod(path, 0o644)
    return path


def change_byte(path: Path, offset: int, new: int | None = None) -> None:
    """Change the byte at ``offset`` (to ``new``, or xor 0x01); the byte really changes."""
    data = bytearray(writable(path).read_bytes())
    old = data[offset]
    data[offset] = old ^ 0x01 if new is None else new
    assert data[offset] != old
    path.write_bytes(bytes(data))


def line_offset(store: Path, seq: int) -> int:
    """File offset of the start of ledger line ``seq`` (line number == seq in an untouched store)."""
    return sum(len(line) for line in read_lines(store)[: seq - 1])


def next_hex_digit(char: int) -> int:
    return ord(f"{(int(chr(char), 16) + 1) % 16:x}")


def sign(key: DeviceKey, record: Record) -> SignedRecord:
    payload = record.to_payload()
    return SignedRecord(record, payload, key.sign(payload))


def record_at(store: Path, seq: int) -> SignedRecord:
    return parse_line(read_lines(store)[seq - 1])


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


def texts(report: Report) -> list[str]:
    return [str(p) for p in report.problems]


# --- tamper functions: each takes the store and a callable giving the other device's (store, key) ----

Other = Callable[[], tuple[Path, DeviceKey]]


def flip_segment_sha_digit(store: Path, other: Other) -> None:
    """One hex digit of seq 5's recorded sha256 changed: still a well-formed record, but not the signed one."""
    start = line_offset(store, 5)
    line = read_lines(store)[4]
    at = start + line.index(b'"sha256":"') + len(b'"sha256":"')
    change_byte(ledger_path(store), at, next_hex_digit(line[at - start]))


def flip_last_body_byte(store: Path, other: Other) -> None:
    """The last record's event kind "simulation-end" becomes "Simulation-end"."""
    start = line_offset(store, LAST_SEQ)
    line = read_lines(store)[LAST_SEQ - 1]
    at = start + line.index(b'"kind":"') + len(b'"kind":"')
    change_byte(ledger_path(store), at, line[at - start] ^ 0x20)


def flip_body_byte_malformed(store: Path, other: Other) -> None:
    """seq 5's body key "size" becomes "Size": the payload no longer parses as a record."""
    start = line_offset(store, 5)
    line = read_lines(store)[4]
    at = start + line.index(b'"size"') + 1
    change_byte(ledger_path(store), at, ord("S"))


def flip_boot_body_byte(store: Path, other: Other) -> None:
    """The boot record's software string changes: the only record announcing the key no longer verifies."""
    line = read_lines(store)[0]
    at = line.index(b'"software":"bodycam') + len(b'"software":"')
    change_byte(ledger_path(store), at, ord("B"))


def flip_signature_digit(store: Path, other: Other) -> None:
    start = line_offset(store, 5)
    line = read_lines(store)[4]
    at = start + line.index(b"\t") + 1 + 20
    change_byte(ledger_path(store), at, next_hex_digit(line[at - start]))


def flip_segment_byte(store: Path, other: Other) -> None:
    change_byte(store / "segments" / "000003.bin", 1000)


def shorten_segment(store: Path, other: Other) -> None:
    path = writable(store / "segments" / "000003.bin")
    path.write_bytes(path.read_bytes()[:-1])


def delete_middle_line(store: Path, other: Other) -> None:
    lines = read_lines(store)
    del lines[4]
    write_lines(store, lines)


def delete_segment_file(store: Path, other: Other) -> None:
    (store / "segments" / "000003.bin").unlink()


def swap_adjacent(store: Path, other: Other) -> None:
    lines = read_lines(store)
    lines[4], lines[5] = lines[5], lines[4]
    write_lines(store, lines)


def duplicate_line(store: Path, other: Other) -> None:
    lines = read_lines(store)
    lines.insert(5, lines[4])
    write_lines(store, lines)


def insert_foreign_signed(store: Path, other: Other) -> None:
    """A record claiming to be this device's seq 5 (prev fits seq 4), signed with another device's key."""
    _, other_key = other()
    seq4 = record_at(store, 4)
    forged = Record(
        seq=5, prev=seq4.link, type="event", device=DEVICE, key=other_key.fingerprint,
        wall_us=seq4.record.wall_us + 1, mono_us=seq4.record.mono_us + 1, boot=seq4.record.boot,
        body={"kind": "bookmark"},
    )
    lines = read_lines(store)
    lines.insert(4, sign(other_key, forged).to_line())
    write_lines(store, lines)


def append_foreign_signed(store: Path, other: Other) -> None:
    """A record appended at the head (seq 10, prev = link of seq 9), signed with another device's key."""
    _, other_key = other()
    last = record_at(store, LAST_SEQ)
    forged = replace(last.record, seq=LAST_SEQ + 1, prev=last.link, key=other_key.fingerprint,
                     wall_us=last.record.wall_us + 1, mono_us=last.record.mono_us + 1)
    with ledger_path(store).open("ab") as handle:
        handle.write(sign(other_key, forged).to_line())


def substitute_segment(store: Path, other: Other) -> None:
    """Replace segment 000003.bin and re-sign seq 5 to match it, with a key that is not the device's."""
    _, other_key = other()
    data = b"substituted footage" * 100
    path = writable(store / "segments" / "000003.bin")
    path.write_bytes(data)
    old = record_at(store, 5)
    body = dict(old.record.body, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    forged = replace(old.record, key=other_key.fingerprint, body=body)
    lines = read_lines(store)
    lines[4] = sign(other_key, forged).to_line()
    write_lines(store, lines)


def splice_foreign_line(store: Path, other: Other) -> None:
    """Line 5 of the other device's ledger replaces ours (same seq, same segment file name)."""
    other_store, _ = other()
    lines = read_lines(store)
    lines[4] = read_lines(other_store)[4]
    write_lines(store, lines)


def cut_mid_record(store: Path, other: Other) -> None:
    lines = read_lines(store)
    write_lines(store, [*lines[:4], lines[4][: len(lines[4]) // 2]])


def cut_at_boundary(store: Path, other: Other) -> None:
    """Keep seq 1..7: seq 8 (segment 000005.bin) and 9 are gone, but 000005.bin is still there."""
    write_lines(store, read_lines(store)[:7])


def change_timestamp(store: Path, other: Other) -> None:
    """seq 5 re-encoded with wall_us one second later, keeping its old signature."""
    old = record_at(store, 5)
    moved = replace(old.record, wall_us=old.record.wall_us + 1_000_000)
    lines = read_lines(store)
    lines[4] = SignedRecord(moved, moved.to_payload(), old.signature).to_line()
    assert lines[4] != read_lines(store)[4]
    write_lines(store, lines)


def two_tampers(store: Path, other: Other) -> None:
    """A late record (seq 9) and an early segment (000001.bin, seq 3): the early one is reported first."""
    flip_last_body_byte(store, other)
    change_byte(store / "segments" / "000001.bin", 0)


@dataclass(frozen=True)
class Expected:
    """The first problem: its seq, object and ledger line (None where it has none) and a phrase of its message."""

    seq: int | None
    obj: str | None
    line: int | None
    phrase: str
    count: int | None = None  # the exact number of problems, where it is fully determined


def case(case_id: str, tamper: Callable[[Path, Other], None], expected: Expected) -> Any:
    return pytest.param(tamper, expected, id=case_id)


CASES = [
    case("body-byte-middle", flip_segment_sha_digit, Expected(5, None, 5, "signature invalid", 1)),
    case("body-byte-last", flip_last_body_byte, Expected(9, None, 9, "signature invalid", 1)),
    case("body-byte-malformed", flip_body_byte_malformed,
         Expected(None, "ledger.jsonl line 5", 5, "malformed record", 2)),
    case("body-byte-boot", flip_boot_body_byte, Expected(1, None, 1, "device key unknown", 1)),
    case("signature-byte", flip_signature_digit, Expected(5, None, 5, "signature invalid", 1)),
    case("segment-byte", flip_segment_byte, Expected(5, "segment 000003.bin", 5, "sha256 mismatch", 1)),
    case("segment-shortened", shorten_segment,
         Expected(5, "segment 000003.bin", 5, "size 65535 differs from the recorded 65536", 1)),
    case("delete-middle-line", delete_middle_line, Expected(6, None, 5, "records missing before this one (seq 5)", 2)),
    case("delete-segment-file", delete_segment_file, Expected(5, "segment 000003.bin", 5, "file missing", 1)),
    case("swap-adjacent", swap_adjacent, Expected(6, None, 5, "out of order: seq 5 comes later in the ledger")),
    case("duplicate-line", duplicate_line, Expected(5, None, 6, "duplicate of an earlier record (replayed)", 1)),
    case("insert-foreign-key-middle", insert_foreign_signed, Expected(5, None, 5, "signed by another key", 1)),
    case("append-foreign-key", append_foreign_signed, Expected(10, None, 10, "signed by another key", 1)),
    case("substitute-segment-resigned", substitute_segment, Expected(5, None, 5, "signed by another key", 1)),
    case("splice-other-device-line", splice_foreign_line,
         Expected(5, None, 5, "device id 'dev-0002' differs from 'dev-0001'", 1)),
    case("cut-mid-record", cut_mid_record,
         Expected(None, "ledger.jsonl line 5", 5, "incomplete record at the end of the ledger", 4)),
    case("cut-at-boundary-segment-left", cut_at_boundary,
         Expected(None, "segment 000005.bin", None, "no record covers this file", 1)),
    case("timestamp-changed", change_timestamp, Expected(5, None, 5, "signature invalid", 1)),
    case("two-tampers-earliest-first", two_tampers, Expected(3, "segment 000001.bin", 3, "sha256 mismatch", 2)),
]


@pytest.mark.parametrize(("tamper", "expected"), CASES)
def test_tamper_is_detected(
    tamper: Callable[[Path, Other], None],
    expected: Expected,
    store: tuple[Path, DeviceKey],
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, key = store
    assert verify_store(path).intact
    tamper(path, lambda: request.getfixturevalue("other_store"))

    report = verify_store(path)
    assert not report.intact
    first = report.problems[0]
    assert (first.seq, first.object, first.line) == (expected.seq, expected.obj, expected.line), texts(report)
    assert expected.phrase in first.message, texts(report)
    if expected.count is not None:
        assert len(report.problems) == expected.count, texts(report)

    # Pinning the device's own key finds the same (where the boot record is damaged, pinning is what names it).
    pinned = verify_store(path, key.public_key)
    assert not pinned.intact
    if tamper is not flip_boot_body_byte:
        assert texts(pinned) == texts(report)

    code, out = run_cli([str(path)], capsys)
    assert code == 1
    assert f"NOT INTACT: {len(report.problems)} problem(s); first: {first}" in out
    for text in texts(report):
        assert f"PROBLEM {text}" in out

    code, out = run_cli([str(path), "--json"], capsys)
    assert code == 1
    parsed = json.loads(out)
    assert parsed["intact"] is False
    assert [p["text"] for p in parsed["problems"]] == texts(report)
    assert parsed["problems"][0] == {
        "seq": expected.seq,
        "object": expected.obj,
        "line": expected.line,
        "message": first.message,
        "text": str(first),
    }


def test_deleted_middle_line_also_reports_the_orphaned_segment(store: tuple[Path, DeviceKey]) -> None:
    path, _ = store
    delete_middle_line(path, lambda: pytest.fail("not needed"))
    assert texts(verify_store(path)) == [
        "seq 6: records missing before this one (seq 5)",
        "segment 000003.bin: no record covers this file",
    ]


def test_a_record_that_fails_its_signature_vouches_for_nothing(store: tuple[Path, DeviceKey]) -> None:
    """Its file is neither checked against it nor reported again as uncovered: the record is the problem."""
    path, _ = store
    flip_segment_sha_digit(path, lambda: pytest.fail("not needed"))
    report = verify_store(path)
    assert texts(report) == ["seq 5: signature invalid"]
    assert report.segments == 4  # 000003.bin is not counted as vouched for


def test_swapped_records_are_named_out_of_order_not_missing(store: tuple[Path, DeviceKey]) -> None:
    path, _ = store
    swap_adjacent(path, lambda: pytest.fail("not needed"))
    problems = texts(verify_store(path))
    assert problems[:2] == [
        "seq 6: out of order: seq 5 comes later in the ledger",
        "seq 5: out of order (expected seq 7)",
    ]
    assert not any("missing" in p for p in problems), problems


def test_forged_record_before_the_genuine_one_does_not_displace_it(
    store: tuple[Path, DeviceKey], other_store: tuple[Path, DeviceKey]
) -> None:
    path, _ = store
    insert_foreign_signed(path, lambda: other_store)
    problems = texts(verify_store(path))
    assert len(problems) == 1 and "signed by another key" in problems[0], problems  # no fork, no uncovered file


def test_cut_mid_record_also_reports_the_segments_left_behind(store: tuple[Path, DeviceKey]) -> None:
    path, _ = store
    cut_mid_record(path, lambda: pytest.fail("not needed"))
    assert texts(verify_store(path)) == [
        "ledger.jsonl line 5: incomplete record at the end of the ledger (torn tail not yet recovered)",
        "segment 000003.bin: no record covers this file",
        "segment 000004.bin: no record covers this file",
        "segment 000005.bin: no record covers this file",
    ]


def test_boot_record_tampered_is_still_found_with_a_pinned_key(store: tuple[Path, DeviceKey]) -> None:
    path, key = store
    flip_boot_body_byte(path, lambda: pytest.fail("not needed"))
    assert texts(verify_store(path, key.public_key)) == ["seq 1: signature invalid"]


# --- untouched, recovered, pinned ---------------------------------------------------------------------


def test_untouched_store_is_intact(store: tuple[Path, DeviceKey], capsys: pytest.CaptureFixture[str]) -> None:
    path, key = store
    report = verify_store(path)
    assert report.intact
    assert (report.device, report.records, report.first_seq, report.last_seq) == (DEVICE, 9, 1, 9)
    assert (report.segments, report.segment_bytes) == (5, 5 * 64 * 1024)
    assert report.key_fingerprint == key.fingerprint and not report.key_pinned
    assert [str(n) for n in report.notes] == [
        "seq 1: device key taken from this boot record (not pinned; pass --pubkey to pin it)"
    ]
    code, out = run_cli([str(path)], capsys)
    assert code == 0
    assert f"INTACT: 9 records verified, head seq 9 {report.head_link}" in out
    code, out = run_cli([str(path), "--json"], capsys)
    assert code == 0
    parsed = json.loads(out)
    assert parsed["intact"] is True and parsed["problems"] == [] and parsed["last_seq"] == 9


def test_recovered_torn_tail_is_intact_and_reported(
    store: tuple[Path, DeviceKey], capsys: pytest.CaptureFixture[str]
) -> None:
    path, key = store
    size = ledger_path(path).stat().st_size
    torn = b'{"body":{"file":"segments/000006.bin","sha'
    with ledger_path(path).open("ab") as handle:
        handle.write(torn)
    assert not verify_store(path).intact  # before recovery the torn tail is a problem

    # A crash means a new boot: a new boot id, so monotonic time may start over.
    with Ledger.open(path, key, DEVICE, clock=FakeClock(boot_id="0b0c0000-0000-4000-8000-000000000002")) as ledger:
        (recovery_record,) = ledger.recovery_records
        assert ledger.boot_record is not None
        assert {recovery_record.seq, ledger.boot_record.seq} == {10, 11}

    quarantined = sorted((path / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].read_bytes() == torn
    name = f"quarantine/{quarantined[0].name}"
    assert re.fullmatch(rf"quarantine/ledger-torn-{size}-[0-9a-f]{{16}}\.bin", name)

    report = verify_store(path)
    assert report.intact, texts(report)
    assert report.last_seq == 11
    recovery = [n for n in report.notes if n.seq == recovery_record.seq]
    assert len(recovery) == 1
    assert recovery[0].object == name
    assert recovery[0].message == (
        f"torn ledger tail of {len(torn)} bytes at offset {size} was moved aside at recovery (incomplete last line)"
    )

    code, out = run_cli([str(path)], capsys)
    assert code == 0
    assert f"note: {recovery[0]}" in out
    code, out = run_cli([str(path), "--json"], capsys)
    assert code == 0
    assert str(recovery[0]) in [n["text"] for n in json.loads(out)["notes"]]


def test_recovered_store_with_quarantine_file_removed_is_not_intact(store: tuple[Path, DeviceKey]) -> None:
    path, key = store
    with ledger_path(path).open("ab") as handle:
        handle.write(b'{"body":')
    with Ledger.open(path, key, DEVICE, clock=FakeClock(boot_id="0b0c0000-0000-4000-8000-000000000002")) as ledger:
        (recovery_record,) = ledger.recovery_records
    (quarantined,) = (path / "quarantine").iterdir()
    quarantined.unlink()
    assert texts(verify_store(path)) == [f"seq {recovery_record.seq}: quarantine/{quarantined.name}: file missing"]


def test_quarantine_file_no_record_covers_is_a_problem(store: tuple[Path, DeviceKey]) -> None:
    path, _ = store
    (path / "quarantine" / "ledger-torn-4000-0123456789abcdef.bin").write_bytes(b"hidden")
    assert texts(verify_store(path)) == [
        "quarantine/ledger-torn-4000-0123456789abcdef.bin: no record covers this file"
    ]


def test_pubkey_of_the_right_device_pins(
    store: tuple[Path, DeviceKey], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, key = store
    pub = tmp_path / "device.pub"
    pub.write_text(public_key_pem(key.public_key), encoding="ascii")
    code, out = run_cli([str(path), "--pubkey", str(pub), "--json"], capsys)
    assert code == 0
    parsed = json.loads(out)
    assert parsed["key_pinned"] is True and parsed["key_fingerprint"] == key.fingerprint
    assert parsed["notes"] == []


def test_pubkey_of_another_device_fails(
    store: tuple[Path, DeviceKey],
    other_store: tuple[Path, DeviceKey],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = store
    _, other_key = other_store
    pub = tmp_path / "other.pub"
    pub.write_text(public_key_pem(other_key.public_key), encoding="ascii")

    report = verify_store(path, other_key.public_key)
    assert not report.intact
    first = report.problems[0]
    assert (first.seq, first.line) == (1, 1)
    assert "signed by another key" in first.message
    assert {p.seq for p in report.problems} == set(range(1, LAST_SEQ + 1))  # every record, none trusted

    code, out = run_cli([str(path), "--pubkey", str(pub)], capsys)
    assert code == 1
    assert f"first: {first}" in out
    code, out = run_cli([str(path), "--pubkey", str(pub), "--json"], capsys)
    assert code == 1
    assert [p["text"] for p in json.loads(out)["problems"]] == texts(report)
