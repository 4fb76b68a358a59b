"""Receiving files: offers and chunks of files that a verified record already vouches for (a claim).

A chunk is written at its offset into the staging file and made durable before its range is recorded, so
the ``have`` ranges the station reports are always on disk. When the ranges cover the whole file it is
hashed; matching the claim, it becomes a write-once object named in the device's layout and indexed, and only
then acknowledged; not matching, it is reported (``bad-bytes``) and the staged bytes are discarded.

Nothing a device says about a file is believed past the station's limits: a claim larger than
``limits.max_file_bytes`` is refused (so an offset inside it is bounded too); a device's staged bytes stay
under ``limits.max_staging_bytes_per_device`` (its other unfinished files are dropped from staging to make
room: until acknowledged the device keeps every file and sends again what the station lacks); and below
``limits.min_free_bytes`` free on the station's disk no chunk is written, so no device fills it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from agent.errors import ProtocolError
from agent.evidence.ack import AckedFile
from agent.evidence.clock import Clock
from agent.evidence.record import SEGMENT_TYPES
from sync.protocol import ChunkHeader, FileOffer, FileStatus
from sync.station.deadline import WorkingCalendar, recording_time
from sync.station.index import Index
from sync.station.intake import late_reason, oversized_reason
from sync.station.model import BAD_BYTES, LATE_UPLOAD, OVERDUE_FILE, STORAGE_LOW, Claim, FileRow
from sync.station.ports import EvidenceStore
from sync.station.problems import ProblemLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferResult:
    status: FileStatus
    stored: AckedFile | None = None  # to acknowledge: stored now, or offered again after it was stored


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(offset, length)`` ranges merged where they touch or overlap, in order."""
    merged: list[tuple[int, int]] = []
    for offset, length in sorted(ranges):
        if merged and offset <= merged[-1][0] + merged[-1][1]:
            start, span = merged[-1]
            merged[-1] = (start, max(span, offset + length - start))
        elif length > 0:
            merged.append((offset, length))
    return merged


def covers(ranges: list[tuple[int, int]], offset: int, length: int) -> bool:
    return any(start <= offset and offset + length <= start + span for start, span in merge_ranges(ranges))


@dataclass(frozen=True)
class TransferLimits:
    """Station config ``[limits]`` for files."""

    max_file_bytes: int
    max_staging_bytes: int  # per device
    min_free_bytes: int  # on the station's disk, below which no chunk is written


def to_evict(staged: dict[str, int], keep: str, incoming: int, allowance: int) -> list[str]:
    """Which of a device's staged files (sha256 -> bytes) to drop so that ``incoming`` more bytes for ``keep``
    fit in ``allowance``: the largest others first (fewest files to send again); never ``keep`` itself."""
    total = sum(staged.values()) + incoming
    dropped: list[str] = []
    for sha256, size in sorted(staged.items(), key=lambda item: (-item[1], item[0])):
        if total <= allowance:
            break
        if sha256 != keep:
            dropped.append(sha256)
            total -= size
    return dropped


