"""The agent's custody over an incremental view of its own ledger (control socket ops ``receipt``, ``purge``).

Parsing the whole ledger at every op costs the recording process dearly: a day's ledger holds a checkpoint
about every second, and a station acknowledges every few seconds while it syncs. :class:`CustodyView` keeps
what the custody decisions need and, at each look, parses only the complete lines appended since the last
(:class:`agent.evidence.follower.LedgerFollower`, shared with the uploader):

* the offset of every record's line, by seq (8 bytes a record): the ack's link check re-reads one line;
* which seqs hold only custody's own records (receipts, purges, custody boots): the receipt news check;
* the first receipt naming each file hash, and the highest ``seq`` a receipt covers;
* the records the purge decisions read (segments, receipts, purges, retention flags, case boundaries), in
  ledger order: the pure functions of :mod:`agent.evidence.custody` decide over them as over a full read
  (they look at no other record type, and only at the order of these).

The view equals :func:`agent.evidence.store.read_records` over the complete lines: a line that does not
parse is skipped there and here. A last line without its LF is not taken until it is complete (the recorder
may be writing it; a torn one is cut at the next open anyway).

The agent's :class:`Ledger` is the only writer while it runs, so the file only grows. Still, at every look
the view checks that it is the same file (inode), no shorter than what it read, and that its first and last
known lines are unchanged; a line re-read for a link must hold the record indexed there. Otherwise it logs
what changed and reads the ledger again in full. The bytes in between are not compared at every look (that
would be the full read the view exists to avoid); the verifier checks the whole chain.
"""

from __future__ import annotations

import logging
import threading

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import RecordFormatError, StoreError
from agent.evidence.ack import parse_ack, verify_ack
from agent.evidence.custody import (
    PurgeOutcome,
    RetentionPolicy,
    append_receipt,
    check_link,
    finish_and_purge,
    is_own,
    purge_candidates,
    receipt_news_in,
    receipt_text,
    unfinished_purges,
)
from agent.evidence.follower import LedgerFollower, SeqOffsets
from agent.evidence.fsutil import display_path
from agent.evidence.ledger import Ledger
from agent.evidence.record import CUSTODY_KEPT_TYPES, SignedRecord, parse_line
from agent.evidence.store import StoreLayout

log = logging.getLogger(__name__)

KEPT_TYPES = CUSTODY_KEPT_TYPES
READ_BYTES = 1024 * 1024  # read a block at a time: a day's ledger is never all in memory


class CustodyView:
    """What custody decides on, for the ledger in ``layout``, kept up to date by :meth:`refresh`."""

    def __init__(self, layout: StoreLayout) -> None:
        self.layout = layout
        self._follower = LedgerFollower(layout, split=_split_as_read_records, block_bytes=READ_BYTES, whole=False)
        self._clear()

    @property
    def full_reads(self) -> int:
        """Looks that started from the ledger's first byte (the first, and after a change)."""
        return self._follower.full_reads

    def _clear(self) -> None:
        self._offsets = SeqOffsets()
        self._own_only: set[int] = set()  # seqs whose every record is custody's own
        self.records: list[SignedRecord] = []  # the KEPT_TYPES records, in ledger order
        self.acknowledged: dict[str, int] = {}  # sha256 -> seq of the first receipt naming it
        self.last_receipt_seq = 0  # the highest ``seq`` a receipt covers (0: no receipt)

    # --- reading -------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Take in the complete lines appended since the last look (all of them at the first)."""
        self._follower.look(self._take_lines, self._forget)

    def read_again(self, why: str) -> None:
        """Forget everything: the next look reads the ledger in full. ``why`` is logged."""
        self._follower.start_over()
        self._forget(why)

    def _forget(self, why: str) -> None:
        log.warning("ledger %s: %s; custody reads it again in full", display_path(self.layout.ledger_path), why)
        self._clear()

    def _take_lines(self, lines: list[bytes], offset: int) -> int:
        for line in lines:
            try:
                signed = parse_line(line)
            except RecordFormatError:
                signed = None
            if signed is not None:
                self._take(signed, offset)
            offset += len(line)
        return len(lines)  # a line that does not parse is skipped, as read_records skips it

    def _take(self, signed: SignedRecord, offset: int) -> None:
        seq, own = signed.seq, is_own(signed)
        if self._offsets.add(seq, offset):
            if own:
                self._own_only.add(seq)
        elif not own:
            self._own_only.discard(seq)
        record = signed.record
        if record.type == "receipt":
            for digest in record.body["files"]:
                if isinstance(digest, str):
                    self.acknowledged.setdefault(digest, seq)
            self.last_receipt_seq = max(self.last_receipt_seq, int(record.body["seq"]))
        if record.type in KEPT_TYPES:
            self.records.append(signed)

    # --- what the decisions ask ------------------------------------------------------------------------

    def others_between(self, low: int, high: int) -> bool:
        """Whether a record with low < seq <= high is not custody's own (see ``receipt_news``)."""
        seq, top = max(low, 0) + 1, min(high, len(self._offsets))
        while seq <= top:  # every seq here has a record: this stops at the first not custody's own
            if seq not in self._own_only:
                return True
            seq += 1
        return any(low < other <= high and other not in self._own_only for other in self._offsets.irregular)

    def link_of(self, seq: int) -> str | None:
        """The link of the ledger's first record ``seq`` (None: there is none), re-read from the file."""
        for attempt in range(2):
            offset = self._offsets.offset_of(seq)
            if offset is None:
                return None
            try:
                signed = parse_line(self._follower.line_at(offset))
            except RecordFormatError:
                signed = None
            if signed is not None and signed.seq == seq:
                return signed.link
            if attempt == 0:
                self.read_again(f"the line of seq {seq} (offset {offset}) changed")
                self.refresh()
        raise StoreError(f"ledger {display_path(self.layout.ledger_path)}: the line of seq {seq} changed while "
                         "being read; nothing recorded")


def _split_as_read_records(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)  # split as read_records splits: the view equals a full read


class LedgerCustody:
    """Custody on the ledger this process holds open (the agent's); safe beside the recorder's appends.

    Long-lived: each op brings its :class:`CustodyView` up to date with what was appended since the last
    (the first op reads the ledger in full). ``station_key`` may be replaced between ops (the daemon
    re-reads its key file at every op)."""

    def __init__(self, *, ledger: Ledger, station_key: Ed25519PublicKey, policy: RetentionPolicy) -> None:
        self.ledger = ledger
        self.station_key = station_key
        self.policy = policy
        self.view = CustodyView(ledger.layout)
        self._lock = threading.Lock()  # one custody operation at a time; appends have the ledger's own lock

    def record_receipt(self, ack_line: bytes) -> str:
        signed = parse_ack(ack_line)
        with self._lock:
            view = self.view
            view.refresh()
            verify_ack(signed, self.station_key, self.ledger.device_id)
            ack = signed.ack
            check_link(ack, view.link_of(ack.seq))
            if not receipt_news_in(ack, view.acknowledged, view.last_receipt_seq, view.others_between):
                return receipt_text(None, ack)
            return receipt_text(append_receipt(self.ledger, signed), ack)

    def purge(self) -> PurgeOutcome:
        with self._lock:
            if not self.policy.purge:
                return PurgeOutcome()
            self.view.refresh()
            records = self.view.records
            unfinished = unfinished_purges(self.ledger.layout, records)
            candidates = purge_candidates(records, self.policy, self.ledger.clock.now().wall_us)
            return finish_and_purge(self.ledger, unfinished, candidates)

    def purge_acknowledged(self) -> list[str]:
        return self.purge().purged
