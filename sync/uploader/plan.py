"""What to send: pure decisions on ledger bytes and records (no IO, no clock, no MQTT).

Rules (docs/sync-protocol.md, "A session, step by step"):

- Only complete lines are sent (LF-terminated); a partial last line is being written by the agent and is
  left for the next pass.
- Lines are sent byte-for-byte in ledger order. A line that does not parse has no sequence number, so
  nothing after it can be placed: the uploader sends the lines before it, then that line once on its own
  (so the station records the problem), and nothing after it. The station cannot verify past it anyway;
  ``bodycam-verify`` on the device names it.
- Files are offered once the records vouching for them are acknowledged: flagged long-term first, then
  oldest (by the sequence number of their record) first; files already acknowledged or purged are skipped.

Which footage is long-term (``agent.evidence.custody.long_term_files``) and whether an acknowledgement is
worth a receipt (``agent.evidence.custody.receipt_news``) are the custody's rules; they are not repeated here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.errors import RecordFormatError
from agent.evidence.record import FILE_RECORD_TYPES, SignedRecord, parse_line


@dataclass(frozen=True)
class LedgerLine:
    """One complete, parsable ledger line: its sequence number, link, exact bytes (with LF) and record."""

    seq: int
    link: str
    raw: bytes
    record: SignedRecord


@dataclass(frozen=True)
class BadLine:
    """The first complete line that cannot be placed in the chain: 1-based line number, bytes, reason."""

    number: int
    raw: bytes
    reason: str


@dataclass(frozen=True)
class ParsedLines:
    lines: list[LedgerLine]
    bad: BadLine | None


@dataclass(frozen=True)
class Offer:
    """A file to offer: its store-relative name, hash and size, the record vouching for it, its class."""

    file: str
    sha256: str
    size: int
    seq: int
    long_term: bool = False


def read_complete_lines(data: bytes) -> list[bytes]:
    """The LF-terminated lines of ``data``, each with its LF; an unterminated tail is left out.

    Splits on LF only (not ``bytes.splitlines``): a stray CR inside a damaged line must not make two
    lines out of one.
    """
    end = data.rfind(b"\n")
    if end < 0:
        return []
    return [line + b"\n" for line in data[:end].split(b"\n")]


def parse_lines(raw_lines: Sequence[bytes], device: str, first_seq: int = 1,
                first_number: int = 1) -> ParsedLines:
    """Parse consecutive ledger lines, expecting sequence numbers from ``first_seq`` and this ``device``.

    Stops at the first line that does not parse, names another device or breaks the numbering: the
    lines before it are returned with it as ``bad`` (``first_number`` is the ledger line number of
    ``raw_lines[0]``, for messages).
    """
    lines: list[LedgerLine] = []
    for index, raw in enumerate(raw_lines):
        expected = first_seq + index
        reason: str | None = None
        try:
            signed = parse_line(raw)
        except RecordFormatError as exc:
            reason = str(exc)
        else:
            if signed.seq != expected:
                reason = f"seq {signed.seq} where seq {expected} was expected"
            elif signed.record.device != device:
                reason = f"seq {signed.seq} names device {signed.record.device!r}, not {device!r}"
        if reason is not None:
            return ParsedLines(lines, BadLine(first_number + index, raw, reason))
        lines.append(LedgerLine(signed.seq, signed.link, raw, signed))
    return ParsedLines(lines, None)


def records_after(lines: Sequence[LedgerLine], watermark_seq: int) -> list[LedgerLine]:
    """The lines after the station's watermark, in order."""
    return [line for line in lines if line.seq > watermark_seq]


