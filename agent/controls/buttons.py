"""The three push buttons, read through gpiozero, reported as ``Press`` events.

``ButtonPanel(config=, on_press=, clock=time.monotonic_ns, pin_factory=None)`` opens one gpiozero ``Button`` per
configured button and calls ``on_press(Press(button, long, at_us))`` once per press:

- **Short press**: reported when the button is released before ``hold_ms``; ``at_us`` is the release time.
- **Long press**: reported *at hold time*, while the button is still down (gpiozero's ``when_held``), so the
  officer gets the feedback without letting go; the release that follows reports nothing. ``at_us`` is the
  time the hold was recognised. If the hold callback comes late (gpiozero restarts its hold timer after
  contact bounce, or its thread was slow) and the release arrives first, a press that lasted ``hold_ms`` or
  longer is still reported as long, at release.
- **Debounce** is done here, not by gpiozero (``bounce_time`` is not passed on: MockPin ignores it, and lgpio's
  is a stable-for filter that would delay every edge): an edge within ``bounce_ms`` of the last accepted edge
  of the same button is ignored. When edges were ignored, the pin level is read again as the window closes,
  so a button is never left stuck pressed or released by bounce:

  - a press whose contact did not outlast its own bounce window is dropped as noise (no report);
  - a held button that reads pressed again just after its release (a glitch during a hold) continues the same
    held press, so it cannot report a second press.

  Known limit: a release glitch during a short press (before ``hold_ms``) reports that short press at the
  glitch; the contact that continues counts as a new press. Confirming every release for ``bounce_ms`` before
  reporting would remove this at the cost of ``bounce_ms`` more latency on every short press.
- A button already held down when the panel opens is ignored until it is released.

Threads: ``on_press`` is called from gpiozero's threads (the pin-callback thread for releases, the button's
hold thread for long presses, a short-lived timer after bounce) but never concurrently and always in the order
the presses were recognised: the panel calls it holding one lock. Keep it quick (hand the press to a queue or
to the state machine and the feedback driver); it must not call ``close()``. An exception it raises is logged
and the panel keeps working.

``clock`` gives CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns`` on Linux); ``Press.at_us`` is ``clock() //
1000`` read when the press is recognised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gpiozero
from gpiozero.exc import GPIOZeroError

from agent.errors import ConfigError
from agent.workflow.events import Button, Press
from firmware_config.controls import ButtonConfig, ControlsConfig

log = logging.getLogger(__name__)

_MS = 1_000_000  # nanoseconds


@dataclass
class _State:
    """One button's debounced state, guarded by the panel's lock."""

    config: ButtonConfig
    device: Any  # gpiozero.Button
    pressed: bool = False  # the accepted (debounced) level
    since_ns: int = 0  # when the current press was accepted
    held: bool = False  # this press was already reported as long
    release_was_held: bool = False  # the last accepted release ended a held press
    last_edge_ns: int | None = None  # the last accepted edge
    settle: threading.Timer | None = None  # re-reads the level when the bounce window closes


class ButtonPanel:
    """The configured buttons; see the module docstring for what is reported when."""

    def __init__(
        self,
        *, config: ControlsConfig,
        on_press: Callable[[Press], None],
        clock: Callable[[], int] = time.monotonic_ns,
        pin_factory: Any = None,
    ) -> None:
        config.validate()
        self._on_press = on_press
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False
        self._states: dict[Button, _State] = {}
        try:
            for button in config.buttons:
                self._states[button.name] = _State(button, self._open(button, pin_factory))
        except BaseException:
            self._close_devices()
            raise
        for name, state in self._states.items():
            state.device.when_pressed = partial(self._edge, name, True)
            state.device.when_released = partial(self._edge, name, False)
            state.device.when_held = partial(self._hold, name)

    @staticmethod
    def _open(button: ButtonConfig, pin_factory: Any) -> Any:
        try:
            return gpiozero.Button(
                button.pin,
                pull_up=button.pull_up,
                bounce_time=None,  # debounced here (module docstring)
                hold_time=button.hold_ms / 1000,
                hold_repeat=False,
                pin_factory=pin_factory,
            )
        except GPIOZeroError as exc:
            raise ConfigError(f"key '{button.key}.pin': pin {button.pin!r} cannot be used: {exc}") from exc

    def __enter__(self) -> ButtonPanel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def is_pressed(self, name: Button) -> bool:
        """The debounced level of one button (a press in progress, reported or not)."""
        with self._lock:
            return self._states[name].pressed

    def close(self) -> None:
        """Stop reporting and release the pins. Safe to call twice; not from inside ``on_press``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for state in self._states.values():
                if state.settle is not None:
                    state.settle.cancel()
                    state.settle = None
        # Outside the lock: closing a Button joins its hold thread, which may be waiting for the lock.
        self._close_devices()

    def _close_devices(self) -> None:
        # In parallel: each Button's close waits up to 0.1 s for its hold thread to notice.
        closers = [
            threading.Thread(target=self._close_device, args=(state,), name=f"bodycam-close-{name.value}")
            for name, state in self._states.items()
        ]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()

    @staticmethod
    def _close_device(state: _State) -> None:
        try:
            state.device.close()
        except Exception:  # closing must go on for the other pins
            log.exception("closing the %s button failed", state.config.name.value)

    # --- gpiozero callbacks --------------------------------------------------------------------------------

    def _edge(self, name: Button, pressed: bool) -> None:
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            state = self._states[name]
            if state.last_edge_ns is not None and now - state.last_edge_ns < state.config.bounce_ms * _MS:
                self._arm_settle(name, state, now)
                return
            self._deliver(self._accept(name, state, pressed, now))

    def _hold(self, name: Button) -> None:
        with self._lock:
            if self._closed:
                return
            state = self._states[name]
            if not state.pressed or state.held:
                return
            state.held = True
            self._deliver(Press(name, True, self._clock() // 1000))

    def _settle(self, name: Button) -> None:
        with self._lock:
            state = self._states[name]
            state.settle = None
            if self._closed:
                return
            level = bool(state.device.is_pressed)
            if level == state.pressed:
                return
            now = self._clock()
            if level and state.release_was_held:
                # Pressed again within the bounce window of a held press's release: the same press goes on.
                state.pressed = state.held = True
                state.last_edge_ns = now
                return
            if not level and not state.held:
                # Released within the bounce window of its own press: noise, not a press.
                state.pressed = False
                state.last_edge_ns = now
                log.debug("%s: contact shorter than %d ms ignored", name.value, state.config.bounce_ms)
                return
            self._deliver(self._accept(name, state, level, now))

    # --- the debounced state ------------------------------------------------------------------------------

    def _accept(self, name: Button, state: _State, pressed: bool, now: int) -> Press | None:
        if pressed == state.pressed:
            return None
        state.last_edge_ns = now
        state.pressed = pressed
        if pressed:
            state.since_ns = now
            state.held = False
            return None
        state.release_was_held = state.held
        if state.held:
            return None  # reported at hold time
        long = now - state.since_ns >= state.config.hold_ms * _MS
        return Press(name, long, now // 1000)

    def _arm_settle(self, name: Button, state: _State, now: int) -> None:
        if state.settle is not None or state.last_edge_ns is None:
            return
        wait_ns = state.last_edge_ns + state.config.bounce_ms * _MS - now
        timer = threading.Timer(max(wait_ns, 0) / 1e9 + 0.001, self._settle, args=(name,))
        timer.daemon = True
        timer.name = f"bodycam-debounce-{name.value}"
        state.settle = timer
        timer.start()

    def _deliver(self, press: Press | None) -> None:
        if press is None:
            return
        try:
            self._on_press(press)
        except Exception:
            log.exception("on_press failed for %s", press)
