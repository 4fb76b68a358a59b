"""The station's storage ports, one per concern, each shaped so that a folder on a POSIX filesystem, an
object store with object lock and PostgreSQL can implement it without tricks (docs/station-archive.md,
"Storage ports").

    Staging       local disk only: a file being received, written chunk by chunk at its offsets (random
                  writes), durable after :meth:`Staging.sync_partials`; the finished bytes become an object
    ObjectStore   write-once objects named by their SHA-256: put, has, size, open for reading, and the names
                  a device's layout gives them; a second put of other bytes under a name is refused
    LedgerCopies  per device an append-only ledger copy and ack log: bytes are only ever added; a tail the
                  index does not know (a crash between append and index) is set aside by a mark, not cut

Every method is durable on return or raises (OSError, StoreError); after a failed write or fsync the data
is treated as lost, never retried and trusted. :class:`EvidenceStore` is the three together, with the lock
that makes one receiver the only writer of a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import BinaryIO, Protocol


class Placement(Enum):
    """How a device's layout names a stored object (what the scrub checks)."""

    OK = "ok"
    NAME_MISSING = "name-missing"  # the object is there, the layout no longer names it
    OBJECT_MISSING = "object-missing"  # the layout names a file, the object is gone
    BOTH_MISSING = "both-missing"
    REPLACED = "replaced"  # the layout names other bytes than the object's


class Staging(Protocol):
    def write_partial(self, device: str, sha256: str, offset: int, data: bytes) -> None:
        """Write staged bytes at ``offset``; they are durable only after :meth:`sync_partials`."""
        ...

    def sync_partials(self) -> None:
        """Make every staged byte written since the last call durable (before their ranges are indexed)."""
        ...

    def partial_digest(self, device: str, sha256: str) -> tuple[str, int]:
        """SHA-256 and size of the bytes staged for a file (of nothing when none were)."""
        ...

    def discard_partial(self, device: str, sha256: str) -> None: ...

    def commit_partial(self, device: str, sha256: str) -> None:
        """Put the staged bytes as the object ``sha256`` (write-once; an existing object is reused) and
        discard them from staging."""
        ...

    def free_bytes(self) -> int:
        """Space left for evidence where this store writes."""
        ...


class ObjectStore(Protocol):
    def put_object(self, sha256: str, source: BinaryIO) -> None:
        """Store the bytes read from ``source`` as object ``sha256``. Write-once: the same bytes again are
        accepted, other bytes refused (StoreError) and the stored object left as it was."""
        ...

    def has_object(self, sha256: str) -> bool: ...

    def object_size(self, sha256: str) -> int: ...

    def open_object(self, sha256: str) -> BinaryIO:
        """The object's bytes for reading (OSError or StoreError when it cannot be read)."""
        ...

    def place_file(self, device: str, name: str, sha256: str) -> None:
        """Name the object in the device's layout (``segments/...``, ``quarantine/...``); idempotent."""
        ...

    def placement(self, device: str, name: str, sha256: str) -> Placement:
        """Whether the device's layout still names the object ``sha256`` under ``name``."""
        ...

    def open_placed(self, device: str, name: str) -> BinaryIO:
        """The bytes the device's layout names ``name`` (what a copy of the layout would carry)."""
        ...


class LedgerCopies(Protocol):
    def append_records(self, device: str, lines: Sequence[bytes]) -> int:
        """Append complete ledger lines to the device's ledger copy durably; return the offset of the first."""
        ...

    def read_ledger(self, device: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of the ledger copy as readers see it: its pieces in order, each without its marked tail.
        Offsets (``RecordRow.offset``) count in this view."""
        ...

    def ledger_size(self, device: str) -> int: ...

    def set_aside_tail(self, device: str, size: int) -> str:
        """Mark the bytes past ``size`` as set aside (kept, never deleted, no longer read); the next append
        continues at ``size`` in the view. Returns where they are kept."""
        ...

    def set_aside_tails(self, device: str) -> list[bytes]:
        """The tails set aside so far, oldest first (kept: what was appended is never lost)."""
        ...

    def ledger_name(self, device: str) -> str:
        """How to name the device's ledger copy in a message."""
        ...

    def append_acks(self, device: str, lines: Sequence[bytes]) -> None:
        """Append signed ack lines to the device's ack log durably (before they are sent)."""
        ...

    def read_ack_log(self, device: str) -> bytes: ...


class EvidenceStore(Staging, ObjectStore, LedgerCopies, Protocol):
    """The receiver's store: the three ports, and the lock that makes it the only writer."""

    def lock(self) -> None:
        """Take the store for this process (one receiver per store); StoreError when another has it."""
        ...

    def close(self) -> None: ...
