"""The station re-checks the evidence it holds: ``bodycam-station scrub``, and in ``serve`` on a schedule.

A pass goes over every device's ledger copy (its size and each line against the records the index holds)
and every stored file (the index's ``files``): the object must exist, the device's layout must name it
(:meth:`ObjectStore.placement`: by the same inode, a hard link, in a folder), and its bytes must still hash
to what was stored. What is wrong is reported as a problem naming the device, the seq of the record that
vouches for it and the file:
``missing-evidence`` (gone) or ``altered-evidence`` (other bytes, or another file under the name).

In ``serve`` the pass runs in slices on the receiver's own thread, between batches (:class:`ScrubSchedule`):
a slice hashes at most ``scrub.slice_mib`` and the receiver takes the next batch in between, so a pass
over a large archive never holds up the devices; hashing resumes where the slice stopped, inside a file
too. One thread and one index connection: no locking between the receiver and the scrub.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from agent.errors import BodycamError, RecordFormatError
from agent.evidence.record import parse_line
from agent.evidence.store import LEDGER_FILE
from sync.station.index_ports import Index
from sync.station.model import ALTERED_EVIDENCE, MISSING_EVIDENCE, FileRow
from sync.station.ports import LedgerCopies, ObjectStore, Placement
from sync.station.problems import ProblemLog

log = logging.getLogger(__name__)
PAGE_FILES = 256
READ_BYTES = 1024 * 1024
MAX_LEDGER_FINDINGS = 10  # per device and pass: a rewritten ledger is reported, not listed line by line


@dataclass
class ScrubSummary:
    devices: int = 0
    files: int = 0
    bytes: int = 0
    findings: list[str] = field(default_factory=list)  # problem texts, in the house style

    def to_dict(self) -> dict[str, Any]:
        return {"devices": self.devices, "files": self.files, "bytes": self.bytes, "problems": self.findings}


class ScrubbedStore(LedgerCopies, ObjectStore, Protocol):
    """What the scrub reads: the ledger copies and the objects."""


@dataclass
class _Hashing:
    row: FileRow
    handle: BinaryIO
    digest: Any  # hashlib's sha256 object (no public type)
    size: int = 0


class Scrubber:
    """One pass at a time over the store; :meth:`step` does a slice, :meth:`run` a whole pass."""

    def __init__(self, *, store: ScrubbedStore, index: Index, problems: ProblemLog,
                 slice_bytes: int) -> None:
        self.store = store
        self.index = index
        self.problems = problems
        self.slice_bytes = slice_bytes
        self.summary = ScrubSummary()
        self._devices: list[str] | None = None  # ledgers still to check in this pass; None: no pass running
        self._cursor = ("", "")
        self._page: list[FileRow] = []
        self._hashing: _Hashing | None = None

    @property
    def running(self) -> bool:
        return self._devices is not None

    def start(self) -> None:
        self.summary = ScrubSummary()
        self._devices = [d.id for d in self.index.devices()]
        self._cursor, self._page, self._hashing = ("", ""), [], None

    def run(self) -> ScrubSummary:
        self.start()
        while not self.step():
            pass
        return self.summary

    def step(self) -> bool:
        """Check up to ``slice_bytes`` more; True when the pass is complete (its summary in ``summary``)."""
        if self._devices is None:
            self.start()
        assert self._devices is not None
        budget = self.slice_bytes
        while budget > 0:
            if self._devices:
                budget -= self._check_ledger(self._devices.pop(0))
                continue
            if self._hashing is None and not self._next_file():
                self._devices = None
                return True
            budget -= self._hash_some(budget)
        return False

    # --- ledger copies ------------------------------------------------------------------------------------------

    def _check_ledger(self, device: str) -> int:
        self.summary.devices += 1
        head = self.index.head(device)
        if head.seq == 0:
            return 0
        obj = LEDGER_FILE
        try:
            data = self.store.read_ledger(device)
        except OSError as exc:
            self._report(MISSING_EVIDENCE, device, f"ledger copy cannot be read ({exc.strerror})", head.seq, obj)
            return 0
        if not data:
            self._report(MISSING_EVIDENCE, device, f"ledger copy gone (the index holds records up to seq "
                         f"{head.seq})", head.seq, obj)
            return 0
        found = 0
        if len(data) != head.ledger_bytes:
            found += 1
            self._report(ALTERED_EVIDENCE, device, f"ledger copy holds {len(data)} bytes, the stored records "
                         f"{head.ledger_bytes}", None, obj)
        for row in self.index.record_rows(device):
            if found >= MAX_LEDGER_FINDINGS:
                break
            line = data[row.offset:row.offset + row.length]
            try:
                ok = line.endswith(b"\n") and parse_line(line).link == row.link
            except RecordFormatError:
                ok = False
            if not ok:
                found += 1
                kind = MISSING_EVIDENCE if len(line) < row.length else ALTERED_EVIDENCE
                self._report(kind, device, "ledger line is no longer the record stored", row.seq, obj)
        return len(data)

    # --- files --------------------------------------------------------------------------------------------------

    def _next_file(self) -> bool:
        """Open the next stored file for hashing (reporting what is already wrong); False at the end."""
        while True:
            if not self._page:
                self._page = self.index.files_after(self._cursor, PAGE_FILES)
                if not self._page:
                    return False
            row = self._page.pop(0)
            self._cursor = (row.device, row.name)
            self.summary.files += 1
            opener = self._open_target(row)
            if opener is None:
                continue
            try:
                handle = opener()
            except OSError as exc:
                self._report(MISSING_EVIDENCE, row.device, f"cannot be read ({exc.strerror})", row.seq, row.name)
                continue
            self._hashing = _Hashing(row, handle, hashlib.sha256())
            return True

    def _open_target(self, row: FileRow) -> Callable[[], BinaryIO] | None:
        """How to open what to hash for ``row`` (the object, else the layout's copy), after checking the two
        agree."""
        try:
            placement = self.store.placement(row.device, row.name, row.sha256)
        except BodycamError as exc:
            self._report(ALTERED_EVIDENCE, row.device, f"index row not usable ({exc})", row.seq, row.name)
            return None
        short = f"object {row.sha256[:16]}..."
        if placement in (Placement.NAME_MISSING, Placement.BOTH_MISSING):
            self._report(MISSING_EVIDENCE, row.device, "gone from the device's folder"
                         + ("" if placement is Placement.NAME_MISSING else f" and {short} gone from objects/"),
                         row.seq, row.name)
        elif placement is Placement.OBJECT_MISSING:
            self._report(MISSING_EVIDENCE, row.device, f"{short} gone from objects/ (the device's folder still "
                         "names a file)", row.seq, row.name)
            return lambda: self.store.open_placed(row.device, row.name)
        elif placement is Placement.REPLACED:
            self._report(ALTERED_EVIDENCE, row.device, f"the device's folder names another file than {short} "
                         "(replaced)", row.seq, row.name)
            return lambda: self.store.open_placed(row.device, row.name)  # what a copy would carry: check it too
        if placement is Placement.BOTH_MISSING:
            return None
        return lambda: self.store.open_object(row.sha256)

    def _hash_some(self, budget: int) -> int:
        hashing = self._hashing
        assert hashing is not None
        done = 0
        try:
            while done < budget:
                chunk = hashing.handle.read(min(READ_BYTES, budget - done))
                if not chunk:
                    self._finish(hashing)
                    break
                hashing.digest.update(chunk)
                hashing.size += len(chunk)
                done += len(chunk)
        except OSError as exc:
            self._close()
            self._report(MISSING_EVIDENCE, hashing.row.device, f"cannot be read ({exc.strerror})", hashing.row.seq,
                         hashing.row.name)
        self.summary.bytes += done
        return max(done, 1)

    def _finish(self, hashing: _Hashing) -> None:
        self._close()
        row = hashing.row
        if hashing.size != row.size:
            self._report(ALTERED_EVIDENCE, row.device, f"holds {hashing.size} bytes, {row.size} were stored",
                         row.seq, row.name)
        elif hashing.digest.hexdigest() != row.sha256:
            self._report(ALTERED_EVIDENCE, row.device, "sha256 mismatch: the bytes changed since they were stored",
                         row.seq, row.name)

    def _close(self) -> None:
        if self._hashing is not None:
            self._hashing.handle.close()
            self._hashing = None

    def close(self) -> None:
        self._close()
        self._devices = None

    def _report(self, kind: str, device: str, reason: str, seq: int | None, obj: str) -> None:
        self.problems.report(kind, device, reason, seq, obj)
        where = f"device {device}" + ("" if seq is None else f" seq {seq}")
        self.summary.findings.append(f"{where}: {obj}: {reason}")


class ScrubSchedule:
    """In ``serve``: a pass every ``interval_s`` (the first at start-up), one slice per :meth:`tick`."""

    def __init__(self, scrubber: Scrubber, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.scrubber = scrubber
        self.interval_s = interval_s
        self._clock = clock
        self._due = clock()
        self._started = 0.0
        self.passes = 0

    def tick(self) -> bool:
        """One slice when a pass is running or due; True while the pass has more to do."""
        now = self._clock()
        if not self.scrubber.running and now < self._due:
            return False
        if not self.scrubber.running:
            self._started = now
            self.scrubber.start()
        try:
            complete = self.scrubber.step()
        except Exception:
            # The index or the store failing here fails the receiver's next batch too, which stops it;
            # the scrub itself is tried again at the next interval.
            log.exception("scrub: pass stopped; the next one is due in %.0f s", self.interval_s)
            self.scrubber.close()
            self._due = now + self.interval_s
            return False
        if complete:
            self.passes += 1
            self._due = self._started + self.interval_s
            summary = self.scrubber.summary
            log.log(logging.WARNING if summary.findings else logging.INFO,
                    "scrub: %d device(s), %d file(s), %d bytes checked in %.1f s: %d problem(s)",
                    summary.devices, summary.files, summary.bytes, self._clock() - self._started,
                    len(summary.findings))
        return not complete
