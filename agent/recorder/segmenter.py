"""The segmenter: an output in picamera2's output protocol that turns encoded frames into signed evidence.

The encoder's thread only calls :meth:`Segmenter.outputframe`, which puts the frame on a queue and returns:
muxing, hashing, fsync, signing and the ledger all happen on the segmenter's own worker thread, so a slow
disk shows up as a counted backlog, never as a stalled encoder. Commands (start and stop recording) travel
on the same queue, so they take effect at an exact place in the frame stream: every frame before a start
goes to the pre-event buffer, every frame after it to a segment, and none is lost or duplicated at a cut.
"""

from __future__ import annotations

import enum
import errno
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agent.errors import BodycamError
from agent.evidence.fsutil import sha256_file
from agent.evidence.ledger import Ledger
from agent.evidence.store import segment_file_name
from agent.recorder.prebuffer import EncodedFrame, PreEventBuffer
from agent.recorder.segment_file import SegmentFile
from agent.recorder.storage import StorageState, StorageThresholds, free_bytes, storage_state

log = logging.getLogger(__name__)
SEGMENT_EXTENSION = "ts"


class RecorderState(enum.Enum):
    ARMED = "armed"  # encoding into the pre-event buffer, not recording
    RECORDING = "recording"
    HALTED = "halted"  # storage full, a write failed or the ledger failed: recording stopped cleanly


@dataclass(frozen=True)
class SegmenterSettings:
    segment_seconds: float = 10.0
    prebuffer_seconds: float = 30.0
    width: int = 1280
    height: int = 720
    fps: int = 30
    thresholds: StorageThresholds = field(default_factory=StorageThresholds)
    backlog_warn_frames: int = 60  # about two seconds of video waiting for the disk


@dataclass
class SegmenterStats:
    frames_in: int = 0
    frames_written: int = 0
    frames_not_recording: int = 0  # arrived while armed: into the pre-event buffer (written if a start follows)
    frames_aged_out: int = 0  # fell off the front of the pre-event buffer while armed (no recording was on)
    frames_after_halt: int = 0
    frames_awaiting_keyframe: int = 0  # after a fresh start, until the keyframe it asked for
    frames_rewritten: int = 0  # the GOP in progress at a stop, written again at the start of the next recording
    segments_closed: int = 0
    checkpoints: int = 0
    backlog_max: int = 0
    backlog_warnings: int = 0


@dataclass
class _Command:
    name: str
    reason: str
    done: threading.Event = field(default_factory=threading.Event)


_STOP_OUTPUT = object()


