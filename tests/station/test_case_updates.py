"""Which of a batch's case records the station's index applies, and how: agent/evidence/cases.py's rule
over the cases the stored records opened, then the batch (pure, no index)."""

from __future__ import annotations

from typing import Any

from sync.station.index_sqlite_chain import case_updates
from sync.station.model import CaseUpdate


def update(seq: int, record_type: str, case_id: str, **body: Any) -> CaseUpdate:
    return CaseUpdate("D1", case_id, seq, record_type, {"case_id": case_id, **body})


def test_an_open_opens_its_case_and_what_names_it_after_follows_in_order() -> None:
    batch = [update(1, "stage", "C1", stage="a"), update(2, "case-open", "C1"), update(3, "stage", "C1"),
             update(4, "case-close", "C1")]
    assert [(u.seq, opens) for u, opens in case_updates([], batch)] == [(2, True), (3, False), (4, False)]


def test_a_case_opened_by_stored_records_is_followed_and_not_opened_again() -> None:
    batch = [update(7, "case-open", "C1"), update(8, "stage", "C1"), update(9, "case-close", "C2")]
    assert [(u.seq, opens) for u, opens in case_updates(["C1"], batch)] == [(7, False), (8, False)]


def test_interleaved_cases_keep_ledger_order() -> None:
    batch = [update(1, "case-open", "A"), update(2, "case-open", "B"), update(3, "stage", "A"),
             update(4, "case-close", "B")]
    assert [(u.seq, opens) for u, opens in case_updates([], batch)] == [(1, True), (2, True), (3, False),
                                                                         (4, False)]
