"""The agent's custody over an incremental view of its own ledger (control socket ops ``receipt``, ``purge``).

Parsing the whole ledger at every op costs the recording process dearly: a day's ledger holds a checkpoint
about every second, and a station acknowledges every few seconds while it syncs. :class:`CustodyView` keeps
what the custody decisions need and, at each look, parses only the complete lines appended since the last:

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
import os
import threading
from array import array

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
from agent.evidence.encoding import MAX_LINE_BYTES
from agent.evidence.fsutil import display_path
from agent.evidence.ledger import Ledger
from agent.evidence.record import SEGMENT_TYPES, SignedRecord, parse_line
from agent.evidence.store import StoreLayout, ledger_for_reading

log = logging.getLogger(__name__)

# The records purge decisions read; checkpoints, the bulk of a ledger, are not kept.
KEPT_TYPES = frozenset({*SEGMENT_TYPES, "receipt", "purge", "retention", "case-open", "case-close"})
READ_BYTES = 1024 * 1024
_LINE_PROBE = 4096  # a ledger line is usually well under this; longer ones are read on


class CustodyView:
    """What custody decides on, for the ledger in ``layout``, kept up to date by :meth:`refresh`."""

    def __init__(self, layout: StoreLayout) -> None:
        self.layout = layout
        self.full_reads = 0  # looks that started from the ledger's first byte (the first, and after a change)
        self._clear()

    def _clear(self) -> None:
        self._dense = array("q")  # offset of the first line holding seq n, at index n - 1 (seqs 1..len)
        self._irregular: dict[int, int] = {}  # the same for seqs beyond a gap in 1..len (a damaged ledger)
        self._own_only: set[int] = set()  # seqs whose every record is custody's own
        self.records: list[SignedRecord] = []  # the KEPT_TYPES records, in ledger order
        self.acknowledged: dict[str, int] = {}  # sha256 -> seq of the first receipt naming it
        self.last_receipt_seq = 0  # the highest ``seq`` a receipt covers (0: no receipt)
        self._end = 0  # end of the last complete line taken
        self._inode: int | None = None
        self._first = b""  # the line at offset 0
        self._last: tuple[int, bytes] | None = None  # offset and bytes of the last complete line taken

    # --- reading -------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Take in the complete lines appended since the last look (all of them at the first)."""
        with ledger_for_reading(self.layout) as fd:
            info = os.fstat(fd)
            change = self._change(fd, info.st_ino, info.st_size) if self._inode is not None else None
            if change is not None:
                self.read_again(change)
            self._inode = info.st_ino
            if self._end == 0 and info.st_size > 0:
                self.full_reads += 1
            self._read(fd, info.st_size)

    def read_again(self, why: str) -> None:
        """Forget everything: the next look reads the ledger in full. ``why`` is logged."""
        log.warning("ledger %s: %s; custody reads it again in full", display_path(self.layout.ledger_path), why)
        self._clear()

    def _change(self, fd: int, inode: int, size: int) -> str | None:
        """How the file differs from an append to what the view read, or None when it does not."""
        if inode != self._inode:
            return "replaced by another file"
        if size < self._end:
            return f"shorter than read before ({size} bytes, {self._end} read)"
        if self._first and os.pread(fd, len(self._first), 0) != self._first:
            return "its first line changed"
        if self._last is not None and os.pread(fd, len(self._last[1]), self._last[0]) != self._last[1]:
            return f"the line at offset {self._last[0]} changed"
        return None

    def _read(self, fd: int, size: int) -> None:
        start = self._end  # file offset of pending[0]
        pending = b""
        position = self._end
        while position < size:
            block = os.pread(fd, min(READ_BYTES, size - position), position)
            if not block:
                break  # shrank while being read: the next look notices
            position += len(block)
            pending += block
            cut = pending.rfind(b"\n") + 1
            if cut:
                self._take_lines(pending[:cut], start)
                start += cut
                pending = pending[cut:]
        self._end = start

    def _take_lines(self, data: bytes, offset: int) -> None:
        line = b""
        for line in data.splitlines(keepends=True):  # split as read_records splits
            if offset == 0:
                self._first = line
            try:
                signed = parse_line(line)
            except RecordFormatError:
                signed = None
            if signed is not None:
                self._take(signed, offset)
            offset += len(line)
        if line:
            self._last = (offset - len(line), line)

    def _take(self, signed: SignedRecord, offset: int) -> None:
        seq, own = signed.seq, is_own(signed)
        if self._offset_of(seq) is None:
            self._index(seq, offset)
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

    def _index(self, seq: int, offset: int) -> None:
        if seq != len(self._dense) + 1:
            self._irregular[seq] = offset
            return
        self._dense.append(offset)
        while len(self._dense) + 1 in self._irregular:  # a gap filled: what followed it joins the dense run
            self._dense.append(self._irregular.pop(len(self._dense) + 1))

    def _offset_of(self, seq: int) -> int | None:
        if 1 <= seq <= len(self._dense):
            return self._dense[seq - 1]
        return self._irregular.get(seq)

    # --- what the decisions ask ------------------------------------------------------------------------

    def others_between(self, low: int, high: int) -> bool:
        """Whether a record with low < seq <= high is not custody's own (see ``receipt_news``)."""
        seq, top = max(low, 0) + 1, min(high, len(self._dense))
        while seq <= top:  # every seq here has a record: this stops at the first not custody's own
            if seq not in self._own_only:
                return True
            seq += 1
        return any(low < other <= high and other not in self._own_only for other in self._irregular)

    def link_of(self, seq: int) -> str | None:
        """The link of the ledger's first record ``seq`` (None: there is none), re-read from the file."""
        for attempt in range(2):
            offset = self._offset_of(seq)
            if offset is None:
                return None
            try:
                signed = parse_line(self._line_at(offset))
            except RecordFormatError:
                signed = None
            if signed is not None and signed.seq == seq:
                return signed.link
            if attempt == 0:
                self.read_again(f"the line of seq {seq} (offset {offset}) changed")
                self.refresh()
        raise StoreError(f"ledger {display_path(self.layout.ledger_path)}: the line of seq {seq} changed while "
                         "being read; nothing recorded")

    def _line_at(self, offset: int) -> bytes:
        with ledger_for_reading(self.layout) as fd:
            data = b""
            while len(data) <= MAX_LINE_BYTES:
                more = os.pread(fd, _LINE_PROBE if not data else MAX_LINE_BYTES, offset + len(data))
                data += more
                end = data.find(b"\n")
                if end >= 0:
                    return data[: end + 1]
                if not more:
                    break
            return data


class LedgerCustody:
    """Custody on the ledger this process holds open (the agent's); safe beside the recorder's appends.

    Long-lived: each op brings its :class:`CustodyView` up to date with what was appended since the last
    (the first op reads the ledger in full). ``station_key`` may be replaced between ops (the daemon
    re-reads its key file at every op)."""

    def __init__(self, ledger: Ledger, station_key: Ed25519PublicKey, policy: RetentionPolicy) -> None:
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
