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
from collections.abc import Callable
from typing import Any

from agent.errors import BodycamError
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
        ledger: Ledger,
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
