"""Custody on the device: the station's receipts, and the purge of acknowledged segments (issue 5).

SPEC invariant 3: a segment leaves the device only after the station has acknowledged it, only as the
retention policy allows, and only with a signed ``purge`` record written before the file is removed.

* A receipt: the station's acknowledgement line is checked (signature with the provisioned station key,
  about this device, ``link`` equal to the link of this ledger's own record ``seq``) and recorded as a
  ``receipt`` record carrying the line (docs/sync-protocol.md, "The acknowledgement").
* A purge candidate is a ``segment``/``recovered`` file whose exact SHA-256 a receipt names, whose
  record the station holds too (some receipt's ``seq`` reaches it), that is not purged yet, and that is
  older than the policy's keep time (long-term footage: see :func:`long_term_files`).
* A purge re-hashes the file (bytes that do not match their record are kept, for the verifier), appends
  the ``purge`` record, then unlinks the file and fsyncs the folder. A crash between the two leaves a
  record whose file still exists: the next purge run removes it without a second record.

The pure functions read records in ledger order; the IO functions take the open :class:`Ledger` (one
writer: the agent's, or :class:`DirectCustody`'s own when no agent runs). The uploader's ``AgentCustody``
(sync/uploader/custody_port.py) asks the running agent over its control socket (ops ``receipt`` and
``purge``) to do the same on its ledger (with these functions, over an incremental view:
:mod:`agent.evidence.custody_view`); the core knows nothing of the socket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import (
    BodycamError,
    StoreError,
    VerificationError,
)
from agent.evidence.ack import Ack, SignedAck, parse_ack, verify_ack
from agent.evidence.clock import Clock, SystemClock
from agent.evidence.fsutil import fsync_dir, sha256_file
from agent.evidence.ledger import Ledger, open_without_agent
from agent.evidence.record import SEGMENT_TYPES, SignedRecord
from agent.evidence.store import StoreLayout, read_records

log = logging.getLogger(__name__)

LONG_TERM = "long-term"
STANDARD = "standard"
CUSTODY_BOOT_REASON = "custody"  # the boot record DirectCustody's own opening of the ledger writes
_CASE_BOUNDARIES = ("case-open", "case-close")
_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 24 * _US_PER_HOUR


# --- pure functions over records (ledger order) ---------------------------------------------------------


def long_term_files(records: Sequence[SignedRecord]) -> set[str]:
    """The segment files a long-term retention flag covers (art. 19).

    A segment record is written when its file closes, so the file holds the footage from the previous
    segment record up to its own. Hence:

    * A flag with a ``case_id`` covers every segment recorded from that case's ``case-open`` to its
      ``case-close`` (the ledger end while the case is open), plus the first segment record after the
      ``case-close``: that file holds the case's last frames.
    * A flag without a case covers every segment of the no-case stretch it sits in: from the case boundary
      (``case-open`` or ``case-close``) before it, or the ledger start, to the boundary after it, or the
      ledger end, plus the first segment record after that boundary (it holds the stretch's last frames).
    * Every retention class other than ``standard`` counts as long-term; a case flagged whose
      ``case-open`` is not in these records is covered from the ledger start.

    Over-retention is safe, under-retention is not: wherever a file could hold flagged footage, it is in.
    """
    segments = [(i, str(r.record.body["file"])) for i, r in enumerate(records) if r.record.type in SEGMENT_TYPES]
    boundaries = [i for i, r in enumerate(records) if r.record.type in _CASE_BOUNDARIES]
    end = len(records)
    covered: set[str] = set()

    def cover(start: int, stop: int) -> None:
        """Segments recorded after index ``start`` up to ``stop``, plus the first one after ``stop``."""
        covered.update(name for i, name in segments if start < i < stop)
        following = next((name for i, name in segments if i > stop), None)
        if following is not None:
            covered.add(following)

    for index, signed in enumerate(records):
        body = signed.record.body
        if signed.record.type != "retention" or body.get("retention_class") == STANDARD:
            continue
        case_id = body.get("case_id")
        if isinstance(case_id, str):
            for start, stop in _case_spans(records, case_id):
                cover(start, stop)
        else:
            start = max((i for i in boundaries if i < index), default=-1)
            stop = min((i for i in boundaries if i > index), default=end)
            cover(start, stop)
    return covered


def _case_spans(records: Sequence[SignedRecord], case_id: str) -> Iterator[tuple[int, int]]:
    """(case-open index, case-close index) of each time ``case_id`` was open; -1 / len for a missing end."""
    opens = [i for i, r in enumerate(records) if r.record.type == "case-open" and r.record.body["case_id"] == case_id]
    closes = [i for i, r in enumerate(records) if r.record.type == "case-close" and r.record.body["case_id"] == case_id]
    if not opens:
        yield -1, min(closes, default=len(records))
        return
    for start in opens:
        yield start, min((i for i in closes if i > start), default=len(records))


def acknowledged(records: Sequence[SignedRecord]) -> dict[str, int]:
    """sha256 -> seq of the first ``receipt`` record naming it."""
    result: dict[str, int] = {}
    for signed in records:
        if signed.record.type == "receipt":
            for digest in signed.record.body["files"]:
                if isinstance(digest, str):
                    result.setdefault(digest, signed.seq)
    return result


class RetentionSettings(Protocol):
    """What the policy is made from: the device config's ``[sync]`` settings (firmware_config.device_config's
    SyncSettings), named by shape so that the core imports no configuration."""

    @property
    def purge(self) -> bool: ...
    @property
    def keep_hours(self) -> float: ...
    @property
    def long_term_keep_days(self) -> float: ...


@dataclass(frozen=True)
class RetentionPolicy:
    """``purge``: delete acknowledged segments at all. ``keep_hours``: acknowledged standard footage stays at
    least this long after its segment record; ``long_term_keep_days``: the same for long-term footage."""

    purge: bool
    keep_hours: float
    long_term_keep_days: float

    @classmethod
    def from_settings(cls, settings: RetentionSettings) -> RetentionPolicy:
        return cls(settings.purge, settings.keep_hours, settings.long_term_keep_days)


@dataclass(frozen=True)
class PurgeCandidate:
    file: str
    sha256: str
    size: int
    segment_seq: int
    receipt_seq: int
    station: str = "?"  # the station whose receipt names the file
    retention_class: str = STANDARD


def purge_candidates(
    records: Sequence[SignedRecord], policy: RetentionPolicy, now_wall_us: int
) -> list[PurgeCandidate]:
    """The segment files the policy lets go now, oldest first (see the module docstring)."""
    if not policy.purge:
        return []
    acked = acknowledged(records)
    receipts = {r.seq: r for r in records if r.record.type == "receipt"}
    chain_acked = receipted_seq(receipts.values())
    purged = {str(r.record.body["file"]) for r in records if r.record.type == "purge"}
    claims: dict[str, int] = {}
    for signed in records:
        if signed.record.type in SEGMENT_TYPES:
            name = str(signed.record.body["file"])
            claims[name] = claims.get(name, 0) + 1
    long_term = long_term_files(records)
    found: list[tuple[int, PurgeCandidate]] = []
    for signed in records:
        record, body = signed.record, signed.record.body
        name = str(body.get("file"))
        if record.type not in SEGMENT_TYPES or name in purged or claims[name] > 1:
            continue  # a name two records claim is the verifier's to report, never purged
        receipt_seq = acked.get(str(body["sha256"]))
        if receipt_seq is None or signed.seq > chain_acked:
            continue  # not acknowledged, or the station does not hold the record that vouches for it
        keep_us = policy.long_term_keep_days * _US_PER_DAY if name in long_term else policy.keep_hours * _US_PER_HOUR
        if now_wall_us - record.wall_us < keep_us:
            continue
        station = str(receipts[receipt_seq].record.body["station"])
        found.append((record.wall_us, PurgeCandidate(
            name, str(body["sha256"]), int(body["size"]), signed.seq, receipt_seq, station,
            LONG_TERM if name in long_term else STANDARD,
        )))  # fmt: skip
    found.sort(key=lambda item: (item[0], item[1].segment_seq))
    return [candidate for _, candidate in found]


def receipted_seq(records: Iterable[SignedRecord]) -> int:
    """The highest chain seq a receipt among ``records`` says the station acknowledged; 0 when none does."""
    return max((int(r.record.body["seq"]) for r in records if r.record.type == "receipt"), default=0)


def is_own(signed: SignedRecord) -> bool:
    """Records custody itself writes: receipts, purges, and the boot record of its own opening."""
    record = signed.record
    return record.type in ("receipt", "purge") or (
        record.type == "boot" and record.body.get("reason") == CUSTODY_BOOT_REASON
    )


def receipt_news(ack: Ack, records: Sequence[SignedRecord]) -> bool:
    """Whether ``ack`` is worth a receipt.

    False when every record it covers beyond the highest receipt's ``seq`` is custody's own (a ``receipt``,
    a ``purge``, the ``boot`` record of a custody opening) and it names no file no receipt named yet: a
    receipt for that would be acknowledged in turn, and so on for ever (docs/sync-protocol.md). An ack that
    covers no more than the last receipt and names nothing new (a duplicate delivery) is no news either.
    """
    receipts = [r for r in records if r.record.type == "receipt"]
    last_seq = max((int(r.record.body["seq"]) for r in receipts), default=0)

    def others_between(low: int, high: int) -> bool:
        return any(low < r.seq <= high and not is_own(r) for r in records)

    return receipt_news_in(ack, acknowledged(receipts), last_seq, others_between)


def receipt_news_in(
    ack: Ack, known: Mapping[str, int], last_seq: int, others_between: Callable[[int, int], bool]
) -> bool:
    """:func:`receipt_news` from what it needs: ``known`` (:func:`acknowledged`), ``last_seq`` (the highest
    receipt's ``seq``, 0 when none), ``others_between(low, high)``: is there a record with low < seq <= high
    that is not custody's own."""
    if any(f.sha256 not in known for f in ack.files):
        return True
    return others_between(last_seq, ack.seq)


# --- IO: receipts and purges on an open ledger -----------------------------------------------------------


def check_ack_link(ack: Ack, records: Sequence[SignedRecord]) -> None:
    """Raise VerificationError unless ``ack.link`` is the link of this ledger's record ``ack.seq``."""
    own = next((r for r in records if r.seq == ack.seq), None)
    check_link(ack, None if own is None else own.link)


def check_link(ack: Ack, link: str | None) -> None:
    """:func:`check_ack_link` given the link of the ledger's first record ``ack.seq`` (None: there is none)."""
    if link is None or link != ack.link:
        raise VerificationError(
            f"ack from station {ack.station!r}: station acknowledged seq {ack.seq} with a link this ledger does not "
            "have; nothing recorded"
        )


def record_receipt(
    ledger: Ledger, signed_ack: SignedAck, station_key: Ed25519PublicKey, device_id: str,
    records: Sequence[SignedRecord],
) -> SignedRecord | None:
    """Check the ack (VerificationError: nothing recorded) and append its ``receipt`` record; None when the
    ack is no news (:func:`receipt_news`). ``records``: the ledger's records, read after it was opened."""
    verify_ack(signed_ack, station_key, device_id)
    ack = signed_ack.ack
    check_ack_link(ack, records)
    if not receipt_news(ack, records):
        return None
    return append_receipt(ledger, signed_ack)


def append_receipt(ledger: Ledger, signed_ack: SignedAck) -> SignedRecord:
    """Append the ``receipt`` record of an ack already checked (signature, link, news)."""
    ack = signed_ack.ack
    line = signed_ack.payload + b"\t" + signed_ack.signature.hex().encode("ascii")
    return ledger.append("receipt", {
        "station": ack.station, "station_key": ack.key, "seq": ack.seq, "link": ack.link,
        "files": [f.sha256 for f in ack.files], "ack": line.decode("ascii"), "session": ack.session,
    })  # fmt: skip


def purge(ledger: Ledger, layout: StoreLayout, candidate: PurgeCandidate) -> SignedRecord:
    """Purge one acknowledged segment: re-hash it, append the ``purge`` record, unlink it, fsync the folder.

    Bytes on disk that differ from the candidate's record are an error (VerificationError) and nothing is
    deleted; so is a missing file (StoreError). A failed unlink after the record is left to the next run.
    """
    path = layout.path_of(candidate.file)
    what = f"segment {candidate.file} (seq {candidate.segment_seq})"
    try:
        digest, size = sha256_file(path)
    except FileNotFoundError:
        raise StoreError(f"{what}: missing from the store; not purged") from None
    except OSError as exc:
        raise StoreError(f"{what}: cannot be read ({exc.strerror}); not purged") from None
    if digest != candidate.sha256 or size != candidate.size:
        raise VerificationError(f"{what}: bytes on disk differ from the record; not purged, kept for the verifier")
    record = ledger.append("purge", {
        "file": candidate.file, "sha256": candidate.sha256, "size": candidate.size,
        "receipt_seq": candidate.receipt_seq, "segment_seq": candidate.segment_seq,
        "reason": f"acknowledged by station {candidate.station} in receipt seq {candidate.receipt_seq}; "
                  f"retention {candidate.retention_class}",
    })  # fmt: skip
    _remove(layout, candidate.file, record.seq)
    return record


def _remove(layout: StoreLayout, name: str, purge_seq: int) -> None:
    try:
        layout.path_of(name).unlink()
        fsync_dir(layout.segments_dir)
    except OSError as exc:
        raise StoreError(
            f"segment {name}: purge record seq {purge_seq} written but the file not removed ({exc.strerror}); "
            "the next purge run removes it"
        ) from None


def unfinished_purges(layout: StoreLayout, records: Sequence[SignedRecord]) -> list[SignedRecord]:
    """``purge`` records whose file is still there (a crash between the record and the unlink)."""
    last_claim: dict[str, SignedRecord] = {}
    for signed in records:
        if signed.record.type in (*SEGMENT_TYPES, "purge"):
            last_claim[str(signed.record.body["file"])] = signed
    return [r for name, r in last_claim.items() if r.record.type == "purge" and layout.path_of(name).exists()]


@dataclass
class PurgeOutcome:
    purged: list[str] = field(default_factory=list)  # files removed (new purges and unfinished ones)
    refused: list[str] = field(default_factory=list)  # why a file was kept: each names the file


def run_purge(
    ledger: Ledger, records: Sequence[SignedRecord], policy: RetentionPolicy, now_wall_us: int
) -> PurgeOutcome:
    """Finish unfinished purges, then purge every candidate. A file that cannot be purged is kept, logged
    and listed in ``refused``; the others go on. Nothing happens when ``policy.purge`` is False."""
    if not policy.purge:
        return PurgeOutcome()
    unfinished = unfinished_purges(ledger.layout, records)
    return finish_and_purge(ledger, unfinished, purge_candidates(records, policy, now_wall_us))


def finish_and_purge(
    ledger: Ledger, unfinished: Sequence[SignedRecord], candidates: Sequence[PurgeCandidate]
) -> PurgeOutcome:
    """:func:`run_purge` given its decisions: finish the ``unfinished`` purges, then purge the ``candidates``."""
    outcome = PurgeOutcome()
    layout = ledger.layout
    for signed in unfinished:
        name, what = str(signed.record.body["file"]), f"segment {signed.record.body['file']}"
        try:
            digest, _ = sha256_file(layout.path_of(name))
            if digest != signed.record.body["sha256"]:
                raise VerificationError(f"{what}: still present after purge record seq {signed.seq} with other "
                                        "bytes than purged; kept for the verifier")
            _remove(layout, name, signed.seq)
        except OSError as exc:
            _refuse(outcome, f"{what}: cannot be read ({exc.strerror}); its purge (seq {signed.seq}) not finished")
        except (VerificationError, StoreError) as exc:
            _refuse(outcome, str(exc))
        else:
            outcome.purged.append(name)
    for candidate in candidates:
        try:
            purge(ledger, layout, candidate)
        except (VerificationError, StoreError) as exc:
            _refuse(outcome, str(exc))
        else:
            outcome.purged.append(candidate.file)
    return outcome


def _refuse(outcome: PurgeOutcome, message: str) -> None:
    log.error("purge: %s", message)
    outcome.refused.append(message)


# --- the uploader's view: with or without the agent ------------------------------------------------------


class Custody(Protocol):
    def record_receipt(self, ack_line: bytes) -> str:
        """Check and record an ack line; returns what was done. VerificationError: refused, nothing recorded."""
        ...

    def purge_acknowledged(self) -> list[str]:
        """Purge what the policy lets go now; returns the files removed."""
        ...


def receipt_text(record: SignedRecord | None, ack: Ack) -> str:
    if record is None:
        return f"ack for seq {ack.seq} not recorded: nothing new since the last receipt"
    return f"ack for seq {ack.seq} recorded as receipt seq {record.seq}"


class DirectCustody:
    """Custody with no agent running: opens the ledger (boot reason ``custody``) only when there is something
    to record or purge. While another process (the agent) holds the ledger's lock it raises LedgerBusyError:
    go through the agent (the uploader's ``AgentCustody``), or retry later."""

    def __init__(
        self, *, store: Path, key_path: Path, device_id: str, station_key: Ed25519PublicKey, policy: RetentionPolicy,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.key_path = key_path
        self.device_id = device_id
        self.station_key = station_key
        self.policy = policy
        self.clock = clock or SystemClock()

    def _ledger(self) -> Ledger:
        return open_without_agent(self.store, self.key_path, self.device_id, CUSTODY_BOOT_REASON,
                                  "record receipts and purge through the agent's control socket, or retry later",
                                  self.clock)

    def record_receipt(self, ack_line: bytes) -> str:
        signed = parse_ack(ack_line)
        records = read_records(self.store)  # checked before opening: a refused or idle call writes nothing
        verify_ack(signed, self.station_key, self.device_id)
        check_ack_link(signed.ack, records)
        if not receipt_news(signed.ack, records):
            return receipt_text(None, signed.ack)
        with self._ledger() as ledger:
            record = record_receipt(ledger, signed, self.station_key, self.device_id, read_records(self.store))
        return receipt_text(record, signed.ack)

    def record_receipts(self, ack_lines: Sequence[bytes]) -> list[str | BodycamError]:
        """Record several acks with one opening of the ledger (one boot record, not one per ack).

        Each line's outcome, in order: what was done, or the error that refused it (nothing recorded for
        it). LedgerBusyError (the agent holds the ledger) is raised for the whole call: nothing recorded."""
        outcomes: list[str | BodycamError] = []
        accepted: list[tuple[int, SignedAck]] = []
        records = read_records(self.store)  # checked before opening: refused or idle lines write nothing
        for index, line in enumerate(ack_lines):
            try:
                signed = parse_ack(line)
                verify_ack(signed, self.station_key, self.device_id)
                check_ack_link(signed.ack, records)
            except BodycamError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(receipt_text(None, signed.ack))
            accepted.append((index, signed))
        if not any(receipt_news(signed.ack, records) for _index, signed in accepted):
            return outcomes
        with self._ledger() as ledger:
            records = list(read_records(self.store))
            for index, signed in accepted:
                record = record_receipt(ledger, signed, self.station_key, self.device_id, records)
                if record is not None:
                    records.append(record)
                outcomes[index] = receipt_text(record, signed.ack)
        return outcomes

    def purge_acknowledged(self) -> list[str]:
        if not self.policy.purge:
            return []
        layout = StoreLayout(self.store)
        records = read_records(self.store)
        now = self.clock.now().wall_us
        if not purge_candidates(records, self.policy, now) and not unfinished_purges(layout, records):
            return []
        with self._ledger() as ledger:
            return run_purge(ledger, read_records(self.store), self.policy, now).purged
