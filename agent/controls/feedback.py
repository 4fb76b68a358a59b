"""LED and buzzer patterns: what the officer sees and hears for each ``Feedback`` the workflow asks for.

``FeedbackDriver(config, pin_factory=None, *, clock=time.monotonic)`` opens the LED (a plain LED, an RGB LED,
or both) and the buzzer (an active, fixed-tone buzzer) with gpiozero; ``start()`` (or ``with``) starts its
worker thread. ``show(FeedbackEffect(pattern, count))`` starts the pattern at once without blocking, and
``set_recording(on)`` sets the steady recording indicator. The driver plays each pattern as a schedule of pin
changes on ``clock`` (as gpiozero's ``blink`` would: on, off, n times); the worker sets them when due through
``poll()``, which tests call themselves on a fake clock instead of sleeping.

Patterns (times in ms: *on*/*off* x *repeats*; the LED and the buzzer start together):

=================  ======================  ====================  ========  ==============================
Feedback           LED                     buzzer                RGB       meaning
=================  ======================  ====================  ========  ==============================
ACK                50/30 x1                30/50 x1 (click)      white     a press registered
RECORDING_ON       steady on (indicator)   300/100 x1            red,      recording started
                                                                 steady
RECORDING_OFF      off (indicator)         80/80 x2              off       recording stopped
CASE_OPEN          200/100 x3              200/100 x3            blue      a case opened
STAGE              200/100 x1              200/100 x1            blue      next stage reached
CASE_CLOSED        600/100 x1              600/100 x1            green     the last stage closed the case
REFUSED            60/40 x3                60/40 x3 (fast        yellow    the stop guard: not stopped
                                           triple buzz)
REASON             100/300 x count         100/300 x count       yellow    stop reason number ``count``
REASON_TIMEOUT     60/40 x2                60/40 x2              yellow    reason window over, not stopped
RETENTION          500/150 x2              500/150 x2 (two       magenta   flagged for long-term retention
                                           long beeps)
BOOKMARK           40/80 x2                40/80 x2 (double      cyan      bookmark set
                                           click)
ERROR              50/50 x10               1000/100 x1           red       something failed
FAULT              250/250 x4 (slow)       250/250 x4 (four      red       device health: a self-test or
                                           even beeps)                     runtime check failed
=================  ======================  ====================  ========  ==============================

The recording indicator: while recording the plain LED is steady on (the RGB LED steady red). A pattern shown
while recording plays over it and the indicator comes back when the pattern ends; on the lit plain LED a
pattern shows as the same number of dark winks (its *off* phases). ``show(RECORDING_ON)`` and
``show(RECORDING_OFF)`` switch the indicator themselves; ``set_recording`` sets it without a pattern (at
start-up when a resumed case is already recording, or whenever the daemon learns the recorder's state).

One pattern plays at a time. ``show`` while nothing plays starts the pattern at once. While a pattern plays:

- if it ends within ``QUEUE_LIMIT_S`` (85 ms), the new one waits for it: an ACK followed at once by a more
  specific pattern is heard as a click and then that pattern;
- otherwise the new one cuts it and starts at once; if the LED or the buzzer is on at that moment, both go
  dark and silent for ``CUT_GAP_S`` (30 ms) first, so the new pattern is not heard as the tail of the old beep.

Either way every pattern starts within 100 ms of its ``show``. At most one pattern waits; a newer one
replaces it.

Thread safety: ``show`` and ``set_recording`` may be called from any thread (gpiozero's button threads
included); a small worker thread of the driver sets the pins, ends patterns and starts the waiting one.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import gpiozero
from gpiozero.exc import GPIOZeroError

from agent.errors import ConfigError
from agent.workflow.events import Feedback, FeedbackEffect
from firmware_config.controls import TABLE, ControlsConfig, FeedbackConfig

log = logging.getLogger(__name__)

QUEUE_LIMIT_S = 0.085
"""A pattern asked for while another ends within this many seconds waits for it instead of cutting it."""

CUT_GAP_S = 0.03
"""The dark, silent gap before a pattern that cuts another one short."""

Colour = tuple[int, int, int]
OFF: Colour = (0, 0, 0)
RED: Colour = (1, 0, 0)


@dataclass(frozen=True)
class Blink:
    """``n`` times: on for ``on_ms``, then off for ``off_ms``."""

    on_ms: int
    off_ms: int
    n: int = 1

    @property
    def total_s(self) -> float:
        return self.n * (self.on_ms + self.off_ms) / 1000


@dataclass(frozen=True)
class Pattern:
    led: Blink | None  # None: the LED shows the recording indicator
    buzzer: Blink | None  # None: silent
    colour: Colour  # the RGB LED's colour for the blinks
    recording: bool | None = None  # set the recording indicator (RECORDING_ON / RECORDING_OFF)

    @property
    def total_s(self) -> float:
        return max(self.led.total_s if self.led else 0.0, self.buzzer.total_s if self.buzzer else 0.0)


PATTERNS: Mapping[Feedback, Pattern] = {
    Feedback.ACK: Pattern(Blink(50, 30), Blink(30, 50), (1, 1, 1)),
    Feedback.RECORDING_ON: Pattern(None, Blink(300, 100), RED, recording=True),
    Feedback.RECORDING_OFF: Pattern(None, Blink(80, 80, 2), OFF, recording=False),
    Feedback.CASE_OPEN: Pattern(Blink(200, 100, 3), Blink(200, 100, 3), (0, 0, 1)),
    Feedback.STAGE: Pattern(Blink(200, 100), Blink(200, 100), (0, 0, 1)),
    Feedback.CASE_CLOSED: Pattern(Blink(600, 100), Blink(600, 100), (0, 1, 0)),
    Feedback.REFUSED: Pattern(Blink(60, 40, 3), Blink(60, 40, 3), (1, 1, 0)),
    Feedback.REASON: Pattern(Blink(100, 300), Blink(100, 300), (1, 1, 0)),  # n = the effect's count
    Feedback.REASON_TIMEOUT: Pattern(Blink(60, 40, 2), Blink(60, 40, 2), (1, 1, 0)),
    Feedback.RETENTION: Pattern(Blink(500, 150, 2), Blink(500, 150, 2), (1, 0, 1)),
    Feedback.BOOKMARK: Pattern(Blink(40, 80, 2), Blink(40, 80, 2), (0, 1, 1)),
    Feedback.ERROR: Pattern(Blink(50, 50, 10), Blink(1000, 100), RED),
    Feedback.FAULT: Pattern(Blink(250, 250, 4), Blink(250, 250, 4), RED),
}


def pattern_for(effect: FeedbackEffect) -> Pattern:
    """The pattern for ``effect``; for REASON the LED and buzzer repeat ``count`` times (at least once)."""
    pattern = PATTERNS[effect.pattern]
    if effect.pattern is Feedback.REASON:
        n = max(1, effect.count)
        return replace(
            pattern,
            led=replace(pattern.led, n=n) if pattern.led else None,
            buzzer=replace(pattern.buzzer, n=n) if pattern.buzzer else None,
        )
    return pattern


Step = tuple[float, int, Callable[[], None]]  # (when, order of scheduling, what to set)


class FeedbackDriver:
    """The LED(s) and the buzzer; see the module docstring for the patterns and the timing rules.

    The driver plays the patterns itself (one schedule of pin changes, not gpiozero's blink threads), so all
    its timing reads ``clock`` (seconds, monotonic): ``poll()`` sets what is due and returns when the next
    change is. ``start()`` runs the worker thread that polls; tests pass a fake clock and call ``poll()``.
    """

    def __init__(self, config: FeedbackConfig | ControlsConfig, pin_factory: Any = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        feedback = config.feedback if isinstance(config, ControlsConfig) else config
        feedback.validate()
        self._clock = clock
        self._led: Any = None
        self._rgb: Any = None
        self._buzzer: Any = None
        self._recording = False
        self._busy_until: float | None = None  # clock() when the current pattern ends
        self._pending: FeedbackEffect | None = None
        self._steps: list[Step] = []  # the current pattern's pin changes still to come, a heap
        self._order = 0
        self._closed = False
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        try:
            if feedback.led_pin is not None:
                led_pin = feedback.led_pin
                self._led = self._open("led_pin", led_pin, lambda: gpiozero.LED(led_pin, pin_factory=pin_factory))
            if feedback.rgb_pins is not None:
                red, green, blue = feedback.rgb_pins
                self._rgb = self._open(
                    "rgb_pins",
                    feedback.rgb_pins,
                    lambda: gpiozero.RGBLED(red, green, blue, pwm=False, pin_factory=pin_factory),
                )
            self._buzzer = self._open(
                "buzzer_pin", feedback.buzzer_pin, lambda: gpiozero.Buzzer(feedback.buzzer_pin, pin_factory=pin_factory)
            )
        except BaseException:
            self._close_devices()
            raise

    @staticmethod
    def _open(key: str, pin: object, make: Any) -> Any:
        try:
            return make()
        except GPIOZeroError as exc:
            raise ConfigError(f"key '{TABLE}.feedback.{key}': pin {pin!r} cannot be used: {exc}") from exc

    def start(self) -> FeedbackDriver:
        """Start the worker thread that ends patterns and starts the waiting one (once)."""
        with self._cond:
            if self._worker is None and not self._closed:
                self._worker = threading.Thread(target=self._run, name="bodycam-feedback", daemon=True)
                self._worker.start()
        return self

    def __enter__(self) -> FeedbackDriver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def recording(self) -> bool:
        return self._recording

    def show(self, effect: FeedbackEffect) -> None:
        """Start ``effect``'s pattern (within 100 ms, see the module docstring); returns without waiting for it."""
        with self._cond:
            if self._closed:
                log.debug("feedback closed: %s not shown", effect)
                return
            now = self._clock()
            if self._busy_until is not None and self._busy_until - now <= QUEUE_LIMIT_S:
                self._pending = effect  # the worker starts it when the current pattern ends
            elif self._busy_until is not None and self._any_on():
                self._silence()  # cut short in an on phase: a gap first, the worker starts the new pattern
                self._pending = effect
                self._busy_until = now + CUT_GAP_S
            else:
                self._pending = None
                self._silence_steps()
                self._start(effect, now)
            self._cond.notify_all()  # the worker, and a wait_idle caller

    def set_recording(self, on: bool) -> None:
        """Set the steady recording indicator; shown now, or when the pattern playing ends."""
        with self._cond:
            self._recording = on
            if not self._closed and self._busy_until is None:
                self._show_indicator()

    def poll(self) -> float | None:
        """Set the pins as due at ``clock()``; the clock() of the next change, None when nothing is to come."""
        with self._cond:
            if self._closed:
                return None
            now = self._clock()
            self._due(now)
            if self._busy_until is not None and self._busy_until <= now:
                # The pattern playing has ended: start the waiting one, or show the indicator again.
                self._busy_until = None
                pending, self._pending = self._pending, None
                try:
                    if pending is not None:
                        self._start(pending, now)
                    else:
                        self._show_indicator()
                except Exception:  # a failing pin must not end the worker
                    log.exception("feedback failed")
                self._cond.notify_all()  # a wait_idle caller
            times = [t for t in (self._busy_until, self._steps[0][0] if self._steps else None) if t is not None]
            return min(times) if times else None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no pattern plays or waits (the self-test's fault pattern before the agent exits)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy_until is not None or self._pending is not None:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._cond.wait(left)  # the worker notifies when a pattern ends
            return True

    def close(self) -> None:
        """Stop the worker, switch everything off and release the pins. Safe to call twice."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()  # the worker, and a wait_idle caller
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join()
        with self._cond:
            self._busy_until = None
            self._pending = None
            try:
                self._silence()
            except Exception:
                log.exception("switching the feedback devices off failed")
        self._close_devices()

    def _close_devices(self) -> None:
        for device in (self._led, self._rgb, self._buzzer):
            if device is None:
                continue
            try:
                device.close()
            except Exception:
                log.exception("closing %r failed", device)

    # --- under self._cond ---------------------------------------------------------------------------------

    def _start(self, effect: FeedbackEffect, now: float) -> None:
        pattern = pattern_for(effect)
        if pattern.recording is not None:
            self._recording = pattern.recording
        if pattern.buzzer is None:
            self._buzzer.off()
        else:
            self._schedule(now, pattern.buzzer, self._buzzer.on, self._buzzer.off)
        if pattern.led is None:
            self._show_indicator()
        else:
            if self._led is not None:
                self._schedule(now, pattern.led, self._led.on, self._led.off)
            if self._rgb is not None:
                rgb, colour = self._rgb, pattern.colour

                def lit() -> None:
                    rgb.color = colour

                self._schedule(now, pattern.led, lit, rgb.off)
        self._busy_until = now + pattern.total_s if pattern.total_s > 0 else None
        self._due(now)  # the first changes at once

    def _schedule(self, now: float, blink: Blink, on: Callable[[], None], off: Callable[[], None]) -> None:
        """``blink`` from ``now``: on, off after on_ms, on again after off_ms, n times (as gpiozero's blink)."""
        period = (blink.on_ms + blink.off_ms) / 1000
        for i in range(blink.n):
            for at, change in ((now + i * period, on), (now + i * period + blink.on_ms / 1000, off)):
                heapq.heappush(self._steps, (at, self._order, change))
                self._order += 1

    def _due(self, now: float) -> None:
        while self._steps and self._steps[0][0] <= now:
            heapq.heappop(self._steps)[2]()

    def _any_on(self) -> bool:
        return any(device is not None and bool(device.is_active) for device in (self._led, self._rgb, self._buzzer))

    def _silence_steps(self) -> None:
        self._steps.clear()

    def _silence(self) -> None:
        self._silence_steps()
        for device in (self._led, self._rgb, self._buzzer):
            if device is not None:
                device.off()

    def _show_indicator(self) -> None:
        if self._led is not None:
            self._led.value = self._recording
        if self._rgb is not None:
            self._rgb.value = RED if self._recording else OFF

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                due = self.poll()  # the condition's lock is re-entrant
                if not self._closed:
                    self._cond.wait(None if due is None else max(0.0, due - self._clock()))
