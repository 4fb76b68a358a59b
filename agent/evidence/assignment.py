"""Officer assignment: which officer a device is issued to, as the station signs it and the ledger records it.

The station signs an assignment with its acknowledgement key (the key every device already trusts) under a
signature domain of its own, so it can pass neither for an acknowledgement nor for a ledger record. The device
checks it (signature, about itself) and records it as an ``event`` record of kind ``officer-assigned`` that
carries the signed line, so an auditor can check it again with the station's key. A dock assignment
(``bodycam-agent ctl assign``) is recorded the same way with ``by: "dock"`` and no station signature.

Which assignment is news (pure: :func:`judge_station`): a station assignment is recorded only when it was
issued later than every station assignment already recorded. The retained message the broker hands out at
every connect is therefore recorded once, and an older one (a retained message that a later assignment
replaced, or one delivered late) changes nothing. Dock assignments do not take part in that comparison (the
device's and the station's clocks need not agree): a station assignment issued after the last one recorded
still replaces a dock assignment. The officer in effect is the one in the newest ``officer-assigned`` record;
before any, the config's ``device.officer``.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import RecordFormatError, RefusedError, StoreError
from agent.evidence.fsutil import display_path
from agent.evidence.keys import DeviceKey
from agent.evidence.ledger import Ledger

# The pure reading of the ledger (the officer in effect) is agent/evidence/officer.py, so that the workflow
# reads it without loading the signing code; named here too, where the assignment's readers look for it.
from agent.evidence.officer import ASSIGNMENT_KIND as ASSIGNMENT_KIND
from agent.evidence.officer import DOCK as DOCK
from agent.evidence.officer import OfficerState as OfficerState
from agent.evidence.officer import is_assignment as is_assignment
from agent.evidence.officer import officer_state as officer_state
from agent.evidence.officer import open_case as open_case
from agent.evidence.record import SignedRecord, officer_problem, parse_line
from agent.evidence.signed_message import (
    COUNT,
    DEVICE_ID,
    HEX64,
    LineForm,
    MessageFormat,
    SignedLine,
    problem_check,
    text,
)
from agent.evidence.store import StoreLayout

ASSIGNMENT_VERSION = 1
ASSIGNMENT_DOMAIN = b"bodycam/station/v1/assignment\x00"
MAX_ASSIGNMENT_BYTES = 4 * 1024
_SERIAL = re.compile(r"[0-9a-f]{32}\Z")


ASSIGNMENT_FORMAT = MessageFormat(
    "assignment", ASSIGNMENT_DOMAIN, {"v": ASSIGNMENT_VERSION, "type": "officer-assignment"},
    {
        "station": DEVICE_ID, "key": HEX64, "device": DEVICE_ID, "officer": problem_check(officer_problem),
        "issued_wall_us": COUNT, "serial": text(_SERIAL, "32 lowercase hex digits"),
    },
    max_bytes=MAX_ASSIGNMENT_BYTES,
)  # fmt: skip


def new_serial() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Assignment:
    """The station's statement: ``officer`` carries device ``device`` from ``issued_wall_us`` (station clock)."""

    station: str
    key: str  # fingerprint of the station's public key
    device: str
    officer: str
    issued_wall_us: int
    serial: str  # 32 hex digits, random per assignment

    def body(self) -> dict[str, object]:
        """The signed fields but the header (what the format checks and encodes)."""
        return {
            "station": self.station, "key": self.key, "device": self.device, "officer": self.officer,
            "issued_wall_us": self.issued_wall_us, "serial": self.serial,
        }  # fmt: skip


@dataclass(frozen=True)
class SignedAssignment(LineForm):
    assignment: Assignment
    payload: bytes
    signature: bytes


def sign_assignment(assignment: Assignment, key: DeviceKey) -> SignedAssignment:
    signed = ASSIGNMENT_FORMAT.sign(assignment.body(), key)
    return SignedAssignment(assignment, signed.payload, signed.signature)


def parse_assignment(line: bytes) -> SignedAssignment:
    """Parse an assignment line (format only; see :func:`verify_assignment` for the signature)."""
    parsed = ASSIGNMENT_FORMAT.parse(line)
    v = parsed.value
    assignment = Assignment(v["station"], v["key"], v["device"], v["officer"], v["issued_wall_us"], v["serial"])
    return SignedAssignment(assignment, parsed.payload, parsed.signature)


