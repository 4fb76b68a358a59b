"""Taking in ledger lines: verify each against the chain the station holds, store the verified ones in order.

Per line, against the device's watermark (the last record stored with nothing missing before it):

- at or below it: an identical copy is a harmless duplicate; a different, validly signed record is a fork;
- the next one: identity (device id, enrolled key) and link to the watermark, then the shared ChainVerifier
  (anchored at the watermark) for the signature and what it checks of the content; verified -> stored;
- beyond it: identity and signature checked, then held (a bounded number and size per device) until the
  hole fills.

A record is believed only within the station's limits: a file it claims larger than ``limits.max_file_bytes``
is reported (``oversized-file``) and never received, though the genuine record itself is stored.

Nothing past a problem is stored: the first problem ends the message. Stored lines go to the device's ledger
copy (write + fdatasync) before the index learns of them, and only then may an acknowledgement name them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from agent.errors import RecordFormatError, StoreError
from agent.evidence.cases import case_id_of
from agent.evidence.clock import Clock
from agent.evidence.keys import public_key_from_hex, verify_signature
from agent.evidence.record import CASE_TYPES, FILE_RECORD_TYPES, SEGMENT_TYPES, SignedRecord, parse_line
from agent.evidence.verify import ChainVerifier, Report
from sync.station.deadline import WorkingCalendar, recording_time
from sync.station.index import Index
from sync.station.model import (
    BAD_SIGNATURE,
    CASE_OPEN_TOO_LONG,
    FORK,
    GAP,
    INCONSISTENT,
    LATE_UPLOAD,
    MALFORMED,
    OVERSIZED_FILE,
    SPLICED,
    WRONG_KEY,
    CaseUpdate,
    Claim,
    DeviceRow,
    RecordRow,
)
from sync.station.overdue import case_object
from sync.station.ports import LedgerCopies
from sync.station.problems import ProblemLog

log = logging.getLogger(__name__)

# What the verifier may still find about a record that passed the identity, signature and link checks: facts
# about its content. The record is genuine and in its place, so it is stored (the station's copy stays the
# device's ledger) and the finding reported. Any other finding stops the intake like a broken chain.
_CONTENT_FINDINGS = (
    "the ledger's first record is not a boot record",
    "monotonic time went backwards",
    "checkpoint",
    "file already recorded by seq",
    "purge of a file no earlier segment record vouches for",
)
# The chain verifier's words for a record whose signature does not verify (a forgery, not a broken chain).
SIGNATURE_INVALID = "signature invalid"
# A verifier remembers every record it saw; starting a fresh one (anchored where the chain stands) now and
# then bounds that memory. Only its cross-record content checks (monotonic time, a second record for a file)
# lose sight of what came before the restart point; the chain checks themselves do not depend on it.
CHAIN_RESET_RECORDS = 100_000


@dataclass
class IntakeResult:
    stored: int = 0
    duplicates: int = 0
    held: int = 0
    problem: bool = False  # the message ended at a problem (reported)
    late: list[tuple[int, str, str]] = field(default_factory=list)  # seq, file, reason
    oversized: list[tuple[int, str, int]] = field(default_factory=list)  # seq, file, claimed size

    @property
    def advanced(self) -> bool:
        return self.stored > 0

    @property
    def only_duplicates(self) -> bool:
        """Every line was already stored: the ack for them may have been lost (a crash before it was sent)."""
        return self.duplicates > 0 and not (self.stored or self.held or self.problem)


@dataclass
class _Batch:
    """Lines verified in this message, in order, not yet stored."""

    base_seq: int
    base_link: str
    lines: list[tuple[bytes, SignedRecord]] = field(default_factory=list)

    @property
    def seq(self) -> int:
        return self.lines[-1][1].seq if self.lines else self.base_seq

    @property
    def link(self) -> str:
        return self.lines[-1][1].link if self.lines else self.base_link

    def line_of(self, seq: int) -> bytes | None:
        index = seq - self.base_seq - 1
        return self.lines[index][0] if 0 <= index < len(self.lines) else None


@dataclass(frozen=True)
class IntakeLimits:
    """How much of a device's word the intake takes (station config ``[limits]``)."""

    max_pending: int  # lines held per device ahead of a hole
    max_pending_bytes: int  # and their bytes
    max_file_bytes: int  # the largest file a record may claim and still be received


