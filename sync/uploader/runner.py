"""The uploader's passes: when to hold a session, when to purge, and the ``--once`` and daemon loops.

A pass refreshes the view of the ledger, retries spooled acks, takes in the acks that arrived since the
last pass, and holds a session when there is something to send (records past what the station holds,
files not acknowledged; the first pass of a run always asks the station). The connection stays open
between passes and is rebuilt after it drops (``run_forever`` rebuilds it even with nothing to send, so that
what the station sends unasked arrives). Every pass hands a pending officer assignment from the station to
the device (sync/uploader/assignment.py).

Purges go through the custody after receipts: after a session in which files were acknowledged, at the
start of a run (to finish a purge a crash interrupted), and otherwise at most every PURGE_RETRY_S while
``agent.evidence.custody.purge_candidates`` says the policy lets something go (a keep time that ran out).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import BodycamError, ProtocolError
from agent.evidence.custody import Custody, RetentionPolicy, is_own, purge_candidates, receipted_seq
from firmware_config.device_config import DeviceConfig
from sync.protocol import up_topic
from sync.uploader.acks import AckHandler, UploadState
from sync.uploader.assignment import AssignmentInbox, make_assignment_inbox
from sync.uploader.connection import Connection
from sync.uploader.custody_port import AckSpool, ReceiptWorker, spool_folder
from sync.uploader.health import HealthForwarder
from sync.uploader.ledger_view import LedgerView
from sync.uploader.plan import files_to_offer
from sync.uploader.session import Session, SessionStats
from sync.uploader.transport import Connect, Transport

log = logging.getLogger(__name__)
PURGE_RETRY_S = 600.0
SESSIONS_KEPT = 100
READ_BATCH_BYTES = 1 << 20  # ledger lines read at a time when looking for what is not acknowledged
FLUSH_S = 5.0  # at exit: how long to wait for the broker to take the last messages (the ``done``)


@dataclass(frozen=True)
class PassResult:
    ran_session: bool
    failed: bool
    stats: SessionStats | None = None


class Uploader:
    """``Uploader(config=, custody=, station_key=).run_once(timeout)`` or ``.run_forever()``; ``stop`` ends both."""

    def __init__(self, *, config: DeviceConfig, custody: Custody, station_key: Ed25519PublicKey,
                 stop: threading.Event | None = None, spool: AckSpool | None = None,
                 assignments: AssignmentInbox | None = None, connect: Connect = Connection) -> None:
        self.config = config
        self._connect = connect  # a new transport per connection: MQTT here, in memory in tests
        self.settings = config.sync
        self.stop = stop or threading.Event()
        self.view = LedgerView(config.store, config.device_id)
        self.spool = spool or AckSpool(spool_folder(config.store))
        self.worker = ReceiptWorker(custody, self.spool)
        self.state = UploadState()
        self.acks = AckHandler(device_id=config.device_id, station_key=station_key, view=self.view, state=self.state,
                               worker=self.worker)
        self.assignments = assignments or make_assignment_inbox(config, station_key)
        self.policy = RetentionPolicy.from_settings(self.settings)
        self.conn: Transport | None = None
        self.reached = False  # whether the broker answered at all in this run
        self.last_error: str | None = None  # why the last connection attempt failed
        self.sessions: deque[SessionStats] = deque(maxlen=SESSIONS_KEPT)  # the latest, for callers and tests
        self._last_purge = float("-inf")
        self._purge_due = self.settings.purge  # a purge a crash interrupted is finished at the first pass
        self.health = HealthForwarder(config.health.report_path, config.device_id)

    # ---------------------------------------------------------------- one pass

    def run_pass(self, deadline: float | None = None) -> PassResult:
        try:
            self.view.refresh()
        except BodycamError as exc:
            log.error("sync pass skipped: %s", exc)
            return PassResult(False, True)
        if self.spool.pending():
            self.worker.retry_spool()
        self._take_events()
        acked_before = len(self.state.acked_sha256)
        result = PassResult(False, False)
        if not self.forward_health():
            result = PassResult(False, True)  # no broker: a session now would fail the same way
        elif self._work_to_do():
            result = self._session(deadline)
        self.assignments.deliver()  # one received during the session, or still pending (a case was open)
        if len(self.state.acked_sha256) > acked_before:
            self._purge_due = self.settings.purge
        self._maybe_purge()
        return result

    def _work_to_do(self) -> bool:
        if self.state.station_seq < 0 or self.state.station_seq < self.view.head[0]:
            return True
        return bool(self._open_offers())

    def _open_offers(self) -> int:
        """Files to offer that can start a session (parked ones wait for a session held for another reason)."""
        offers = files_to_offer(self.view.records, self.state.acked_sha256, set(), up_to_seq=self.view.head[0])
        return sum(1 for offer in offers if not self.state.parked(offer.file))

    def _session(self, deadline: float | None) -> PassResult:
        try:
            conn = self._connection()
            session = Session(conn=conn, settings=self.settings, device_id=self.config.device_id, view=self.view,
                              acks=self.acks, state=self.state,
                              stop=self.stop, deadline=deadline, assignments=self.assignments)
        except ProtocolError as exc:
            log.warning("sync pass: %s; trying again in %g s", exc, self.settings.retry_seconds)
            return PassResult(False, True)
        try:
            stats = session.run()
        except BodycamError:
            # The next session starts from the station's watermark and have-ranges on a fresh connection, so
            # nothing of this one (chunks still queued in paho) is sent after it.
            self._drop_connection()
            self.sessions.append(session.stats)
            log.log(logging.INFO if self.stop.is_set() else logging.WARNING, "%s", session.stats.line())
            return PassResult(True, True, session.stats)
        self.sessions.append(stats)
        log.info("%s", stats.line())
        return PassResult(True, False, stats)

    def forward_health(self) -> bool:
        """Publish the health report (retained) if it changed or this is a new connection; False when the
        broker cannot be reached. Before the session, so a failed self-test reaches the station first."""
        line = self.health.due(self._live())
        if line is None:
            return True
        try:
            conn = self._connection()
            conn.publish(up_topic(self.config.device_id, "health"), line, retain=True)
        except ProtocolError as exc:
            log.warning("health report not sent: %s; trying again in %g s", exc, self.settings.retry_seconds)
            self._drop_connection()
            return False
        self.health.sent(conn, line)
        log.info("health report sent to the station (%d bytes)", len(line))
        return True

    def _drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _live(self) -> Transport | None:
        """The connection when it is still open."""
        return self.conn if self.conn is not None and not self.conn.closed else None

    def _connection(self) -> Transport:
        if (live := self._live()) is not None:
            return live
        conn = self._connect(self.settings, self.config.device_id)
        try:
            conn.open()
        except ProtocolError as exc:
            self.last_error = str(exc)
            raise
        self.reached, self.last_error = True, None
        self.conn = conn
        return conn

    def _take_events(self) -> None:
        """What arrived between sessions (acks, an officer assignment, a disconnect), routed as in a session:
        one that is not run, so the statuses and hello replies of ended sessions match nothing in it."""
        conn = self.conn
        if conn is None:
            return
        routing = Session(conn=conn, settings=self.settings, device_id=self.config.device_id, view=self.view,
                          acks=self.acks, state=self.state, stop=self.stop,
                          assignments=self.assignments)
        while (event := conn.next_event(0)) is not None:
            try:
                routing.handle(event)
            except ProtocolError as exc:  # the connection was lost (the session closed it)
                log.info("between sessions: %s", exc)
                self.conn = None
                return

    def _maybe_purge(self) -> None:
        if not self.settings.purge:
            return
        now = time.monotonic()
        if not self._purge_due and now - self._last_purge >= PURGE_RETRY_S:
            self._purge_due = bool(purge_candidates(self.view.records, self.policy, time.time_ns() // 1000))
        if self._purge_due:
            self._purge_due = False
            self._last_purge = now
            self.worker.request_purge()

    # ---------------------------------------------------------------- loops

    def unfinished(self) -> tuple[str, bool] | None:
        """Why not everything is acknowledged yet, and whether waiting cannot help; None when all of it is."""
        head = self.view.head[0]
        if self.state.disagreement is not None:
            return self.state.disagreement, True
        if self.state.station_seq < 0:
            return self._unheard(head), False
        if self.state.station_seq < head:
            held = self.state.station_seq
            return f"records up to seq {head} not all acknowledged (the station holds seq {held})", False
        offers = files_to_offer(self.view.records, self.state.acked_sha256, set(), up_to_seq=head)
        fine = [offer for offer in offers if not self.state.parked(offer.file)]
        if fine:
            return f"{len(offers)} file(s) not acknowledged yet, first {fine[0].file}", False
        spooled = self.spool.pending()
        if spooled:
            return f"{len(spooled)} ack(s) kept in {self.spool.folder} not recorded as receipts yet", False
        if self.view.held_back is not None:
            return f"last ledger line held back: {self.view.held_back}", False
        bad = self.view.bad
        if bad is not None:
            return (f"ledger line {bad.number} does not parse ({bad.reason}); nothing after seq {head} can be "
                    "uploaded (run bodycam-verify on the store)"), True
        if offers:
            troubles = "; ".join(f"{o.file}: {self.state.troubled[o.file][0]}" for o in offers[:3])
            return f"{len(offers)} file(s) could not be sent: {troubles} (run bodycam-verify on the store)", True
        return None

    def _unheard(self, head: int) -> str:
        """What to say when the station was not heard from in this run: why, and what its earlier receipts
        (signed acks recorded in the ledger) leave unacknowledged. Custody's own records after the last receipt
        (receipts, purges) are acknowledged without a receipt of their own (docs/sync-protocol.md), so they
        are not counted as waiting."""
        receipted = receipted_seq(self.view.records)
        waiting = self._first_unreceipted(receipted)
        files = files_to_offer(self.view.records, self.state.acked_sha256, set(), up_to_seq=head)
        if waiting is None and not files:
            left = f"every record up to seq {head} and every file was acknowledged by an earlier sync"
        else:
            records = f"records seq {waiting}..{head}" if waiting is not None else "no record"
            left = f"not acknowledged yet: {records} and {len(files)} file(s)"
            if receipted:
                left += f" (earlier syncs acknowledged up to seq {receipted})"
        if not self.reached:
            return f"no connection to the station in this run ({self.last_error or 'not attempted'}); {left}"
        return f"the station did not answer in this run; {left}"

    def _first_unreceipted(self, receipted: int) -> int | None:
        """The first record after ``receipted`` that is not custody's own; read a bounded batch at a time."""
        seq = receipted
        while lines := self.view.lines_after(seq, max_bytes=READ_BATCH_BYTES):
            for line in lines:
                if not is_own(line.record):
                    return line.seq
            seq = lines[-1].seq
        return None

    def run_once(self, timeout: float) -> bool:
        """Passes until everything is acknowledged, receipted and purged; False when ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        purged_at: int | None = None  # the head after the final purge
        while True:
            result = self.run_pass(deadline)
            self._settle(deadline)
            missing = self.unfinished()
            if missing is None and (not self.settings.purge or purged_at == self.view.head[0]):
                return True
            if missing is None:
                # Purge last (the receipts are in); its purge records must then be acknowledged in turn.
                self.worker.request_purge()
                self._settle(deadline)
                purged_at = self.view.head[0]
                if self.unfinished() is None:
                    return True
                continue
            why, hopeless = missing
            if hopeless or self.stop.is_set() or time.monotonic() >= deadline:
                log.error("not everything is acknowledged: %s", why)
                return False
            if result.failed or not result.ran_session:
                self.stop.wait(min(self.settings.retry_seconds, max(0.0, deadline - time.monotonic())))

    def _settle(self, deadline: float) -> None:
        """Let the receipt worker finish what it was given, then look at the ledger again."""
        self.worker.drain(max(0.0, deadline - time.monotonic()))
        try:
            self.view.refresh()
        except BodycamError as exc:
            log.error("%s", exc)

    def run_forever(self) -> None:
        """A pass every ``scan_seconds`` (``retry_seconds`` after a failure) until ``stop`` is set."""
        while not self.stop.is_set():
            result = self.run_pass()
            failed = result.failed or not self._listen()
            self.stop.wait(self.settings.retry_seconds if failed else self.settings.scan_seconds)

    def _listen(self) -> bool:
        """Keep a connection while idle, so that what the station sends unasked (an officer assignment)
        arrives; False when the broker cannot be reached."""
        try:
            self._connection()
        except ProtocolError as exc:
            log.warning("sync: %s; trying again in %g s", exc, self.settings.retry_seconds)
            return False
        return True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.flush(FLUSH_S)
        self._drop_connection()
        self.worker.close()
