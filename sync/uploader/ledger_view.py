"""A read-only, incremental view of the device's ledger for the uploader (it never opens it for writing).

Each refresh reads only the bytes appended since the previous one (:class:`agent.evidence.follower.LedgerFollower`,
shared with the agent's custody): a ledger grows by a checkpoint record about every second, and re-parsing
it all every few seconds would cost a Pi dearly. The view keeps the start offset of every line (8 bytes a
record) and the records the uploader decides on (files, receipts, purges, retention, cases); it re-reads the
lines after the station's watermark when a session needs them. A refresh reads all that was appended at
once and parses it as one run (a line that cannot be placed stops it there; the next refresh reads on from
that line).

If the file shrank, was replaced, or the first or last line it read changed (the agent cuts a torn tail at
start: an unverifiable last line is moved to quarantine), the view starts over from the beginning.

The last complete line is held back while its signature does not verify against the key its boot record
published: the agent may still cut it as a torn tail, and a line sent and then cut would look like a fork
at the station.
"""

from __future__ import annotations

import bisect
from array import array
from pathlib import Path

from agent.errors import StoreError
from agent.evidence.encoding import GENESIS_PREV, record_link
from agent.evidence.follower import LedgerFollower, SeqOffsets
from agent.evidence.fsutil import display_path
from agent.evidence.keys import fingerprint, public_key_from_hex, verify_signature
from agent.evidence.record import UPLOAD_KEPT_TYPES, SignedRecord
from agent.evidence.store import StoreLayout
from sync.uploader.plan import BadLine, LedgerLine, parse_lines, read_complete_lines

KEPT_TYPES = UPLOAD_KEPT_TYPES
READ_BYTES = 4 * 1024 * 1024


class LedgerView:
    def __init__(self, store: Path, device_id: str) -> None:
        self.layout = StoreLayout(store)
        self.device_id = device_id
        self._follower = LedgerFollower(self.layout, split=read_complete_lines, block_bytes=READ_BYTES, whole=True)
        self._reset()

    def _reset(self) -> None:
        self._follower.start_over()
        self._offsets = SeqOffsets()  # start offset of the line of seq n, dense: the lines are consecutive
        self._head_link = GENESIS_PREV
        self.records: list[SignedRecord] = []  # the kept records, in ledger order
        self._keys: dict[str, str] = {}  # key fingerprint -> public key hex, from boot records
        self.bad: BadLine | None = None
        self.held_back: str | None = None  # why the last complete line is not offered yet

    @property
    def _starts(self) -> array[int]:
        return self._offsets.dense

    @property
    def _end(self) -> int:
        return self._follower.end

    @property
    def head(self) -> tuple[int, str]:
        """Seq and link of the last line the uploader may send (0 and the genesis value when none)."""
        return len(self._starts), self._head_link

    def refresh(self) -> None:
        """Take in the complete lines appended since the last refresh."""
        self._follower.look(self._take_lines, lambda _why: self._reset())

    def _take_lines(self, raw_lines: list[bytes], offset: int) -> int:
        parsed = parse_lines(raw_lines, self.device_id, first_seq=len(self._starts) + 1,
                             first_number=len(self._starts) + 1)
        lines = parsed.lines
        self.held_back = None
        if parsed.bad is None and lines:
            problem = self._tail_problem(lines)
            if problem is not None:
                self.held_back = f"seq {lines[-1].seq}: {problem}"
                lines = lines[:-1]
        self.bad = parsed.bad
        for line in lines:
            self._offsets.add(line.seq, offset)
            offset += len(line.raw)
            self._take(line.record)
        if lines:
            self._head_link = lines[-1].link
        return len(lines)

    def _take(self, signed: SignedRecord) -> None:
        record = signed.record
        if record.type == "boot":
            public_hex = record.body.get("public_key")
            if isinstance(public_hex, str):
                self._keys[record.key] = public_hex
        elif record.type in KEPT_TYPES:
            self.records.append(signed)

    def _tail_problem(self, lines: list[LedgerLine]) -> str | None:
        """Why the last complete line cannot be sent yet (it may still be cut as a torn tail), or None."""
        for line in lines:  # a boot record in this batch publishes the key the last line may need
            if line.record.record.type == "boot" and isinstance(line.record.record.body.get("public_key"), str):
                self._keys.setdefault(line.record.record.key, str(line.record.record.body["public_key"]))
        last = lines[-1].record
        public_hex = self._keys.get(last.record.key)
        if public_hex is None:
            return None  # no boot record publishes its key: the station judges it
        try:
            key = public_key_from_hex(public_hex)
        except ValueError:
            return None
        if fingerprint(bytes.fromhex(public_hex)) != last.record.key:
            return None
        if not verify_signature(key, last.payload, last.signature):
            return "the last line's signature does not verify (a torn tail the agent may cut at its next start)"
        return None

    def link_of(self, seq: int) -> str | None:
        """The link of this device's record ``seq`` (the genesis value for 0); None when there is none."""
        if seq == 0:
            return GENESIS_PREV
        if not 0 < seq <= len(self._starts):
            return None
        if seq == len(self._starts):
            return self._head_link
        raw = self._read(self._starts[seq - 1], self._starts[seq])
        payload = raw.rstrip(b"\n").rpartition(b"\t")[0]
        return record_link(payload)

    def lines_after(self, seq: int, max_bytes: int | None = None) -> list[LedgerLine]:
        """The indexed lines after ``seq``, read again from the file and parsed; with ``max_bytes``, only as
        many whole lines as fit (at least one), so that a long backlog is never all in memory at once."""
        count = len(self._starts)
        first = max(seq, 0)
        if first >= count:
            return []
        last = count  # seq of the last line taken
        if max_bytes is not None:
            limit = self._starts[first] + max_bytes
            # Line seq n ends where line n + 1 starts (the last one at _end): take those ending by the limit.
            after = bisect.bisect_right(self._starts, limit, lo=first)
            last = count if after == count and self._end <= limit else max(first + 1, after - 1)
        end = self._starts[last] if last < count else self._end
        raw = self._read(self._starts[first], end)
        parsed = parse_lines(read_complete_lines(raw), self.device_id, first_seq=first + 1)
        if parsed.bad is not None or len(parsed.lines) != last - first:
            # The bytes changed under the view since it indexed them: start over at the next refresh.
            self._reset()
            raise StoreError(f"ledger {display_path(self.layout.ledger_path)}: changed while being read; "
                             "read again at the next pass")
        return parsed.lines

    def _read(self, start: int, end: int) -> bytes:
        return self._follower.read(start, end)
