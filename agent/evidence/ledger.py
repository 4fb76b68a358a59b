"""The append-only, signed, hash-chained ledger, with crash recovery.

Appending is durable before it returns: one ``write`` of the whole line to a file opened with O_APPEND,
then ``fdatasync``; the file's creation is made durable by an fsync of its folder. A failed write or
fsync closes the ledger for appends (the data is treated as lost; no retry that trusts the page cache).

Opening recovers from a crash: a torn tail (an incomplete last line, or a last line that does not verify,
at most one record's worth) is copied into ``quarantine/``, cut off, and described in a signed
``recovery`` record. Damage anywhere else is not a crash artifact and is refused, never repaired.
Every open then writes a ``boot`` record that links to the previous chain.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import EncodingError, LedgerBusyError, LedgerCorruptError, LedgerError, RecordFormatError
from agent.evidence import __version__
from agent.evidence.clock import Clock, SystemClock
from agent.evidence.encoding import GENESIS_PREV, MAX_LINE_BYTES
from agent.evidence.fsutil import display_path, fsync_dir, sha256_file, write_file_durably
from agent.evidence.keys import DeviceKey, load_device_key, verify_signature
from agent.evidence.record import SEGMENT_TYPES, Record, SignedRecord, parse_line, validate_record_fields
from agent.evidence.store import QUARANTINE_DIR, SEGMENTS_DIR, StoreLayout, segment_index
from agent.evidence.write_timer import WriteTimer

_sync_data = getattr(os, "fdatasync", os.fsync)
_TORN_NAME = re.compile(r"ledger-torn-(\d+)-([0-9a-f]{16})\.bin\Z")
_RECOVERY_MARK = b'"type":"recovery"'
_SEGMENT_MARKS = tuple(f'"type":"{name}"'.encode("ascii") for name in SEGMENT_TYPES)
_FILE_FIELD = re.compile(rb'"file":"(segments/[^"]+)"')
_CHECKPOINT_MARK = b'"type":"checkpoint"'
_CHECKPOINT_RANGE = re.compile(rb'"length":(\d+),"offset":(\d+)')  # canonical order: length before offset


@dataclass(frozen=True)
class _Scan:
    size: int
    good_length: int
    last: SignedRecord | None
    torn_reason: str | None
    recovered_files: frozenset[str]
    covered_segments: frozenset[str]


class Ledger:
    """A device's ledger, open for appending. One writer at a time (an exclusive lock on the file)."""

    def __init__(self, *, layout: StoreLayout, key: DeviceKey, device_id: str, clock: Clock, fd: int) -> None:
        self.layout = layout
        self.key = key
        self.device_id = device_id
        self.clock = clock
        self._fd = fd
        self._lock = threading.Lock()
        self._failed: str | None = None
        self._head_seq = 0
        self._head_link = GENESIS_PREV
        self.recovery_records: list[SignedRecord] = []  # torn ledger tails recorded at open
        self.recovered_segments: list[SignedRecord] = []  # segment files without a record, recorded at open
        self.boot_record: SignedRecord | None = None
        self._highest_recorded_segment = 0  # the highest segment number a record names (set at open)
        self.write_timer = WriteTimer()  # write + fdatasync times, for the health watch (agent/health/monitor.py)

    @classmethod
    def open(
        cls,
        store_root: Path,
        key: DeviceKey,
        device_id: str,
        clock: Clock | None = None,
        boot_reason: str = "start",
    ) -> Ledger:
        """Open (creating if needed) the ledger in ``store_root``, recover a torn tail, write a boot record."""
        layout = StoreLayout(store_root)
        layout.create()
        path = layout.ledger_path
        name = display_path(path)
        created = not path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LedgerError(f"ledger {name}: cannot open ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LedgerBusyError(f"ledger {name}: in use by another process") from None
            raise LedgerError(f"ledger {name}: cannot lock ({exc.strerror})") from None
        ledger = cls(layout=layout, key=key, device_id=device_id, clock=clock or SystemClock(), fd=fd)
        try:
            if created:
                fsync_dir(layout.root)
            ledger._recover_and_boot(boot_reason)
        except OSError as exc:  # recovery's own file operations (quarantine copy, cut, fsync) failed
            ledger.close()
            raise LedgerError(f"ledger {name}: cannot recover and open ({exc.strerror})") from None
        except BaseException:
            ledger.close()
            raise
        return ledger

    @property
    def head(self) -> tuple[int, str]:
        """Sequence number and link hash of the newest record (0 and the genesis value when empty)."""
        return self._head_seq, self._head_link

    def next_segment_index(self) -> int:
        """The number for the next new segment file: above every file in segments/ and every one a record
        names, so a file purged after the station acknowledged it never has its name given out again."""
        return max(self.layout.next_segment_index(), self._highest_recorded_segment + 1)

    def append(self, record_type: str, body: Mapping[str, Any]) -> SignedRecord:
        """Sign and durably append one record; returns it once it is on stable storage."""
        with self._lock:
            if self._failed is not None:
                raise LedgerError(f"ledger {display_path(self.layout.ledger_path)}: closed after {self._failed}")
            stamp = self.clock.now()
            record = Record(
                seq=self._head_seq + 1,
                prev=self._head_link,
                type=record_type,
                device=self.device_id,
                key=self.key.fingerprint,
                wall_us=stamp.wall_us,
                mono_us=stamp.mono_us,
                boot=stamp.boot_id,
                body=dict(body),
            )
            try:
                validate_record_fields(record)
                payload = record.to_payload()
            except (RecordFormatError, EncodingError) as exc:
                raise LedgerError(f"ledger: refusing {record_type} record seq {record.seq}: {exc}") from None
            signed = SignedRecord(record, payload, self.key.sign(payload))
            line = signed.to_line()
            if len(line) > MAX_LINE_BYTES:
                raise LedgerError(f"ledger: refusing {record_type} record seq {record.seq}: line too long")
            self._write_durably(line, record.seq)
            self._head_seq = record.seq
            self._head_link = signed.link
            if record_type in SEGMENT_TYPES:
                number = segment_index(str(record.body["file"]))
                self._highest_recorded_segment = max(self._highest_recorded_segment, number)
            return signed

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # closing the descriptor releases the flock
                self._fd = -1
                self._failed = self._failed or "close"

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_durably(self, line: bytes, seq: int) -> None:
        try:
            with self.write_timer.timing():
                view = memoryview(line)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                _sync_data(self._fd)
        except OSError as exc:
            self._failed = f"a failed write of seq {seq} ({exc.strerror})"
            raise LedgerError(
                f"ledger {display_path(self.layout.ledger_path)}: append of seq {seq} failed "
                f"({exc.strerror}); the ledger takes no more records until it is reopened"
            ) from None

    # --- opening and recovery -------------------------------------------------------------------

    def _recover_and_boot(self, boot_reason: str) -> None:
        scan = self._scan()
        self._highest_recorded_segment = max((segment_index(n) for n in scan.covered_segments), default=0)
        if scan.good_length < scan.size:
            self._move_torn_tail_aside(scan.good_length, scan.size)
        if scan.last is not None:
            self._head_seq = scan.last.seq
            self._head_link = scan.last.link
        # The boot record comes first, so that a ledger whose very first write was torn still starts
        # with one (docs/ledger-format.md 7.4); what recovery found follows it.
        self.boot_record = self.append(
            "boot",
            {
                "public_key": self.key.public_raw.hex(),
                "software": f"bodycam {__version__}",
                "reason": boot_reason if scan.last is not None else "first start",
            },
        )
        for torn_file in self._unrecorded_torn_files(scan.recovered_files):
            self._append_recovery(torn_file, scan.torn_reason or "torn tail found at open")
        orphan = self._orphan_segment(scan.covered_segments)
        if orphan is not None:
            last_wall_us = scan.last.record.wall_us if scan.last is not None else self.boot_record.record.wall_us
            self._append_recovered_segment(orphan, last_wall_us)

    def _scan(self) -> _Scan:
        """Read the ledger once: find the last good record, a torn tail, and recovery records."""
        recovered: set[str] = set()
        covered: list[tuple[int, str]] = []  # (line offset, segment file a segment record names)
        complete: list[tuple[int, bytes]] = []  # the last two complete lines with their offsets
        offset = 0
        incomplete_at: int | None = None
        with open(self._fd, "rb", closefd=False) as handle:
            handle.seek(0)
            for line in handle:
                if not line.endswith(b"\n"):
                    incomplete_at = offset
                    offset += len(line)
                    break
                if _RECOVERY_MARK in line:
                    recovered.update(self._recovery_file_of(line))
                elif any(mark in line for mark in _SEGMENT_MARKS):
                    covered.extend((offset, match.decode("ascii")) for match in _FILE_FIELD.findall(line))
                complete = [*complete[-1:], (offset, line)]
                offset += len(line)
        size = offset
        last, last_problem = self._check_tail_line(complete[-1]) if complete else (None, None)
        if last_problem is None:
            good_length = incomplete_at if incomplete_at is not None else size
            reason = "incomplete last line" if incomplete_at is not None else None
            if size - good_length > MAX_LINE_BYTES:
                raise self._corrupt(good_length, "an unterminated region longer than one record")
            return _Scan(size, good_length, last, reason, frozenset(recovered), _before(covered, good_length))
        # The last complete line does not verify: a crash can leave that only if it is the final line and
        # nothing follows it, and only if the line before it is sound.
        bad_offset = complete[-1][0]
        if incomplete_at is not None or size - bad_offset > MAX_LINE_BYTES:
            raise self._corrupt(bad_offset, last_problem)
        before, before_problem = self._check_tail_line(complete[0]) if len(complete) > 1 else (None, None)
        if before_problem is not None:
            raise self._corrupt(complete[0][0], before_problem)
        reason = f"last line fails verification: {last_problem}"
        return _Scan(size, bad_offset, before, reason, frozenset(recovered), _before(covered, bad_offset))

    def _check_tail_line(self, entry: tuple[int, bytes]) -> tuple[SignedRecord | None, str | None]:
        """Parse and verify a line written by this device; identity mismatches are refused outright."""
        try:
            signed = parse_line(entry[1])
        except RecordFormatError as exc:
            return None, str(exc)
        if signed.record.key != self.key.fingerprint:
            raise LedgerError(
                f"ledger {display_path(self.layout.ledger_path)}: seq {signed.seq} was signed by key "
                f"{signed.record.key[:16]}..., this device's key is {self.key.fingerprint[:16]}...; refusing to append"
            )
        if signed.record.device != self.device_id:
            raise LedgerError(
                f"ledger {display_path(self.layout.ledger_path)}: seq {signed.seq} belongs to device "
                f"{signed.record.device!r}, not {self.device_id!r}; refusing to append"
            )
        if not verify_signature(self.key.public_key, signed.payload, signed.signature):
            return None, "signature invalid"
        return signed, None

    def _corrupt(self, offset: int, problem: str) -> LedgerCorruptError:
        return LedgerCorruptError(
            f"ledger {display_path(self.layout.ledger_path)}: damage at offset {offset} ({problem}) is not a torn "
            "tail; refusing to append or repair (run bodycam-verify on the store)"
        )

    @staticmethod
    def _recovery_file_of(line: bytes) -> list[str]:
        try:
            signed = parse_line(line)
        except RecordFormatError:
            return []
        if signed.record.type != "recovery":
            return []
        return [str(signed.record.body["file"])]

    def _move_torn_tail_aside(self, start: int, end: int) -> None:
        torn = os.pread(self._fd, end - start, start)
        digest = hashlib.sha256(torn).hexdigest()
        target = self.layout.quarantine_dir / f"ledger-torn-{start}-{digest[:16]}.bin"
        try:
            write_file_durably(target, torn, mode=0o444, exclusive=True)
        except FileExistsError:
            # A crash after the copy and before the cut: the copy is already there; check it is ours.
            if sha256_file(target)[0] != digest:
                raise LedgerCorruptError(
                    f"quarantine file {display_path(target)} exists with other content; refusing to cut the ledger"
                ) from None
        os.ftruncate(self._fd, start)
        os.fsync(self._fd)

    def _unrecorded_torn_files(self, recovered: frozenset[str]) -> list[str]:
        names = []
        for entry in sorted(self.layout.quarantine_dir.iterdir()):
            name = f"{QUARANTINE_DIR}/{entry.name}"
            if _TORN_NAME.match(entry.name) and name not in recovered:
                names.append(name)
        return names

    def _append_recovery(self, name: str, reason: str) -> None:
        match = _TORN_NAME.match(name.rsplit("/", 1)[-1])
        assert match is not None  # only names that matched are passed in
        digest, length = sha256_file(self.layout.path_of(name))
        record = self.append(
            "recovery",
            {"offset": int(match.group(1)), "length": length, "sha256": digest, "file": name, "reason": reason},
        )
        self.recovery_records.append(record)

    def _orphan_segment(self, covered: frozenset[str]) -> str | None:
        """The segment file a crash left without its record, if there is exactly one such candidate.

        A crash can only interrupt the newest segment: so only a file numbered above every recorded one
        qualifies, and only when it is the single one. Several (a ledger cut off at a record boundary) are
        left for the verifier to report.
        """
        highest_covered = max((segment_index(name) for name in covered), default=0)
        candidates = []
        for entry in self.layout.segments_dir.iterdir():
            index = segment_index(entry.name)
            name = f"{SEGMENTS_DIR}/{entry.name}"
            if index > highest_covered and name not in covered:
                candidates.append(name)
        return candidates[0] if len(candidates) == 1 else None

    def _append_recovered_segment(self, name: str, last_wall_us: int) -> None:
        """Record a segment a crash left open, how much of it checkpoints signed, and the gap after it."""
        path = self.layout.path_of(name)
        os.chmod(path, 0o444)  # read-only once a record vouches for it, like every closed segment
        digest, size = sha256_file(path)
        record = self.append(
            "recovered",
            {
                "file": name,
                "sha256": digest,
                "size": size,
                "signed_bytes": self._checkpointed_bytes(name),
                "reason": "segment file without a record found at open (crash or power loss while recording)",
            },
        )
        self.recovered_segments.append(record)
        self.append(
            "gap",
            {
                "from_wall_us": last_wall_us,
                "to_wall_us": self.boot_record.record.wall_us if self.boot_record else last_wall_us,
                "reason": f"no footage between the last record before the crash and this start ({name} was open)",
            },
        )

    def _checkpointed_bytes(self, name: str) -> int:
        """Where the last checkpoint of ``name`` ended: the part of a recovered file signed before the crash."""
        marker = f'"file":"{name}"'.encode("ascii")
        end = 0
        with open(self._fd, "rb", closefd=False) as handle:
            handle.seek(0)
            for line in handle:
                if _CHECKPOINT_MARK in line and marker in line:
                    match = _CHECKPOINT_RANGE.search(line)
                    if match:
                        end = max(end, int(match.group(1)) + int(match.group(2)))
        return end


def open_without_agent(
    store_root: Path, key_path: Path, device_id: str, boot_reason: str, instead: str, clock: Clock | None = None
) -> Ledger:
    """Open the ledger from a tool that writes when no agent runs (the uploader's custody and assignments).

    LedgerBusyError while the agent (or another writer) holds it, saying what to do ``instead``."""
    key = load_device_key(key_path)
    try:
        return Ledger.open(store_root, key, device_id, clock, boot_reason=boot_reason)
    except LedgerBusyError:
        raise LedgerBusyError(
            f"ledger {display_path(StoreLayout(store_root).ledger_path)}: held by the running agent (or another "
            f"writer); {instead}"
        ) from None


def _before(entries: list[tuple[int, str]], end: int) -> frozenset[str]:
    """The names from lines that start before ``end`` (a torn tail vouches for nothing)."""
    return frozenset(name for offset, name in entries if offset < end)
