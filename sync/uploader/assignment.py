"""The station's officer assignment (``bodycam/D/down/assignment``, retained), as the uploader passes it on.

The uploader judges the message first (format, the provisioned station key, about this device) and keeps the
newest valid one as pending; at every pass it hands the pending one to the device, which checks it again and
records it (agent/evidence/assignment.py):

* through the running agent's control socket (op ``assign``), so that the overlay and the workflow switch to
  the new officer at once;
* when no agent runs, on the ledger directly (like the receipts: ``DirectAssignment``), so that the agent
  takes the officer from the ledger when it starts. Refused while the agent holds the ledger.

A refusal because a case is open (RefusedError), an agent that cannot be reached or a busy ledger keeps the
assignment pending: it is offered again at every pass (``scan_seconds``) until the case closes. A forged or
malformed one is logged and dropped, and changes nothing. Pending lives in memory only: the broker keeps the
message retained and hands it out again at the next connect, and the device records each assignment once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import (
    BodycamError,
    RecordFormatError,
    RefusedError,
    VerificationError,
)
from agent.evidence.assignment import (
    SignedAssignment,
    Verdict,
    judge_station,
    parse_assignment,
    record_station_assignment,
    state_of_records,
    verdict_text,
    verify_assignment,
)
from agent.evidence.ledger import open_without_agent
from agent.evidence.store import read_records
from firmware_config.device_config import DeviceConfig
from sync.uploader.custody_port import first_that_works

log = logging.getLogger(__name__)
ASSIGNMENT_BOOT_REASON = "officer assignment"  # the boot record of DirectAssignment's own opening
INVALID = (VerificationError, RecordFormatError)  # the assignment itself is refused: every way would refuse it


class AssignmentPort(Protocol):
    def assign(self, line: bytes) -> str:
        """Record a station assignment line when it is news; returns what was done. INVALID errors: the
        assignment is refused; RefusedError: not now (a case is open); any other: the device is unavailable."""
        ...


class AgentAssignment:
    """Through the running agent's control socket (op ``assign``)."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def assign(self, line: bytes) -> str:
        from agent.control_socket import call_op  # as AgentCustody: only a device with an agent needs it

        text = line.rstrip(b"\n").decode("ascii", "replace")
        result = call_op(self.socket_path, {"op": "assign", "assignment": text}, "the assignment", timeout=self.timeout)
        return str(result.get("message"))


class DirectAssignment:
    """On the ledger itself, when no agent runs: checked against the records before the ledger is opened, so a
    duplicate, an older or a refused assignment writes nothing (not even a boot record)."""

    def __init__(self, config: DeviceConfig, station_key: Ed25519PublicKey) -> None:
        self.config = config
        self.station_key = station_key

    def assign(self, line: bytes) -> str:
        config = self.config
        signed = parse_assignment(line)
        verify_assignment(signed, self.station_key, config.device_id)
        state, case_id = state_of_records(read_records(config.store))
        verdict = judge_station(signed.assignment, state, case_id)
        if verdict is not Verdict.RECORD:
            return verdict_text(verdict, signed.assignment.officer)
        ledger = open_without_agent(config.store, config.key, config.device_id, ASSIGNMENT_BOOT_REASON,
                                    "the assignment goes through the agent's control socket, or is tried again")
        with ledger:
            verdict, record = record_station_assignment(ledger, signed, self.station_key, config.officer_id,
                                                        read_records(config.store))
        return verdict_text(verdict, signed.assignment.officer, record.seq if record is not None else None)


class AssignmentChain:
    """The agent first (when its socket file exists), then the ledger directly."""

    def __init__(self, config: DeviceConfig, station_key: Ed25519PublicKey) -> None:
        self.socket_path = config.socket_path
        self.agent = AgentAssignment(config.socket_path)
        self.direct = DirectAssignment(config, station_key)

    def assign(self, line: bytes) -> str:
        ways: list[tuple[str, Callable[[], str]]] = [("direct", partial(self.direct.assign, line))]
        if self.socket_path.exists():
            ways.insert(0, ("agent", partial(self.agent.assign, line)))
        return first_that_works(ways, "assignment not recorded", (*INVALID, RefusedError))


class AssignmentInbox:
    """The newest valid assignment from the station, until the device has it."""

    def __init__(self, *, device_id: str, station_key: Ed25519PublicKey, port: AssignmentPort) -> None:
        self.device_id = device_id
        self.station_key = station_key
        self.port = port
        self.pending: SignedAssignment | None = None
        self.settled: SignedAssignment | None = None  # the newest one the device has recorded or judged
        self.outcomes: list[str] = []  # what the device said, newest last (for callers and tests)
        self._last_problem = ""

    def offer(self, payload: bytes) -> None:
        """A ``down/assignment`` message: kept as pending when valid and newer than what is known."""
        try:
            signed = parse_assignment(payload)
            verify_assignment(signed, self.station_key, self.device_id)
        except INVALID as exc:
            log.error("station officer assignment refused: %s", exc)
            return
        issued = signed.assignment.issued_wall_us
        known = [a.assignment.issued_wall_us for a in (self.pending, self.settled) if a is not None]
        if known and issued <= max(known):
            return  # the retained message again, or an older one: the device has (or gets) a later one
        log.info("station %s assigns officer %r (issued %d); passing it to the device", signed.assignment.station,
                 signed.assignment.officer, issued)
        self.pending = signed
        self._last_problem = ""

    def deliver(self) -> None:
        """Hand the pending assignment to the device; kept pending while the device cannot take it yet."""
        signed = self.pending
        if signed is None:
            return
        try:
            outcome = self.port.assign(signed.to_line())
        except INVALID as exc:
            log.error("officer assignment %s refused by the device: %s", signed.assignment.serial[:8], exc)
            outcome = f"refused: {exc}"
        except BodycamError as exc:
            if str(exc) != self._last_problem:  # every pass tries again: say it once, not every few seconds
                self._last_problem = str(exc)
                log.warning("officer assignment %s kept pending: %s", signed.assignment.serial[:8], exc)
            return
        else:
            log.info("officer assignment %s: %s", signed.assignment.serial[:8], outcome)
        self.outcomes.append(outcome)
        self.settled, self.pending = signed, None


def make_assignment_inbox(config: DeviceConfig, station_key: Ed25519PublicKey) -> AssignmentInbox:
    return AssignmentInbox(device_id=config.device_id, station_key=station_key, port=AssignmentChain(config,
                                                                                                     station_key))
