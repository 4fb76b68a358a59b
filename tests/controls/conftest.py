"""Fixtures for the controls tests: gpiozero's MockFactory, a quick test wiring, and helpers to watch pins."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from agent.controls.buttons import ButtonPanel
from agent.controls.pins import ENV_VAR
from agent.workflow.events import Button, Press
from firmware_config.controls import ButtonConfig, ControlsConfig, FeedbackConfig

# BCM pins of the test wiring. The mock board is a Pi 3B, whose GPIO2 and GPIO3 have fixed pull-ups: not used.
PINS = {Button.RECORD: 17, Button.STAGE: 27, Button.MARK: 22}
LED_PIN, BUZZER_PIN = 23, 24
RGB_PINS = (5, 6, 13)
BOUNCE_MS = 20
HOLD_MS = 150


def quick_config(bounce_ms: int = BOUNCE_MS, hold_ms: int = HOLD_MS, rgb: bool = False) -> ControlsConfig:
    """The test wiring with short times, so holds take 150 ms rather than 800."""
    return ControlsConfig(
        buttons=tuple(ButtonConfig(name, pin, bounce_ms=bounce_ms, hold_ms=hold_ms) for name, pin in PINS.items()),
        feedback=FeedbackConfig(led_pin=LED_PIN, buzzer_pin=BUZZER_PIN, rgb_pins=RGB_PINS if rgb else None),
    )


@pytest.fixture(autouse=True)
def no_factory_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPIOZERO_PIN_FACTORY set in the developer's shell must not change what the tests open."""
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def mock_factory() -> Iterator[MockFactory]:
    """A fresh MockFactory, also installed as gpiozero's default, reset afterwards (as gpiozero's own tests do)."""
    saved = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = saved


class Presses:
    """Collects the presses a ButtonPanel reports (from whichever thread) and lets a test wait for them."""

    def __init__(self) -> None:
        self.items: list[Press] = []
        self.called_at: list[float] = []  # time.monotonic() of each call
        self.threads: list[str] = []
        self._cond = threading.Condition()
        self.hook: Callable[[Press], None] | None = None

    def __call__(self, press: Press) -> None:
        now = time.monotonic()
        with self._cond:
            self.items.append(press)
            self.called_at.append(now)
            self.threads.append(threading.current_thread().name)
            self._cond.notify_all()
        if self.hook is not None:
            self.hook(press)

    def wait_for(self, count: int, timeout: float = 2.0) -> list[Press]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.items) >= count, timeout)
            return list(self.items)

    def simple(self) -> list[tuple[Button, bool]]:
        return [(p.button, p.long) for p in self.items]


@pytest.fixture
def presses() -> Presses:
    return Presses()


@pytest.fixture
def open_panel(mock_factory: MockFactory, presses: Presses) -> Iterator[Callable[..., ButtonPanel]]:
    """``open_panel(config=None, clock=None)``: a ButtonPanel on the mock pins reporting into ``presses``."""
    panels: list[ButtonPanel] = []

    def factory(config: ControlsConfig | None = None, clock: Callable[[], int] | None = None) -> ButtonPanel:
        kwargs: dict[str, Any] = {"pin_factory": mock_factory}
        if clock is not None:
            kwargs["clock"] = clock
        panel = ButtonPanel(config=config or quick_config(), on_press=presses, **kwargs)
        panels.append(panel)
        return panel

    yield factory
    for panel in panels:
        panel.close()


class ManualClock:
    """A monotonic_ns stand-in the test moves by hand."""

    def __init__(self, start_ns: int = 5_000_000_000) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance_ms(self, ms: float) -> None:
        self.now_ns += int(ms * 1_000_000)


def changes(pin: Any, since: float) -> list[tuple[float, Any]]:
    """A mock pin's state changes since its ``clear_states()`` (called at ``since``), as (absolute time, state).

    MockPin stores each change with the time since the previous one; the first entry is the state at clearing.
    """
    out: list[tuple[float, Any]] = []
    t = since
    for entry in pin.states[1:]:
        t += entry.timestamp
        out.append((t, entry.state))
    return out


def clear(pin: Any) -> float:
    """Clear a mock pin's recorded states; returns the time of clearing for ``changes``."""
    t = time.monotonic()
    pin.clear_states()
    return t


def wait_for_changes(pin: Any, count: int, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while len(pin.states) - 1 < count and time.monotonic() < deadline:
        time.sleep(0.001)


def phases(pin: Any) -> list[tuple[Any, float]]:
    """(state, how long it lasted in ms) for each recorded state but the last, which has not ended yet."""
    return [(pin.states[i].state, pin.states[i + 1].timestamp * 1000) for i in range(len(pin.states) - 1)]


@pytest.fixture
def hw() -> SimpleNamespace:
    """The test wiring and the pin helpers above, for the test modules (they cannot import this conftest)."""
    return SimpleNamespace(
        PINS=PINS,
        LED_PIN=LED_PIN,
        BUZZER_PIN=BUZZER_PIN,
        RGB_PINS=RGB_PINS,
        BOUNCE_MS=BOUNCE_MS,
        HOLD_MS=HOLD_MS,
        quick_config=quick_config,
        ManualClock=ManualClock,
        changes=changes,
        clear=clear,
        wait_for_changes=wait_for_changes,
        phases=phases,
    )
