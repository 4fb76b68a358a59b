"""The index ports' contract (sync/station/index_ports.py), run over every backend in
conftest.INDEX_BACKENDS."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.evidence.encoding import GENESIS_PREV
from sync.station.index_ports import Index
from sync.station.model import (
    CHECK_KINDS,
    DEVICE_FAULT,
    GAP,
    AssignmentRow,
    CaseRow,
    CaseStage,
    CaseUpdate,
    ChainHead,
    Claim,
    DeviceRow,
    FileRow,
    HealthRow,
    RecordRow,
)

DEVICE = "cam-1"
SHA = "ab" * 32


def record(seq: int, offset: int, type_: str = "segment", case_id: str | None = None) -> RecordRow:
    return RecordRow(DEVICE, seq, f"{seq:064x}", type_, 1000 + seq, case_id, 5000 + seq, offset, 10)


def claim(seq: int, name: str) -> Claim:
    return Claim(DEVICE, name, SHA, 4096, seq, "segment", 1000 + seq)


def health(at: int, summary: str) -> HealthRow:
    return HealthRow(DEVICE, at, "boot", "ok", summary, True, [], {}, b"line\n", at + 1)


def test_devices_are_put_and_replaced(index: Index) -> None:
    assert index.device(DEVICE) is None and index.devices() == []
    index.put_device(DeviceRow(DEVICE, "00" * 32, "fp", 1, False))
    index.put_device(DeviceRow(DEVICE, "11" * 32, "fp2", 2, True))
    assert index.devices() == [DeviceRow(DEVICE, "11" * 32, "fp2", 2, True)]


def test_sessions_count_and_measure_the_clock(index: Index) -> None:
    index.open_session(DEVICE, "s1", 100, 90, 100)
    index.open_session(DEVICE, "s1", 999, 0, 0)  # a hello delivered twice keeps the first
    index.count(DEVICE, "s1", "records", 3)
    assert index.set_clock(DEVICE, "s1", (90, 100, 110, 120), 7, 20)
    assert not index.set_clock(DEVICE, "nope", (1, 2, 3, 4), 0, 0)
    index.end_session(DEVICE, "s1", 200)
    session = index.last_session(DEVICE)
    assert session is not None and (session.started_us, session.records, session.ended_us) == (100, 3, 200)
    assert index.clock_offsets(DEVICE) == [(100, 7)]
    with pytest.raises(ValueError):
        index.count(DEVICE, "s1", "not_a_counter")


def test_the_chain_head_follows_the_stored_records(index: Index) -> None:
    assert index.head(DEVICE) == ChainHead(0, GENESIS_PREV, 0)
    index.add_records([record(1, 0), record(2, 10)], [claim(2, "segments/000002.ts")], [])
    assert index.head(DEVICE) == ChainHead(2, f"{2:064x}", 20)
    assert index.record(DEVICE, 1) == record(1, 0) and index.record(DEVICE, 3) is None
    assert index.record_rows(DEVICE) == [record(1, 0), record(2, 10)]
    assert index.claims_waiting(DEVICE) == [claim(2, "segments/000002.ts")]
    assert [(c.name, stored) for c, stored in index.footage_waiting(DEVICE)] == [("segments/000002.ts", 5002)]
    index.add_file(FileRow(DEVICE, "segments/000002.ts", SHA, 4096, 2, 6000))
    assert index.claims_waiting(DEVICE) == [] and index.footage_waiting(DEVICE) == []
    assert index.file_totals(DEVICE) == (1, 4096)


def test_the_first_claim_of_a_name_counts(index: Index) -> None:
    index.add_records([record(1, 0), record(2, 10)],
                      [claim(1, "segments/000001.ts"), claim(2, "segments/000001.ts")], [])
    found = index.claim(DEVICE, "segments/000001.ts")
    assert found is not None and found.seq == 1


def test_cases_are_typed_rows(index: Index) -> None:
    index.add_records(
        [record(1, 0, "case-open", "c1"), record(2, 10, "stage", "c1"), record(3, 20, "case-close", "c1")], [],
        [CaseUpdate(DEVICE, "c1", 1, "case-open", {"procedure": "inspection"}),
         CaseUpdate(DEVICE, "c1", 2, "stage", {"stage": "announce", "status": "done"}),
         CaseUpdate(DEVICE, "c1", 3, "case-close", {"missing": ["report"]}),
         CaseUpdate(DEVICE, "c0", 3, "stage", {"stage": "x", "status": "done"})])  # opened before: ignored
    assert index.cases(DEVICE) == [CaseRow(DEVICE, "c1", "inspection", 1, 3, ("report",),
                                           (CaseStage("announce", "done", 2),))]


def test_a_failed_batch_leaves_nothing(index: Index) -> None:
    with pytest.raises(RuntimeError), index.batch():
        index.add_records([record(1, 0)], [], [])
        index.add_problem(DEVICE, 1, None, GAP, "gap", None, 1)
        raise RuntimeError("the store failed")
    assert index.head(DEVICE).seq == 0 and index.problems() == []


def test_a_record_stored_twice_is_refused_and_leaves_the_batch_going(index: Index) -> None:
    with index.batch():
        index.add_records([record(1, 0)], [], [])
        with pytest.raises(Exception):  # noqa: B017 (each backend raises its own integrity error)
            index.add_records([record(1, 0), record(2, 10)], [], [])
        index.add_records([record(2, 10)], [], [])
    assert [r.seq for r in index.record_rows(DEVICE)] == [1, 2]


def test_staged_ranges(index: Index) -> None:
    index.add_range(DEVICE, SHA, 10, 5)
    index.add_range(DEVICE, SHA, 0, 10)
    index.add_range(DEVICE, SHA, 0, 10)  # the same range again: once
    assert index.ranges(DEVICE, SHA) == [(0, 10), (10, 5)]
    assert index.staged(DEVICE) == {SHA: 15}
    index.clear_ranges(DEVICE, SHA)
    assert index.ranges(DEVICE, SHA) == [] and index.staged(DEVICE) == {}
    index.add_range(DEVICE, SHA, 0, 10)
    index.add_file(FileRow(DEVICE, "segments/000001.ts", SHA, 10, 1, 1))  # stored: its ranges go
    assert index.ranges(DEVICE, SHA) == []


def test_files_page_in_order(index: Index) -> None:
    for device, name in [("cam-2", "a"), (DEVICE, "b"), (DEVICE, "a")]:
        index.add_file(FileRow(device, name, SHA, 1, 1, 1))
    first = index.files_after(("", ""), 2)
    assert [(f.device, f.name) for f in first] == [(DEVICE, "a"), (DEVICE, "b")]
    assert [(f.device, f.name) for f in index.files_after((DEVICE, "b"), 2)] == [("cam-2", "a")]
    assert index.stored_file(DEVICE, "a") is not None and index.stored_file(DEVICE, "z") is None


def test_problems_are_deduplicated(index: Index) -> None:
    assert index.add_problem(DEVICE, 4, "segments/x", GAP, "seq 4 missing", "t", 10)
    assert not index.add_problem(DEVICE, 4, "segments/x", GAP, "seq 4 missing", "t", 20)
    assert index.add_problem(DEVICE, 4, "segments/x", GAP, "another reason", "t", 30)
    assert index.add_problem(None, None, None, GAP, "seq 4 missing", None, 40)  # no device: its own
    [first, second] = index.problems(DEVICE)
    assert (first.repeats, first.at_us, first.last_us) == (2, 10, 20) and second.repeats == 1
    assert len(index.problems()) == 3
    assert index.resolve_gaps(DEVICE, 4, 50) == 2
    assert all(p.resolved_us == 50 for p in index.problems(DEVICE))


def test_device_faults_open_once_per_object_until_resolved(index: Index) -> None:
    assert index.open_device_fault(DEVICE, "disk", "full", None, 1)
    assert not index.open_device_fault(DEVICE, "disk", "still full", None, 2)
    assert index.open_device_fault(DEVICE, "clock", "untrusted", None, 3)
    assert index.resolve_device_faults(DEVICE, ["clock"], 4) == ["disk"]
    disk = [p for p in index.problems(DEVICE) if p.object == "disk"]
    assert [(p.kind, p.reason, p.repeats, p.resolved_us) for p in disk] == [(DEVICE_FAULT, "still full", 2, 4)]
    assert index.open_device_fault(DEVICE, "disk", "full again", None, 5)  # a new one after the resolution


def test_check_problems_open_once_and_resolve(index: Index) -> None:
    kind = CHECK_KINDS[0]
    assert index.open_check_problem(DEVICE, kind, 3, "segments/x", "late", 1)
    assert not index.open_check_problem(DEVICE, kind, 4, "segments/x", "later", 2)
    [row] = index.problems(DEVICE)
    assert (row.seq, row.reason, row.repeats, row.last_us) == (4, "later", 1, 2)
    assert index.resolve_check_problem(DEVICE, kind, "segments/x", 3) == 1
    assert index.resolve_check_problem(DEVICE, kind, "segments/x", 4) == 0


def test_only_the_newest_health_report_is_kept(index: Index) -> None:
    assert index.health(DEVICE) is None
    assert index.put_health(health(20, "newer"))
    assert not index.put_health(health(10, "older"))
    kept = index.health(DEVICE)
    assert kept is not None and kept.summary == "newer" and kept.line == b"line\n"


def test_the_latest_assignment_per_device(index: Index) -> None:
    assert index.latest_assignments() == {}
    index.add_assignment(AssignmentRow(DEVICE, "A1", 10, "s1"), "line 1")
    index.add_assignment(AssignmentRow(DEVICE, "B2", 20, "s2"), "line 2")
    index.add_assignment(AssignmentRow(DEVICE, "C3", 30, "s2"), "same serial")  # changes nothing
    assert index.latest_assignments() == {DEVICE: AssignmentRow(DEVICE, "B2", 20, "s2")}


def test_reopening_keeps_everything(make_index: Callable[[], Index]) -> None:
    index = make_index()
    index.put_device(DeviceRow(DEVICE, "00" * 32, "fp", 1, False))
    index.add_records([record(1, 0)], [], [])
    index.add_problem(DEVICE, 1, None, GAP, "gap", None, 1)
    index.close()
    again = make_index()  # migrations at open: nothing left to do, nothing lost
    assert [d.id for d in again.devices()] == [DEVICE]
    assert again.head(DEVICE).seq == 1 and len(again.problems()) == 1