def verify_assignment(signed: SignedAssignment, station_key: Ed25519PublicKey, device: str) -> None:
    """Raise VerificationError unless the assignment is signed by ``station_key`` and is about ``device``."""
    a = signed.assignment
    ASSIGNMENT_FORMAT.verify(SignedLine(a.body(), signed.payload, signed.signature), station_key, device,
                             what=f"officer assignment {a.serial[:8]} from station {a.station!r}",
                             signer="station key", then="; nothing recorded")


class Verdict(enum.Enum):
    RECORD = "recorded"
    IN_EFFECT = "in-effect"  # this very assignment is the newest station assignment recorded
    OLDER = "older"  # issued before the newest station assignment recorded: ignored


def judge_station(assignment: Assignment, state: OfficerState, case_id: str | None) -> Verdict:
    """Whether a verified station assignment is recorded; RefusedError while a case is open.

    A duplicate or an older assignment is judged before the case: it would change nothing anyway."""
    if assignment.serial == state.station_serial:
        return Verdict.IN_EFFECT
    if assignment.issued_wall_us <= state.station_issued_wall_us:
        return Verdict.OLDER
    refuse_in_case(case_id, assignment.officer)
    return Verdict.RECORD


def refuse_in_case(case_id: str | None, officer: str) -> None:
    """An officer change in the middle of a case would split its records between two officers: refused."""
    if case_id is not None:
        raise RefusedError(
            f"case {case_id} is open: officer {officer!r} is assigned once it is closed (nothing recorded)"
        )


def station_body(signed: SignedAssignment, previous: str) -> dict[str, Any]:
    """The ``event`` record body of a verified station assignment."""
    a = signed.assignment
    return {
        "kind": ASSIGNMENT_KIND, "officer": a.officer, "previous_officer": previous, "by": f"station {a.station}",
        "station": a.station, "station_key": a.key, "issued_wall_us": a.issued_wall_us, "serial": a.serial,
        "assignment": signed.text(),
    }  # fmt: skip


def dock_body(officer: str, previous: str, now_wall_us: int) -> dict[str, Any]:
    """The ``event`` record body of a dock assignment (no station signature: the device's own record)."""
    problem = officer_problem(officer)
    if problem is not None:
        raise RecordFormatError(f"assignment: {problem}")
    return {"kind": ASSIGNMENT_KIND, "officer": officer, "previous_officer": previous, "by": DOCK,
            "issued_wall_us": now_wall_us}


def verdict_text(verdict: Verdict, officer: str, seq: int | None = None) -> str:
    if verdict is Verdict.RECORD:
        return f"officer {officer!r} assigned (record seq {seq})"
    if verdict is Verdict.IN_EFFECT:
        return f"officer {officer!r}: this assignment is already recorded; nothing recorded"
    return f"officer {officer!r}: a later station assignment is already recorded; this older one is ignored"


def state_of_records(records: Sequence[SignedRecord]) -> tuple[OfficerState, str | None]:
    """(officer state, open case) of a ledger's records, oldest first."""
    pairs = [(r.record.type, r.record.body) for r in records]
    return officer_state(pairs), open_case(pairs)


def officer_in_store(store: Path, default: str) -> str:
    """The officer in effect by the store's ledger, reading only the lines that can be assignments (cheap
    enough to run before the camera is armed at start; damaged lines are skipped, as read_records does)."""
    path = StoreLayout(store).ledger_path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return default
    except OSError as exc:
        raise StoreError(f"ledger {display_path(path)}: cannot be read ({exc.strerror})") from None
    mark = f'"kind":"{ASSIGNMENT_KIND}"'.encode("ascii")
    pairs = []
    for line in data.splitlines():
        if mark in line:
            try:
                signed = parse_line(line)
            except RecordFormatError:
                continue
            pairs.append((signed.record.type, signed.record.body))
    return officer_state(pairs).current(default)


def record_station_assignment(
    ledger: Ledger, signed: SignedAssignment, station_key: Ed25519PublicKey, default_officer: str,
    records: Sequence[SignedRecord],
) -> tuple[Verdict, SignedRecord | None]:
    """Check a station assignment and append its record to ``ledger`` when it is news (see the module
    docstring); ``records``: the ledger's records, read after it was opened. VerificationError or
    RefusedError: nothing recorded."""
    verify_assignment(signed, station_key, ledger.device_id)
    state, case_id = state_of_records(records)
    verdict = judge_station(signed.assignment, state, case_id)
    if verdict is not Verdict.RECORD:
        return verdict, None
    return verdict, ledger.append("event", station_body(signed, state.current(default_officer)))
