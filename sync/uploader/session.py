"""One sync session over a connection (docs/sync-protocol.md, "A session, step by step").

1. ``hello`` with a new session id and t1; wait for the matching ``down/hello`` (t2, t3 and the station's
   watermark: the last record it holds verified with nothing missing before it); publish ``clock`` with t4.
2. Every ledger line after the watermark, in ``records`` messages of at most the batch size; wait until an
   ack reaches the last one sent.
3. The files vouched for by acknowledged records and not acknowledged yet, through the file pipeline.
4. ``done`` with the last record sent; then wait for the acks of the files the station now holds.

Any disconnect, a silence of the station longer than ``reply_timeout_seconds`` after the uploader's last
message, a stop request or the overall deadline ends the session with ProtocolError. Nothing is lost: the
next session starts again from the station's watermark and have-ranges.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from agent.errors import BodycamError, ProtocolError, StoreError
from agent.evidence.custody import long_term_files
from agent.evidence.encoding import GENESIS_PREV
from firmware_config.device_config import SyncSettings
from sync.protocol import (
    PUBLISH_OVERHEAD_BYTES,
    ClockReport,
    Done,
    ErrorNotice,
    FileStatus,
    Hello,
    HelloReply,
    chunk_size_for,
    parse_topic,
    up_topic,
)
from sync.uploader.acks import AckHandler, UploadState
from sync.uploader.assignment import AssignmentInbox
from sync.uploader.ledger_view import LedgerView
from sync.uploader.plan import LedgerLine, batches, files_to_offer
from sync.uploader.transfer import FilePipeline
from sync.uploader.transport import Event, Transport

log = logging.getLogger(__name__)
POLL_S = 0.25  # how often a waiting session looks at the stop flag and its deadlines
READ_SLICE_BYTES = 1024 * 1024  # ledger bytes read at a time
RECORDS_IN_FLIGHT_BYTES = 4 * 1024 * 1024  # records sent and not acknowledged yet


@dataclass
class SessionStats:
    session: str
    records_sent: int = 0
    record_bytes: int = 0
    chunks_sent: int = 0
    bytes_sent: int = 0
    files_offered: int = 0
    files_acked: int = 0
    acks: int = 0
    clock_offset_us: int | None = None
    clock_delay_us: int | None = None
    seconds: float = 0.0
    error: str | None = None

    def line(self) -> str:
        clock = "" if self.clock_offset_us is None else \
            f"; station clock offset {self.clock_offset_us} us (delay {self.clock_delay_us} us)"
        outcome = f"; ended early: {self.error}" if self.error else ""
        return (f"sync session {self.session}: {self.records_sent} records ({self.record_bytes} bytes), "
                f"{self.chunks_sent} chunks ({self.bytes_sent} bytes), {self.files_offered} files offered, "
                f"{self.files_acked} files acknowledged, {self.acks} acks in {self.seconds:.1f} s{clock}{outcome}")


def _batches_with_seq(lines: list[LedgerLine], max_bytes: int) -> list[tuple[bytes, int]]:
    """``plan.batches`` of these lines, each with the seq of its last line."""
    out: list[tuple[bytes, int]] = []
    index = 0
    for payload in batches([line.raw for line in lines], max_bytes):
        index += payload.count(b"\n")
        out.append((payload, lines[index - 1].seq))
    return out


class Session:
    def __init__(self, *, conn: Transport, settings: SyncSettings, device_id: str, view: LedgerView,
                 acks: AckHandler, state: UploadState, stop: threading.Event, deadline: float | None = None,
                 assignments: AssignmentInbox | None = None) -> None:
        self.conn = conn
        self.settings = settings
        self.device_id = device_id
        self.view = view
        self.acks = acks
        self.assignments = assignments
        self.state = state
        self.stop = stop
        self.deadline = deadline
        self.id = uuid.uuid4().hex
        self.stats = SessionStats(self.id)
        self._last_activity = time.monotonic()
        self._reply: tuple[HelloReply, int] | None = None
        self._pipeline: FilePipeline | None = None
        self.notices: list[str] = []

    # ---------------------------------------------------------------- plumbing

    def publish(self, kind: str, payload: bytes) -> None:
        self.conn.publish(up_topic(self.device_id, kind), payload)
        self._last_activity = time.monotonic()

    def wait(self) -> None:
        """Handle what the station sent (waiting up to POLL_S); raise ProtocolError to end the session."""
        if self.stop.is_set():
            raise ProtocolError("sync session stopped: the uploader is shutting down")
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            raise ProtocolError("sync session stopped: the time allowed (--timeout) is up")
        silent = now - self._last_activity
        if silent > self.settings.reply_timeout_seconds:
            reported = f"; the station reported: {' | '.join(self.notices[-3:])}" if self.notices else ""
            raise ProtocolError(f"station silent for {silent:.0f} s (reply_timeout_seconds "
                                f"{self.settings.reply_timeout_seconds:g}){reported}")
        event = self.conn.next_event(POLL_S)
        while event is not None:
            self.handle(event)
            event = self.conn.next_event(0)  # take what else is there without waiting: statuses come in bursts

    def handle(self, event: Event) -> None:
        """Route one event; a bad message is logged and ignored. ProtocolError: the connection was lost."""
        if event.kind == "disconnected":
            self.conn.close()
            raise ProtocolError(f"{self.conn.broker}: connection lost ({event.reason})")
        if event.kind != "message":
            return
        try:
            topic = parse_topic(event.topic)
        except ProtocolError as exc:
            log.warning("message ignored: %s", exc)
            return
        if topic.device != self.device_id or topic.direction != "down":
            log.warning("message on %s ignored: not this device's down topic", event.topic)
            return
        self._last_activity = time.monotonic()
        try:
            self._dispatch(topic.kind, event)
        except ProtocolError as exc:
            log.warning("station message on %s ignored: %s", event.topic, exc)

    def _dispatch(self, kind: str, event: Event) -> None:
        if kind == "ack":
            signed = self.acks.handle(event.payload)
            if signed is not None:
                self.stats.acks += 1
                self.stats.files_acked += len(signed.ack.files)
        elif kind == "hello":
            reply = HelloReply.decode(event.payload)
            if reply.session == self.id:
                self._reply = (reply, event.received_us)
        elif kind == "file":
            status = FileStatus.decode(event.payload)
            if self._pipeline is not None:
                self._pipeline.on_status(status)
        elif kind == "assignment":
            if self.assignments is not None:
                self.assignments.offer(event.payload)  # delivered to the device after the session
        elif kind == "error":
            notice = ErrorNotice.decode(event.payload)
            text = f"{notice.topic}: {notice.reason}"
            self.notices.append(text)
            log.warning("station refused a message on %s", text)

    # ---------------------------------------------------------------- the session

    def run(self) -> SessionStats:
        started = time.monotonic()
        try:
            watermark = self._hello()
            head_seq, head_link = self._send_records(watermark)
            pipeline = self._send_files()
            self.publish("done", Done(self.id, head_seq, head_link).encode())
            self._await_file_acks(pipeline)
        except BodycamError as exc:
            self.stats.error = str(exc)
            raise
        finally:
            self.stats.seconds = time.monotonic() - started
        return self.stats

    def _hello(self) -> int:
        t1 = time.time_ns() // 1000
        head_seq, head_link = self.view.head
        self.publish("hello", Hello(self.id, t1, head_seq, head_link).encode())
        while self._reply is None:
            self.wait()
        reply, t4 = self._reply
        report = ClockReport(self.id, t1, reply.t2_us, reply.t3_us, t4)
        self.publish("clock", report.encode())
        self.stats.clock_offset_us, self.stats.clock_delay_us = report.offset_us, report.delay_us
        if reply.seq > self.view.head[0]:
            self._refresh()
        own = self.view.link_of(reply.seq)
        problem = None
        if own is None:
            problem = (f"this ledger was cut back: the station holds seq {reply.seq} of {self.device_id}, but this "
                       f"ledger ends at seq {self.view.head[0]} (a restored or replaced store?); nothing sent, "
                       "the station records it as a rollback")
        elif own != reply.link:
            problem = (f"this ledger and the station's copy part ways: the station's record seq {reply.seq} of "
                       f"{self.device_id} has another link than this ledger's (a fork); nothing sent, the station "
                       "records it")
        if problem is not None:
            log.error("%s", problem)  # not a transient fault: the station and this store disagree on evidence
            self.state.disagreement = problem
            raise ProtocolError(problem)
        self.state.disagreement = None
        # The station's word now, even if lower than an earlier ack: it may have lost what it held.
        self.state.station_seq = reply.seq
        return reply.seq

    def _refresh(self) -> None:
        try:
            self.view.refresh()
        except StoreError as exc:
            raise ProtocolError(f"sync session {self.id}: {exc}") from None

    def _send_records(self, watermark: int) -> tuple[int, str]:
        """Every line after the watermark up to the head as it is now, then the wait for their ack.

        Read a slice at a time and at most RECORDS_IN_FLIGHT_BYTES unacknowledged: a device back after a
        week offline has hundreds of megabytes of ledger, which must not all sit in memory or at the broker.
        """
        head_seq = self.view.head[0]
        max_packet = self.conn.info.max_packet
        # A line longer than the batch target goes alone in its message; only the broker's limit refuses it.
        fits = max_packet - PUBLISH_OVERHEAD_BYTES if max_packet is not None else None
        limit = self.settings.batch_bytes if fits is None else min(self.settings.batch_bytes, fits)
        in_flight: deque[tuple[int, int]] = deque()  # (last seq, bytes) of each records message
        position, link = watermark, self.view.link_of(watermark) or GENESIS_PREV
        while position < head_seq:
            lines = [line for line in self.view.lines_after(position, READ_SLICE_BYTES) if line.seq <= head_seq]
            if not lines:
                raise ProtocolError(f"ledger of {self.device_id}: changed while its records were being sent")
            for batch in _batches_with_seq(lines, max(1, limit)):
                payload, last_seq = batch
                if fits is not None and len(payload) > fits:
                    raise ProtocolError(f"ledger line seq {last_seq} ({len(payload)} bytes) does not fit the "
                                        f"broker's maximum packet size {max_packet}")
                while in_flight and sum(n for _, n in in_flight) + len(payload) > RECORDS_IN_FLIGHT_BYTES:
                    self.wait()
                    while in_flight and in_flight[0][0] <= self.state.station_seq:
                        in_flight.popleft()
                self.publish("records", payload)
                in_flight.append((last_seq, len(payload)))
                self.stats.record_bytes += len(payload)
            self.stats.records_sent += len(lines)
            position, link = lines[-1].seq, lines[-1].link
        bad = self.view.bad
        if bad is not None and head_seq == self.view.head[0] and (fits is None or len(bad.raw) <= fits):
            # Sent once on its own so that the station records the problem; nothing after it can be placed.
            log.error("ledger line %d does not parse (%s): sent alone for the station's report; nothing after seq "
                      "%d is uploaded (run bodycam-verify on the store)", bad.number, bad.reason, head_seq)
            self.publish("records", bad.raw)
        while self.state.station_seq < head_seq:
            self.wait()
        return head_seq, link

    def _send_files(self) -> FilePipeline:
        records = self.view.records
        offers = files_to_offer(records, self.state.acked_sha256, long_term_files(records),
                                up_to_seq=self.state.station_seq)
        chunk = chunk_size_for(self.settings.chunk_bytes, self.conn.info.max_packet)
        pipeline = FilePipeline(layout=self.view.layout, session=self.id, offers=offers, chunk_bytes=chunk,
                                window=self.settings.window_chunks,
                                publish=self.publish, wait=self.wait)
        self._pipeline = pipeline
        self.acks.worker.hold()
        try:
            pipeline.run()
        finally:
            self.acks.worker.release()
            self.state.note_failures(pipeline.failed)
            self.stats.files_offered = pipeline.stats.files_offered
            self.stats.chunks_sent = pipeline.stats.chunks_sent
            self.stats.bytes_sent = pipeline.stats.bytes_sent
        return pipeline

    def _await_file_acks(self, pipeline: FilePipeline) -> None:
        due = {offer.sha256 for offer in pipeline.complete_files()}
        while due - self.state.acked_sha256:
            self.wait()
