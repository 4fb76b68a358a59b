"""FeedbackDriver on gpiozero's mock pins: each pattern's LED and buzzer states and times, the recording
indicator, patterns meeting each other, and the 100 ms start budget (also measured from a real press).

MockPin records every state change with the time since the previous one (``pin.states``); the tests compare
the sequence of states exactly and the durations within a tolerance for thread scheduling.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from agent.controls.buttons import ButtonPanel
from agent.controls.config import FeedbackConfig
from agent.controls.feedback import CUT_GAP_S, PATTERNS, QUEUE_LIMIT_S, Blink, FeedbackDriver, pattern_for
from agent.errors import ConfigError
from agent.workflow.events import Button, Feedback, FeedbackEffect, Press

TOLERANCE_MS = 50  # thread wake-up jitter on a busy test machine (gpiozero's own tests allow 50 ms)
EARLY_MS = 15  # a gap between two patterns can be short by the start-up delay of the first one
START_BUDGET_S = 0.100  # the issue: every press gives feedback within 100 ms


@pytest.fixture
def driver(mock_factory: Any, hw: SimpleNamespace) -> Any:
    feedback = FeedbackDriver(hw.quick_config(), pin_factory=mock_factory)
    yield feedback
    feedback.close()


@pytest.fixture
def led(mock_factory: Any, hw: SimpleNamespace, driver: Any) -> Any:
    return mock_factory.pin(hw.LED_PIN)


@pytest.fixture
def buzzer(mock_factory: Any, hw: SimpleNamespace, driver: Any) -> Any:
    return mock_factory.pin(hw.BUZZER_PIN)


def expected_phases(blink: Blink) -> list[tuple[bool, float]]:
    """off at clearing (0 ms long), then on/off n times; the last off phase has no end yet, so it is left out."""
    out: list[tuple[bool, float]] = [(False, 0.0)]
    for i in range(blink.n):
        out.append((True, blink.on_ms))
        if i < blink.n - 1:
            out.append((False, blink.off_ms))
    return out


def assert_phases(actual: list[tuple[Any, float]], expected: list[tuple[bool, float]], what: str) -> None:
    assert [bool(s) for s, _ in actual] == [s for s, _ in expected], f"{what}: {actual}"
    for (_, got), (_, want) in zip(actual[1:], expected[1:], strict=True):
        assert want - EARLY_MS <= got <= want + TOLERANCE_MS, f"{what}: {actual} (want {expected})"


def play(driver: Any, pins: list[Any], effect: FeedbackEffect, hw: SimpleNamespace) -> float:
    """Show ``effect`` on cleared pins and wait until it has finished; returns when show() was called."""
    for pin in pins:
        hw.clear(pin)
    called = time.monotonic()
    driver.show(effect)
    time.sleep(pattern_for(effect).total_s + 0.05)
    return called


BLINK_EFFECTS = [FeedbackEffect(p) for p in Feedback if p not in (Feedback.RECORDING_ON, Feedback.RECORDING_OFF)] + [
    FeedbackEffect(Feedback.REASON, count=4)
]


def test_blink_patterns_on_led_and_buzzer(hw: SimpleNamespace) -> None:
    """Every blinking pattern at once, each on its own mock board, so the whole table takes 1.7 s, not 9."""
    boards = [MockFactory() for _ in BLINK_EFFECTS]
    drivers = [FeedbackDriver(hw.quick_config(), pin_factory=board) for board in boards]
    try:
        pins = [(board.pin(hw.LED_PIN), board.pin(hw.BUZZER_PIN)) for board in boards]
        for (led, buzzer), driver, effect in zip(pins, drivers, BLINK_EFFECTS, strict=True):
            hw.clear(led)
            hw.clear(buzzer)
            driver.show(effect)
        time.sleep(max(pattern_for(e).total_s for e in BLINK_EFFECTS) + 0.05)
        for (led, buzzer), effect in zip(pins, BLINK_EFFECTS, strict=True):
            pattern = pattern_for(effect)
            assert pattern.led is not None and pattern.buzzer is not None
            assert_phases(hw.phases(led), expected_phases(pattern.led), f"{effect} LED")
            assert_phases(hw.phases(buzzer), expected_phases(pattern.buzzer), f"{effect} buzzer")
            assert led.state == 0 and buzzer.state == 0, effect  # all off afterwards when not recording
    finally:
        for driver in drivers:
            driver.close()
        for board in boards:
            board.reset()


def test_the_table_as_the_issue_asks(driver: Any, led: Any, buzzer: Any, hw: SimpleNamespace) -> None:
    assert PATTERNS[Feedback.ACK].led == Blink(50, 30)  # one 50 ms blink
    assert PATTERNS[Feedback.ACK].buzzer == Blink(30, 50)  # and a 30 ms click
    refused = PATTERNS[Feedback.REFUSED].buzzer
    assert refused is not None and refused.n == 3 and refused.on_ms <= 60  # a fast triple buzz
    retention = PATTERNS[Feedback.RETENTION].buzzer
    assert retention is not None and retention.n == 2 and retention.on_ms >= 500  # two long beeps
    reason = pattern_for(FeedbackEffect(Feedback.REASON, count=6)).buzzer
    assert reason is not None and reason.n == 6  # beep count = reason number
    assert pattern_for(FeedbackEffect(Feedback.REASON, count=0)).buzzer.n == 1  # type: ignore[union-attr]
    # the buzzer alone tells every pattern apart (the officer need not look)
    sounds = [PATTERNS[p].buzzer for p in Feedback]
    assert len(set(sounds)) == len(sounds)


def test_every_pattern_starts_within_100_ms(driver: Any, led: Any, buzzer: Any, hw: SimpleNamespace) -> None:
    for pattern in [*Feedback, Feedback.ACK]:  # each cuts the one before, which is far from its end
        driver.set_recording(False)
        time.sleep(0.01)
        cleared = (hw.clear(led), hw.clear(buzzer))
        called = time.monotonic()
        driver.show(FeedbackEffect(pattern))
        hw.wait_for_changes(buzzer, 1)
        hw.wait_for_changes(led, 1, timeout=0.0 if pattern is Feedback.RECORDING_OFF else 2.0)  # LED was dark
        first = min(t for pin, at in zip((led, buzzer), cleared, strict=True) for t, _ in hw.changes(pin, at))
        assert first - called < START_BUDGET_S, pattern


def test_recording_indicator(driver: Any, led: Any, buzzer: Any, hw: SimpleNamespace) -> None:
    called = play(driver, [led, buzzer], FeedbackEffect(Feedback.RECORDING_ON), hw)
    assert driver.recording
    assert [s for _, s in hw.changes(led, called)] == [True]  # steady on, at once
    assert hw.changes(led, called)[0][0] - called < START_BUDGET_S
    assert_phases(hw.phases(buzzer), expected_phases(Blink(300, 100)), "RECORDING_ON buzzer")

    # A pattern while recording plays over the lit LED (its off phases show as dark winks), then the LED is lit again.
    play(driver, [led, buzzer], FeedbackEffect(Feedback.BOOKMARK), hw)
    assert [bool(s) for s, _ in hw.phases(led)] == [True, False, True, False]
    assert led.state == 1

    called = play(driver, [led, buzzer], FeedbackEffect(Feedback.RECORDING_OFF), hw)
    assert not driver.recording
    assert [s for _, s in hw.changes(led, called)] == [False]
    assert_phases(hw.phases(buzzer), expected_phases(Blink(80, 80, 2)), "RECORDING_OFF buzzer")


def test_set_recording_without_a_pattern(driver: Any, led: Any, buzzer: Any, hw: SimpleNamespace) -> None:
    hw.clear(buzzer)
    driver.set_recording(True)
    assert led.state == 1
    driver.show(FeedbackEffect(Feedback.STAGE))
    time.sleep(0.05)
    driver.set_recording(False)  # during a pattern: applied when it ends
    assert led.state == 1
    time.sleep(pattern_for(FeedbackEffect(Feedback.STAGE)).total_s + 0.05)
    assert led.state == 0
    driver.set_recording(True)
    assert led.state == 1
    assert len(buzzer.states) == 3  # the STAGE beep on and off: set_recording itself is silent


def test_ack_then_a_pattern_at_once_plays_both(driver: Any, led: Any, buzzer: Any, hw: SimpleNamespace) -> None:
    hw.clear(led)
    hw.clear(buzzer)
    called = time.monotonic()
    driver.show(FeedbackEffect(Feedback.ACK))
    driver.show(FeedbackEffect(Feedback.STAGE))
    time.sleep(0.08 + 0.3 + 0.05)
    beeps = [(round(ms), bool(s)) for s, ms in hw.phases(buzzer)]
    assert [s for _, s in beeps] == [False, True, False, True]  # the click, then the stage beep
    assert_phases(hw.phases(buzzer)[:2], [(False, 0), (True, 30)], "ACK click")
    stage_start = hw.changes(buzzer, called)[2][0]
    assert stage_start - called < START_BUDGET_S
    assert [bool(s) for s, _ in hw.phases(led)] == [False, True, False, True]


def test_a_new_pattern_cuts_a_long_one(driver: Any, led: Any, buzzer: Any, hw: SimpleNamespace) -> None:
    driver.show(FeedbackEffect(Feedback.RETENTION))
    time.sleep(0.6)  # in the off gap between the two long beeps
    hw.clear(buzzer)
    called = time.monotonic()
    driver.show(FeedbackEffect(Feedback.ACK))
    time.sleep(0.08 + 0.05)
    changes = hw.changes(buzzer, called)
    assert changes[0][0] - called < 0.02  # all was dark and silent: no gap needed
    time.sleep(0.05)  # past the time the cut pattern's second beep would have started (650 ms)
    assert [s for _, s in hw.changes(buzzer, called)] == [True, False]  # the ACK click; the second beep never came


def test_a_cut_during_a_beep_is_heard_as_a_new_pattern(driver: Any, led: Any, buzzer: Any, hw: SimpleNamespace) -> None:
    driver.show(FeedbackEffect(Feedback.ERROR))  # a 1 s buzz
    time.sleep(0.2)
    hw.clear(buzzer)
    called = time.monotonic()
    driver.show(FeedbackEffect(Feedback.STAGE))
    time.sleep(CUT_GAP_S + 0.3 + 0.05)
    (off_at, off), (on_at, on), (_, end) = hw.changes(buzzer, called)
    assert (off, on, end) == (False, True, False)
    assert off_at - called < 0.01  # silent at once
    assert CUT_GAP_S - 0.002 <= on_at - off_at < CUT_GAP_S + TOLERANCE_MS / 1000


def test_only_the_newest_waiting_pattern_plays(driver: Any, led: Any, buzzer: Any, hw: SimpleNamespace) -> None:
    hw.clear(buzzer)
    driver.show(FeedbackEffect(Feedback.ACK))
    driver.show(FeedbackEffect(Feedback.RETENTION))
    driver.show(FeedbackEffect(Feedback.STAGE))  # replaces RETENTION while both wait for the click to end
    time.sleep(0.08 + 0.3 + 0.05)
    assert_phases(hw.phases(buzzer), [(False, 0), (True, 30), (False, 50), (True, 200)], "ACK then STAGE")
    assert QUEUE_LIMIT_S < START_BUDGET_S


def test_wait_idle_returns_when_the_patterns_end(driver: Any, led: Any, buzzer: Any, hw: SimpleNamespace) -> None:
    assert driver.wait_idle(0.01) is True  # nothing playing
    driver.show(FeedbackEffect(Feedback.ACK))
    driver.show(FeedbackEffect(Feedback.STAGE))  # waits for the click to end
    total = pattern_for(FeedbackEffect(Feedback.ACK)).total_s + pattern_for(FeedbackEffect(Feedback.STAGE)).total_s
    assert driver.wait_idle(total / 4) is False  # still playing
    started = time.monotonic()
    assert driver.wait_idle(5) is True
    # Woken by the worker as the waiting pattern ends, not seconds of polling later.
    assert time.monotonic() - started < total + TOLERANCE_MS / 1000
    assert not buzzer.state and [bool(s) for s, _ in hw.phases(buzzer)][-2:] == [False, True]  # both played, now silent


def test_rgb_led_colours(mock_factory: Any, hw: SimpleNamespace) -> None:
    with FeedbackDriver(hw.quick_config(rgb=True), pin_factory=mock_factory) as driver:
        red, green, blue = (mock_factory.pin(p) for p in hw.RGB_PINS)
        for pin in (red, green, blue):
            hw.clear(pin)
        driver.show(FeedbackEffect(Feedback.BOOKMARK))  # cyan: green and blue blink twice, red stays dark
        time.sleep(0.24 + 0.05)
        assert len(red.states) == 1
        for pin in (green, blue):
            assert_phases(hw.phases(pin), expected_phases(Blink(40, 80, 2)), "BOOKMARK cyan")
        driver.set_recording(True)  # steady red
        assert (red.state, green.state, blue.state) == (1, 0, 0)
        driver.show(FeedbackEffect(Feedback.ACK))  # white flash, then red again
        time.sleep(0.08 + 0.05)
        assert (red.state, green.state, blue.state) == (1, 0, 0)
        assert mock_factory.pin(hw.LED_PIN).state == 1  # the plain LED is lit alongside


def test_rgb_led_alone(mock_factory: Any, hw: SimpleNamespace) -> None:
    config = FeedbackConfig(led_pin=None, buzzer_pin=hw.BUZZER_PIN, rgb_pins=hw.RGB_PINS)
    with FeedbackDriver(config, pin_factory=mock_factory) as driver:
        driver.show(FeedbackEffect(Feedback.RECORDING_ON))
        assert [mock_factory.pin(p).state for p in hw.RGB_PINS] == [1, 0, 0]


def test_close_switches_everything_off(mock_factory: Any, hw: SimpleNamespace) -> None:
    driver = FeedbackDriver(hw.quick_config(), pin_factory=mock_factory)
    driver.show(FeedbackEffect(Feedback.RECORDING_ON))
    driver.show(FeedbackEffect(Feedback.ERROR))
    driver.close()
    driver.close()
    assert mock_factory.pin(hw.LED_PIN).state == 0
    assert mock_factory.pin(hw.BUZZER_PIN).state == 0
    driver.show(FeedbackEffect(Feedback.ACK))  # ignored after close, no error
    FeedbackDriver(hw.quick_config(), pin_factory=mock_factory).close()  # the pins were released


def test_bad_feedback_pins_are_config_errors(mock_factory: Any) -> None:
    with pytest.raises(ConfigError, match=r"key 'controls.feedback.buzzer_pin': value 23: .*GPIO23 is already "
                                          r"used"):
        FeedbackDriver(FeedbackConfig(led_pin=23, buzzer_pin=23), pin_factory=mock_factory)
    with pytest.raises(ConfigError, match=r"key 'controls.feedback.buzzer_pin': pin 'GPIO99' cannot be used"):
        FeedbackDriver(FeedbackConfig(led_pin=23, buzzer_pin="GPIO99"), pin_factory=mock_factory)
    FeedbackDriver(FeedbackConfig(led_pin=23, buzzer_pin=24), pin_factory=mock_factory).close()  # LED released


def test_feedback_from_a_real_press_starts_within_100_ms(mock_factory: Any, hw: SimpleNamespace) -> None:
    """Wired as the daemon will be: ButtonPanel -> (state machine) -> FeedbackDriver.show, here ACK directly."""
    config = hw.quick_config()
    led, buzzer = mock_factory.pin(hw.LED_PIN), mock_factory.pin(hw.BUZZER_PIN)
    reported: list[tuple[float, Press]] = []
    done = threading.Event()
    with FeedbackDriver(config, pin_factory=mock_factory) as driver:

        def on_press(press: Press) -> None:
            reported.append((time.monotonic(), press))
            driver.show(FeedbackEffect(Feedback.ACK))
            done.set()

        with ButtonPanel(config, on_press, pin_factory=mock_factory):
            for name, expected_long in ((Button.RECORD, False), (Button.STAGE, True)):
                done.clear()
                cleared = [hw.clear(led), hw.clear(buzzer)]
                pin = mock_factory.pin(hw.PINS[name])
                pin.drive_low()
                if not expected_long:
                    time.sleep(0.05)
                    pin.drive_high()
                assert done.wait(2)
                hw.wait_for_changes(led, 1)
                hw.wait_for_changes(buzzer, 1)
                at, press = reported[-1]
                assert (press.button, press.long) == (name, expected_long)
                led_first = hw.changes(led, cleared[0])[0][0]
                buzzer_first = hw.changes(buzzer, cleared[1])[0][0]
                assert led_first - at < START_BUDGET_S
                assert buzzer_first - at < START_BUDGET_S
                if expected_long:
                    pin.drive_high()
                time.sleep(0.1)
