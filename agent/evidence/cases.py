"""Which records are about which case: the one derivation of cases from a ledger's records (pure, no IO).

A case begins at the first ``case-open`` record naming its ``case_id`` (a string). From there on, every
record whose body names the same ``case_id`` is about it, in ledger order: its stages, retention flags,
stop reasons and events, its close, and also what does not fit (a second open, a record after the close),
which a reader shows rather than drops. A record naming a case opened before the records begin (or in
another store) is about no case here.

The readers: the timeline (agent/timeline.py: every case, what happened in it), the workflow's replay
(agent/workflow/replay.py: :func:`open_case`, the case the device is still in), and the station's index
(from the records it holds). Each reads the bodies with its own rules; which record belongs to which case
is decided here only. The input is ``(record_type, body)`` pairs, so a list of records in memory serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CaseInput = tuple[str, Mapping[str, Any]]  # a record's type and body


def case_id_of(body: Mapping[str, Any]) -> str | None:
    """The case a record's body names, or None (no ``case_id``, or one that is not text)."""
    case_id = body.get("case_id")
    return case_id if isinstance(case_id, str) else None


@dataclass(frozen=True)
class CaseRecords:
    """One case: the positions (in the records given) of its first ``case-open`` and of every later record
    naming it, in order."""

    case_id: str
    positions: tuple[int, ...]

    @property
    def opened(self) -> int:
        return self.positions[0]


@dataclass(frozen=True)
class OpenCase:
    """The case open at the end of the records: its last ``case-open`` and the records naming it after it."""

    case_id: str
    opened: int
    after: tuple[int, ...]


def cases_in(records: Sequence[CaseInput]) -> list[CaseRecords]:
    """Every case opened in ``records``, in the order the cases were first opened."""
    found: dict[str, list[int]] = {}
    for position, (record_type, body) in enumerate(records):
        case_id = case_id_of(body)
        if case_id is None:
            continue
        if case_id in found:
            found[case_id].append(position)
        elif record_type == "case-open":
            found[case_id] = [position]
    return [CaseRecords(case_id, tuple(positions)) for case_id, positions in found.items()]


def open_case(records: Sequence[CaseInput]) -> OpenCase | None:
    """The case the device is in at the end of ``records``, or None.

    That is the case of the last ``case-open`` (a device opens one case at a time: a later open supersedes
    an earlier one, even of the same id), unless a ``case-close`` naming it follows that open.
    """
    opens = [(position, case) for case in cases_in(records) for position in case.positions
             if records[position][0] == "case-open"]
    if not opens:
        return None
    last, case = max(opens, key=lambda item: item[0])
    after = tuple(position for position in case.positions if position > last)
    if any(records[position][0] == "case-close" for position in after):
        return None
    return OpenCase(case.case_id, last, after)
