"""FeedbackDriver on gpiozero's mock pins: each pattern's LED and buzzer states and times, the recording
indicator, patterns meeting each other, and the 100 ms start budget (also measured from a real press).

Most tests drive the driver's clock by hand (``Rig``: a fake clock, ``poll()`` at each change it schedules) and
note each mock pin change at the fake time it happened, so the times are compared exactly and nothing sleeps.
Two tests run the worker thread on the real clock: a real press's feedback, and ``wait_idle`` being woken.
MockPin records every state change with the time since the previous one (``pin.states``); those tests compare
the durations within a tolerance for thread scheduling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from agent.controls.buttons import ButtonPanel
from agent.controls.feedback import CUT_GAP_S, PATTERNS, QUEUE_LIMIT_S, Blink, FeedbackDriver, pattern_for
from agent.errors import ConfigError
from agent.workflow.events import Button, Feedback, FeedbackEffect, Press
from firmware_config.controls import ControlsConfig, FeedbackConfig

TOLERANCE_MS = 50  # thread wake-up jitter on a busy test machine (gpiozero's own tests allow 50 ms)
START_BUDGET_S = 0.100  # the issue: every press gives feedback within 100 ms


class FakeTime:
    """The driver's clock, moved by ``Rig.run`` only."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A FeedbackDriver on a fake clock (no worker thread) and its pins' changes at fake times.

    ``run(seconds)`` moves the clock from change to change as the driver schedules them, calling ``poll()`` at
    each; every new entry of a MockPin's ``states`` is noted with the fake time it appeared at.
    """

    def __init__(self, config: ControlsConfig | FeedbackConfig, factory: MockFactory, pins: dict[str, int]) -> None:
        self.clock = FakeTime()
        self.driver = FeedbackDriver(config, pin_factory=factory, clock=self.clock)
        self.pins = {name: factory.pin(number) for name, number in pins.items()}
        self._seen = {name: len(pin.states) for name, pin in self.pins.items()}
        self._log: dict[str, list[tuple[float, Any]]] = {}
        self.clear()

    def note(self) -> None:
        for name, pin in self.pins.items():
            for entry in pin.states[self._seen[name]:]:
                self._log[name].append((self.clock.now, entry.state))
            self._seen[name] = len(pin.states)

    def clear(self) -> float:
        """Forget the changes so far; returns the (fake) time of clearing."""
        self.note()
        self._log = {name: [(self.clock.now, pin.state)] for name, pin in self.pins.items()}
        return self.clock.now

    def show(self, effect: FeedbackEffect) -> None:
        self.driver.show(effect)
        self.note()

    def set_recording(self, on: bool) -> None:
        self.driver.set_recording(on)
        self.note()

    def run(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while (due := self.driver.poll()) is not None and due <= end:
            self.note()
            self.clock.now = due
        self.note()
        self.clock.now = end
        self.driver.poll()
        self.note()

    def changes(self, name: str) -> list[tuple[float, Any]]:
        """(fake time, state) of each change since the last ``clear``."""
        return self._log[name][1:]

    def phases(self, name: str) -> list[tuple[Any, float]]:
        """(state, how long it lasted in ms) since the last ``clear``, but the last one, which has not ended."""
        log = self._log[name]
        return [(log[i][1], (log[i + 1][0] - log[i][0]) * 1000) for i in range(len(log) - 1)]

    def play(self, effect: FeedbackEffect) -> float:
        """Show ``effect`` on cleared pins and run until it has finished; returns when show() was called."""
        called = self.clear()
        self.show(effect)
        self.run(pattern_for(effect).total_s + 0.05)
        return called


@pytest.fixture
def rig(mock_factory: Any, hw: SimpleNamespace) -> Iterator[Rig]:
    made = Rig(hw.quick_config(), mock_factory, {"led": hw.LED_PIN, "buzzer": hw.BUZZER_PIN})
    yield made
    made.driver.close()


def expected_phases(blink: Blink) -> list[tuple[bool, float]]:
    """off at clearing (shown at once: 0 ms long), then on/off n times; the last off phase has not ended."""
    out: list[tuple[bool, float]] = [(False, 0.0)]
    for i in range(blink.n):
        out.append((True, blink.on_ms))
        if i < blink.n - 1:
            out.append((False, blink.off_ms))
    return out


def assert_phases(actual: list[tuple[Any, float]], expected: list[tuple[bool, float]], what: str) -> None:
    """Exact (on the fake clock): the same states, each as long as the pattern says."""
    assert [(bool(s), round(ms, 6)) for s, ms in actual] == [(s, float(ms)) for s, ms in expected], what


BLINK_EFFECTS = [FeedbackEffect(p) for p in Feedback if p not in (Feedback.RECORDING_ON, Feedback.RECORDING_OFF)] + [
    FeedbackEffect(Feedback.REASON, count=4)
]


def test_blink_patterns_on_led_and_buzzer(rig: Rig) -> None:
    for effect in BLINK_EFFECTS:
        rig.play(effect)
        pattern = pattern_for(effect)
        assert pattern.led is not None and pattern.buzzer is not None
        assert_phases(rig.phases("led"), expected_phases(pattern.led), f"{effect} LED")
        assert_phases(rig.phases("buzzer"), expected_phases(pattern.buzzer), f"{effect} buzzer")
        assert rig.pins["led"].state == 0 and rig.pins["buzzer"].state == 0, effect  # all off: not recording


def test_the_table_as_the_issue_asks() -> None:
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


def test_every_pattern_starts_within_100_ms(rig: Rig) -> None:
    for pattern in [*Feedback, Feedback.ACK]:  # each cuts the one before, which is far from its end
        rig.set_recording(False)
        rig.run(0.01)
        called = rig.clear()
        rig.show(FeedbackEffect(pattern))
        rig.run(START_BUDGET_S)
        assert rig.changes("buzzer"), pattern
        assert rig.changes("led") or pattern is Feedback.RECORDING_OFF, pattern  # the LED was dark already
        first = min(t for name in ("led", "buzzer") for t, _ in rig.changes(name))
        assert first - called < START_BUDGET_S, pattern


def test_recording_indicator(rig: Rig) -> None:
    called = rig.play(FeedbackEffect(Feedback.RECORDING_ON))
    assert rig.driver.recording
    assert [s for _, s in rig.changes("led")] == [True]  # steady on, at once
    assert rig.changes("led")[0][0] == called
    assert_phases(rig.phases("buzzer"), expected_phases(Blink(300, 100)), "RECORDING_ON buzzer")

    # A pattern while recording plays over the lit LED (its off phases show as dark winks), then the LED is lit again.
    rig.play(FeedbackEffect(Feedback.BOOKMARK))
    assert [bool(s) for s, _ in rig.phases("led")] == [True, False, True, False]
    assert rig.pins["led"].state == 1

    called = rig.play(FeedbackEffect(Feedback.RECORDING_OFF))
    assert not rig.driver.recording
    assert rig.changes("led") == [(called, False)]
    assert_phases(rig.phases("buzzer"), expected_phases(Blink(80, 80, 2)), "RECORDING_OFF buzzer")


def test_set_recording_without_a_pattern(rig: Rig) -> None:
    led = rig.pins["led"]
    rig.clear()
    rig.set_recording(True)
    assert led.state == 1
    rig.show(FeedbackEffect(Feedback.STAGE))
    rig.run(0.05)
    rig.set_recording(False)  # during a pattern: applied when it ends
    assert led.state == 1
    rig.run(pattern_for(FeedbackEffect(Feedback.STAGE)).total_s + 0.05)
    assert led.state == 0
    rig.set_recording(True)
    assert led.state == 1
    assert [s for _, s in rig.changes("buzzer")] == [True, False]  # the STAGE beep: set_recording itself is silent


def test_ack_then_a_pattern_at_once_plays_both(rig: Rig) -> None:
    called = rig.clear()
    rig.show(FeedbackEffect(Feedback.ACK))
    rig.show(FeedbackEffect(Feedback.STAGE))
    rig.run(0.08 + 0.3 + 0.05)
    assert [bool(s) for s, _ in rig.phases("buzzer")] == [False, True, False, True]  # the click, the stage beep
    assert_phases(rig.phases("buzzer")[:2], [(False, 0), (True, 30)], "ACK click")
    stage_start = rig.changes("buzzer")[2][0]
    assert stage_start - called == pytest.approx(pattern_for(FeedbackEffect(Feedback.ACK)).total_s)
    assert stage_start - called < START_BUDGET_S
    assert [bool(s) for s, _ in rig.phases("led")] == [False, True, False, True]


def test_a_new_pattern_cuts_a_long_one(rig: Rig) -> None:
    rig.show(FeedbackEffect(Feedback.RETENTION))
    rig.run(0.6)  # in the off gap between the two long beeps
    called = rig.clear()
    rig.show(FeedbackEffect(Feedback.ACK))
    rig.run(0.08 + 0.05)
    assert rig.changes("buzzer")[0][0] == called  # all was dark and silent: no gap needed
    rig.run(0.05)  # past the time the cut pattern's second beep would have started (650 ms)
    assert [s for _, s in rig.changes("buzzer")] == [True, False]  # the ACK click; the second beep never came


def test_a_cut_during_a_beep_is_heard_as_a_new_pattern(rig: Rig) -> None:
    rig.show(FeedbackEffect(Feedback.ERROR))  # a 1 s buzz
    rig.run(0.2)
    called = rig.clear()
    rig.show(FeedbackEffect(Feedback.STAGE))
    rig.run(CUT_GAP_S + 0.3 + 0.05)
    (off_at, off), (on_at, on), (end_at, end) = rig.changes("buzzer")
    assert (off, on, end) == (False, True, False)
    assert off_at == called  # silent at once
    assert on_at - off_at == pytest.approx(CUT_GAP_S)  # then the gap, then the new pattern
    assert end_at - on_at == pytest.approx(0.2)


def test_only_the_newest_waiting_pattern_plays(rig: Rig) -> None:
    rig.clear()
    rig.show(FeedbackEffect(Feedback.ACK))
    rig.show(FeedbackEffect(Feedback.RETENTION))
    rig.show(FeedbackEffect(Feedback.STAGE))  # replaces RETENTION while both wait for the click to end
    rig.run(0.08 + 0.3 + 0.05)
    assert_phases(rig.phases("buzzer"), [(False, 0), (True, 30), (False, 50), (True, 200)], "ACK then STAGE")
    assert QUEUE_LIMIT_S < START_BUDGET_S


def test_wait_idle_returns_when_the_patterns_end(mock_factory: Any, hw: SimpleNamespace) -> None:
    """On the real clock with the worker thread: wait_idle is woken by it as the patterns end."""
    buzzer = mock_factory.pin(hw.BUZZER_PIN)
    with FeedbackDriver(hw.quick_config(), pin_factory=mock_factory) as driver:
        assert driver.wait_idle(0.01) is True  # nothing playing
        driver.show(FeedbackEffect(Feedback.ACK))
        driver.show(FeedbackEffect(Feedback.STAGE))  # waits for the click to end
        total = (pattern_for(FeedbackEffect(Feedback.ACK)).total_s
                 + pattern_for(FeedbackEffect(Feedback.STAGE)).total_s)
        assert driver.wait_idle(total / 4) is False  # still playing
        started = time.monotonic()
        assert driver.wait_idle(5) is True
        # Woken by the worker as the waiting pattern ends, not seconds of polling later.
        assert time.monotonic() - started < total + TOLERANCE_MS / 1000
        assert not buzzer.state and [bool(s) for s, _ in hw.phases(buzzer)][-2:] == [False, True]  # both played


def test_a_fake_clock_driver_waits_for_poll(rig: Rig) -> None:
    """Without the worker nothing ends a pattern: poll() does, at the times it returned."""
    rig.show(FeedbackEffect(Feedback.ACK))
    assert rig.pins["buzzer"].state == 1
    assert rig.driver.poll() == pytest.approx(0.03)  # the click's end
    assert rig.pins["buzzer"].state == 1 and rig.driver.wait_idle(0) is False
    rig.run(0.08)
    assert rig.driver.poll() is None and rig.driver.wait_idle(0) is True


def test_rgb_led_colours(mock_factory: Any, hw: SimpleNamespace) -> None:
    red, green, blue = hw.RGB_PINS
    rig = Rig(hw.quick_config(rgb=True), mock_factory, {"red": red, "green": green, "blue": blue})
    try:
        rig.show(FeedbackEffect(Feedback.BOOKMARK))  # cyan: green and blue blink twice, red stays dark
        rig.run(0.24 + 0.05)
        assert rig.changes("red") == []
        for name in ("green", "blue"):
            assert_phases(rig.phases(name), expected_phases(Blink(40, 80, 2)), "BOOKMARK cyan")
        rig.set_recording(True)  # steady red
        assert [rig.pins[n].state for n in ("red", "green", "blue")] == [1, 0, 0]
        rig.show(FeedbackEffect(Feedback.ACK))  # white flash, then red again
        assert [rig.pins[n].state for n in ("red", "green", "blue")] == [1, 1, 1]
        rig.run(0.08 + 0.05)
        assert [rig.pins[n].state for n in ("red", "green", "blue")] == [1, 0, 0]
        assert mock_factory.pin(hw.LED_PIN).state == 1  # the plain LED is lit alongside
    finally:
        rig.driver.close()


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

        with ButtonPanel(config=config, on_press=on_press, pin_factory=mock_factory):
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
