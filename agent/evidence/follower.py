"""One incremental follower of a growing ledger file, for the readers that must not parse it all at every look.

A day's ledger holds a checkpoint about every second; the agent's custody (:mod:`agent.evidence.custody_view`)
and the uploader (:mod:`sync.uploader.ledger_view`) look at it every few seconds. :class:`LedgerFollower`
reads, at each look, only the bytes appended since the last, hands the complete (LF-terminated) lines to
its user, and remembers how far the user took them. A user may stop early (a line it cannot place, or may
not send yet): the next look offers that line again.

At every look the follower checks that the file is the one it read: the same inode, no shorter than what
was taken, its first and last taken lines unchanged. Otherwise it starts over from the first byte and says
why (the user forgets what it derived, and may log it). The bytes in between are not compared (that would
be the full read it exists to avoid); the verifier checks the whole chain.

:class:`SeqOffsets` keeps the offset of the first line of each seq, 8 bytes a record, so that a user can
read one line again (a link check) without holding the lines in memory.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable

from agent.evidence.encoding import MAX_LINE_BYTES
from agent.evidence.store import StoreLayout, ledger_for_reading, pread_all

# take(lines, offset of lines[0]) -> how many of the lines the user took (the rest are offered again).
Take = Callable[[list[bytes], int], int]
# split(complete lines' bytes) -> the lines, each with its line end (their lengths add up to the bytes').
Split = Callable[[bytes], list[bytes]]
_LINE_PROBE = 4096  # a ledger line is usually well under this; longer ones are read on


class SeqOffsets:
    """The offset of the first line holding each seq: a dense run 1..n, and the seqs beyond a gap apart."""

    def __init__(self) -> None:
        self.dense = array("q")  # offset of the first line holding seq n, at index n - 1 (seqs 1..len)
        self.irregular: dict[int, int] = {}  # the same for seqs beyond a gap in 1..len (a damaged ledger)

    def __len__(self) -> int:
        return len(self.dense)

    def add(self, seq: int, offset: int) -> bool:
        """Index the line of ``seq`` at ``offset`` unless the seq has one; whether it was new."""
        if self.offset_of(seq) is not None:
            return False
        if seq != len(self.dense) + 1:
            self.irregular[seq] = offset
            return True
        self.dense.append(offset)
        while len(self.dense) + 1 in self.irregular:  # a gap filled: what followed it joins the dense run
            self.dense.append(self.irregular.pop(len(self.dense) + 1))
        return True

    def offset_of(self, seq: int) -> int | None:
        if 1 <= seq <= len(self.dense):
            return self.dense[seq - 1]
        return self.irregular.get(seq)


class LedgerFollower:
    """The ledger in ``layout``, followed as it grows (read-only).

    ``split`` cuts complete lines' bytes into lines. With ``whole``, a look hands all the complete lines
    appended since the last in one call (also none); otherwise one call per ``block_bytes`` read, so that
    a long ledger is never all in memory at once.
    """

    def __init__(self, layout: StoreLayout, *, split: Split, block_bytes: int, whole: bool) -> None:
        self.layout = layout
        self.split = split
        self.block_bytes = block_bytes
        self.whole = whole
        self.full_reads = 0  # looks that started from the ledger's first byte (the first, and after a change)
        self._inode: int | None = None
        self.start_over()

    def start_over(self) -> None:
        """Forget what was taken: the next look starts from the ledger's first byte."""
        self.end = 0  # end of the last line taken
        self._first = b""  # the line at offset 0, once taken
        self._last: tuple[int, bytes] | None = None  # offset and bytes of the last line taken

    def look(self, take: Take, changed: Callable[[str], None]) -> None:
        """Offer ``take`` the complete lines appended since the last look. When the file is not the one read
        before, start over first and tell ``changed`` why (the user forgets what it took)."""
        with ledger_for_reading(self.layout) as fd:
            info = os.fstat(fd)
            change = self._change(fd, info.st_ino, info.st_size) if self._inode is not None else None
            if change is not None:
                self.start_over()
                changed(change)
            self._inode = info.st_ino
            if self.end == 0 and info.st_size > 0:
                self.full_reads += 1
            if self.whole:
                data = pread_all(fd, self.end, info.st_size - self.end, self.block_bytes)
                self._offer(data[: data.rfind(b"\n") + 1], self.end, take)
            else:
                self._read_blocks(fd, info.st_size, take)

    def _change(self, fd: int, inode: int, size: int) -> str | None:
        """How the file differs from an append to what was taken, or None when it does not."""
        if inode != self._inode:
            return "replaced by another file"
        if size < self.end:
            return f"shorter than read before ({size} bytes, {self.end} read)"
        if self._first and os.pread(fd, len(self._first), 0) != self._first:
            return "its first line changed"
        if self._last is not None and os.pread(fd, len(self._last[1]), self._last[0]) != self._last[1]:
            return f"the line at offset {self._last[0]} changed"
        return None

    def _read_blocks(self, fd: int, size: int, take: Take) -> None:
        start = self.end  # file offset of pending[0]
        pending = b""
        position = start
        while position < size:
            block = os.pread(fd, min(self.block_bytes, size - position), position)
            if not block:
                break  # shrank while being read: the next look notices
            position += len(block)
            pending += block
            cut = pending.rfind(b"\n") + 1
            if cut:
                if not self._offer(pending[:cut], start, take):
                    return
                start += cut
                pending = pending[cut:]

    def _offer(self, data: bytes, offset: int, take: Take) -> bool:
        """Offer the lines of ``data`` (at ``offset``); whether all of them were taken."""
        lines = self.split(data) if data else []
        taken = lines[: take(lines, offset)]
        if taken:
            length = sum(len(line) for line in taken)
            if offset == 0:
                self._first = taken[0]
            self._last = (offset + length - len(taken[-1]), taken[-1])
            self.end = offset + length
        return len(taken) == len(lines)

    # --- reading again -------------------------------------------------------------------------------

    def read(self, start: int, end: int) -> bytes:
        """The ledger's bytes from ``start`` to ``end`` (fewer only at the end of the file)."""
        with ledger_for_reading(self.layout) as fd:
            return pread_all(fd, start, end - start, self.block_bytes)

    def line_at(self, offset: int) -> bytes:
        """The line starting at ``offset``, with its LF (without, at the end of the file or past the longest
        line a ledger may hold)."""
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
