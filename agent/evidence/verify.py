"""The one verifier: signatures, hash links, sequence continuity, forks, identity, and stored files.

:class:`ChainVerifier` checks records one line at a time, so the station can feed it records as they
arrive across sync sessions; :func:`verify_store` runs it over a device store and then checks every file
the records name. Nothing here repairs anything: every problem is reported with its record and file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import RecordFormatError, StoreError, VerificationError
from agent.evidence.archive import ARCHIVE_PURGED_MISSING
from agent.evidence.encoding import GENESIS_PREV
from agent.evidence.fsutil import display_path, sha256_file_ranges
from agent.evidence.keys import fingerprint, public_key_from_hex, public_key_raw, verify_signature
from agent.evidence.record import FILE_RECORD_TYPES, SEGMENT_TYPES, SignedRecord, parse_line
from agent.evidence.store import LEDGER_FILE, QUARANTINE_DIR, SEGMENTS_DIR, StoreLayout
from agent.evidence.store import label_of as _label

_LAST = 1 << 62  # sort key for findings that belong to no ledger line


@dataclass(frozen=True)
class Finding:
    """A problem or a note: which record (``seq``), which object (a file), what."""

    message: str
    seq: int | None = None
    object: str | None = None
    line: int | None = None  # 1-based ledger line, for ordering and for records that cannot be parsed
    # A note about what custody normally leaves behind (a purge, a station's kept copy), not about a fault.
    routine: bool = False

    def __str__(self) -> str:
        parts = [] if self.seq is None else [f"seq {self.seq}"]
        if self.object:
            parts.append(self.object)
        parts.append(self.message)
        return ": ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "object": self.object, "line": self.line, "message": self.message, "text": str(self)}


@dataclass
class Report:
    path: str
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    device: str | None = None
    key_fingerprint: str | None = None
    key_pinned: bool = False
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_link: str | None = None
    segments: int = 0
    segment_bytes: int = 0
    mode: str = "archive"  # agent.evidence.archive: what the folder was verified as
    station_key_fingerprint: str | None = None

    @property
    def intact(self) -> bool:
        return not self.problems

    def sort(self) -> None:
        self.problems.sort(key=lambda f: f.line if f.line is not None else _LAST)
        self.notes.sort(key=lambda f: f.line if f.line is not None else _LAST)

    def raise_for_problems(self) -> None:
        if self.problems:
            first = self.problems[0]
            raise VerificationError(
                f"{self.path}: {len(self.problems)} problem(s), first: {first}", [str(p) for p in self.problems]
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "intact": self.intact,
            "device": self.device,
            "key_fingerprint": self.key_fingerprint,
            "key_pinned": self.key_pinned,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head_link": self.head_link,
            "segments": self.segments,
            "segment_bytes": self.segment_bytes,
            "mode": self.mode,
            "station_key_fingerprint": self.station_key_fingerprint,
            "problems": [p.to_dict() for p in self.problems],
            "notes": [n.to_dict() | {"routine": n.routine} for n in self.notes],
        }


@dataclass(frozen=True)
class FileClaim:
    """A file a record vouches for."""

    seq: int
    line: int
    name: str
    sha256: str
    size: int
    offset: int = 0  # where a checkpoint's bytes start; whole files start at 0


class ChainVerifier:
    """Checks records in ledger order. Feed lines; read ``report`` and the file claims afterwards."""

    def __init__(self, report: Report, public_key: Ed25519PublicKey | None = None) -> None:
        self.report = report
        self._key = public_key
        if public_key is not None:
            report.key_fingerprint = fingerprint(public_key_raw(public_key))
            report.key_pinned = True
        self._expected_seq: int | None = 1
        self._prev_link = GENESIS_PREV
        self._previous_bad = False
        self._seen: dict[int, str] = {}  # seq -> link of the records in the chain
        self._bad_seqs: set[int] = set()  # seqs claimed by records that failed identity or signature
        self._gaps: list[tuple[Finding, int, int]] = []  # jump forward: its problem, first and last seq skipped
        self.unverified_files: set[str] = set()  # named only by records that are themselves problems
        self._mono_by_boot: dict[str, int] = {}
        self._key_unknown_reported = False
        self.segments: dict[str, FileClaim] = {}
        self.purged: dict[str, FileClaim] = {}  # file -> the segment record a purge record names
        self.purged_by: dict[str, int] = {}  # file -> the purge record's seq
        self.recoveries: list[FileClaim] = []
        self.checkpoints: dict[str, list[FileClaim]] = {}  # file -> checkpoints in ledger order
        self.receipts: list[tuple[int, int, str]] = []  # (seq, line, the station's ack line it carries)

    def anchor(self, device: str, seq: int, link: str) -> None:
        """Continue a chain already verified up to ``seq`` (whose link is ``link``), as the station does
        across sync sessions: the next record fed must be ``seq + 1`` and carry ``link`` as its prev."""
        self.report.device = device
        self._expected_seq = seq + 1
        self._prev_link = link
        self._previous_bad = False
        if seq:
            self.report.last_seq = seq
            self.report.head_link = link

    def link_of(self, seq: int) -> str | None:
        """The link of the chain's record ``seq`` (None when the chain holds none)."""
        return self._seen.get(seq)

    def adopt_announced_key(self, signed: SignedRecord, line_no: int) -> None:
        """Use the key a boot record announces (and is signed with) when no key was pinned."""
        self._key = public_key_from_hex(str(signed.record.body["public_key"]))
        self.report.key_fingerprint = signed.record.key
        self.note("device key taken from this boot record (not pinned; pass --pubkey to pin it)",
                  signed.seq, line=line_no)

    def problem(self, message: str, seq: int | None = None, obj: str | None = None, line: int | None = None) -> None:
        self.report.problems.append(Finding(message, seq, obj, line))

    def note(self, message: str, seq: int | None = None, obj: str | None = None, line: int | None = None,
             *, routine: bool = False) -> None:
        self.report.notes.append(Finding(message, seq, obj, line, routine))

    def feed_line(self, raw: bytes, line_no: int) -> SignedRecord | None:
        where = f"{LEDGER_FILE} line {line_no}"
        try:
            signed = parse_line(raw)
        except RecordFormatError as exc:
            self.problem(f"malformed record ({exc})", obj=where, line=line_no)
            self._expected_seq = None  # its sequence number is unknown: re-anchor on the next record
            self._previous_bad = True
            return None
        self.report.records += 1
        if self.report.first_seq is None:
            self.report.first_seq = signed.seq
        if not (self._check_identity(signed, line_no) and self._check_signature(signed, line_no)):
            # Already a problem. It takes no place in the chain, so a forgery cannot push the genuine
            # record out, and the files it names are not reported a second time as uncovered.
            self._bad_seqs.add(signed.seq)
            self._previous_bad = True
            self.unverified_files.update(self._claimed_files(signed))
            return signed
        if self._check_position(signed, line_no):
            self._check_time(signed, line_no)
            self._collect_claims(signed, line_no)
        else:
            self.unverified_files.update(self._claimed_files(signed))
        return signed

    def _check_identity(self, signed: SignedRecord, line_no: int) -> bool:
        record = signed.record
        if self.report.device is None:
            self.report.device = record.device
        elif record.device != self.report.device:
            self.problem(f"device id {record.device!r} differs from {self.report.device!r}", record.seq, line=line_no)
            return False
        if self._key is None:
            if not self._key_unknown_reported:
                self.problem("device key unknown: no intact boot record announces it (pass --pubkey)",
                             record.seq, line=line_no)
                self._key_unknown_reported = True
            return False
        if record.key != self.report.key_fingerprint:
            self.problem(
                f"signed by another key ({record.key[:16]}..., expected {str(self.report.key_fingerprint)[:16]}...)",
                record.seq,
                line=line_no,
            )
            return False
        if record.type == "boot" and record.body["public_key"] != public_key_raw(self._key).hex():
            self.problem("boot record announces a different public key", record.seq, line=line_no)
            return False
        return True

    def _check_signature(self, signed: SignedRecord, line_no: int) -> bool:
        assert self._key is not None  # _check_identity returned True
        if verify_signature(self._key, signed.payload, signed.signature):
            return True
        self.problem("signature invalid", signed.seq, line=line_no)
        return False

    def _check_position(self, signed: SignedRecord, line_no: int) -> bool:
        """Sequence continuity, forks and the hash link. False when the record is not part of the chain."""
        seq, link = signed.seq, signed.link
        if seq in self._seen:
            what = "duplicate of an earlier record (replayed)" if self._seen[seq] == link else (
                "fork: a second, different record with this sequence number")
            self.problem(what, seq, line=line_no)
            return False
        expected = self._expected_seq
        if expected is not None and seq < expected:
            self.problem(f"out of order (expected seq {expected})", seq, line=line_no)
            self._seen[seq] = link
            return True  # part of the ledger, but the chain goes on from where it was
        if expected is not None and seq > expected:
            # Judged in finish(): missing, further down the ledger, or a record that failed its checks.
            gap = Finding("records missing before this one", seq, None, line_no)
            self.report.problems.append(gap)
            self._gaps.append((gap, expected, seq - 1))
        elif expected is not None and not self._previous_bad and signed.record.prev != self._prev_link:
            self.problem(f"prev hash does not match the link of seq {seq - 1}", seq, line=line_no)
        if seq == 1 and signed.record.type != "boot":
            self.problem("the ledger's first record is not a boot record", seq, line=line_no)
        self._seen[seq] = link
        self._expected_seq = seq + 1
        self._prev_link = link
        self._previous_bad = False
        self.report.last_seq = seq
        self.report.head_link = link
        return True

    def finish(self) -> None:
        """Name what each jump in sequence numbers really was, now that the whole ledger has been read."""
        for gap, first, last in self._gaps:
            missing = [s for s in range(first, last + 1) if s not in self._seen and s not in self._bad_seqs]
            later = [s for s in range(first, last + 1) if s in self._seen]
            index = next(i for i, p in enumerate(self.report.problems) if p is gap)
            if missing:
                message = f"records missing before this one ({_seq_ranges(missing)})"
            elif later:
                verb = "comes" if len(later) == 1 else "come"
                message = f"out of order: {_seq_ranges(later)} {verb} later in the ledger"
            else:  # only records that failed their checks stood there: they are the problems
                del self.report.problems[index]
                continue
            self.report.problems[index] = Finding(message, gap.seq, gap.object, gap.line)
        self._gaps.clear()

    def _check_time(self, signed: SignedRecord, line_no: int) -> None:
        record = signed.record
        before = self._mono_by_boot.get(record.boot)
        if before is not None and record.mono_us < before:
            self.problem(f"monotonic time went backwards within boot {record.boot}", record.seq, line=line_no)
        self._mono_by_boot[record.boot] = record.mono_us

    def _collect_checkpoint(self, signed: SignedRecord, line_no: int) -> None:
        body = signed.record.body
        name, offset, length = str(body["file"]), int(body["offset"]), int(body["length"])
        label = _label(name)
        if name in self.segments:
            self.problem(f"checkpoint after the file was closed by seq {self.segments[name].seq}",
                         signed.seq, label, line_no)
            return
        earlier = self.checkpoints.setdefault(name, [])
        expected = earlier[-1].offset + earlier[-1].size if earlier else 0
        if offset != expected:
            self.problem(f"checkpoint starts at byte {offset}, not at {expected} where the previous one ended",
                         signed.seq, label, line_no)
        earlier.append(FileClaim(signed.seq, line_no, name, str(body["sha256"]), length, offset))

    @staticmethod
    def _claimed_files(signed: SignedRecord) -> set[str]:
        file = signed.record.body.get("file")
        return {file} if isinstance(file, str) else set()

    def _collect_claims(self, signed: SignedRecord, line_no: int) -> None:
        record, body = signed.record, signed.record.body
        if record.type == "checkpoint":
            self._collect_checkpoint(signed, line_no)
            return
        if record.type == "receipt":
            self.receipts.append((record.seq, line_no, str(body["ack"])))
            return
        if record.type not in (*FILE_RECORD_TYPES, "purge"):
            return
        claim = FileClaim(record.seq, line_no, str(body["file"]), str(body["sha256"]),
                          int(body.get("size", body.get("length", 0))))
        label = _label(claim.name)
        if record.type in SEGMENT_TYPES:
            if record.type == "recovered":
                self.note(f"segment file recovered at open ({body['reason']})", record.seq, label, line_no)
            earlier = self.segments.get(claim.name)
            if earlier is not None:
                self.problem(f"file already recorded by seq {earlier.seq}", record.seq, label, line_no)
            else:
                self.segments[claim.name] = claim
        elif record.type == "purge":
            recorded = self.segments.get(claim.name)
            if recorded is None or recorded.sha256 != claim.sha256:
                self.problem("purge of a file no earlier segment record vouches for", record.seq, label, line_no)
            else:
                self.purged[claim.name] = recorded
                self.purged_by[claim.name] = record.seq
                self.note(f"purged ({body['reason']})", record.seq, label, line_no, routine=True)
        else:
            self.recoveries.append(claim)
            self.note(
                f"torn ledger tail of {body['length']} bytes at offset {body['offset']} was moved aside at "
                f"recovery ({body.get('reason', 'no reason given')})",
                record.seq,
                label,
                line_no,
            )