def batches(lines: Sequence[bytes], max_bytes: int) -> list[bytes]:
    """Consecutive lines packed into messages of at most ``max_bytes``; a longer line travels alone."""
    if max_bytes < 1:
        raise ValueError(f"batch size {max_bytes}: must be positive")
    out: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) > max_bytes:
            out.append(b"".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        out.append(b"".join(current))
    return out


def _receipted_hashes(record: SignedRecord) -> set[str]:
    """The file hashes a receipt record names (its ``files``: hashes, or objects carrying ``sha256``)."""
    found: set[str] = set()
    files = record.record.body.get("files", [])
    for item in files if isinstance(files, list) else []:
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, dict) and isinstance(item.get("sha256"), str):
            found.add(item["sha256"])
    return found


def receipted_hashes(records: Iterable[SignedRecord]) -> set[str]:
    """Every file hash named by a receipt record."""
    found: set[str] = set()
    for signed in records:
        if signed.record.type == "receipt":
            found |= _receipted_hashes(signed)
    return found


def purged_files(records: Iterable[SignedRecord]) -> set[str]:
    return {str(s.record.body["file"]) for s in records if s.record.type == "purge"}


def vouched_files(records: Iterable[SignedRecord]) -> list[Offer]:
    """Every file a segment, recovered or recovery record vouches for (the first record per name)."""
    offers: list[Offer] = []
    seen: set[str] = set()
    for signed in records:
        body, rtype = signed.record.body, signed.record.type
        if rtype not in FILE_RECORD_TYPES:
            continue
        name = str(body["file"])
        if name in seen:
            continue
        seen.add(name)
        size = body["length"] if rtype == "recovery" else body["size"]
        offers.append(Offer(name, str(body["sha256"]), int(size), signed.seq))
    return offers


def files_to_offer(records: Sequence[SignedRecord], acked_sha256: set[str], long_term: set[str],
                   up_to_seq: int | None = None) -> list[Offer]:
    """The files to offer, in order: long-term first, then by the seq of their record (oldest first).

    Leaves out files whose hash a receipt record or ``acked_sha256`` (acks received this run) names, files
    with a purge record, and, with ``up_to_seq``, files whose record the station has not acknowledged.
    """
    done = receipted_hashes(records) | acked_sha256
    purged = purged_files(records)
    chosen = [
        Offer(o.file, o.sha256, o.size, o.seq, o.file in long_term)
        for o in vouched_files(records)
        if o.sha256 not in done and o.file not in purged and (up_to_seq is None or o.seq <= up_to_seq)
    ]
    return sorted(chosen, key=lambda o: (not o.long_term, o.seq))


# ---------------------------------------------------------------- byte ranges


def normalize_ranges(have: Iterable[Sequence[int]], size: int) -> list[tuple[int, int]]:
    """``[offset, length]`` ranges clipped to ``[0, size)``, sorted and merged (touching ranges join)."""
    spans = sorted((max(0, r[0]), min(size, r[0] + r[1])) for r in have if len(r) == 2 and r[1] > 0)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return [(start, end - start) for start, end in merged]


def covered(have: Sequence[tuple[int, int]], offset: int, length: int) -> bool:
    """Whether normalized ranges ``have`` hold all of ``[offset, offset + length)``."""
    return any(start <= offset and offset + length <= start + span for start, span in have)


def covered_bytes(have: Sequence[tuple[int, int]]) -> int:
    return sum(span for _, span in have)


def missing_ranges(size: int, have: Sequence[Sequence[int]], chunk: int) -> list[tuple[int, int]]:
    """``(offset, length)`` chunks of at most ``chunk`` bytes covering exactly what ``have`` lacks.

    ``have`` may overlap, touch, be unsorted or reach past the end. An empty file is one empty chunk
    (``(0, 0)``): the station needs a chunk to learn the file is complete.
    """
    if chunk < 1:
        raise ValueError(f"chunk size {chunk}: must be positive")
    if size == 0:
        return [(0, 0)]
    out: list[tuple[int, int]] = []
    position = 0
    for start, span in [*normalize_ranges(have, size), (size, 0)]:
        while position < start:
            length = min(chunk, start - position)
            out.append((position, length))
            position += length
        position = max(position, start + span)
    return out