class RecordIntake:
    def __init__(self, *, store: LedgerCopies, index: Index, problems: ProblemLog, calendar: WorkingCalendar,
                 clock: Clock, limits: IntakeLimits) -> None:
        self._store = store
        self._index = index
        self._problems = problems
        self._calendar = calendar
        self._clock = clock
        self._limits = limits
        self._pending: dict[str, dict[int, tuple[bytes, SignedRecord]]] = {}
        self._pending_bytes: dict[str, int] = {}
        # One verifier per device while its chain goes on without a problem (it also checks monotonic time
        # and file claims across messages); dropped on any problem and re-anchored at the stored watermark.
        self._chains: dict[str, tuple[str, ChainVerifier]] = {}

    def pending(self, device: str) -> list[int]:
        return sorted(self._pending.get(device, {}))

    # --- one records message ----------------------------------------------------------------------------------

    def take(self, device: DeviceRow, lines: list[bytes], topic: str) -> IntakeResult:
        head = self._index.head(device.id)
        batch = _Batch(head.seq, head.link)
        result = IntakeResult()
        try:
            for raw in lines:
                if not self._one(device, raw, batch, result, topic):
                    result.problem = True
                    self._chains.pop(device.id, None)
                    break
            if batch.lines:
                self._store_batch(device.id, batch, head.ledger_bytes, result)
        except BaseException:
            self._chains.pop(device.id, None)  # its state ran ahead of what was stored
            raise
        return result

    def _one(self, device: DeviceRow, raw: bytes, batch: _Batch, result: IntakeResult, topic: str) -> bool:
        """Judge one line; False when it is a problem (reported) and the rest of the message is not taken."""
        try:
            signed = parse_line(raw)
        except RecordFormatError as exc:
            self._problems.report(MALFORMED, device.id, f"malformed record ({exc})", topic=topic)
            return False
        seq = signed.seq
        if signed.record.device != device.id:
            self._problems.report(SPLICED, device.id, f"record of device {signed.record.device!r} sent as this "
                                  "device's", seq=seq, topic=topic)
            return False
        if seq <= batch.seq:
            return self._known(device, raw, signed, batch, result, topic)
        if seq > batch.seq + 1:
            return self._hold(device, raw, signed, result, topic)
        if not self._accept(device, raw, signed, batch, topic):
            return False
        return self._drain(device, batch, topic)

    def _known(self, device: DeviceRow, raw: bytes, signed: SignedRecord, batch: _Batch, result: IntakeResult,
               topic: str) -> bool:
        """A line with a sequence number the station already holds (stored, or earlier in this message)."""
        held = batch.line_of(signed.seq)
        if held is None:
            row = self._index.record(device.id, signed.seq)
            held = b"" if row is None else self._store.read_ledger(device.id, row.offset, row.length)
        if held == raw:
            result.duplicates += 1
            return True
        self._report_second(device, signed, topic, "the station holds a different record with this sequence number")
        return False

    def _report_second(self, device: DeviceRow, signed: SignedRecord, topic: str, what: str) -> None:
        judged = self._identity(device, signed)
        if judged is not None:
            self._problems.report(judged[0], device.id, judged[1], seq=signed.seq, topic=topic)
        else:
            self._problems.report(FORK, device.id, f"fork: {what} (this one has link {signed.link[:16]}...)",
                                  seq=signed.seq, topic=topic)

    def _hold(self, device: DeviceRow, raw: bytes, signed: SignedRecord, result: IntakeResult, topic: str) -> bool:
        judged = self._identity(device, signed)
        if judged is not None:
            self._problems.report(judged[0], device.id, judged[1], seq=signed.seq, topic=topic)
            return False
        pending = self._pending.setdefault(device.id, {})
        earlier = pending.get(signed.seq)
        if earlier is not None:
            if earlier[0] == raw:
                result.duplicates += 1
                return True
            self._report_second(device, signed, topic, "a different record with this sequence number is held")
            return False
        held_bytes = self._pending_bytes.get(device.id, 0)
        if len(pending) >= self._limits.max_pending or held_bytes + len(raw) > self._limits.max_pending_bytes:
            # Not a problem of the device's: it sends the line again in a later session, from the watermark.
            log.warning("device %s seq %d: not held, %d records (%d bytes) already wait for a hole to fill",
                        device.id, signed.seq, len(pending), held_bytes)
            return True
        pending[signed.seq] = (raw, signed)
        self._pending_bytes[device.id] = held_bytes + len(raw)
        result.held += 1
        return True

    def _release(self, device: str, seq: int) -> tuple[bytes, SignedRecord]:
        held = self._pending[device].pop(seq)
        self._pending_bytes[device] -= len(held[0])
        return held

    def _drain(self, device: DeviceRow, batch: _Batch, topic: str) -> bool:
        pending = self._pending.get(device.id, {})
        while batch.seq + 1 in pending:
            raw, signed = self._release(device.id, batch.seq + 1)
            if not self._accept(device, raw, signed, batch, topic):
                return False
        return True

    # --- the next record of the chain -------------------------------------------------------------------------

    @staticmethod
    def _key_problem(device: DeviceRow, signed: SignedRecord) -> tuple[str, str] | None:
        """The enrolled key (not the signature): the problem kind and reason, or None."""
        record = signed.record
        if record.key != device.fingerprint:
            return WRONG_KEY, (f"signed by another key ({record.key[:16]}..., enrolled "
                               f"{device.fingerprint[:16]}...)")
        if record.type == "boot" and record.body["public_key"] != device.public_key:
            return WRONG_KEY, "boot record announces a different public key than the enrolled one"
        return None

    def _identity(self, device: DeviceRow, signed: SignedRecord) -> tuple[str, str] | None:
        """Enrolled key and signature: the problem kind and reason, or None when the record is the device's."""
        judged = self._key_problem(device, signed)
        if judged is None and not verify_signature(public_key_from_hex(device.public_key), signed.payload,
                                                   signed.signature):
            return BAD_SIGNATURE, SIGNATURE_INVALID
        return judged

    def _chain(self, device: DeviceRow, batch: _Batch) -> ChainVerifier:
        cached = self._chains.get(device.id)
        if cached is not None and cached[0] == device.fingerprint and cached[1].report.records < CHAIN_RESET_RECORDS:
            return cached[1]
        chain = ChainVerifier(Report(path=f"station copy of {device.id}"), public_key_from_hex(device.public_key))
        chain.anchor(device.id, batch.seq, batch.link)
        self._chains[device.id] = (device.fingerprint, chain)
        return chain

    def _accept(self, device: DeviceRow, raw: bytes, signed: SignedRecord, batch: _Batch, topic: str) -> bool:
        seq = signed.seq
        judged = self._key_problem(device, signed)
        if judged is None and signed.record.prev != batch.link:
            # A forgery is reported as one, not as a fork: only off the chain is the signature checked here.
            judged = self._identity(device, signed) or (
                FORK, f"fork: prev hash does not match the link of seq {seq - 1} the station holds")
        if judged is not None:
            self._problems.report(judged[0], device.id, judged[1], seq=seq, topic=topic)
            return False
        chain = self._chain(device, batch)
        before = len(chain.report.problems)
        chain.feed_line(raw, seq)  # verifies the signature: the one Ed25519 check of a record in the chain
        findings = chain.report.problems[before:]
        breaking = [f for f in findings if not f.message.startswith(_CONTENT_FINDINGS)]
        if breaking:
            kind = BAD_SIGNATURE if breaking[0].message == SIGNATURE_INVALID else MALFORMED
            self._problems.report(kind, device.id, breaking[0].message, seq=seq, obj=breaking[0].object,
                                  topic=topic)
            return False
        for finding in findings:
            self._problems.report(INCONSISTENT, device.id, finding.message, seq=seq, obj=finding.object, topic=topic)
        batch.lines.append((raw, signed))
        return True

    # --- storing ----------------------------------------------------------------------------------------------

    def _store_batch(self, device: str, batch: _Batch, ledger_bytes: int, result: IntakeResult) -> None:
        offset = self._store.append_records(device, [raw for raw, _ in batch.lines])
        if offset != ledger_bytes:
            # The index and the ledger copy disagree: a bug or a hand edit; never build on it.
            raise StoreError(f"device {device}: ledger copy was {offset} bytes before the append, the index "
                               f"says {ledger_bytes}")
        now = self._clock.now().wall_us
        offsets = self._index.clock_offsets(device)
        rows, claims, cases = [], [], []
        for raw, signed in batch.lines:
            record, body = signed.record, signed.record.body
            case_id = case_id_of(body)
            rows.append(RecordRow(device, signed.seq, signed.link, record.type, record.wall_us, case_id, now, offset,
                                  len(raw)))
            offset += len(raw)
            if record.type in FILE_RECORD_TYPES:  # claims: footage and torn tails in quarantine
                size = int(body["length"] if record.type == "recovery" else body["size"])
                claims.append(Claim(device, str(body["file"]), str(body["sha256"]), size, signed.seq, record.type,
                                    record.wall_us))
                if size > self._limits.max_file_bytes:
                    result.oversized.append((signed.seq, str(body["file"]), size))
            if record.type in CASE_TYPES and case_id is not None:
                cases.append(CaseUpdate(device, case_id, signed.seq, record.type, dict(body)))
            if record.type in SEGMENT_TYPES:  # footage, with an upload deadline
                recorded = recording_time(record.wall_us, offsets, now)
                if self._calendar.is_late(recorded, now):
                    result.late.append((signed.seq, str(body["file"]), late_reason(self._calendar, recorded)))
        self._index.add_records(rows, claims, cases)
        for case in cases:
            if case.type == "case-close":  # the case is no longer open, too long or not
                self._index.resolve_check_problem(device, CASE_OPEN_TOO_LONG, case_object(case.case_id), now)
        result.stored = len(rows)
        self._index.resolve_gaps(device, batch.seq, now)
        pending = self._pending.get(device, {})
        for seq in [s for s in pending if s <= batch.seq]:
            self._release(device, seq)

    def report_late(self, device: str, result: IntakeResult, topic: str) -> None:
        for seq, file, reason in result.late:
            self._problems.report(LATE_UPLOAD, device, reason, seq=seq, obj=file, topic=topic)
        for seq, file, size in result.oversized:
            self._problems.report(OVERSIZED_FILE, device, oversized_reason(file, size, self._limits.max_file_bytes),
                                  seq=seq, obj=file, topic=topic)

    # --- done -------------------------------------------------------------------------------------------------

    def report_gaps(self, device: str, head_seq: int, topic: str) -> list[tuple[int, int]]:
        """The holes below ``head_seq`` (which the device says it sent) that are still open, each reported once."""
        watermark = self._index.head(device).seq
        # Walk the held records rather than every number: head_seq comes from the device and may be huge.
        held = sorted(seq for seq in self._pending.get(device, {}) if watermark < seq <= head_seq)
        holes: list[tuple[int, int]] = []
        expected = watermark + 1
        for seq in [*held, head_seq + 1]:
            if seq > expected:
                holes.append((expected, seq - 1))
            expected = seq + 1
        for first, last in holes:
            what = f"record {first} missing" if first == last else f"records {first}..{last} missing"
            self._problems.report(GAP, device, what, seq=first, topic=topic)
        return holes


def oversized_reason(file: str, size: int, limit: int) -> str:
    return (f"file {file}: the record claims {size} bytes, more than this station's limit of {limit} "
            "(limits.max_file_bytes); the record is kept, the file is not received")


def late_reason(calendar: WorkingCalendar, recorded_us: int) -> str:
    """The same words whether the record or the file arrives late, so one late recording is one problem.
    ``recorded_us``: from :func:`sync.station.deadline.recording_time`."""
    return f"uploaded late: {calendar.describe(recorded_us)}"