class FileTransfer:
    def __init__(self, *, store: EvidenceStore, index: Index, problems: ProblemLog, calendar: WorkingCalendar,
                 clock: Clock, limits: TransferLimits) -> None:
        self._limits = limits
        self._store = store
        self._index = index
        self._problems = problems
        self._calendar = calendar
        self._clock = clock
        # Files arriving in order are hashed as their chunks come, so a finished file is not read again:
        # (device, sha256) -> (hash so far, the offset it has reached). Lost at a restart: then re-read.
        self._running: dict[tuple[str, str], tuple[Any, int]] = {}

    def _claim(self, device: str, name: str, sha256: str, size: int) -> Claim:
        claim = self._index.claim(device, name)
        if claim is None or claim.sha256 != sha256 or claim.size != size:
            reason = ("no stored record vouches for it" if claim is None
                      else f"record seq {claim.seq} vouches for sha256 {claim.sha256[:16]}... size {claim.size}")
            raise ProtocolError(f"file {name} (sha256 {sha256[:16]}..., {size} bytes): {reason}")
        if claim.size > self._limits.max_file_bytes:
            raise ProtocolError(oversized_reason(name, claim.size, self._limits.max_file_bytes))
        return claim

    def offer(self, device: str, offer: FileOffer, session: str) -> TransferResult:
        claim = self._claim(device, offer.file, offer.sha256, offer.size)
        done = self._already_stored(claim, session)
        if done is not None:
            return done
        return self._maybe_complete(claim, session, self._index.ranges(device, claim.sha256))

    def chunk(self, device: str, header: ChunkHeader, data: bytes, session: str) -> TransferResult:
        claim = self._claim(device, header.file, header.sha256, header.size)
        done = self._already_stored(claim, session)
        if done is not None:
            self._index.count(device, session, "duplicate_chunks")
            return done
        ranges = self._index.ranges(device, claim.sha256)
        if covers(ranges, header.offset, header.length):
            self._index.count(device, session, "duplicate_chunks")
        else:
            self._make_room(device, claim, header.length)
            self._store.write_partial(device, claim.sha256, header.offset, data)
            self._hash_along(device, claim.sha256, header.offset, data)
            self._index.add_range(device, claim.sha256, header.offset, header.length)
            self._index.count(device, session, "chunks_written")
            ranges.append((header.offset, header.length))
        return self._maybe_complete(claim, session, ranges)

    def _make_room(self, device: str, claim: Claim, incoming: int) -> None:
        free = self._store.free_bytes()
        if free - incoming < self._limits.min_free_bytes:
            log.error("station disk: %d bytes free, limits.min_free_bytes is %d", free, self._limits.min_free_bytes)
            # One problem while it lasts (a repeat only counts): the words do not change with the free bytes.
            self._problems.report(STORAGE_LOW, None, f"less than limits.min_free_bytes "
                                  f"({self._limits.min_free_bytes}) free on the station's disk: chunks are refused")
            raise ProtocolError(f"chunk of {claim.name}: the station's storage is low; not written (send it later)")
        staged = self._index.staged(device)
        for sha256 in to_evict(staged, claim.sha256, incoming, self._limits.max_staging_bytes):
            log.info("device %s: staged bytes of sha256 %s... dropped to stay within its staging allowance of %d "
                     "bytes (the device sends them again)", device, sha256[:16], self._limits.max_staging_bytes)
            self._store.discard_partial(device, sha256)
            self._index.clear_ranges(device, sha256)
            self._running.pop((device, sha256), None)

    def _hash_along(self, device: str, sha256: str, offset: int, data: bytes) -> None:
        key = (device, sha256)
        running = self._running.get(key)
        if running is not None and offset < running[1]:
            # These bytes overwrite some already hashed: the running hash no longer describes the staged
            # file, so it is dropped and the finished file is read again (a mismatch is then reported).
            del self._running[key]
            return
        if running is None and offset == 0:
            running = (hashlib.sha256(), 0)
        if running is not None and running[1] == offset:
            running[0].update(data)
            self._running[key] = (running[0], offset + len(data))

    # --- states of a file -------------------------------------------------------------------------------------

    def _already_stored(self, claim: Claim, session: str) -> TransferResult | None:
        """Stored before, or its bytes are already an object (same content under another name or device)."""
        if self._index.stored_file(claim.device, claim.name) is None:
            if not self._store.has_object(claim.sha256) or self._store.object_size(claim.sha256) != claim.size:
                return None
            self._file_stored(claim, session)
        return TransferResult(self._status(claim, session, stored=True), _acked(claim))

    def _maybe_complete(self, claim: Claim, session: str, ranges: list[tuple[int, int]]) -> TransferResult:
        have = merge_ranges(ranges)
        complete = claim.size == 0 or have == [(0, claim.size)]
        if not complete:
            return TransferResult(self._status(claim, session, stored=False, have=have))
        running = self._running.pop((claim.device, claim.sha256), None)
        if running is not None and running[1] == claim.size:
            digest, size = running[0].hexdigest(), claim.size
        else:
            digest, size = self._store.partial_digest(claim.device, claim.sha256)
        if digest != claim.sha256 or size != claim.size:
            self._problems.report(
                BAD_BYTES, claim.device,
                f"the bytes received ({size} bytes, sha256 {digest[:16]}...) do not match the record (sha256 "
                f"{claim.sha256[:16]}..., {claim.size} bytes); discarded", seq=claim.seq, obj=claim.name)
            self._store.discard_partial(claim.device, claim.sha256)
            self._index.clear_ranges(claim.device, claim.sha256)
            return TransferResult(self._status(claim, session, stored=False))
        self._store.commit_partial(claim.device, claim.sha256)
        self._file_stored(claim, session)
        return TransferResult(self._status(claim, session, stored=True), _acked(claim))

    def _file_stored(self, claim: Claim, session: str) -> None:
        """The object exists: name it in the device's layout, index it, count it, judge its deadline."""
        self._store.place_file(claim.device, claim.name, claim.sha256)
        now = self._clock.now().wall_us
        self._index.add_file(FileRow(claim.device, claim.name, claim.sha256, claim.size, claim.seq, now))
        self._store.discard_partial(claim.device, claim.sha256)  # left over when the object came another way
        self._index.count(claim.device, session, "files_stored")
        log.info("device %s seq %d: %s stored (%d bytes, sha256 %s)", claim.device, claim.seq, claim.name,
                 claim.size, claim.sha256)
        if self._index.resolve_check_problem(claim.device, OVERDUE_FILE, claim.name, now):
            log.info("device %s seq %d: %s: no longer overdue", claim.device, claim.seq, claim.name)
        if claim.type not in SEGMENT_TYPES:
            return
        # Judged as when its record arrived (same offset, same day), so a late recording is one problem.
        record = self._index.record(claim.device, claim.seq)
        recorded = recording_time(claim.wall_us, self._index.clock_offsets(claim.device),
                                  now if record is None else record.stored_us)
        if self._calendar.is_late(recorded, now):
            self._problems.report(LATE_UPLOAD, claim.device, late_reason(self._calendar, recorded),
                                  seq=claim.seq, obj=claim.name)

    @staticmethod
    def _status(claim: Claim, session: str, stored: bool, have: list[tuple[int, int]] | None = None) -> FileStatus:
        ranges = [[offset, length] for offset, length in (have or [])]
        return FileStatus(session, claim.name, claim.sha256, stored, [] if stored else ranges)


def _acked(claim: Claim) -> AckedFile:
    return AckedFile(claim.name, claim.sha256, claim.size)
