"""sync/uploader/plan.py: which lines, in which messages, which files in which order, which byte ranges."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FakeClock, seeded_key

from agent.evidence.custody import long_term_files
from agent.evidence.ledger import Ledger
from agent.evidence.record import SignedRecord
from agent.evidence.store import read_records
from sync.uploader.plan import (
    batches,
    files_to_offer,
    missing_ranges,
    normalize_ranges,
    parse_lines,
    read_complete_lines,
    receipted_hashes,
    records_after,
)

DEVICE = "dev-plan"
H = "ab" * 32


def digest(n: int) -> str:
    return f"{n:02x}" * 32


def ledger(tmp_path: Path, entries: list[tuple[str, dict[str, object]]]) -> list[SignedRecord]:
    """A real signed ledger with a boot record followed by ``entries``; returns its records."""
    with Ledger.open(tmp_path / "store", seeded_key(3), DEVICE, FakeClock()) as led:
        for rtype, body in entries:
            led.append(rtype, body)
    return read_records(tmp_path / "store")


def segment(n: int, size: int = 100) -> tuple[str, dict[str, object]]:
    return "segment", {"file": f"segments/{n:06d}.mp4", "sha256": digest(n), "size": size}


def receipt(files: list[object], seq: int = 1) -> tuple[str, dict[str, object]]:
    return "receipt", {"station": "st", "station_key": H, "seq": seq, "link": H, "files": files, "ack": "x"}


# ---------------------------------------------------------------- lines


def test_read_complete_lines_leaves_a_partial_last_line_for_the_next_pass() -> None:
    assert read_complete_lines(b"one\ntwo\nthr") == [b"one\n", b"two\n"]
    assert read_complete_lines(b"one\ntwo\n") == [b"one\n", b"two\n"]
    assert read_complete_lines(b"partial") == [] and read_complete_lines(b"") == []


def test_read_complete_lines_splits_on_lf_only() -> None:
    # A CR inside a damaged line must not make it two lines (bytes.splitlines would).
    assert read_complete_lines(b"a\rb\nc\r\n") == [b"a\rb\n", b"c\r\n"]


def test_parse_lines_stops_at_an_unparsable_line_and_names_it(tmp_path: Path) -> None:
    ledger(tmp_path, [("event", {"kind": "x"}), ("event", {"kind": "y"})])
    raw = read_complete_lines((tmp_path / "store" / "ledger.jsonl").read_bytes())
    damaged = [raw[0], raw[1], b'{"not a record"}\tzz\n', raw[2]]
    parsed = parse_lines(damaged, DEVICE)
    assert [line.seq for line in parsed.lines] == [1, 2]
    assert [line.raw for line in parsed.lines] == raw[:2]
    assert parsed.bad is not None and parsed.bad.number == 3 and parsed.bad.raw == damaged[2]
    assert parsed.bad.reason


def test_parse_lines_refuses_a_gap_in_the_numbering_and_another_device(tmp_path: Path) -> None:
    ledger(tmp_path, [("event", {"kind": "x"}), ("event", {"kind": "y"})])
    raw = read_complete_lines((tmp_path / "store" / "ledger.jsonl").read_bytes())
    gap = parse_lines([raw[0], raw[2]], DEVICE)
    assert [line.seq for line in gap.lines] == [1]
    assert gap.bad is not None and "seq 3 where seq 2 was expected" in gap.bad.reason
    other = parse_lines(raw, "dev-other")
    assert other.lines == [] and other.bad is not None and "'dev-plan'" in other.bad.reason
    continued = parse_lines(raw[1:], DEVICE, first_seq=2, first_number=2)
    assert [line.seq for line in continued.lines] == [2, 3] and continued.bad is None


def test_records_after_the_watermark(tmp_path: Path) -> None:
    ledger(tmp_path, [("event", {"kind": "x"}), ("event", {"kind": "y"})])
    lines = parse_lines(read_complete_lines((tmp_path / "store" / "ledger.jsonl").read_bytes()), DEVICE).lines
    assert [line.seq for line in records_after(lines, 0)] == [1, 2, 3]
    assert [line.seq for line in records_after(lines, 2)] == [3]
    assert records_after(lines, 3) == []
    assert lines[1].link == lines[2].record.record.prev


def test_batches_keep_order_and_size_and_a_long_line_travels_alone() -> None:
    lines = [b"a" * 4 + b"\n", b"b" * 4 + b"\n", b"c" * 20 + b"\n", b"d\n", b"e\n"]
    out = batches(lines, 12)
    assert b"".join(out) == b"".join(lines)
    assert out == [lines[0] + lines[1], lines[2], lines[3] + lines[4]]
    assert all(len(m) <= 12 for m in out if m != lines[2])
    assert batches([], 10) == []
    with pytest.raises(ValueError):
        batches(lines, 0)


# ---------------------------------------------------------------- files


def test_files_to_offer_long_term_first_then_oldest(tmp_path: Path) -> None:
    records = ledger(tmp_path, [
        segment(1), segment(2),
        ("case-open", {"case_id": "c1", "procedure": "inspection", "officer": "o"}),
        ("retention", {"retention_class": "long-term", "reason": "r", "officer": "o", "case_id": "c1"}),
        segment(3),
        ("case-close", {"case_id": "c1", "officer": "o", "missing": []}),
        segment(4),  # closed after the case-close: it holds the case's last frames, so long-term too
        segment(5),
        ("recovery", {"offset": 0, "length": 7, "sha256": digest(9), "file": "quarantine/ledger-torn-0-aa.bin"}),
        ("recovered", {"file": "segments/000006.mp4", "sha256": digest(6), "size": 60, "reason": "crash"}),
    ])
    offers = files_to_offer(records, set(), long_term_files(records))
    assert [o.file for o in offers] == ["segments/000003.mp4", "segments/000004.mp4", "segments/000001.mp4",
                                        "segments/000002.mp4", "segments/000005.mp4",
                                        "quarantine/ledger-torn-0-aa.bin", "segments/000006.mp4"]
    assert [o.long_term for o in offers[:3]] == [True, True, False]
    torn = offers[5]
    assert (torn.sha256, torn.size) == (digest(9), 7)  # a recovery record's length is the file's size
    assert offers[0].seq < offers[1].seq and offers[2].seq < offers[3].seq


def test_files_to_offer_skips_acknowledged_and_purged_files(tmp_path: Path) -> None:
    records = ledger(tmp_path, [
        segment(1), segment(2), segment(3), segment(4),
        receipt([digest(1)]),  # custody writes hashes
        receipt([{"file": "segments/000002.mp4", "sha256": digest(2), "size": 100}]),  # objects are read too
        ("purge", {"file": "segments/000003.mp4", "sha256": digest(3), "reason": "acknowledged"}),
    ])
    assert receipted_hashes(records) == {digest(1), digest(2)}
    assert [o.file for o in files_to_offer(records, set(), set())] == ["segments/000004.mp4"]
    assert files_to_offer(records, {digest(4)}, set()) == []  # acknowledged in this run, no receipt yet


def test_files_to_offer_waits_for_the_record_to_be_acknowledged(tmp_path: Path) -> None:
    records = ledger(tmp_path, [segment(1), segment(2)])  # boot is seq 1: the segments are seq 2 and 3
    assert [o.file for o in files_to_offer(records, set(), set(), up_to_seq=2)] == ["segments/000001.mp4"]
    assert files_to_offer(records, set(), set(), up_to_seq=1) == []
    assert len(files_to_offer(records, set(), set(), up_to_seq=None)) == 2


# ---------------------------------------------------------------- byte ranges


def test_missing_ranges_of_nothing_held_are_whole_chunks() -> None:
    assert missing_ranges(10, [], 4) == [(0, 4), (4, 4), (8, 2)]
    assert missing_ranges(8, [], 4) == [(0, 4), (4, 4)]
    assert missing_ranges(10, [[0, 10]], 4) == []


def test_missing_ranges_cover_exactly_the_holes() -> None:
    assert missing_ranges(20, [[4, 4], [12, 2]], 3) == [(0, 3), (3, 1), (8, 3), (11, 1), (14, 3), (17, 3)]


def test_missing_ranges_with_overlapping_unsorted_and_odd_have_lists() -> None:
    have = [[10, 5], [0, 3], [2, 4], [14, 0], [12, 1], [18, 50]]  # overlaps, touches, empty, past the end
    ranges = missing_ranges(20, have, 100)
    assert ranges == [(6, 4), (15, 3)]
    held = {b for start, length in normalize_ranges(have, 20) for b in range(start, start + length)}
    sent = [b for start, length in ranges for b in range(start, start + length)]
    assert sorted(sent) == sorted(set(range(20)) - held) and len(sent) == len(set(sent))


def test_missing_ranges_of_an_empty_file_is_one_empty_chunk() -> None:
    assert missing_ranges(0, [], 4) == [(0, 0)]
    with pytest.raises(ValueError):
        missing_ranges(10, [], 0)


def test_normalize_ranges_merges_touching_and_clips() -> None:
    assert normalize_ranges([[5, 5], [0, 5], [20, 3], [-2, 1]], 22) == [(0, 10), (20, 2)]
