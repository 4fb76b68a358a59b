"""agent/evidence/cases.py: which records are about which case, from records in memory (no IO)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.evidence.cases import CaseRecords, OpenCase, case_id_of, cases_in, open_case

A, B = "cam-1-00001", "cam-1-00002"


def rec(record_type: str, case_id: object = None, **body: Any) -> tuple[str, Mapping[str, Any]]:
    return record_type, ({} if case_id is None else {"case_id": case_id}) | body


def test_a_case_holds_its_open_and_every_later_record_naming_it() -> None:
    records = [
        rec("stage", A, stage="s"),  # before its open: about no case here
        rec("case-open", A),
        rec("event", kind="bookmark"),  # names no case
        rec("stage", A, stage="s"),
        rec("case-open", B),
        rec("retention", A),  # a record about A while B is open: still A's
        rec("case-close", A),
        rec("event", A, kind="bookmark"),  # after the close: shown by a reader, not dropped
        rec("case-open", A),  # a second open: A's too
        rec("stage", 7),  # a case_id that is not text names no case
    ]
    assert cases_in(records) == [CaseRecords(A, (1, 3, 5, 6, 7, 8)), CaseRecords(B, (4,))]
    assert cases_in(records)[0].opened == 1
    assert case_id_of({"case_id": 7}) is None and case_id_of({"case_id": A}) == A
    assert cases_in([]) == []


def test_the_open_case_is_the_last_opened_unless_its_close_follows() -> None:
    assert open_case([]) is None
    assert open_case([rec("case-open", A), rec("stage", A), rec("event", B)]) == OpenCase(A, 0, (1,))
    closed = [rec("case-open", A), rec("case-close", A)]
    assert open_case(closed) is None
    # A later open supersedes: B is open even though A never closed; A's records after it are not B's.
    superseded = [rec("case-open", A), rec("case-open", B), rec("stage", A), rec("stage", B)]
    assert open_case(superseded) == OpenCase(B, 1, (3,))
    # The same id opened again after its close: open from the second open on, not closed by the first close.
    reopened = [*closed, rec("case-open", A), rec("stage", A)]
    assert open_case(reopened) == OpenCase(A, 2, (3,))
    # B closed while A's open came last: A is the open case.
    assert open_case([rec("case-open", B), rec("case-open", A), rec("case-close", B)]) == OpenCase(A, 1, ())


def _open_by_fold(records: list[tuple[str, Mapping[str, Any]]]) -> str | None:
    """The device-side fold this module replaced (replay's and the assignment check's): last open, its close."""
    case: str | None = None
    for record_type, body in records:
        if record_type == "case-open" and isinstance(body.get("case_id"), str):
            case = str(body["case_id"])
        elif record_type == "case-close" and body.get("case_id") == case:
            case = None
    return case


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["case-open", "case-close", "stage", "event"]),
                          st.sampled_from([A, B, None, 3])), max_size=12))
def test_the_open_case_is_the_one_the_old_fold_found(pairs: list[tuple[str, object]]) -> None:
    records = [rec(record_type, case_id) for record_type, case_id in pairs]
    found = open_case(records)
    assert (None if found is None else found.case_id) == _open_by_fold(records)
