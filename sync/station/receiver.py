"""The station receiver: one call per MQTT message, returning the messages to publish. No MQTT in here.

``Receiver.handle(topic, payload)`` implements docs/sync-protocol.md: sessions and clock stamps, records
verified and stored in chain order (sync/station/intake.py), files received in chunks and stored write-once
(sync/station/transfer.py), signed acknowledgements after the evidence is durable, problems reported and
kept in the index. Acks follow a records message that advanced the chain, or that held only records already
stored (its ack may have been lost in a crash), and every stored file, or a file offered again after it was
stored; each names at most 64 files. Every refused message is logged, recorded as ``rejected-message`` and
answered on the device's ``down/error`` topic; nothing a device sends makes ``handle`` raise or changes stored
evidence.

Every number a device chooses is bounded before it is believed (sizes, offsets, staged bytes, held
records: station config ``[limits]``). Should a message still make the receiver fail (a bug its content
triggers), it is that message's problem: the batch is rolled back, the receiver's state rebuilt from the
store as at a start, the message set aside (sync/station/set_aside.py), reported as ``poison-message``
against its device and settled; the rest of the batch is taken in again without it.

A failure of the station's own storage (a write, an fsync, the index) is different: what is on disk is then
unknown, so the receiver sets ``fault`` and takes nothing more in; the service stops without acknowledging
the message to the broker, and a restart reconciles the ledger copies with the index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agent.errors import ProtocolError, StoreError
from agent.evidence.ack import MAX_ACK_FILES, Ack, AckedFile, sign_ack
from agent.evidence.clock import Clock
from agent.evidence.keys import DeviceKey
from agent.evidence.record import DEVICE_ID_PATTERN
from firmware_config.station_config import StationConfig
from sync.protocol import (
    TOPIC_ROOT,
    ClockReport,
    Done,
    ErrorNotice,
    FileOffer,
    Hello,
    HelloReply,
    decode_chunk,
    down_topic,
    parse_topic,
    split_lines,
)
from sync.station.ack_log import AckLog
from sync.station.deadline import WorkingCalendar
from sync.station.faults import AFTER_RECORDS, AFTER_STORE, ON_MESSAGE, FaultPoints, NoFaults
from sync.station.health import HealthIntake
from sync.station.index import Index
from sync.station.intake import IntakeLimits, RecordIntake
from sync.station.model import (
    DEVICE_UNSEEN,
    FORK,
    POISON_MESSAGE,
    REJECTED_MESSAGE,
    ROLLBACK,
    STATION_FAULT,
    UNKNOWN_DEVICE,
    ChainHead,
    DeviceRow,
    Outgoing,
)
from sync.station.ports import EvidenceStore
from sync.station.problems import ProblemLog, printable
from sync.station.set_aside import DEATHS_TO_SET_ASIDE, SetAside, is_station_failure, message_digest
from sync.station.transfer import FileTransfer, TransferLimits, TransferResult

log = logging.getLogger(__name__)
NO_SESSION = "none"
# The station answers a hello at once: a t3 later than this after t2 was not the station's.
MAX_REPLY_US = 60_000_000


class Receiver:
    def __init__(self, *, config: StationConfig, store: EvidenceStore, index: Index, ack_key: DeviceKey,
                 clock: Clock, faults: FaultPoints | None = None) -> None:
        """What the receiver holds; nothing is read here (``open`` reads the store and the index)."""
        self.config = config
        self.store = store
        self.index = index
        self.ack_key = ack_key
        self.clock = clock
        self.calendar = WorkingCalendar.from_settings(config.deadline)
        self.problems = ProblemLog(index, clock)
        self.set_aside = SetAside(config.data / "set-aside")
        self.health = HealthIntake(index)
        self.fault: str | None = None
        self.faults = faults or NoFaults()  # tests inject crashes and bugs here (sync/station/faults.py)
        self._fault_points: list[tuple[str, str]] = []  # (point, topic) reached in this batch
        self._acks_due: dict[str, list[AckedFile]] = {}  # device -> files stored, acknowledged at the batch's end
        self.ack_log = AckLog(store)  # the acks signed in a batch, logged in the copies after its commit

    @classmethod
    def open(cls, *, config: StationConfig, store: EvidenceStore, index: Index, ack_key: DeviceKey, clock: Clock,
             faults: FaultPoints | None = None) -> Receiver:
        """A receiver ready for messages: its state built from the store and the index (the ledger copies
        reconciled with the index), and the messages in flight when the last run died taken back."""
        receiver = cls(config=config, store=store, index=index, ack_key=ack_key, clock=clock, faults=faults)
        receiver._fresh_state()
        died = receiver.set_aside.recover()
        if died:
            log.warning("%d message(s) were in flight when the last run died: each is handled alone now, and set "
                        "aside if it was in flight at %d deaths", len(died), DEATHS_TO_SET_ASIDE)
        return receiver

    def _fresh_state(self) -> None:
        """What the receiver keeps in memory, built from the store and the index as at a start."""
        config = self.config
        self.intake = RecordIntake(
            store=self.store, index=self.index, problems=self.problems, calendar=self.calendar, clock=self.clock,
            limits=IntakeLimits(config.max_pending_records, config.max_pending_bytes, config.max_file_bytes))
        self.transfer = FileTransfer(
            store=self.store, index=self.index, problems=self.problems, calendar=self.calendar, clock=self.clock,
            limits=TransferLimits(config.max_file_bytes, config.max_staging_bytes_per_device, config.min_free_bytes))
        self._sessions: dict[str, str] = {}
        self._reconcile()

    def _now(self) -> int:
        return self.clock.now().wall_us

    def _reconcile(self) -> None:
        """Bring each ledger copy back to what the index knows (a crash between the append and the index)."""
        for device in self.index.devices():
            expected = self.index.head(device.id).ledger_bytes
            size = self.store.ledger_size(device.id)
            if size > expected:
                where = self.store.set_aside_tail(device.id, expected)
                log.warning("device %s: ledger copy held %d bytes past the indexed seq; set aside in %s "
                            "(the device sends them again)", device.id, size - expected, where)
            elif size < expected:
                raise StoreError(f"device {device.id}: ledger copy holds {size} bytes, the index says {expected}: "
                                 "not starting on a damaged store")

    # --- entry point ------------------------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, received_us: int | None = None) -> list[Outgoing]:
        """The replies to one message. ``received_us``: when the network layer got it (the hello's t2)."""
        return self.handle_batch([(topic, payload, received_us)])

    def handle_batch(self, messages: Sequence[tuple[str, bytes, int | None]]) -> list[Outgoing]:
        """The replies to several messages, taken in with one group commit.

        Staged chunk bytes are made durable, then the index transaction holding their ranges, records and
        files is committed, and only then are the replies (file statuses, acks) returned for publishing. A
        message the receiver fails on is set aside and the batch taken in again without it (once: a second
        failure in the same batch is the station's). Messages in flight when an earlier run died are handled
        one by one, or set aside unhandled after too many deaths (sync/station/set_aside.py).
        """
        if self.fault is not None:
            log.error("%d message(s) not taken: the receiver stopped after a storage fault (%s)", len(messages),
                      self.fault)
            return []
        digests = [message_digest(topic, payload) for topic, payload, _ in messages]
        if not any(self.set_aside.strikes(d) for d in digests):
            return self._journaled(messages, digests)
        out: list[Outgoing] = []
        for message, digest in zip(messages, digests, strict=True):
            strikes = self.set_aside.strikes(digest)
            if strikes >= DEATHS_TO_SET_ASIDE:
                out.extend(self._put_aside(message[0], message[1], f"the receiver died {strikes} times while "
                                           "handling it", rebuild=False))
            else:
                out.extend(self._journaled([message], [digest]))
            if self.fault is not None:
                return []
            self.set_aside.forgive(digest)
        return out

    def _journaled(self, messages: Sequence[tuple[str, bytes, int | None]], digests: list[str]) -> list[Outgoing]:
        self.set_aside.begin(digests)
        out = self._take(messages)
        self.set_aside.end()  # a fault too: it is recorded, and not a death
        return out

    def _take(self, messages: Sequence[tuple[str, bytes, int | None]]) -> list[Outgoing]:
        attempt = self._attempt(messages)
        if isinstance(attempt, _Poisoned):
            topic, payload, _received = messages[attempt.position]
            rest = [m for i, m in enumerate(messages) if i != attempt.position]
            notices = self._put_aside(topic, payload, attempt.error)
            if self.fault is None:
                again = self._attempt(rest)
                if isinstance(again, _Poisoned):
                    self.fault = f"a second message failed in the same batch: {again.error}"
                else:
                    attempt = [*notices, *again]
        if self.fault is not None:
            self._record_fault(messages[-1][0] if messages else "")
            return []
        assert not isinstance(attempt, _Poisoned)
        for point, topic in self._fault_points:  # after the commit, before any reply leaves
            self.faults.at(point, topic)
        return attempt

    def _attempt(self, messages: Sequence[tuple[str, bytes, int | None]]) -> list[Outgoing] | _Poisoned:
        out: list[Outgoing] = []
        self._fault_points = []
        self._acks_due = {}
        self.ack_log.discard()
        try:
            with self.index.batch():
                for position, (topic, payload, received_us) in enumerate(messages):
                    due, self._acks_due = self._acks_due, {}
                    replies = self._handle_one(topic, payload, received_us, position)
                    if self.fault is not None:
                        raise _BatchAbandoned  # roll the whole batch back: none of it is acknowledged
                    if replies and due:
                        # Replies leave in the order the messages were taken in (a device may use a reply
                        # as a barrier), so the acks due so far go first.
                        out.extend(self._signed_acks(due))
                        due = {}
                    out.extend(replies)
                    for device, files in self._acks_due.items():
                        merged = due.setdefault(device, [])
                        merged.extend(f for f in files if f not in merged)
                    self._acks_due = due
                # Acks are merged per device until a reply must go out or the batch ends: fewer acks to
                # check and fewer receipt records on the device, each with the newest watermark.
                out.extend(self._signed_acks(self._acks_due))
                self.store.sync_partials()
        except _BatchAbandoned:
            pass
        except _Poisoned as poisoned:
            return poisoned  # rolled back with the transaction
        except Exception as exc:
            if self.fault is None:
                self.fault = printable(f"{type(exc).__name__}: {exc}")
                log.exception("station fault while committing; nothing more is stored or acknowledged until a "
                              "restart")
        if self.fault is None:
            self._log_acks()
        return out

    def _handle_one(self, topic: str, payload: bytes, received_us: int | None, position: int = 0) -> list[Outgoing]:
        received = received_us if received_us is not None else self._now()
        try:
            try:
                return self._dispatch(topic, payload, received)
            except ProtocolError as exc:
                return self._reject(topic, str(exc))
        except Exception as exc:
            if not is_station_failure(exc):
                log.exception("topic %s: the receiver failed on this message; it is set aside", printable(topic))
                raise _Poisoned(position, printable(f"{type(exc).__name__}: {exc}")) from exc
            # Storage or index: the state on disk is unknown, so nothing more is taken in or acked.
            self.fault = printable(f"{type(exc).__name__}: {exc}")
            log.exception("topic %s: station fault; nothing more is stored or acknowledged until a restart",
                          printable(topic))
            return []

    def _put_aside(self, topic: str, payload: bytes, error: str, rebuild: bool = True) -> list[Outgoing]:
        """Keep the message, rebuild the state its batch left, report it against its device; the notice."""
        device = _device_of(topic)
        try:
            kept = self.set_aside.keep(topic, payload, device, error, self._now())
            if rebuild:
                self._fresh_state()  # caches may have run ahead of the rolled-back batch; a ledger copy, too
            with self.index.batch():
                self.problems.report(POISON_MESSAGE, device, f"the receiver failed on this message ({error}); set "
                                     f"aside as set-aside/{kept.name} and settled, so it is not redelivered",
                                     topic=topic)
        except Exception as exc:
            self.fault = printable(f"setting a message aside failed: {type(exc).__name__}: {exc}")
            log.exception("topic %s: could not set the message aside", printable(topic))
            return []
        if device is None or _direction_of(topic) == "down":
            return []
        return [self._error(device, topic, f"the station could not handle this message ({error}); it was set "
                            "aside for the station's staff")]
    def _record_fault(self, topic: str) -> None:
        try:
            self.problems.report(STATION_FAULT, _device_of(topic), self.fault or "", topic=topic)
        except Exception:
            log.exception("topic %s: the fault could not be recorded in the index either", printable(topic))

    def _reject(self, topic: str, reason: str) -> list[Outgoing]:
        device = _device_of(topic)
        self.problems.report(REJECTED_MESSAGE, device, f"message rejected: {reason}", topic=topic)
        if device is None or _direction_of(topic) == "down":
            return []  # no device to tell, or a station-to-device topic: never answer into the down tree
        return [self._error(device, topic, reason)]

    @staticmethod
    def _error(device: str, topic: str, reason: str) -> Outgoing:
        return Outgoing(down_topic(device, "error"), ErrorNotice(printable(topic, 200), printable(reason)).encode())

    def _dispatch(self, topic: str, payload: bytes, received_us: int) -> list[Outgoing]:
        parsed = parse_topic(topic)
        self.faults.at(ON_MESSAGE, topic)
        if parsed.direction != "up":
            raise ProtocolError(f"topic {topic}: a station-to-device topic; the station takes nothing there")
        limit = self.config.max_message_bytes
        if len(payload) > limit:
            raise ProtocolError(f"{parsed.kind}: {len(payload)} bytes, more than the {limit} allowed (not read)")
        device = self.index.device(parsed.device)
        if device is None or device.revoked:
            why = "revoked" if device is not None else "not enrolled"
            self.problems.report(UNKNOWN_DEVICE, parsed.device, f"device {why}: message refused, nothing stored",
                                 topic=topic)
            return [self._error(parsed.device, topic, f"device {parsed.device} is {why} at this station")]
        if parsed.kind == "hello":
            return self._hello(device, payload, received_us)
        if parsed.kind == "clock":
            return self._clock(device, payload)
        if parsed.kind == "records":
            return self._records(device, payload, topic)
        if parsed.kind == "file":
            offer = FileOffer.decode(payload)
            return self._transferred(device.id, self.transfer.offer(device.id, offer, offer.session), topic)
        if parsed.kind == "chunk":
            header, data = decode_chunk(payload)
            result = self.transfer.chunk(device.id, header, data, self.session_of(device.id))
            return self._transferred(device.id, result, topic)
        if parsed.kind == "done":
            return self._done(device, payload, topic)
        if parsed.kind == "health":
            self.health.take(device, payload, topic, received_us)  # no reply: it is retained, not a session step
            return []
        raise ProtocolError(f"topic {topic}: no handler for {parsed.kind!r}")

    # --- sessions ---------------------------------------------------------------------------------------------

    def session_of(self, device: str) -> str:
        """The device's current session (its last hello), also after a restart; "none" before any hello."""
        if device not in self._sessions:
            last = self.index.last_session(device)
            self._sessions[device] = last.id if last is not None else NO_SESSION
        return self._sessions[device]

    def _hello(self, device: DeviceRow, payload: bytes, received_us: int) -> list[Outgoing]:
        hello = Hello.decode(payload)
        self.index.open_session(device.id, hello.session, received_us, hello.t1_us, received_us)
        self._sessions[device.id] = hello.session
        if self.index.resolve_check_problem(device.id, DEVICE_UNSEEN, None, received_us):
            log.info("device %s: seen again (device-unseen resolved)", device.id)
        head = self.index.head(device.id)
        log.info("device %s session %s: hello; the station holds seq %d", device.id, hello.session, head.seq)
        if hello.head_seq is not None and hello.head_link is not None:
            self._compare_heads(device.id, hello.head_seq, hello.head_link, head, f"bodycam/{device.id}/up/hello")
        reply = HelloReply(hello.session, hello.t1_us, received_us, self._now(), head.seq, head.link)
        return [Outgoing(down_topic(device.id, "hello"), reply.encode())]

    def _compare_heads(self, device: str, seq: int, link: str, held: ChainHead, topic: str) -> None:
        """A device whose ledger ends below what the station holds, or elsewhere than its chain: reported.

        Judged against the station's own records (a link is the hash of a signed record), so a device that
        lies about its head only reports a problem against itself."""
        if seq > held.seq:
            return  # ahead of the station: its records show whether they continue the chain
        theirs = f"the device's ledger ends at seq {seq} (link {link[:16]}...)"
        ours = f"the station holds seq {held.seq} (link {held.link[:16]}...)"
        stored = self.index.record(device, seq) if seq > 0 else None
        same_chain = (seq == 0) or (stored is not None and stored.link == link)
        if seq == held.seq and not same_chain:
            self.problems.report(FORK, device, f"fork: {theirs}, another record than the station's at that seq; "
                                 f"{ours}", seq=seq, topic=topic)
        elif seq < held.seq and same_chain:
            self.problems.report(ROLLBACK, device, f"rollback: {theirs}, below what the station holds: {ours}; "
                                 f"records {seq + 1}..{held.seq} are no longer on the device", seq=seq, topic=topic)
        elif seq < held.seq:
            self.problems.report(ROLLBACK, device, f"rollback and fork: {theirs}, below what the station holds, "
                                 f"and its record at seq {seq} is not the station's; {ours}", seq=seq, topic=topic)

    def _clock(self, device: DeviceRow, payload: bytes) -> list[Outgoing]:
        report = ClockReport.decode(payload)
        stamps = (report.t1_us, report.t2_us, report.t3_us, report.t4_us)
        opened = self.index.session(device.id, report.session)
        if opened is not None and (opened.t1_us, opened.t2_us) != (report.t1_us, report.t2_us):
            # t2 is the station's own stamp and t1 the hello's: a report that changes them would choose its
            # own clock offset (which judges its deadlines), so it is refused.
            raise ProtocolError(f"clock: session {report.session}: t1/t2 are not those of its hello "
                                f"({opened.t1_us}/{opened.t2_us})")
        if not report.t2_us <= report.t3_us <= report.t2_us + MAX_REPLY_US or report.t4_us < report.t1_us:
            raise ProtocolError(f"clock: session {report.session}: t3 must follow t2 within {MAX_REPLY_US} us and "
                                "t4 follow t1")
        if not self.index.set_clock(device.id, report.session, stamps, report.offset_us, report.delay_us):
            raise ProtocolError(f"clock: device {device.id} session {report.session} was never opened by a hello")
        log.info("device %s session %s: clock offset %d us, network delay %d us", device.id, report.session,
                 report.offset_us, report.delay_us)
        return []

    def _done(self, device: DeviceRow, payload: bytes, topic: str) -> list[Outgoing]:
        done = Done.decode(payload)
        holes = self.intake.report_gaps(device.id, done.head_seq, topic)
        self.index.end_session(device.id, done.session, self._now())
        row = self.index.session(device.id, done.session)
        counts = "" if row is None else (f": {row.records} records and {row.files_stored} files stored, "
                                         f"{row.duplicate_records + row.duplicate_chunks} duplicates")
        log.info("device %s session %s: done at seq %d%s%s", device.id, done.session, done.head_seq, counts,
                 f"; {len(holes)} hole(s) open" if holes else "")
        return []

    # --- records and files ------------------------------------------------------------------------------------

    def _records(self, device: DeviceRow, payload: bytes, topic: str) -> list[Outgoing]:
        lines = split_lines(payload, self.config.max_message_bytes)
        result = self.intake.take(device, lines, topic)
        session = self.session_of(device.id)
        if result.duplicates:
            self.index.count(device.id, session, "duplicate_records", result.duplicates)
        if result.only_duplicates:
            return self._ack_due(device.id)  # the same ack again: harmless, and the device may be waiting for it
        if not result.advanced:
            return []
        self.index.count(device.id, session, "records", result.stored)
        self.intake.report_late(device.id, result, topic)
        self._fault_points.append((AFTER_RECORDS, topic))
        return self._ack_due(device.id)

    def _transferred(self, device: str, result: TransferResult, topic: str) -> list[Outgoing]:
        out = [Outgoing(down_topic(device, "file"), result.status.encode())]
        if result.stored is not None:
            self._fault_points.append((AFTER_STORE, topic))
            self._ack_due(device, result.stored)
        return out

    def _ack_due(self, device: str, stored: AckedFile | None = None) -> list[Outgoing]:
        files = self._acks_due.setdefault(device, [])
        if stored is not None and stored not in files:
            files.append(stored)
        return []

    def _signed_acks(self, due: dict[str, list[AckedFile]]) -> list[Outgoing]:
        return [ack for device, files in due.items() for ack in self.acks(device, files)]

    def acks(self, device: str, files: Sequence[AckedFile]) -> list[Outgoing]:
        """Signed acknowledgements of the chain as stored now, naming ``files`` (at most 64 per ack)."""
        head = self.index.head(device)
        parts = [files[i:i + MAX_ACK_FILES] for i in range(0, len(files), MAX_ACK_FILES)] or [[]]
        out = []
        for part in parts:
            ack = Ack(self.config.station_id, self.ack_key.fingerprint, device, self.session_of(device), head.seq,
                      head.link, tuple(part), self._now())
            signed = sign_ack(ack, self.ack_key)
            self.ack_log.add(signed)
            out.append(Outgoing(down_topic(device, "ack"), signed.to_line()))
        return out

    def _log_acks(self) -> None:
        """Keep every ack of the batch in its device's copy (station-acks.jsonl), after the commit that made
        what it states true and before it is sent: the copy then proves what the station acknowledged."""
        try:
            self.ack_log.flush()
        except Exception as exc:
            self.fault = printable(f"{type(exc).__name__}: {exc}")
            log.exception("station fault while logging acknowledgements; none of them is sent")


class _BatchAbandoned(Exception):
    """A fault inside a batch: its index transaction is rolled back."""


class _Poisoned(Exception):
    """The receiver failed on the message at ``position`` of the batch: the batch is rolled back."""

    def __init__(self, position: int, error: str) -> None:
        super().__init__(error)
        self.position = position
        self.error = error


def _device_of(topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) >= 2 and parts[0] == TOPIC_ROOT and DEVICE_ID_PATTERN.match(parts[1]):
        return parts[1]
    return None


def _direction_of(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[2] if len(parts) >= 3 else None