class Segmenter:
    """picamera2-style output (start, _add_stream, outputframe, stop) writing segments into the ledger's store."""

    needs_add_stream = False  # picamera2's encoders consult this before sending stream information

    def __init__(
        self,
        *, ledger: Ledger,
        settings: SegmenterSettings,
        origin_mono_us: Callable[[], int | None] | None = None,
        on_storage: Callable[[StorageState], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.stats = SegmenterStats()
        self.state = RecorderState.ARMED
        self.halt_reason: str | None = None
        self._origin = origin_mono_us or (lambda: None)
        self._on_storage = on_storage or (lambda _state: None)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._buffer = PreEventBuffer(settings.prebuffer_seconds)
        self._segment: SegmentFile | None = None
        self._segment_name = ""
        self._gop: list[EncodedFrame] = []  # frames written since the last keyframe
        self._awaiting_keyframe = False
        self._next_index: int | None = None  # the next segment file's number, from the folder at first use
        self._storage = StorageState.OK
        self._backlog_warned = False
        self._segment_us = int(settings.segment_seconds * 1_000_000)
        self._frame_us = 1_000_000 // max(settings.fps, 1)
        self._half_frame_us = self._frame_us // 2

    # --- picamera2's output protocol (called from the encoder's thread) ---------------------------

    def start(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="segmenter", daemon=True)
            self._worker.start()

    def stop(self) -> None:
        """The encoder stopped: close any open segment and wait for everything to be signed."""
        if self._worker is None:
            return
        self._queue.put(_STOP_OUTPUT)
        self._worker.join()
        self._worker = None

    def outputframe(
        self, frame: Any, keyframe: bool = True, timestamp: int | None = None, packet: Any = None, audio: bool = False
    ) -> None:
        if audio or frame is None:
            return  # audio arrives with the audio issue; video frames only here
        self.stats.frames_in += 1
        self._queue.put(EncodedFrame(bytes(frame), bool(keyframe), int(timestamp or 0)))

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        pass  # the muxer is set up from our own settings; MPEG-TS needs nothing more from the encoder

    # --- control (any thread) ----------------------------------------------------------------------

    def start_recording(self, reason: str = "record button", fresh: bool = False) -> threading.Event:
        """Begin recording at the current place in the stream, starting with the pre-event buffer.

        ``fresh``: nothing from before this place, not even the GOP in progress: recording begins at the
        next keyframe (ask the camera for one). For resuming after a deliberate stop inside a case, whose
        interval must not come back; the few frames until the keyframe are counted, not written.
        """
        return self._command("start-fresh" if fresh else "start", reason)

    def stop_recording(self, reason: str = "record button") -> threading.Event:
        """Stop recording; the returned event is set once the last segment is closed and signed."""
        return self._command("stop", reason)

    def set_prebuffer(self, seconds: float) -> threading.Event:
        """Change the pre-event buffer's length at this place in the stream (0 keeps only the GOP in progress)."""
        return self._command("prebuffer", str(seconds))

    def _command(self, name: str, reason: str) -> threading.Event:
        command = _Command(name, reason)
        self._queue.put(command)
        return command.done

    # --- the worker ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            backlog = self._queue.qsize()
            if backlog > self.stats.backlog_max:
                self.stats.backlog_max = backlog
            # Warn once per episode, when the backlog first reaches the threshold (it can jump past it
            # between two reads); the next episode begins once it has fallen below half of it.
            if backlog >= self.settings.backlog_warn_frames and not self._backlog_warned:
                self._backlog_warned = True
                self.stats.backlog_warnings += 1
                log.warning("segmenter backlog of %d frames: the disk is slower than the video", backlog)
            elif backlog < self.settings.backlog_warn_frames // 2:
                self._backlog_warned = False
            try:
                if item is _STOP_OUTPUT:
                    self._finish_recording("encoder stopped", record_event=self.state is RecorderState.RECORDING)
                    return
                if isinstance(item, _Command):
                    self._handle_command(item)
                else:
                    self._handle_frame(item)
            except BodycamError as exc:
                # The ledger itself failed: nothing more can be signed. Say so loudly and stop recording;
                # the next start recovers the open segment from disk.
                self._halt_without_ledger(str(exc))
            except Exception as exc:  # a bug or a muxer failure must not kill the worker and stall the queue
                log.exception("segmenter fault")
                self._halt_on_fault(f"{type(exc).__name__}: {exc}")
            finally:
                if isinstance(item, _Command):
                    item.done.set()

    def _handle_command(self, command: _Command) -> None:
        if command.name in ("start", "start-fresh") and self.state is RecorderState.ARMED:
            buffered = self._buffer.drain()
            if command.name == "start-fresh":
                self.stats.frames_aged_out += len(buffered)
                buffered = []
                self._awaiting_keyframe = True
            self.state = RecorderState.RECORDING
            self.ledger.append(
                "event",
                {
                    "kind": "recording-start",
                    "reason": command.reason,
                    "prebuffer_frames": len(buffered),
                    "prebuffer_first_ts_us": buffered[0].timestamp_us if buffered else -1,
                    # how much footage from before the press the recording begins with
                    "prebuffer_us": buffered[-1].timestamp_us - buffered[0].timestamp_us + self._frame_us
                    if buffered
                    else 0,
                },
            )
            for frame in buffered:
                self._write(frame)
                self.stats.frames_rewritten += frame.already_written
        elif command.name in ("start", "start-fresh") and self.state is RecorderState.HALTED:
            log.error("recording refused: %s", self.halt_reason)
            self.ledger.append("event", {"kind": "recording-refused", "reason": f"halted: {self.halt_reason}"})
        elif command.name == "prebuffer":
            self.stats.frames_aged_out += self._buffer.set_duration(float(command.reason))
        elif command.name == "stop" and self.state is RecorderState.RECORDING:
            self._finish_recording(command.reason, record_event=True)

    def _handle_frame(self, frame: EncodedFrame) -> None:
        if self.state is RecorderState.RECORDING:
            self._write(frame)
        elif self.state is RecorderState.ARMED:
            self.stats.frames_not_recording += 1
            self.stats.frames_aged_out += self._buffer.add(frame)
        else:
            self.stats.frames_after_halt += 1

    def _write(self, frame: EncodedFrame) -> None:
        if frame.keyframe:
            if self._segment is not None and frame.timestamp_us - (self._segment.first_ts_us or 0) >= (
                self._segment_us - self._half_frame_us
            ):
                self._close_segment()
            elif self._segment is not None:
                self._checkpoint()
            # Closing or checkpointing can halt on a write error: then nothing more is written and no new
            # segment is opened. The storage check can halt too. Either way this frame is not recorded.
            if self.state is not RecorderState.RECORDING or not self._check_storage():
                self.stats.frames_after_halt += 1
                return
        if frame.keyframe:
            self._gop = []
        self._gop.append(frame)
        if self._segment is None:
            if not frame.keyframe:
                if self._awaiting_keyframe:
                    self.stats.frames_awaiting_keyframe += 1  # a fresh start: the keyframe asked for is coming
                    return
                # Only before the encoder's first keyframe: the buffer starts at one, and a stop hands the
                # GOP in progress back to it. Counted, never silent.
                self.stats.frames_after_halt += 1
                log.warning("frame at %d µs before any keyframe: not decodable on its own, skipped",
                            frame.timestamp_us)
                return
            self._awaiting_keyframe = False
            self._open_segment()
            assert self._segment is not None
        try:
            self._segment.write_packet(frame.data, frame.keyframe, frame.timestamp_us)
        except OSError as exc:
            self.stats.frames_after_halt += 1  # not (wholly) written
            self._halt_on_write_error(exc)
            return
        self.stats.frames_written += 1

    def _open_segment(self) -> None:
        # The folder is listed once per segmenter, not at every cut: it grows by thousands of files a day.
        # Only this segmenter writes segments (the ledger's lock makes it the one writer).
        if self._next_index is None:
            self._next_index = self.ledger.next_segment_index()
        name = segment_file_name(self._next_index, SEGMENT_EXTENSION)
        self._next_index += 1
        path = self.ledger.layout.segments_dir / name
        self._segment = SegmentFile(path, self.settings.width, self.settings.height, self.settings.fps)
        self._segment_name = f"segments/{name}"

    def _checkpoint(self) -> None:
        assert self._segment is not None
        try:
            checkpoint = self._segment.checkpoint()
        except OSError as exc:
            self._halt_on_write_error(exc)
            return
        if checkpoint is None:
            return
        self.ledger.append(
            "checkpoint",
            {
                "file": self._segment_name,
                "offset": checkpoint.offset,
                "length": checkpoint.length,
                "sha256": checkpoint.sha256,
                "frames": checkpoint.frames,
                "first_ts_us": checkpoint.first_ts_us,
                "last_ts_us": checkpoint.last_ts_us,
            },
        )
        self.stats.checkpoints += 1

    def _close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        try:
            closed = segment.close()
        except OSError as exc:
            self._segment = segment
            self._halt_on_write_error(exc)
            return
        origin = self._origin()
        body: dict[str, Any] = {
            "file": self._segment_name,
            "sha256": closed.sha256,
            "size": closed.size,
            "frames": closed.frames,
            "first_ts_us": closed.first_ts_us,
            "last_ts_us": closed.last_ts_us,
        }
        if origin is not None:
            body["origin_mono_us"] = origin
        self.ledger.append("segment", body)
        self.stats.segments_closed += 1

    def _finish_recording(self, reason: str, record_event: bool) -> None:
        if self.state is not RecorderState.RECORDING:
            return
        self._close_segment()
        if self.state is RecorderState.RECORDING:  # closing can halt on a write error
            self.state = RecorderState.ARMED
            # The frames after the stop continue this GOP: without its keyframe they could not be decoded,
            # so the buffer starts from it. A quick restart writes these few frames again rather than
            # losing the frames that follow them.
            for frame in self._gop:
                self._buffer.add(replace(frame, already_written=True))
            if record_event:
                self.ledger.append("event", {"kind": "recording-stop", "reason": reason})

    def _check_storage(self) -> bool:
        """Apply the storage policy at a keyframe; False when recording had to stop."""
        try:
            free = free_bytes(self.ledger.layout.segments_dir)
        except OSError as exc:
            self._halt_on_write_error(exc)
            return False
        state = storage_state(free, self.settings.thresholds)
        if state is not self._storage:
            self._storage = state
            self._on_storage(state)
            if state is StorageState.LOW:
                self.ledger.append("event", {"kind": "storage-low", "free_bytes": free})
        if state is StorageState.FULL:
            self._close_segment()
            if self.state is RecorderState.HALTED:
                return False  # closing failed: that halt already wrote its storage-full record
            self._halt("storage-full", free, f"free space {free} bytes is at the floor")
            return False
        return True

    def _halt_on_write_error(self, exc: OSError) -> None:
        """ENOSPC, EIO and friends: keep what reached the disk, sign it, stop cleanly."""
        segment, self._segment = self._segment, None
        if segment is not None:
            segment.abandon()
            try:
                segment.path.chmod(0o444)  # recorded below: read-only like every closed segment
                digest, size = sha256_file(segment.path)
            except OSError as read_error:
                # Left on disk unrecorded: the next start records it as a recovered segment.
                log.error("cannot hash %s after a write error: %s", segment.path, read_error.strerror)
                segment = None
        if segment is not None:
            self.ledger.append(
                "segment",
                {
                    "file": self._segment_name,
                    "sha256": digest,
                    "size": size,
                    "frames": segment.frames,
                    "first_ts_us": segment.first_ts_us or 0,
                    "last_ts_us": segment.last_ts_us or 0,
                    "incomplete": f"write failed ({exc.strerror})",
                },
            )
            self.stats.segments_closed += 1
        try:
            free = free_bytes(self.ledger.layout.segments_dir)
        except OSError:
            free = 0
        name = errno.errorcode.get(exc.errno or 0, "error")
        self._halt("storage-full", free, f"write failed: {name} ({exc.strerror})")

    def _halt(self, record_type: str, free: int, reason: str) -> None:
        self.state = RecorderState.HALTED
        self.halt_reason = reason
        log.error("recording stopped: %s", reason)
        self.ledger.append(record_type, {"free_bytes": free, "reason": reason})

    def _halt_on_fault(self, reason: str) -> None:
        if self._segment is not None:
            self._segment.abandon()  # kept on disk; the next start records it as a recovered segment
            self._segment = None
        self.state = RecorderState.HALTED
        self.halt_reason = reason
        try:
            self.ledger.append("event", {"kind": "recorder-fault", "error": reason[:500]})
        except BodycamError as exc:
            log.critical("recording stopped and the fault could not be signed: %s", exc)

    def _halt_without_ledger(self, reason: str) -> None:
        self.state = RecorderState.HALTED
        self.halt_reason = reason
        log.critical("recording stopped, the ledger failed: %s", reason)
        if self._segment is not None:
            self._segment.abandon()
            self._segment = None