def _seq_ranges(seqs: list[int]) -> str:
    """``seq 5``, ``seq 5..7``, ``seq 5..7, 9`` for sorted sequence numbers."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return "seq " + ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in runs)


def find_announced_key(lines: Iterable[bytes]) -> tuple[SignedRecord, int] | None:
    """The first boot record that carries the public key it is signed with, and its line number."""
    for line_no, raw in enumerate(lines, start=1):
        try:
            signed = parse_line(raw)
        except RecordFormatError:
            continue
        if signed.record.type != "boot":
            continue
        announced = bytes.fromhex(str(signed.record.body["public_key"]))
        if fingerprint(announced) == signed.record.key and verify_signature(
            public_key_from_hex(announced.hex()), signed.payload, signed.signature
        ):
            return signed, line_no
    return None


def verify_lines(
    lines: Iterable[bytes], report: Report, public_key: Ed25519PublicKey | None,
    announced: tuple[SignedRecord, int] | None = None,
) -> ChainVerifier:
    """Run the chain checks over ledger lines (each ending in LF, except perhaps a torn last one)."""
    chain = ChainVerifier(report, public_key)
    if public_key is None and announced is not None:
        chain.adopt_announced_key(*announced)
    count = 0
    for count, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            chain.problem("incomplete record at the end of the ledger (torn tail not yet recovered)",
                          obj=f"{LEDGER_FILE} line {count}", line=count)
            break
        chain.feed_line(raw, count)
    if count == 0:
        chain.problem("empty: the ledger holds no records", obj=LEDGER_FILE)
    chain.finish()
    return chain


def check_files(chain: ChainVerifier, path_of: Callable[[str], Path], workers: int | None = None, *,
                excuse_purged: bool = False) -> None:
    """Hash every file the chain vouches for (in parallel, one read per file) and compare with its records.

    ``excuse_purged``: a file gone after its ``purge`` record is not missing (the device's own store only).
    Otherwise (an archive: the station's copy, or any copy made of it) every file a record names must be
    here, purged or not: the device's purge is exactly why this copy may be the only one left."""
    # A purged file that is still there (an interrupted purge on the device, or the station's archive copy,
    # whose ledger copy holds the device's purge records) is still evidence: it is checked like any other.
    kept = {name for name in chain.purged if path_of(name).exists()}
    for name in sorted(kept):
        purged = chain.purged[name]
        chain.note("file still present after its purge record (checked against its record)", purged.seq,
                   _label(name), purged.line, routine=True)
    gone = {name for name in chain.purged if name not in kept} if excuse_purged else set()
    live = {name: c for name, c in chain.segments.items() if name not in gone}
    _note_left_open(chain)
    names = sorted(set(live) | {c.name for c in chain.recoveries} | (set(chain.checkpoints) - gone))
    whole = {c.name: c for c in chain.recoveries} | live

    def hash_one(name: str) -> tuple[str, int, list[str | None], str | None]:
        ranges = [(c.offset, c.size) for c in chain.checkpoints.get(name, [])]
        try:
            digest, size, partial = sha256_file_ranges(path_of(name), ranges)
        except FileNotFoundError:
            return "", 0, [], "file missing"
        except OSError as exc:
            return "", 0, [], f"cannot read ({exc.strerror})"
        return digest, size, partial, None

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        outcomes = list(pool.map(hash_one, names))
    for name, (digest, size, partial, error) in zip(names, outcomes, strict=True):
        label, claim = _label(name), whole.get(name)
        anchor = claim if claim is not None else chain.checkpoints[name][0]
        if error is not None:
            if name in chain.purged and error == "file missing":
                error = (f"{ARCHIVE_PURGED_MISSING}; the device purged its own copy (purge seq "
                         f"{chain.purged_by[name]}), so this copy was the one left")
            chain.problem(error, anchor.seq, label, anchor.line)
            continue
        for checkpoint, got in zip(chain.checkpoints.get(name, []), partial, strict=True):
            end = checkpoint.offset + checkpoint.size
            if got is None:
                chain.problem(f"file ends at byte {size}, before the checkpointed byte {end}",
                              checkpoint.seq, label, checkpoint.line)
            elif got != checkpoint.sha256:
                chain.problem(f"checkpoint bytes {checkpoint.offset}..{end} sha256 mismatch",
                              checkpoint.seq, label, checkpoint.line)
        if claim is None:
            continue
        if size != claim.size:
            chain.problem(f"size {size} differs from the recorded {claim.size}", claim.seq, label, claim.line)
        elif digest != claim.sha256:
            chain.problem("sha256 mismatch", claim.seq, label, claim.line)
    chain.report.segments = len(live)
    chain.report.segment_bytes = sum(c.size for c in live.values())


def _note_left_open(chain: ChainVerifier) -> None:
    for name, first in ((name, marks[0]) for name, marks in chain.checkpoints.items() if name not in chain.segments):
        chain.problem("segment left open: checkpoints but no closing record (a crash not yet recovered)",
                      first.seq, _label(name), first.line)


def check_unclaimed(chain: ChainVerifier, layout: StoreLayout) -> None:
    """A file in segments/ or quarantine/ that no record vouches for is a problem (a cut-off ledger)."""
    claimed = set(chain.segments) | {c.name for c in chain.recoveries} | chain.unverified_files | set(chain.checkpoints)
    for folder in (SEGMENTS_DIR, QUARANTINE_DIR):
        directory = layout.root / folder
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            name = f"{folder}/{entry.name}"
            shown = _label(name) if folder == SEGMENTS_DIR else display_path(name)
            if entry.name.startswith(".") and ".tmp-" in entry.name:
                chain.note("unfinished write left by a crash (not evidence, no record)", obj=shown)
            elif name not in claimed:
                chain.problem("no record covers this file", obj=shown)


def verify_store(root: Path, public_key: Ed25519PublicKey | None = None, workers: int | None = None, *,
                 mode: str = "archive", station_key: Ed25519PublicKey | None = None) -> Report:
    """Verify a store folder as ``mode`` (agent.evidence.archive: ``archive``, the safe default, or
    ``device-store``). Raises StoreError when it cannot be read at all."""
    from agent.evidence.archive import DEVICE_STORE, check_archive  # it builds on this module

    layout = StoreLayout(root)
    name = display_path(root)
    if not root.exists():
        raise StoreError(f"{name}: no such folder")
    if not root.is_dir():
        raise StoreError(f"{name}: not a folder (a store is a folder holding {LEDGER_FILE})")
    if not layout.ledger_path.is_file():
        raise StoreError(f"{name}: no {LEDGER_FILE}: not a device store")
    report = Report(path=name)
    try:
        with open(layout.ledger_path, "rb") as handle:
            announced = None if public_key is not None else find_announced_key(handle)
            handle.seek(0)
            chain = verify_lines(handle, report, public_key, announced)
    except OSError as exc:
        raise StoreError(f"{display_path(layout.ledger_path)}: cannot read ({exc.strerror})") from None
    check_files(chain, lambda n: layout.root / n, workers, excuse_purged=mode == DEVICE_STORE)
    check_unclaimed(chain, layout)
    check_archive(chain, root, mode, station_key)
    report.sort()
    return report
