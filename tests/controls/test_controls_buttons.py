"""ButtonPanel on gpiozero's mock pins: short and long presses, debounce, several buttons, errors, closing.

MockPin calls the edge callbacks synchronously in the thread that drives the pin, so a short press is reported
before ``drive_high()`` returns; a long press comes from gpiozero's hold thread and is waited for.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from agent.controls.buttons import ButtonPanel
from agent.errors import ConfigError
from agent.workflow.events import Button, Press
from firmware_config.controls import ButtonConfig, ControlsConfig, FeedbackConfig

SETTLE = 0.06  # longer than the 20 ms bounce window plus timer slack


def tap(pin: Any, seconds: float = 0.05) -> None:
    pin.drive_low()
    time.sleep(seconds)
    pin.drive_high()


def test_short_press_on_each_button(open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace) -> None:
    open_panel()
    for name, number in hw.PINS.items():
        before = time.monotonic_ns() // 1000
        tap(mock_factory.pin(number))
        after = time.monotonic_ns() // 1000
        press = presses.items[-1]
        assert (press.button, press.long) == (name, False)
        assert before <= press.at_us <= after  # the release time, CLOCK_MONOTONIC microseconds
    assert presses.simple() == [(Button.RECORD, False), (Button.STAGE, False), (Button.MARK, False)]


def test_nothing_is_reported_while_a_short_press_is_down(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace
) -> None:
    panel = open_panel()
    pin = mock_factory.pin(hw.PINS[Button.MARK])
    pin.drive_low()
    time.sleep(0.05)
    assert presses.items == []
    assert panel.is_pressed(Button.MARK)
    pin.drive_high()
    assert presses.simple() == [(Button.MARK, False)]
    assert not panel.is_pressed(Button.MARK)


def test_hold_is_reported_at_hold_time_and_the_release_adds_nothing(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace
) -> None:
    open_panel()
    pin = mock_factory.pin(hw.PINS[Button.STAGE])
    down = time.monotonic()
    pin.drive_low()
    (press,) = presses.wait_for(1)
    assert (press.button, press.long) == (Button.STAGE, True)
    assert pin.state == 0  # still held down: the officer hears it before letting go
    held_for = presses.called_at[0] - down
    assert hw.HOLD_MS / 1000 <= held_for < hw.HOLD_MS / 1000 + 0.1
    time.sleep(0.1)
    pin.drive_high()
    time.sleep(SETTLE)
    assert presses.simple() == [(Button.STAGE, True)]


def test_a_press_just_shorter_than_the_hold_time_is_short(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace
) -> None:
    open_panel()
    tap(mock_factory.pin(hw.PINS[Button.MARK]), (hw.HOLD_MS - 60) / 1000)
    time.sleep(hw.HOLD_MS / 1000)
    assert presses.simple() == [(Button.MARK, False)]


def test_a_late_hold_callback_still_counts_as_long_at_release(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace
) -> None:
    """The panel's clock says the press lasted past hold_ms although gpiozero's hold timer has not fired yet."""
    clock = hw.ManualClock()
    open_panel(hw.quick_config(hold_ms=1000), clock=clock)
    pin = mock_factory.pin(hw.PINS[Button.RECORD])
    pin.drive_low()
    clock.advance_ms(1000)
    pin.drive_high()
    assert presses.items == [Press(Button.RECORD, True, clock.now_ns // 1000)]
    time.sleep(0.05)
    assert len(presses.items) == 1


def test_bouncing_press_counts_once(open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace) -> None:
    panel = open_panel()
    pin = mock_factory.pin(hw.PINS[Button.RECORD])
    for _ in range(3):  # contact bounce: edges microseconds apart, well inside bounce_ms
        pin.drive_low()
        pin.drive_high()
    pin.drive_low()
    time.sleep(SETTLE)
    assert panel.is_pressed(Button.RECORD)
    assert presses.items == []
    pin.drive_high()
    time.sleep(SETTLE)
    assert presses.simple() == [(Button.RECORD, False)]


def test_bouncing_release_counts_once(open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace) -> None:
    panel = open_panel()
    pin = mock_factory.pin(hw.PINS[Button.STAGE])
    pin.drive_low()
    time.sleep(0.05)
    for _ in range(3):
        pin.drive_high()
        pin.drive_low()
    pin.drive_high()
    time.sleep(SETTLE)
    assert presses.simple() == [(Button.STAGE, False)]
    assert not panel.is_pressed(Button.STAGE)
    tap(pin)  # and the next press is seen normally
    assert presses.simple() == [(Button.STAGE, False), (Button.STAGE, False)]


def test_debounce_window_is_measured_on_the_panels_clock(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace
) -> None:
    clock = hw.ManualClock()
    panel = open_panel(clock=clock)
    pin = mock_factory.pin(hw.PINS[Button.MARK])
    pin.drive_low()  # accepted at t
    clock.advance_ms(hw.BOUNCE_MS - 1)
    pin.drive_high()  # t + 19 ms: ignored
    pin.drive_low()
    time.sleep(SETTLE)  # the level is read again when the window closes: still pressed
    assert panel.is_pressed(Button.MARK)
    clock.advance_ms(40)
    pin.drive_high()  # t + 59 ms: accepted
    assert presses.items == [Press(Button.MARK, False, clock.now_ns // 1000)]
    clock.advance_ms(hw.BOUNCE_MS)  # exactly bounce_ms after the last accepted edge: accepted
    pin.drive_low()
    assert panel.is_pressed(Button.MARK)


def test_a_glitch_shorter_than_the_bounce_window_is_not_a_press(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace
) -> None:
    panel = open_panel()
    pin = mock_factory.pin(hw.PINS[Button.RECORD])
    pin.drive_low()
    pin.drive_high()  # a spike on the line, not a finger
    time.sleep(SETTLE)
    assert presses.items == []
    assert not panel.is_pressed(Button.RECORD)  # not stuck pressed
    time.sleep(hw.HOLD_MS / 1000)
    assert presses.items == []
    tap(pin)
    assert presses.simple() == [(Button.RECORD, False)]


def test_a_glitch_during_a_hold_does_not_add_a_press(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace
) -> None:
    panel = open_panel()
    pin = mock_factory.pin(hw.PINS[Button.MARK])
    pin.drive_low()
    presses.wait_for(1)
    pin.drive_high()  # the contact opens for an instant while the officer holds on
    pin.drive_low()
    time.sleep(SETTLE)
    assert panel.is_pressed(Button.MARK)
    time.sleep(hw.HOLD_MS / 1000 + 0.05)  # gpiozero's hold timer restarted; the panel must not report again
    pin.drive_high()
    time.sleep(SETTLE)
    assert presses.simple() == [(Button.MARK, True)]


def test_short_press_during_another_buttons_hold(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace
) -> None:
    open_panel()
    record = mock_factory.pin(hw.PINS[Button.RECORD])
    stage = mock_factory.pin(hw.PINS[Button.STAGE])
    record.drive_low()
    time.sleep(0.02)
    tap(stage, 0.04)
    assert presses.simple() == [(Button.STAGE, False)]
    presses.wait_for(2)
    record.drive_high()
    time.sleep(SETTLE)
    assert presses.simple() == [(Button.STAGE, False), (Button.RECORD, True)]


def test_two_buttons_held_together(open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace) -> None:
    open_panel()
    record = mock_factory.pin(hw.PINS[Button.RECORD])
    mark = mock_factory.pin(hw.PINS[Button.MARK])
    record.drive_low()
    time.sleep(0.05)
    mark.drive_low()
    presses.wait_for(2)
    record.drive_high()
    mark.drive_high()
    time.sleep(SETTLE)
    assert presses.simple() == [(Button.RECORD, True), (Button.MARK, True)]
    assert presses.items[0].at_us < presses.items[1].at_us


def test_many_presses_in_a_row(open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace) -> None:
    open_panel()
    order = [Button.RECORD, Button.STAGE, Button.STAGE, Button.MARK, Button.RECORD, Button.MARK]
    for name in order:
        tap(mock_factory.pin(hw.PINS[name]), 0.03)
        time.sleep(0.025)
    assert presses.simple() == [(name, False) for name in order]
    stamps = [p.at_us for p in presses.items]
    assert stamps == sorted(stamps)


def test_a_failing_callback_is_logged_and_the_panel_goes_on(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    def fail_once(press: Press) -> None:
        presses.hook = None
        raise RuntimeError("state machine broke")

    presses.hook = fail_once
    open_panel()
    pin = mock_factory.pin(hw.PINS[Button.RECORD])
    tap(pin)
    time.sleep(0.03)
    tap(pin)
    assert presses.simple() == [(Button.RECORD, False), (Button.RECORD, False)]
    assert "on_press failed" in caplog.text


def test_close_stops_reporting_and_frees_the_pins(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace
) -> None:
    panel = open_panel()
    pin = mock_factory.pin(hw.PINS[Button.STAGE])
    pin.drive_low()
    panel.close()
    panel.close()  # twice is fine
    assert panel.closed
    time.sleep(hw.HOLD_MS / 1000 + 0.05)
    pin.drive_high()
    assert presses.items == []
    again = open_panel()  # the pins were released
    tap(pin)
    assert presses.simple() == [(Button.STAGE, False)]
    again.close()


def test_a_button_down_at_start_is_ignored_until_released(
    open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace
) -> None:
    pin = mock_factory.pin(hw.PINS[Button.RECORD])
    pin.drive_low()
    open_panel()
    time.sleep(hw.HOLD_MS / 1000 + 0.05)
    pin.drive_high()
    time.sleep(SETTLE)
    assert presses.items == []
    tap(pin)
    assert presses.simple() == [(Button.RECORD, False)]


def test_the_pull_down_wiring(open_panel: Any, presses: Any, mock_factory: Any, hw: SimpleNamespace) -> None:
    config = hw.quick_config()
    buttons = tuple(ButtonConfig(b.name, b.pin, pull_up=False, bounce_ms=20, hold_ms=150) for b in config.buttons)
    open_panel(ControlsConfig(buttons, config.feedback))
    pin = mock_factory.pin(hw.PINS[Button.MARK])
    pin.drive_high()  # pressed: the button connects the pin to 3V3
    time.sleep(0.05)
    pin.drive_low()
    assert presses.simple() == [(Button.MARK, False)]


def test_pins_gpiozero_refuses_are_config_errors(mock_factory: Any, presses: Any, hw: SimpleNamespace) -> None:
    feedback = FeedbackConfig(led_pin=23, buzzer_pin=24)

    def config(record: ButtonConfig) -> ControlsConfig:
        return ControlsConfig((record, ButtonConfig(Button.STAGE, 27), ButtonConfig(Button.MARK, 22)), feedback)

    with pytest.raises(ConfigError, match=r"key 'controls.buttons.record.pin': pin 'GPIO99' cannot be used"):
        ButtonPanel(config=config(ButtonConfig(Button.RECORD, "GPIO99")), on_press=presses, pin_factory=mock_factory)
    # GPIO2 has a fixed pull-up on the (mock) Pi 3B: a pull-down button there is refused.
    with pytest.raises(ConfigError, match=r"key 'controls.buttons.record.pin': pin 2 cannot be used"):
        ButtonPanel(config=config(ButtonConfig(Button.RECORD, 2, pull_up=False)), on_press=presses,
                    pin_factory=mock_factory)
    # the pins opened before the failure were released: the good wiring opens
    ButtonPanel(config=hw.quick_config(), on_press=presses, pin_factory=mock_factory).close()


def test_an_invalid_config_is_refused_before_any_pin_is_opened(mock_factory: Any, presses: Any) -> None:
    config = ControlsConfig((ButtonConfig(Button.RECORD, 17),), FeedbackConfig(led_pin=23, buzzer_pin=24))
    with pytest.raises(ConfigError, match=r"key 'controls.buttons.stage': missing"):
        ButtonPanel(config=config, on_press=presses, pin_factory=mock_factory)
    assert mock_factory.pins == {}
