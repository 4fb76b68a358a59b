"""The [controls] table: what is accepted, and bad configs refused with the file, the key and the problem."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from agent.controls.pins import pin_factory
from agent.errors import BodycamError, ConfigError
from agent.workflow.events import Button
from firmware_config.controls import ButtonConfig, ControlsConfig, FeedbackConfig, from_mapping, pin_label

GOOD_TOML = """
[controls]
pin_factory = "mock"

[controls.buttons.record]
pin = 17
pull_up = true
bounce_ms = 25
hold_ms = 900

[controls.buttons.stage]
pin = "GPIO27"

[controls.buttons.mark]
pin = 22
pull_up = false

[controls.feedback]
led_pin = 23
buzzer_pin = 24
rgb_pins = [5, 6, 13]
"""

SOURCE = "/etc/bodycam/agent.toml"


def good() -> dict[str, Any]:
    return tomllib.loads(GOOD_TOML)["controls"]


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        from_mapping(data, SOURCE)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: key '"), message
    return message


def test_a_good_table_is_read() -> None:
    config = from_mapping(good(), SOURCE)
    assert config.button(Button.RECORD) == ButtonConfig(Button.RECORD, 17, pull_up=True, bounce_ms=25, hold_ms=900)
    assert config.button(Button.STAGE) == ButtonConfig(Button.STAGE, "GPIO27")  # defaults: 30 ms, 800 ms
    assert config.button(Button.MARK).pull_up is False
    assert config.feedback == FeedbackConfig(led_pin=23, buzzer_pin=24, rgb_pins=(5, 6, 13))
    assert config.pin_factory == "mock"
    assert ControlsConfig.from_mapping(good(), SOURCE) == config


def test_the_default_wiring_is_valid() -> None:
    config = ControlsConfig.default().validate()
    assert {b.name for b in config.buttons} == set(Button)
    assert ButtonConfig(Button.RECORD, 17).bounce_ms == 30
    assert ButtonConfig(Button.RECORD, 17).hold_ms == 800


def test_config_error_is_a_bodycam_error() -> None:
    assert issubclass(ConfigError, BodycamError)


def test_unknown_button_name() -> None:
    data = good()
    data["buttons"]["panic"] = {"pin": 5}
    message = refused(data)
    assert "key 'controls.buttons.panic': unknown button name 'panic' (known: record, stage, mark)" in message


def test_a_misspelt_button_is_unknown_and_the_real_one_missing() -> None:
    data = good()
    data["buttons"]["recrod"] = data["buttons"].pop("record")
    message = refused(data)
    assert "key 'controls.buttons.recrod': unknown button name" in message
    assert "key 'controls.buttons.record': missing" in message


@pytest.mark.parametrize("name", ["record", "stage", "mark"])
def test_missing_button(name: str) -> None:
    data = good()
    del data["buttons"][name]
    message = refused(data)
    assert f"key 'controls.buttons.{name}': missing" in message


def test_missing_buttons_table_and_button_without_pin() -> None:
    data = good()
    del data["buttons"]
    assert "key 'controls.buttons': missing" in refused(data)
    data = good()
    del data["buttons"]["stage"]["pin"]
    message = refused(data)
    assert "key 'controls.buttons.stage.pin': missing" in message
    assert "key 'controls.buttons.stage': missing" not in message  # reported once


@pytest.mark.parametrize(
    ("path", "value", "other"),
    [
        (("buttons", "stage", "pin"), 17, "controls.buttons.record.pin"),  # two buttons
        (("buttons", "mark", "pin"), "GPIO17", "controls.buttons.record.pin"),  # same pin, other spelling
        (("feedback", "led_pin"), "BCM27", "controls.buttons.stage.pin"),  # LED on a button's pin
        (("feedback", "buzzer_pin"), 23, "controls.feedback.led_pin"),  # buzzer on the LED's pin
        (("feedback", "rgb_pins"), [5, 24, 13], "controls.feedback.buzzer_pin"),  # RGB green on the buzzer
    ],
)
def test_pin_used_twice(path: tuple[str, ...], value: Any, other: str) -> None:
    data = good()
    table = data
    for key in path[:-1]:
        table = table[key]
    table[path[-1]] = value
    message = refused(data)
    assert "is already used by " + other in message, message


def test_pin_used_twice_names_both_keys() -> None:
    data = good()
    data["feedback"]["buzzer_pin"] = 17
    message = refused(data)
    assert message == (
        f"{SOURCE}: key 'controls.feedback.buzzer_pin': value 17: expected a pin no other button or output uses: "
        "GPIO17 is already used by controls.buttons.record.pin"
    )


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("bounce_ms", -1, "must not be negative (got -1)"),
        ("hold_ms", -800, "must not be negative (got -800)"),
        ("hold_ms", 20, "must be longer than bounce_ms (20 <= 25)"),
        ("hold_ms", 0.8, "must be a whole number of milliseconds"),
        ("bounce_ms", True, "must be a whole number of milliseconds"),
        ("pull_up", "yes", "must be true or false"),
        ("pin", -4, "must not be negative"),
        ("pin", True, "must be a pin number or a pin name"),
        ("pin", "", "must not be empty"),
        ("pin", [17], "must be a pin number or a pin name, not an array"),
    ],
)
def test_bad_button_values(key: str, value: Any, problem: str) -> None:
    data = good()
    data["buttons"]["record"][key] = value
    message = refused(data)
    assert f"key 'controls.buttons.record.{key}': {problem}" in message, message


@pytest.mark.parametrize(
    ("where", "key"),
    [((), "buttonz"), (("buttons", "record"), "hold_time"), (("feedback",), "led")],
)
def test_unknown_keys_are_refused(where: tuple[str, ...], key: str) -> None:
    data = good()
    table = data
    for part in where:
        table = table[part]
    table[key] = 1
    dotted = ".".join(("controls", *where, key))
    assert f"key '{dotted}': unknown key (allowed: " in refused(data)


def test_feedback_problems() -> None:
    data = good()
    del data["feedback"]["buzzer_pin"]
    assert "key 'controls.feedback.buzzer_pin': missing" in refused(data)
    data = good()
    data["feedback"]["rgb_pins"] = [5, 6]
    assert "key 'controls.feedback.rgb_pins': must list exactly three pins" in refused(data)
    data = good()
    del data["feedback"]["led_pin"]
    del data["feedback"]["rgb_pins"]
    assert "key 'controls.feedback.led_pin': missing: give led_pin, rgb_pins or both" in refused(data)
    data = good()
    del data["feedback"]["led_pin"]  # an RGB LED alone is enough
    assert from_mapping(data, SOURCE).feedback.led_pin is None
    data = good()
    data["feedback"] = 7
    assert "key 'controls.feedback': must be a table, not int 7" in refused(data)


def test_every_problem_is_reported_at_once() -> None:
    data = good()
    data["buttons"]["record"]["bounce_ms"] = -1
    data["buttons"]["mark"]["pin"] = 27
    data["pin_factory"] = "gpiod"
    message = refused(data)
    assert message.count(f"{SOURCE}: key ") == 3
    assert "key 'controls.pin_factory': unknown pin factory 'gpiod'" in message


def test_validate_on_a_config_built_in_code() -> None:
    config = ControlsConfig(
        buttons=(ButtonConfig(Button.RECORD, 17), ButtonConfig(Button.RECORD, 18), ButtonConfig(Button.STAGE, 17)),
        feedback=FeedbackConfig(led_pin=23, buzzer_pin=23),
    )
    with pytest.raises(ConfigError) as caught:
        config.validate("built-in")
    message = str(caught.value)
    assert message.startswith("built-in: key ")
    assert "key 'controls.buttons.record': configured twice" in message
    assert "key 'controls.buttons.mark': missing" in message
    assert "key 'controls.buttons.stage.pin': value 17: expected a pin no other button or output uses: GPIO17 is " \
        "already used by controls.buttons.record.pin" in message
    assert "key 'controls.feedback.buzzer_pin': value 23: expected a pin no other button or output uses: GPIO23 " \
        "is already used by controls.feedback.led_pin" in message
    bad_name = ButtonConfig("panic", 5)  # type: ignore[arg-type]
    assert ("controls.buttons.panic", "unknown button name 'panic' (known: record, stage, mark)") in bad_name.problems()


def test_from_mapping_does_not_change_its_input() -> None:
    data = good()
    before = copy.deepcopy(data)
    from_mapping(data, SOURCE)
    assert data == before


def test_pin_labels() -> None:
    assert pin_label(17) == pin_label("17") == pin_label("gpio17") == pin_label("BCM17") == "GPIO17"
    assert pin_label("BOARD11") == "BOARD11"


def test_pin_factory_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pin_factory(None) is None  # gpiozero chooses
    assert isinstance(pin_factory("mock"), MockFactory)
    assert pin_factory("mock", environ={"GPIOZERO_PIN_FACTORY": "native"}) is None  # the environment wins
    with pytest.raises(ConfigError, match=r"key 'controls.pin_factory': unknown pin factory 'gpiod'"):
        pin_factory("gpiod")


def test_a_real_pin_factory_off_the_pi_is_a_config_error() -> None:
    try:
        factory = pin_factory("rpigpio")
    except ConfigError as exc:
        assert "key 'controls.pin_factory': pin factory 'rpigpio' cannot be opened" in str(exc)
    else:  # on a Raspberry Pi with RPi.GPIO it opens
        factory.close()
        pytest.skip("rpigpio opens on this machine")
