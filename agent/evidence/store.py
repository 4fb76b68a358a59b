"""The device store's layout on disk.

    STORE/ledger.jsonl            the append-only ledger, one signed record per line
    STORE/segments/NNNNNN.<ext>   segment files, read-only once their record is written
    STORE/quarantine/             torn ledger tails moved aside at recovery (never deleted)

Anything else in STORE (for example the simulator's ``identity/`` folder) is not evidence and is ignored
by the verifier and the uploader.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.errors import RecordFormatError, StoreError
from agent.evidence.fsutil import display_path, fsync_dir, write_file_durably
from agent.evidence.record import STORE_FILE_PATTERN, SignedRecord, parse_line

LEDGER_FILE = "ledger.jsonl"
SEGMENTS_DIR = "segments"
QUARANTINE_DIR = "quarantine"
_SEGMENT_NAME = re.compile(r"(\d{6})\.[A-Za-z0-9]+\Z")


def label_of(name: str) -> str:
    """How a stored file is named in messages: ``segment 000041.mp4``, ``quarantine/ledger-torn-...``."""
    folder, _, base = name.partition("/")
    return f"segment {base}" if folder == SEGMENTS_DIR else name


@dataclass(frozen=True)
class StoredFile:
    name: str  # relative to the store root, e.g. "segments/000041.mp4"
    sha256: str
    size: int


@dataclass(frozen=True)
class StoreLayout:
    root: Path

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER_FILE

    @property
    def segments_dir(self) -> Path:
        return self.root / SEGMENTS_DIR

    @property
    def quarantine_dir(self) -> Path:
        return self.root / QUARANTINE_DIR

    def path_of(self, name: str) -> Path:
        """The path of a store-relative file name taken from a record; refuses names outside the store."""
        if not STORE_FILE_PATTERN.match(name):
            raise StoreError(f"store {display_path(self.root)}: file name {name!r} is not allowed")
        return self.root / name

    def create(self) -> None:
        """Create the store's folders (durably) if they are missing."""
        try:
            created = not self.root.exists()
            self.root.mkdir(parents=True, exist_ok=True)
            if created:
                fsync_dir(self.root.parent)
            for sub in (self.segments_dir, self.quarantine_dir):
                if not sub.exists():
                    sub.mkdir()
                    fsync_dir(self.root)
        except OSError as exc:
            raise StoreError(f"store {display_path(self.root)}: cannot create ({exc.strerror})") from None

    def next_segment_index(self) -> int:
        """Segment numbering continues across runs into the same store."""
        if not self.segments_dir.is_dir():
            return 1
        return max((segment_index(entry.name) for entry in self.segments_dir.iterdir()), default=0) + 1

    def write_segment(self, file_name: str, data: bytes) -> StoredFile:
        """Write a whole segment file durably and read-only; return what its record must carry."""
        name = f"{SEGMENTS_DIR}/{file_name}"
        path = self.path_of(name)
        write_file_durably(path, data, mode=0o444, exclusive=True)
        return StoredFile(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def segment_file_name(index: int, extension: str) -> str:
    """Segment files are numbered from 1 with six digits: 000041.mp4."""
    return f"{index:06d}.{extension}"


def segment_index(name: str) -> int:
    """The number of a segment file (``000041.ts`` or ``segments/000041.ts``); 0 for other names."""
    match = _SEGMENT_NAME.match(name.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else 0


def read_records(store: Path) -> list[SignedRecord]:
    """The records of a store's ledger that parse, in ledger order.

    For readers that act on the content (the workflow's replay, the timeline): damaged lines are skipped
    here and reported by the verifier, so one bad record never stops a device from starting.
    """
    path = StoreLayout(store).ledger_path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"ledger {display_path(path)}: cannot be read ({exc.strerror})") from None
    return parse_records(data.splitlines(keepends=True))


def parse_records(lines: Iterable[bytes]) -> list[SignedRecord]:
    """The ledger lines that parse as records, in order (damaged ones skipped, as :func:`read_records`)."""
    records = []
    for line in lines:
        try:
            records.append(parse_line(line))
        except RecordFormatError:
            continue
    return records


@contextmanager
def ledger_for_reading(layout: StoreLayout) -> Iterator[int]:
    """A read-only descriptor of the ledger, for the incremental follower (agent/evidence/follower.py); an
    OSError opening it or in the block is a StoreError naming the ledger."""
    path = layout.ledger_path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(f"ledger {display_path(path)}: cannot open for reading ({exc.strerror})") from None
    try:
        yield fd
    except OSError as exc:
        raise StoreError(f"ledger {display_path(path)}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)


def pread_all(fd: int, offset: int, length: int, block: int = 4 * 1024 * 1024) -> bytes:
    """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file), read ``block`` bytes at a time."""
    parts: list[bytes] = []
    while length > 0:
        part = os.pread(fd, min(length, block), offset)
        if not part:
            break
        parts.append(part)
        offset += len(part)
        length -= len(part)
    return b"".join(parts)
