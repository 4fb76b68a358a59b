"""Where verified acknowledgements go: the custody (receipts and purges), or a spool when it cannot take them.

The uploader never writes the ledger itself. A valid ack goes to a :class:`~agent.evidence.custody.Custody`:

* :class:`CustodyChain` tries the running agent first (``AgentCustody`` over the control socket, when the
  socket file exists), then ``DirectCustody`` (opens the ledger itself; refused while the agent holds it).
  A refusal of the ack itself (VerificationError) ends the attempt: the other custody would refuse it too.
* When neither can record it (agent busy or stopping, disk trouble), the ack line is kept durably in the
  spool folder ``<store parent>/<store name>.sync-spool/`` (beside the store, never inside it: the spool is
  not evidence, and the verifier must not meet unknown files in the store). Every pass retries the spool;
  a line is removed once recorded, or once the custody says it is no news.
* :class:`ReceiptWorker` does this on its own thread: recording a receipt re-reads the ledger and fsyncs,
  and must not stall the chunk pipeline. It also runs the purges, after the receipts queued before them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from agent.errors import BodycamError, LedgerError, VerificationError
from agent.evidence.ack import parse_ack
from agent.evidence.custody import Custody
from agent.evidence.fsutil import display_path, fsync_dir, write_file_durably

log = logging.getLogger(__name__)
SPOOL_SUFFIX = ".line"
HOLD_MAX_S = 60.0
REJECTED_SUFFIX = ".rejected"


T = TypeVar("T")


def first_that_works(ways: Sequence[tuple[str, Callable[[], T]]], what: str,
                     final: tuple[type[BodycamError], ...] = ()) -> T:
    """The result of the first of ``ways`` (name, call) that does not fail. An error in ``final`` (the request
    itself is refused: every way would refuse it) is raised at once; when every way fails, a LedgerError
    starting with ``what`` names each failure."""
    failures: list[str] = []
    for name, call in ways:
        try:
            return call()
        except final:
            raise
        except BodycamError as exc:
            failures.append(f"{name}: {exc}")
    raise LedgerError(f"{what}: {'; '.join(failures) or 'no custody available'}")


def spool_folder(store: Path) -> Path:
    """``/var/lib/bodycam/store`` -> ``/var/lib/bodycam/store.sync-spool``."""
    return store.parent / f"{store.name}.sync-spool"


class AgentCustody:
    """Custody through the running agent's control socket (ops ``receipt`` and ``purge``); errors the agent
    reports by name are raised again here as the same type (``call_op``)."""

    def __init__(self, socket_path: Path, timeout: float = 600.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout  # a purge after a long time offline fsyncs once per file

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        from agent.control_socket import call_op  # as in assignment.py: only a device with an agent needs it

        return call_op(self.socket_path, request, str(request["op"]), timeout=self.timeout)

    def record_receipt(self, ack_line: bytes) -> str:
        text = ack_line.rstrip(b"\n").decode("ascii", "replace")
        return str(self._call({"op": "receipt", "ack": text})["outcome"])

    def purge_acknowledged(self) -> list[str]:
        purged = self._call({"op": "purge"})["purged"]
        return [str(name) for name in purged] if isinstance(purged, list) else []


class CustodyChain:
    """A Custody that asks each of ``custodies`` in turn until one does the job."""

    def __init__(self, custodies: Sequence[tuple[str, Custody]], available: dict[str, Path] | None = None) -> None:
        self.custodies = list(custodies)
        # name -> a path that must exist for that custody to be tried (the agent's control socket)
        self.available = dict(available or {})

    def _candidates(self) -> list[tuple[str, Custody]]:
        return [(name, c) for name, c in self.custodies
                if name not in self.available or self.available[name].exists()]

    def record_receipt(self, ack_line: bytes) -> str:
        ways = [(name, partial(custody.record_receipt, ack_line)) for name, custody in self._candidates()]
        return first_that_works(ways, "receipt not recorded", (VerificationError,))

    def record_receipts(self, ack_lines: Sequence[bytes]) -> list[str | BodycamError]:
        """Several acks at once: a custody that can take them together (the direct one opens the ledger
        once for all) gets them in one call; otherwise one by one. Per line: what was done, or its error."""
        ways = [(name, partial(_record_each, custody, ack_lines)) for name, custody in self._candidates()]
        return first_that_works(ways, "receipts not recorded", (VerificationError,))

    def purge_acknowledged(self) -> list[str]:
        ways = [(name, custody.purge_acknowledged) for name, custody in self._candidates()]
        return first_that_works(ways, "purge not done")


def _record_each(custody: Custody, ack_lines: Sequence[bytes]) -> list[str | BodycamError]:
    batch = getattr(custody, "record_receipts", None)  # only DirectCustody has it: the agent records one by one
    if batch is not None:
        return list(batch(ack_lines))
    outcomes: list[str | BodycamError] = []
    for line in ack_lines:
        try:
            outcomes.append(custody.record_receipt(line))
        except VerificationError as exc:
            outcomes.append(exc)
    return outcomes


class AckSpool:
    """Ack lines kept durably until the custody records them (one file each, named by seq and hash)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, line: bytes, seq: int) -> Path:
        digest = hashlib.sha256(line).hexdigest()[:16]
        path = self.folder / f"ack-{seq:012d}-{digest}{SPOOL_SUFFIX}"
        if path.exists():
            return path
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_file_durably(path, line, mode=0o600, exclusive=True)
        except FileExistsError:
            return path  # kept by an earlier attempt meanwhile: same name, same bytes
        except OSError as exc:
            raise LedgerError(f"ack spool {display_path(self.folder)}: cannot keep ack for seq {seq} "
                              f"({exc.strerror})") from None
        return path

    def pending(self) -> list[Path]:
        """The spooled ack files, oldest seq first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.name.endswith(SPOOL_SUFFIX))

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        fsync_dir(self.folder)

    def reject(self, path: Path) -> None:
        """Keep a line the custody refused aside (for the technician), out of the retry list."""
        os.replace(path, path.with_name(path.name[: -len(SPOOL_SUFFIX)] + REJECTED_SUFFIX))
        fsync_dir(self.folder)


@dataclass
class WorkerStats:
    recorded: int = 0  # receipts recorded or judged no news by the custody
    spooled: int = 0
    refused: int = 0
    purged: int = 0


_PURGE = object()
_RETRY = object()
RECEIPT_BATCH = 64  # acks recorded with one opening of the ledger


class ReceiptWorker:
    """Records receipts and runs purges on its own thread, in the order asked.

    While a session moves file bytes it holds the work back (``hold``/``release``): a receipt re-reads the
    ledger and fsyncs (``DirectCustody`` even opens it, writing a boot record), which costs the pipeline
    throughput. Held work is still done at least every HOLD_MAX_S, so a long upload frees space as it goes.
    """

    def __init__(self, custody: Custody, spool: AckSpool) -> None:
        self.custody = custody
        self.spool = spool
        self.stats = WorkerStats()
        self._items: deque[object] = deque()
        self._cond = threading.Condition()
        self._held_until: float | None = None  # while held: when the held work is done anyway
        self._flushing = 0  # items still to do in an overdue flush
        self._thread = threading.Thread(target=self._run, name="bodycam-sync-receipts", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def submit(self, line: bytes) -> None:
        self._put(line)

    def request_purge(self) -> None:
        self._put(_PURGE)

    def retry_spool(self) -> None:
        self._put(_RETRY)

    def hold(self) -> None:
        with self._cond:
            if self._held_until is None:
                self._held_until = time.monotonic() + HOLD_MAX_S

    def release(self) -> None:
        with self._cond:
            self._held_until = None
            self._cond.notify()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything asked so far is done (held work waits for ``release``); False on timeout."""
        done = threading.Event()
        self._put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self.release()
        self.drain(timeout)
        self._put(None)
        self._thread.join(timeout)

    def _take(self) -> object:
        with self._cond:
            while True:
                if self._items:
                    head = self._items[0]
                    now = time.monotonic()
                    if self._held_until is not None and now >= self._held_until and not self._flushing:
                        self._flushing = len(self._items)  # overdue: do what is queued now, then hold again
                        self._held_until = now + HOLD_MAX_S
                    if self._held_until is None or self._flushing or head is None or isinstance(head, threading.Event):
                        self._flushing = max(0, self._flushing - 1)
                        return self._items.popleft()
                    self._cond.wait(self._held_until - now)
                else:
                    self._cond.wait()

    def _run(self) -> None:
        while True:
            item = self._take()
            if item is None:
                return
            try:
                self._do(item)
            except Exception:
                # A bug in a custody must not silently stop every later receipt: say so loudly, go on.
                log.exception("receipt worker: unexpected failure")

    def _do(self, item: object) -> None:
        if isinstance(item, threading.Event):
            item.set()
        elif item is _PURGE:
            self._purge()
        elif item is _RETRY:
            self._retry()
        elif isinstance(item, bytes):
            self._record(item)

    def _more_lines(self) -> list[bytes]:
        """The ack lines queued right behind the one being done (taken together: one ledger opening)."""
        lines: list[bytes] = []
        with self._cond:
            while self._items and isinstance(self._items[0], bytes) and len(lines) < RECEIPT_BATCH:
                item = self._items.popleft()
                assert isinstance(item, bytes)
                lines.append(item)
                self._flushing = max(0, self._flushing - 1)
        return lines

    def _record(self, line: bytes) -> None:
        more = self._more_lines()
        batch = getattr(self.custody, "record_receipts", None)
        if not more or batch is None:
            self._record_one(line)
            for other in more:
                self._record_one(other)
            return
        lines = [line, *more]
        try:
            outcomes = batch(lines)
        except BodycamError as exc:
            for each in lines:
                log.warning("%s; keeping the ack in %s for the next pass", exc, display_path(self.spool.folder))
                self._keep(each, parse_ack(each).ack.seq)
            return
        for outcome in outcomes:
            if isinstance(outcome, VerificationError):
                self.stats.refused += 1
                log.error("receipt refused by the custody: %s", outcome)
            elif isinstance(outcome, BodycamError):
                self.stats.refused += 1
                log.error("receipt not recorded: %s", outcome)
            else:
                self.stats.recorded += 1
                log.info("%s", outcome)

    def _record_one(self, line: bytes) -> None:
        seq = parse_ack(line).ack.seq  # checked by the session already; the seq names the spool file
        try:
            outcome = self.custody.record_receipt(line)
        except VerificationError as exc:
            self.stats.refused += 1
            log.error("receipt refused by the custody: %s", exc)
            return
        except BodycamError as exc:
            log.warning("%s; keeping the ack in %s for the next pass", exc, display_path(self.spool.folder))
            self._keep(line, seq)
            return
        self.stats.recorded += 1
        log.info("%s", outcome)

    def _keep(self, line: bytes, seq: int) -> None:
        try:
            self.spool.put(line, seq)
        except BodycamError as exc:
            # Not lost for good: the station acknowledges a stored file again when it is offered again.
            log.error("%s; the ack is offered again by the station at a later session", exc)
            return
        self.stats.spooled += 1

    def _retry(self) -> None:
        for path in self.spool.pending():
            try:
                line = path.read_bytes()
                outcome = self.custody.record_receipt(line)
            except VerificationError as exc:
                self.stats.refused += 1
                log.error("spooled ack %s refused by the custody: %s; set aside", path.name, exc)
                self._settle(path, reject=True)
                continue
            except BodycamError as exc:
                log.warning("spooled ack %s still not recorded: %s", path.name, exc)
                return  # the custody is still unavailable: keep the order, try again next pass
            except OSError as exc:
                log.error("spooled ack %s: cannot read (%s)", display_path(path), exc.strerror)
                continue
            self.stats.recorded += 1
            log.info("spooled ack %s: %s", path.name, outcome)
            self._settle(path, reject=False)

    def _settle(self, path: Path, reject: bool) -> None:
        try:
            if reject:
                self.spool.reject(path)
            else:
                self.spool.remove(path)
        except OSError as exc:
            log.error("spooled ack %s: cannot %s it (%s)", display_path(path), "set aside" if reject else "remove",
                      exc.strerror)

    def _purge(self) -> None:
        try:
            purged = self.custody.purge_acknowledged()
        except BodycamError as exc:
            log.warning("purge not done: %s", exc)
            return
        self.stats.purged += len(purged)
        if purged:
            log.info("purged %d acknowledged segment(s): %s", len(purged), ", ".join(purged))
