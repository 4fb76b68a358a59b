"""The station's storage ports (sync/station/ports.py) in a folder: write-once content-addressed objects,
and per device a store layout.

    DATA/objects/sha256/<2 hex>/<64 hex>      every file's bytes, once, read-only (0444), never overwritten
    DATA/devices/<D>/ledger.jsonl            the device's verified records, byte-identical lines, in order
    DATA/devices/<D>/segments/<name>         hard links to the objects, so DATA/devices/<D> is a store
    DATA/devices/<D>/quarantine/<name>       that ``bodycam-verify --pubkey`` checks as an archive
    DATA/devices/<D>/station-acks.jsonl      every ack the station signed for D, appended before it is sent
    DATA/staging/<D>/<sha256>.part           a file being received, written chunk by chunk at its offsets
    DATA/ledger-pieces/<D>/<n>-keep-<N>-<h>.jsonl  a ledger copy set aside whole at start-up (the n-th):
                                             its first N bytes are the records the index knows, the rest
                                             its marked tail

Every method is durable on return or raises (OSError, StoreError); after a failed write or fsync the data is
treated as lost, never retried and trusted. Files are read-only and their folders closed for writing
between the receiver's own changes (sync/station/sealing.py).

A ledger copy is never truncated: :meth:`FilesystemEvidenceStore.set_aside_tail` keeps the whole file (its
inode, by a hard link) under ``ledger-pieces/`` with the mark in its name, and puts in its place a new
``ledger.jsonl`` holding the first N bytes, so that ``devices/<D>`` stays a store that ``bodycam-verify``
checks (docs/station-archive.md, "Storage ports").
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO

from agent.errors import StoreError
from agent.evidence.archive import STATION_ACKS_FILE
from agent.evidence.encoding import is_hex64
from agent.evidence.fsutil import display_path, fsync_dir, sha256_file, write_file_durably
from agent.evidence.record import DEVICE_ID_PATTERN
from agent.evidence.store import StoreLayout
from sync.station.ports import EvidenceStore, LedgerCopies, ObjectStore, Placement, Staging
from sync.station.sealing import READ_ONLY_FILE, close_appended, open_for_append, opened_dir, seal_dir

__all__ = ["EMPTY_SHA256", "EvidenceStore", "FilesystemEvidenceStore", "LedgerCopies", "ObjectStore", "Placement",
           "Staging"]

_sync_data = getattr(os, "fdatasync", os.fsync)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_PIECE_NAME = re.compile(r"[0-9]{4,}-keep-([0-9]+)-[0-9a-f]{16}\.jsonl")


class FilesystemEvidenceStore:
    """The evidence store in a folder (DATA): see the module docstring for the layout."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self._lock_fd = -1
        self._unsynced: set[Path] = set()  # staging files written since the last sync_partials

    # --- paths ---------------------------------------------------------------------------------------------

    def device_root(self, device: str) -> Path:
        if not DEVICE_ID_PATTERN.match(device):
            raise StoreError(f"device id {device!r} is not allowed in the store")
        return self.root / "devices" / device

    def object_path(self, sha256: str) -> Path:
        if not is_hex64(sha256):
            raise StoreError(f"object {sha256[:70]!r}: not a SHA-256 in lowercase hex")
        return self.root / "objects" / "sha256" / sha256[:2] / sha256

    def _staging(self, device: str, sha256: str) -> Path:
        self.device_root(device)  # validates the id
        if not is_hex64(sha256):
            raise StoreError(f"device {device}: staging name {sha256[:70]!r} is not a SHA-256")
        return self.root / "staging" / device / f"{sha256}.part"

    def _ledger(self, device: str) -> Path:
        return StoreLayout(self.device_root(device)).ledger_path

    def _make_dirs(self, path: Path) -> None:
        """Create ``path`` and its missing parents, each creation made durable in its parent."""
        missing = []
        for folder in (path, *path.parents):
            if folder.exists():
                break
            missing.append(folder)
        for folder in reversed(missing):
            folder.mkdir(mode=0o750, exist_ok=True)
            fsync_dir(folder.parent)

    def lock(self) -> None:
        """Take the data folder for this process (one receiver per folder); StoreError when another has it."""
        self._make_dirs(self.root)
        fd = os.open(self.root / "receiver.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"station data {display_path(self.root)}: in use by another receiver") from None
            raise StoreError(f"station data {display_path(self.root)}: cannot lock ({exc.strerror})") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    # --- ledger copies ---------------------------------------------------------------------------------------

    def _layout(self, device: str) -> StoreLayout:
        """The device's layout, its folders created (durably) and closed for writing the first time."""
        layout = StoreLayout(self.device_root(device))
        if not (layout.segments_dir.is_dir() and layout.quarantine_dir.is_dir()):
            if layout.root.exists():
                with opened_dir(layout.root):
                    layout.create()
            else:
                self._make_dirs(layout.root.parent)
                layout.create()
            for folder in (layout.segments_dir, layout.quarantine_dir, layout.root):
                seal_dir(folder)
        return layout

    def _append(self, layout: StoreLayout, path: Path, data: bytes) -> int:
        """Append ``data`` to ``path`` in the layout durably (read-only again after); the offset it starts at."""
        created = not path.exists()
        with opened_dir(layout.root) if created else nullcontext():
            fd = open_for_append(path)
        try:
            if created:
                fsync_dir(layout.root)
            offset = os.fstat(fd).st_size  # one writer (the receiver holds the data folder's lock)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            _sync_data(fd)
        finally:
            close_appended(fd)
        return offset

    def append_records(self, device: str, lines: Sequence[bytes]) -> int:
        layout = self._layout(device)
        return self._append(layout, layout.ledger_path, b"".join(lines))

    def append_acks(self, device: str, lines: Sequence[bytes]) -> None:
        layout = self._layout(device)
        self._append(layout, layout.root / STATION_ACKS_FILE, b"".join(lines))

    def read_ack_log(self, device: str) -> bytes:
        try:
            return (self.device_root(device) / STATION_ACKS_FILE).read_bytes()
        except FileNotFoundError:
            return b""

    def read_ledger(self, device: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._ledger(device)
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read() if length is None else handle.read(length)
        except FileNotFoundError:
            return b""

    def ledger_size(self, device: str) -> int:
        try:
            return self._ledger(device).stat().st_size
        except FileNotFoundError:
            return 0

    def ledger_name(self, device: str) -> str:
        return display_path(self.device_root(device))

    def set_aside_tail(self, device: str, size: int) -> str:
        layout = self._layout(device)
        path = layout.ledger_path
        with open(path, "rb") as handle:
            whole = handle.read()
        if len(whole) < size:
            raise StoreError(f"device {device}: ledger copy holds {len(whole)} bytes, fewer than the {size} to keep")
        folder = self.root / "ledger-pieces" / device
        self._make_dirs(folder)
        pieces = self._pieces(device)
        # Already there when a crash came after the link, before the new copy: the same inode, linked once.
        if not any(os.path.samefile(piece, path) for piece, _ in pieces):
            piece = folder / f"{len(pieces) + 1:04d}-keep-{size}-{hashlib.sha256(whole).hexdigest()[:16]}.jsonl"
            os.link(path, piece)
            fsync_dir(folder)
            pieces.append((piece, size))
        with opened_dir(layout.root):
            # A new file renamed over the name (a crash leaves the old one or the new, each whole); the old
            # inode lives on as the piece: nothing of it is cut.
            write_file_durably(path, whole[:size], mode=READ_ONLY_FILE)
        return display_path(pieces[-1][0])

    def set_aside_tails(self, device: str) -> list[bytes]:
        tails = []
        for piece, keep in self._pieces(device):
            with open(piece, "rb") as handle:
                handle.seek(keep)
                tails.append(handle.read())
        return tails

    def _pieces(self, device: str) -> list[tuple[Path, int]]:
        """The device's set-aside ledger pieces, oldest first, each with the bytes of it the view keeps."""
        folder = self.root / "ledger-pieces" / self.device_root(device).name
        found = []
        for piece in sorted(folder.glob("*-keep-*.jsonl")):
            match = _PIECE_NAME.fullmatch(piece.name)
            if match is None:
                raise StoreError(f"ledger piece {display_path(piece)}: not a name this store writes")
            found.append((piece, int(match.group(1))))
        return found

    # --- staging ---------------------------------------------------------------------------------------------

    def write_partial(self, device: str, sha256: str, offset: int, data: bytes) -> None:
        path = self._staging(device, sha256)
        created = not path.exists()
        if created:
            self._make_dirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if created:
                fsync_dir(path.parent)  # the index will say bytes are here: the file must survive a power cut
            view, position = memoryview(data), offset
            while view:
                written = os.pwrite(fd, view, position)
                view, position = view[written:], position + written
        finally:
            os.close(fd)
        self._unsynced.add(path)

    def sync_partials(self) -> None:
        # One fdatasync per staged file per batch, not per chunk: the receiver commits the index (which
        # says the ranges are held) only after this returns.
        while self._unsynced:
            path = self._unsynced.pop()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # completed (its object was fsynced) or discarded since
            try:
                _sync_data(fd)
            finally:
                os.close(fd)

    def partial_digest(self, device: str, sha256: str) -> tuple[str, int]:
        path = self._staging(device, sha256)
        if not path.exists():
            return EMPTY_SHA256, 0
        return sha256_file(path)

    def discard_partial(self, device: str, sha256: str) -> None:
        path = self._staging(device, sha256)
        if path.exists():
            path.unlink()
            fsync_dir(path.parent)

    def commit_partial(self, device: str, sha256: str) -> None:
        staged = self._staging(device, sha256)
        target = self.object_path(sha256)
        if not staged.exists():  # an empty file has no chunks
            self._make_dirs(staged.parent)
            write_file_durably(staged, b"", mode=0o600, exclusive=True)
        fd = os.open(staged, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o444)
            os.fsync(fd)  # the bytes were fdatasync'ed chunk by chunk; this makes the mode durable too
        finally:
            os.close(fd)
        self._make_dirs(target.parent)
        try:
            # link() refuses an existing target where rename() would replace it: an object is never rewritten.
            with opened_dir(target.parent):
                os.link(staged, target)
        except FileExistsError:
            self._check_existing(target, staged.stat().st_size)
        fsync_dir(target.parent)
        staged.unlink()
        fsync_dir(staged.parent)

    def has_object(self, sha256: str) -> bool:
        return self.object_path(sha256).is_file()

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def object_size(self, sha256: str) -> int:
        return self.object_path(sha256).stat().st_size

    def open_object(self, sha256: str) -> BinaryIO:
        return open(self.object_path(sha256), "rb")

    def put_object(self, sha256: str, source: BinaryIO) -> None:
        target = self.object_path(sha256)
        folder = self.root / "staging" / ".put"
        self._make_dirs(folder)
        temp = folder / f"{sha256}.part"
        temp.unlink(missing_ok=True)
        digest, size = hashlib.sha256(), 0
        with open(temp, "xb") as out:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fchmod(out.fileno(), READ_ONLY_FILE)
            os.fsync(out.fileno())
        try:
            if digest.hexdigest() != sha256:
                raise StoreError(f"object {sha256[:16]}...: the bytes put hash to {digest.hexdigest()[:16]}...: "
                                 "not stored")
            self._make_dirs(target.parent)
            try:
                with opened_dir(target.parent):
                    os.link(temp, target)
            except FileExistsError:
                self._check_existing(target, size)
            fsync_dir(target.parent)
        finally:
            temp.unlink()
            fsync_dir(folder)

    def placement(self, device: str, name: str, sha256: str) -> Placement:
        named, obj = self.device_root(device) / name, self.object_path(sha256)
        has_obj, has_named = obj.is_file(), named.is_file()
        if not has_named:
            return Placement.NAME_MISSING if has_obj else Placement.BOTH_MISSING
        if not has_obj:
            return Placement.OBJECT_MISSING
        return Placement.OK if os.path.samefile(named, obj) else Placement.REPLACED

    def open_placed(self, device: str, name: str) -> BinaryIO:
        return open(self.device_root(device) / name, "rb")

    def place_file(self, device: str, name: str, sha256: str) -> None:
        layout = self._layout(device)
        path, target = layout.path_of(name), self.object_path(sha256)
        try:
            with opened_dir(path.parent):
                os.link(target, path)
        except FileExistsError:
            if not os.path.samefile(path, target):
                raise StoreError(f"device {device}: {name} exists and is not object {sha256[:16]}...: "
                                 "not replaced") from None
        fsync_dir(path.parent)

    # --- helpers ---------------------------------------------------------------------------------------------

    @staticmethod
    def _check_existing(target: Path, size: int) -> None:
        existing = target.stat().st_size
        if existing != size:
            raise StoreError(f"object {display_path(target)}: exists with {existing} bytes, not {size}: not replaced")


def open_store(data_dir: Path) -> EvidenceStore:
    """The station's evidence store (the folder backend; issue 19 adds an object store's), not yet locked."""
    return FilesystemEvidenceStore(data_dir)
