"""The officer in effect, read from the ledger's ``officer-assigned`` records (pure, no IO, no crypto).

Split from agent/evidence/assignment.py (which signs, checks and records assignments) so that the pure
workflow (agent/workflow/) folds the ledger's assignments without loading the signing code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.evidence import cases
from agent.evidence.record import officer_problem

ASSIGNMENT_KIND = "officer-assigned"  # the event record's kind
DOCK = "dock"


# --- the officer in effect, from the ledger (pure) -----------------------------------------------------------


@dataclass(frozen=True)
class OfficerState:
    """What the ledger's ``officer-assigned`` records say: the officer in effect (None: the config's default),
    who assigned it, and the newest station assignment recorded (its issue time and serial)."""

    officer: str | None = None
    by: str = "config"
    station_issued_wall_us: int = -1
    station_serial: str = ""

    def current(self, default: str) -> str:
        return self.officer if self.officer is not None else default

    def after(self, body: Mapping[str, Any]) -> OfficerState:
        """This state after an ``officer-assigned`` record with ``body`` (a malformed one changes nothing)."""
        officer, by = body.get("officer"), body.get("by")
        if officer_problem(officer) is not None or not isinstance(by, str):
            return self
        assert isinstance(officer, str)
        issued, serial = body.get("issued_wall_us"), body.get("serial")
        if by != DOCK and isinstance(issued, int) and isinstance(serial, str):
            if issued > self.station_issued_wall_us:
                return OfficerState(officer, by, issued, serial)
            return self  # recorded out of order: never happens on a device, and never goes backwards
        return OfficerState(officer, by, self.station_issued_wall_us, self.station_serial)


def is_assignment(record_type: str, body: Mapping[str, Any]) -> bool:
    return record_type == "event" and body.get("kind") == ASSIGNMENT_KIND


def officer_state(records: Iterable[tuple[str, Mapping[str, Any]]]) -> OfficerState:
    """Fold the ledger's ``(record_type, body)`` pairs, oldest first, into the officer in effect."""
    state = OfficerState()
    for record_type, body in records:
        if is_assignment(record_type, body):
            state = state.after(body)
    return state


def open_case(records: Iterable[tuple[str, Mapping[str, Any]]]) -> str | None:
    """The case id of a case opened and not closed in these records, or None (agent.evidence.cases)."""
    current = cases.open_case(list(records))
    return None if current is None else current.case_id
