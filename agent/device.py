"""The device: buttons and the control socket -> the workflow machine -> the ledger, the recorder, feedback.

The machine decides (pure, :mod:`agent.workflow.machine`); this class carries its effects out, one event at
a time under a lock, so a button press and a control-socket command never interleave. Feedback goes out
first, so the officer hears and sees the press registered before any fsync happens. A stop is handed to
the recorder without waiting for the last segment to be signed: the button thread is never held up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import BodycamError, ConfigError
from agent.evidence.assignment import (
    SignedAssignment,
    Verdict,
    dock_body,
    judge_station,
    parse_assignment,
    refuse_in_case,
    station_body,
    verdict_text,
    verify_assignment,
)
from agent.evidence.keys import load_public_key
from agent.evidence.ledger import Ledger
from agent.evidence.store import read_records
from agent.recorder.segmenter import RecorderState
from agent.recorder.session import RecordingSession
from agent.workflow.events import (
    Command,
    Effect,
    ErrorEffect,
    Event,
    Feedback,
    FeedbackEffect,
    Press,
    RecordEffect,
    RecordingEffect,
    RecordingStopped,
    Tick,
)
from agent.workflow.machine import step
from agent.workflow.replay import replay, resume, status
from agent.workflow.state import WorkflowConfig, WorkflowState

log = logging.getLogger(__name__)
TICK_SECONDS = 0.25


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class Device:
    """One device's field workflow, driving its recording session."""

    def __init__(
        self,
        *, ledger: Ledger,
        session: RecordingSession,
        config: WorkflowConfig,
        show: Callable[[FeedbackEffect], None] = lambda _effect: None,
        set_recording_indicator: Callable[[bool], None] = lambda _on: None,
        clock_us: Callable[[], int] = monotonic_us,
    ) -> None:
        self.ledger = ledger
        self.session = session
        self.config = config
        self._show = show
        self._indicator = set_recording_indicator
        self._clock_us = clock_us
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None
        self._closing = threading.Event()
        records = read_records(ledger.layout.root)  # damaged lines are skipped: the verifier reports them
        self.state: WorkflowState = replay(((r.record.type, dict(r.record.body)) for r in records), config)
        self._prebuffer_seconds = session.segmenter.settings.prebuffer_seconds
        self._prebuffer_now = self._prebuffer_seconds
        self._show_officer()  # before the camera is armed: the first frame already carries the ledger's officer

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Arm the camera, resume an open case after a restart, and start the clock ticks."""
        self.session.arm()
        with self._lock:
            self.state, effects = resume(self.state)
            self._apply(effects)
            self._limit_prebuffer()
        self._ticker = threading.Thread(target=self._tick_loop, name="workflow-ticks", daemon=True)
        self._ticker.start()

    def close(self) -> None:
        """Stop ticking and close the recording session (the open segment is closed and signed)."""
        self._closing.set()
        if self._ticker is not None:
            self._ticker.join()
        self.session.close()

    # --- inputs ----------------------------------------------------------------------------------

    def press(self, press: Press) -> None:
        """A button press, from gpiozero's callback thread."""
        self.handle(press)

    def command(self, command: Command) -> tuple[str | None, dict[str, Any]]:
        """A control-socket command: (error text or None, the status afterwards)."""
        errors = self.handle(command)
        return (errors[0] if errors else None), self.status()

    def status(self) -> dict[str, Any]:
        with self._lock:
            result = status(self.state, self.config)
        result["recorder"] = self.session.state.value
        return result

    def handle(self, event: Event) -> list[str]:
        """Run one event through the machine and carry out its effects; returns refusal messages."""
        with self._lock:
            case_before = self.state.case
            self.state, effects = step(self.state, event, self.config)
            # A resumption inside a case that was already open starts fresh: nothing from the stopped
            # interval comes back, not even the GOP that was in progress at the stop.
            errors = self._apply(effects, fresh=case_before is not None and self.state.case is not None)
            self._limit_prebuffer()
            return errors

    def _limit_prebuffer(self) -> None:
        """No pre-event buffering while a case is open.

        Inside a case every stop is deliberate and reasoned (privacy, a restricted area): footage from the
        stopped interval must not come back through the buffer when recording resumes. Outside a case the
        buffer does its job: the seconds before the officer pressed record.
        """
        wanted = 0.0 if self.state.case is not None else self._prebuffer_seconds
        if wanted != self._prebuffer_now:
            self._prebuffer_now = wanted
            self.session.segmenter.set_prebuffer(wanted)

    # --- officer assignment (agent/evidence/assignment.py) ------------------------------------------

    @property
    def officer(self) -> str:
        """The officer in effect: the newest ``officer-assigned`` record's, else the config's."""
        return self.state.officers.current(self.config.officer_id)

    def assign_station(self, signed: SignedAssignment, station_key: Ed25519PublicKey) -> dict[str, Any]:
        """Record a station's signed assignment when it is news; VerificationError or RefusedError (a case
        is open): nothing recorded."""
        verify_assignment(signed, station_key, self.ledger.device_id)
        with self._lock:
            case = self.state.case
            verdict = judge_station(signed.assignment, self.state.officers, case.case_id if case else None)
            if verdict is not Verdict.RECORD:
                return self._assigned(verdict, signed.assignment.officer, None)
            record = self.ledger.append("event", station_body(signed, self.officer))
            return self._take_officer(record.record.body, record.seq)

    def assign_dock(self, officer: str) -> dict[str, Any]:
        """Record an assignment made at the dock (``ctl assign``); RefusedError while a case is open."""
        with self._lock:
            case = self.state.case
            if officer == self.officer:
                return self._assigned(Verdict.IN_EFFECT, officer, None)
            refuse_in_case(case.case_id if case else None, officer)
            body = dock_body(officer, self.officer, self.ledger.clock.now().wall_us)
            record = self.ledger.append("event", body)
            return self._take_officer(record.record.body, record.seq)

    def _take_officer(self, body: Mapping[str, Any], seq: int) -> dict[str, Any]:
        self.state = replace(self.state, officers=self.state.officers.after(body))
        self._show_officer()
        log.info("officer %r assigned by %s (record seq %d)", self.officer, body.get("by"), seq)
        return self._assigned(Verdict.RECORD, self.officer, seq)

    def _assigned(self, verdict: Verdict, officer: str, seq: int | None) -> dict[str, Any]:
        return {"outcome": verdict.value, "officer": self.officer, "by": self.state.officers.by, "seq": seq,
                "message": verdict_text(verdict, officer, seq)}

    def _show_officer(self) -> None:
        camera = self.session.camera
        if camera.settings.officer_id != self.officer:
            camera.set_officer(self.officer)

    # --- effects ---------------------------------------------------------------------------------

    def _apply(self, effects: list[Effect], fresh: bool = False) -> list[str]:
        errors: list[str] = []
        for effect in effects:  # feedback first: the officer must not wait for an fsync
            if isinstance(effect, FeedbackEffect):
                self._feedback(effect)
        for effect in effects:
            try:
                if isinstance(effect, RecordEffect):
                    self.ledger.append(effect.record_type, effect.body)
                elif isinstance(effect, RecordingEffect):
                    self._recording(effect, fresh)
                elif isinstance(effect, ErrorEffect):
                    errors.append(effect.message)
            except BodycamError as exc:
                log.error("cannot carry out %s: %s", type(effect).__name__, exc)
                self._feedback(FeedbackEffect(Feedback.ERROR))
                errors.append(str(exc))
        return errors

    def _recording(self, effect: RecordingEffect, fresh: bool) -> None:
        if effect.on:
            self.session.start(effect.reason, fresh=fresh)
        else:
            self.session.segmenter.stop_recording(effect.reason)  # not waited for: see the module docstring
        self._indicator(effect.on)

    def _feedback(self, effect: FeedbackEffect) -> None:
        try:
            self._show(effect)
        except Exception:  # feedback hardware must never take the workflow down with it
            log.exception("feedback %s failed", effect.pattern.value)

    # --- ticks -----------------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        while not self._closing.wait(TICK_SECONDS):
            self.handle(Tick(self._clock_us()))
            if self.state.recording and self.session.state is RecorderState.HALTED:
                # The recorder stopped on its own (storage full, a fault): keep the machine in step.
                self.handle(RecordingStopped(self.session.segmenter.halt_reason or "recorder halted"))


def assignment_handler(device: Device, station_key: Path | None) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """The control socket's ``assign`` op: ``assignment`` (a station's signed line, checked with the key in
    ``station_key``, read at every op like the custody ops) or ``officer`` (at the dock)."""

    def handle(fields: Mapping[str, Any]) -> dict[str, Any]:
        if "assignment" not in fields:
            return device.assign_dock(str(fields["officer"]))
        if station_key is None:
            raise ConfigError("sync.station_key is not configured: no station assignment can be checked")
        signed = parse_assignment(str(fields["assignment"]).encode("ascii", "replace"))
        return device.assign_station(signed, load_public_key(station_key))

    return handle
