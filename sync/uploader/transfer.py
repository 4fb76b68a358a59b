"""Sending files: offers, the station's have-ranges, and a window of chunks in flight across files.

For each file (in the order given: long-term first, then oldest) the uploader publishes an offer; the
station answers with what it holds (``stored``, or the byte ranges it has in staging). Only the missing
ranges are read (``os.pread``) and sent as chunks. At most ``window`` chunks are unconfirmed at a time; the
station's status after each chunk confirms every chunk its ranges now cover, which slides the window.

Pipelining: the next file is offered as soon as what is left to send of the open ones fits in the window
(those chunks are then in flight when its answer comes), so the window does not run dry between files;
no file waits for its ack before the next one starts. Acks are awaited once, after the last file (see session.py).

Reading and hashing a chunk (``os.pread``, SHA-256) happen on a reader thread a few chunks ahead of the
publishing: both release the GIL, so they overlap with paho's TLS writes instead of adding to them.

A status that shows fewer bytes than the station had confirmed means it discarded its staging copy (the
bytes did not match the record): the file is dropped from this session and offered again at a later one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from agent.errors import StoreError
from agent.evidence.fsutil import display_path
from agent.evidence.store import StoreLayout
from sync.protocol import ChunkHeader, FileOffer, FileStatus, encode_chunk
from sync.uploader.plan import Offer, covered, covered_bytes, missing_ranges, normalize_ranges

log = logging.getLogger(__name__)

OFFERED, SENDING, COMPLETE, FAILED = "offered", "sending", "complete", "failed"
PREFETCH_CHUNKS = 4  # chunks read and hashed ahead of publishing (memory: this many chunks)


@dataclass
class TransferStats:
    files_offered: int = 0
    files_stored: int = 0  # the station already had them (or finished them this session)
    chunks_sent: int = 0
    bytes_sent: int = 0
    files_failed: int = 0


@dataclass
class _File:
    offer: Offer
    fd: int = -1
    state: str = OFFERED
    todo: deque[tuple[int, int]] = field(default_factory=deque)
    inflight: dict[int, int] = field(default_factory=dict)  # offset -> length
    confirmed: int = 0  # the most bytes the station has said it holds
    prepared: int = 0  # chunks taken from todo, being read or waiting to be published


@dataclass(frozen=True)
class _Prepared:
    item: _File
    offset: int
    length: int
    payload: Future[bytes]


def _read_chunk(fd: int, offer: Offer, offset: int, length: int) -> bytes:
    """The chunk message for ``[offset, offset + length)`` of an open file (runs on the reader thread)."""
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise StoreError(f"ends before byte {offset + length} though its record says {offer.size} bytes")
    header = ChunkHeader(offer.file, offer.sha256, offer.size, offset, length, hashlib.sha256(data).hexdigest())
    return encode_chunk(header, data)


class FilePipeline:
    """Drives the offers and chunks of one session. ``publish(kind, payload)`` sends on ``up/<kind>``;
    ``wait()`` handles the next station message (calling ``on_status``) or raises to end the session."""

    def __init__(self, *, layout: StoreLayout, session: str, offers: list[Offer], chunk_bytes: int, window: int,
                 publish: Callable[[str, bytes], None], wait: Callable[[], None]) -> None:
        self.layout = layout
        self.session = session
        self.chunk_bytes = chunk_bytes
        self.window = max(1, window)
        self.publish = publish
        self.wait = wait
        self.stats = TransferStats()
        self._pending = deque(offers)
        self._open: list[_File] = []
        self.files: list[_File] = []  # every file offered this session, for the ack wait
        self.failed: dict[str, str] = {}  # file -> why it could not be sent this session
        self._ready: deque[_Prepared] = deque()

    def run(self) -> None:
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bodycam-sync-read")
        try:
            while True:
                self._fill_window()
                if not self._pending and all(f.state in (COMPLETE, FAILED) for f in self._open):
                    return
                if self._pending and self._room_for_next_offer():
                    self._offer_next()
                    continue
                self.wait()
                self._retire()
        finally:
            self._drop_prepared(None)
            self._reader.shutdown(wait=True)
            for f in self._open:
                self._close(f)

    def _room_for_next_offer(self) -> bool:
        """Offer the next file once what is left to send of the open ones fits in the window: its answer
        then arrives while those chunks are in flight, so the window does not run dry between files."""
        if any(f.state == OFFERED for f in self._open):
            return False  # one offer awaiting its answer at a time keeps the order long-term, then oldest
        return sum(len(f.todo) + f.prepared for f in self._open) < self.window

    def complete_files(self) -> list[Offer]:
        """Files whose bytes the station holds in full (stored, or verifying): their acks are due."""
        return [f.offer for f in self.files if f.state == COMPLETE]

    @property
    def inflight(self) -> int:
        return sum(len(f.inflight) for f in self._open)

    def _offer_next(self) -> None:
        offer = self._pending.popleft()
        item = _File(offer)
        try:
            item.fd = os.open(self.layout.path_of(offer.file), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            # Purged meanwhile, or damaged storage: the station cannot get it from here; bodycam-verify says more.
            reason = f"cannot be read ({exc.strerror or exc})"
            log.error("file %s (seq %d): %s; not offered", offer.file, offer.seq, reason)
            self.failed[offer.file] = reason
            self.stats.files_failed += 1
            return
        self._open.append(item)
        self.files.append(item)
        self.publish("file", FileOffer(self.session, offer.file, offer.sha256, offer.size).encode())
        self.stats.files_offered += 1

    def _fill_window(self) -> None:
        while True:
            if self._pending and self._room_for_next_offer():
                # Before the chunk, not after the window is full: the station answers in order, so an offer
                # queued behind a whole window of chunks would leave the window empty while it waits.
                self._offer_next()
                continue
            self._prefetch()
            if self.inflight >= self.window or not self._ready:
                return
            prepared = self._ready.popleft()
            item = prepared.item
            item.prepared -= 1
            try:
                payload = prepared.payload.result()
            except OSError as exc:
                self._fail(item, f"cannot be read at offset {prepared.offset} ({exc.strerror})")
                continue
            except StoreError as exc:
                self._fail(item, str(exc))
                continue
            self.publish("chunk", payload)
            item.inflight[prepared.offset] = prepared.length
            self.stats.chunks_sent += 1
            self.stats.bytes_sent += prepared.length

    def _prefetch(self) -> None:
        while len(self._ready) < PREFETCH_CHUNKS:
            item = next((f for f in self._open if f.state == SENDING and f.todo), None)
            if item is None:
                return
            offset, length = item.todo.popleft()
            item.prepared += 1
            future = self._reader.submit(_read_chunk, item.fd, item.offer, offset, length)
            self._ready.append(_Prepared(item, offset, length, future))

    def _drop_prepared(self, item: _File | None) -> None:
        """Forget the chunks prepared for ``item`` (all when None), once no read of them is running: its
        descriptor may be closed next, and a read must never meet a reused descriptor number."""
        dropped = [p for p in self._ready if item is None or p.item is item]
        if not dropped:
            return
        self._ready = deque(p for p in self._ready if not (item is None or p.item is item))
        wait([p.payload for p in dropped])  # their results no longer matter: the file is done or failed
        for prepared in dropped:
            prepared.item.prepared -= 1

    def on_status(self, status: FileStatus) -> None:
        if status.session != self.session:
            return  # an answer to an earlier session: its ranges may be stale
        item = next((f for f in self._open if f.offer.file == status.file and f.offer.sha256 == status.sha256), None)
        if item is None or item.state in (COMPLETE, FAILED):
            return
        size = item.offer.size
        if status.stored:
            item.state = COMPLETE
            item.todo.clear()
            self._drop_prepared(item)
            item.inflight.clear()
            self.stats.files_stored += 1
            return
        have = normalize_ranges(status.have, size)
        held = covered_bytes(have)
        if item.state == OFFERED:
            item.todo = deque(missing_ranges(size, have, self.chunk_bytes) if held < size or size == 0 else [])
            item.state = SENDING if item.todo else COMPLETE
            item.confirmed = held
            return
        if held < item.confirmed:
            log.warning("station dropped its staging copy of %s (%d of %d bytes held before, %d now): the bytes did "
                        "not match? offered again at a later session", item.offer.file, item.confirmed, size, held)
            self._fail(item, None)
            self.failed[item.offer.file] = "the station dropped its staging copy (bytes not matching the record?)"
            return
        item.confirmed = held
        for offset, length in list(item.inflight.items()):
            if covered(have, offset, length):
                del item.inflight[offset]
        if not item.todo and not item.prepared and not item.inflight:
            item.state = COMPLETE

    def _fail(self, item: _File, reason: str | None) -> None:
        if reason is not None:
            log.error("file %s (seq %d): %s; not sent", item.offer.file, item.offer.seq, reason)
            self.failed[item.offer.file] = reason
        item.state = FAILED
        item.todo.clear()
        self._drop_prepared(item)
        item.inflight.clear()
        self.stats.files_failed += 1

    def _retire(self) -> None:
        """Close the files that need nothing more from this session (keeps the open list short)."""
        keep = []
        for item in self._open:
            if item.state in (COMPLETE, FAILED):
                self._close(item)
            else:
                keep.append(item)
        self._open = keep

    def _close(self, item: _File) -> None:
        if item.fd >= 0:
            try:
                os.close(item.fd)
            except OSError as exc:
                log.warning("file %s: close failed (%s)", display_path(self.layout.path_of(item.offer.file)),
                            exc.strerror)
            item.fd = -1
