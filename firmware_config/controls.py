"""The controls' configuration: which pins the buttons, the LED and the buzzer are on.

The daemon's config file carries it as a ``[controls]`` table; ``from_mapping`` turns that table into a checked
``ControlsConfig`` and refuses anything it does not know, naming the file, the key and the problem::

    [controls]
    pin_factory = "lgpio"            # optional; $GPIOZERO_PIN_FACTORY overrides it (agent/controls/pins.py)

    [controls.buttons.record]
    pin = 17                         # BCM number, or a gpiozero pin name such as "GPIO17" or "BOARD11"
    pull_up = true                   # button wired to ground (the default)
    bounce_ms = 30                   # edges this soon after the last accepted one are contact bounce
    hold_ms = 800                    # held this long: a long press

    [controls.buttons.stage]
    pin = 27

    [controls.buttons.mark]
    pin = 22

    [controls.feedback]
    led_pin = 23                     # a plain LED; optional when rgb_pins is given
    buzzer_pin = 24                  # an active (fixed-tone) buzzer
    rgb_pins = [5, 6, 13]            # optional RGB LED: red, green, blue

Pins are compared after spelling them one way (``17``, ``"17"``, ``"GPIO17"`` and ``"BCM17"`` are all GPIO17).
Other gpiozero names (``"BOARD11"``, ``"J8:11"``) are compared as written; a clash between two spellings of the
same physical pin is still refused when the devices are opened, by gpiozero's own pin reservation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.errors import ConfigError
from agent.evidence.encoding import has_type, is_integer
from firmware_config.settings import Button
from firmware_config.toml_file import short_words, unknown_keys

Pin = int | str

TABLE = "controls"
"""The name of the table in the daemon's config file; every key in a message starts with it."""

PIN_FACTORIES = ("lgpio", "rpigpio", "pigpio", "native", "mock")
"""The pin factory names gpiozero ships (``GPIOZERO_PIN_FACTORY`` takes the same names)."""

_BCM_NAME = re.compile(r"(?:GPIO|BCM)?(\d+)")


def pin_label(pin: Pin) -> str:
    """One spelling per pin, for finding a pin used twice: ``17``, ``"17"``, ``"gpio17"`` -> ``"GPIO17"``."""
    if isinstance(pin, int):
        return f"GPIO{pin}"
    text = pin.strip().upper()
    match = _BCM_NAME.fullmatch(text)
    return f"GPIO{int(match.group(1))}" if match else text


def _pin_problem(pin: object) -> str | None:
    if not has_type(pin, (int, str)):
        return f"must be a pin number or a pin name, not {_kind(pin)}"
    if isinstance(pin, int) and pin < 0:
        return f"must not be negative (got {pin})"
    if isinstance(pin, str) and not pin.strip():
        return "must not be empty"
    return None


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"true or false ({str(value).lower()})"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return f"{type(value).__name__} {value!r}"


@dataclass(frozen=True)
class ButtonConfig:
    """One push button. Times are in milliseconds."""

    name: Button
    pin: Pin
    pull_up: bool = True
    bounce_ms: int = 30
    hold_ms: int = 800

    @property
    def key(self) -> str:
        """This button's table in the config file, e.g. ``controls.buttons.record``."""
        name = self.name.value if isinstance(self.name, Button) else str(self.name)
        return f"{TABLE}.buttons.{name}"

    def problems(self) -> list[tuple[str, str]]:
        """(key, problem) for everything wrong with this button on its own."""
        found: list[tuple[str, str]] = []
        if not isinstance(self.name, Button):
            allowed = ", ".join(b.value for b in Button)
            found.append((self.key, f"unknown button name {self.name!r} (known: {allowed})"))
        problem = _pin_problem(self.pin)
        if problem:
            found.append((f"{self.key}.pin", problem))
        if not isinstance(self.pull_up, bool):
            found.append((f"{self.key}.pull_up", f"must be true or false, not {_kind(self.pull_up)}"))
        times_ok = True
        for field, value in (("bounce_ms", self.bounce_ms), ("hold_ms", self.hold_ms)):
            if not is_integer(value):
                found.append((f"{self.key}.{field}", f"must be a whole number of milliseconds, not {_kind(value)}"))
                times_ok = False
            elif value < 0:
                found.append((f"{self.key}.{field}", f"must not be negative (got {value})"))
                times_ok = False
        if times_ok and self.hold_ms <= self.bounce_ms:
            found.append(
                (
                    f"{self.key}.hold_ms",
                    f"must be longer than bounce_ms ({self.hold_ms} <= {self.bounce_ms}): "
                    "every press would count as held",
                )
            )
        return found


@dataclass(frozen=True)
class FeedbackConfig:
    """The LED (plain, RGB or both) and the buzzer that confirm every press."""

    led_pin: Pin | None
    buzzer_pin: Pin
    rgb_pins: tuple[Pin, Pin, Pin] | None = None  # red, green, blue

    def pins(self) -> list[tuple[str, Pin]]:
        """(key, pin) for every pin the feedback devices use."""
        used: list[tuple[str, Pin]] = []
        if self.led_pin is not None:
            used.append((f"{TABLE}.feedback.led_pin", self.led_pin))
        used.append((f"{TABLE}.feedback.buzzer_pin", self.buzzer_pin))
        if isinstance(self.rgb_pins, tuple) and len(self.rgb_pins) == 3:
            for colour, pin in zip(("red", "green", "blue"), self.rgb_pins, strict=True):
                used.append((f"{TABLE}.feedback.rgb_pins ({colour})", pin))
        return used

    def problems(self) -> list[tuple[str, str]]:
        """(key, problem) for everything wrong with these pins on their own (clashes with buttons aside)."""
        found: list[tuple[str, str]] = []
        if self.led_pin is None and self.rgb_pins is None:
            found.append((f"{TABLE}.feedback.led_pin", "missing: give led_pin, rgb_pins or both"))
        if self.rgb_pins is not None and not (isinstance(self.rgb_pins, tuple) and len(self.rgb_pins) == 3):
            found.append((f"{TABLE}.feedback.rgb_pins", "must list exactly three pins: red, green, blue"))
        for key, pin in self.pins():
            problem = _pin_problem(pin)
            if problem:
                found.append((key, problem))
        return found

    def validate(self, source: str | None = None) -> FeedbackConfig:
        """Raise ConfigError for any problem, including a pin used twice among these; return self otherwise."""
        found = self.problems() + _pin_clashes((), self)
        if found:
            raise ConfigError(_message(found, source))
        return self


@dataclass(frozen=True)
class ControlsConfig:
    """Buttons and feedback devices; ``pin_factory`` None lets gpiozero choose (see agent/controls/pins.py)."""

    buttons: tuple[ButtonConfig, ...]
    feedback: FeedbackConfig
    pin_factory: str | None = None

    @classmethod
    def default(cls) -> ControlsConfig:
        """The reference wiring (docs): buttons on GPIO17/27/22, LED on GPIO23, buzzer on GPIO24."""
        return cls(
            buttons=(
                ButtonConfig(Button.RECORD, 17),
                ButtonConfig(Button.STAGE, 27),
                ButtonConfig(Button.MARK, 22),
            ),
            feedback=FeedbackConfig(led_pin=23, buzzer_pin=24),
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str) -> ControlsConfig:
        """See the module function ``from_mapping``."""
        return from_mapping(data, source)

    def button(self, name: Button) -> ButtonConfig:
        for button in self.buttons:
            if button.name == name:
                return button
        raise KeyError(name)

    def problems(self) -> list[tuple[str, str]]:
        """(key, problem) for everything wrong; empty when the config is usable."""
        found = _button_problems(self.buttons)
        found.extend(self.feedback.problems())
        found.extend(_pin_clashes(self.buttons, self.feedback))
        found.extend(_factory_problems(self.pin_factory))
        return found

    def validate(self, source: str | None = None) -> ControlsConfig:
        """Raise ConfigError listing every problem (each naming its key); return self when there is none."""
        found = self.problems()
        if found:
            raise ConfigError(_message(found, source))
        return self


def _button_problems(buttons: tuple[ButtonConfig, ...]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    seen: set[Button] = set()
    for button in buttons:
        found.extend(button.problems())
        if isinstance(button.name, Button):
            if button.name in seen:
                found.append((button.key, "configured twice"))
            seen.add(button.name)
    for name in Button:
        if name not in seen:
            found.append((f"{TABLE}.buttons.{name.value}", "missing: the record, stage and mark buttons are needed"))
    return found


def _pin_clashes(buttons: tuple[ButtonConfig, ...], feedback: FeedbackConfig | None) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    first_user: dict[str, str] = {}
    used = [(f"{b.key}.pin", b.pin) for b in buttons] + (feedback.pins() if feedback else [])
    for key, pin in used:
        if _pin_problem(pin) is not None:
            continue
        label = pin_label(pin)
        if label in first_user:
            value = f'"{pin}"' if isinstance(pin, str) else str(pin)
            found.append((key, f"value {value}: expected a pin no other button or output uses: {label} is already "
                               f"used by {first_user[label]}"))
        else:
            first_user[label] = key
    return found


def _factory_problems(factory: object) -> list[tuple[str, str]]:
    if factory is None:
        return []
    if not isinstance(factory, str):
        return [(f"{TABLE}.pin_factory", f"must be a string, not {_kind(factory)}")]
    if factory not in PIN_FACTORIES:
        return [(f"{TABLE}.pin_factory", f"unknown pin factory {factory!r} (known: {', '.join(PIN_FACTORIES)})")]
    return []


def _message(found: list[tuple[str, str]], source: str | None) -> str:
    where = f"{source}: " if source else ""
    return "; ".join(f"{where}key '{key}': {problem}" for key, problem in found)


# The declared keys of each table (firmware_config.toml_file.unknown_keys refuses the others); their types and
# ranges are ButtonConfig.problems and FeedbackConfig.problems, which a config built in code passes through too.
_BUTTON_KEYS = ("pin", "pull_up", "bounce_ms", "hold_ms")
_FEEDBACK_KEYS = ("led_pin", "buzzer_pin", "rgb_pins")
_TOP_KEYS = ("buttons", "feedback", "pin_factory")

Found = list[tuple[str, str]]


def from_mapping(data: Mapping[str, Any], source: str) -> ControlsConfig:
    """A checked ControlsConfig from the ``[controls]`` table of the config file ``source``.

    Unknown keys, missing keys, wrong types and every ``validate`` problem raise ConfigError; the message names
    ``source``, the dotted key (``controls.buttons.record.pin``) and the problem.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(_message([(TABLE, f"must be a table, not {_kind(data)}")], source))
    found = _unknown(data, TABLE, _TOP_KEYS)
    button_tables = _table_at(data, "buttons", found)
    buttons = _buttons_from(button_tables, found) if button_tables is not None else []
    feedback_table = _table_at(data, "feedback", found)
    feedback = _feedback_from(feedback_table, found) if feedback_table is not None else None
    factory = data.get("pin_factory")
    found.extend(_factory_problems(factory))
    # Buttons dropped above (unknown name, no pin) are reported once, not again as missing.
    reported = [k for k, _ in found]
    found.extend(
        (k, p)
        for k, p in _button_problems(tuple(buttons))
        if not (p.startswith("missing") and any(r == k or r.startswith(k + ".") for r in reported))
    )
    if feedback is not None:
        found.extend(feedback.problems())
    found.extend(_pin_clashes(tuple(buttons), feedback))
    if found:
        raise ConfigError(_message(found, source))
    assert feedback is not None  # a missing feedback table or buzzer_pin was reported above
    return ControlsConfig(buttons=tuple(buttons), feedback=feedback, pin_factory=factory)


def _unknown(table: Mapping[str, Any], prefix: str, allowed: tuple[str, ...]) -> Found:
    return [(p.key, short_words(p)) for p in unknown_keys(table, allowed, f"{prefix}.", in_order=True)]


def _table_at(parent: Mapping[str, Any], key: str, found: Found) -> Mapping[str, Any] | None:
    value = parent.get(key)
    if value is None:
        found.append((f"{TABLE}.{key}", "missing"))
        return None
    if not isinstance(value, Mapping):
        found.append((f"{TABLE}.{key}", f"must be a table, not {_kind(value)}"))
        return None
    return value


def _buttons_from(tables: Mapping[str, Any], found: Found) -> list[ButtonConfig]:
    buttons: list[ButtonConfig] = []
    known = {b.value: b for b in Button}
    for name, table in tables.items():
        key = f"{TABLE}.buttons.{name}"
        if name not in known:
            found.append((key, f"unknown button name {name!r} (known: {', '.join(known)})"))
            continue
        if not isinstance(table, Mapping):
            found.append((key, f"must be a table, not {_kind(table)}"))
            continue
        found.extend(_unknown(table, key, _BUTTON_KEYS))
        if "pin" not in table:
            found.append((f"{key}.pin", "missing"))
            continue
        options = {k: table[k] for k in _BUTTON_KEYS if k in table}
        buttons.append(ButtonConfig(name=known[name], **options))
    return buttons


def _feedback_from(table: Mapping[str, Any], found: Found) -> FeedbackConfig | None:
    key = f"{TABLE}.feedback"
    found.extend(_unknown(table, key, _FEEDBACK_KEYS))
    rgb = table.get("rgb_pins")
    if rgb is not None and not (isinstance(rgb, list | tuple) and len(rgb) == 3):
        found.append((f"{key}.rgb_pins", "must list exactly three pins: red, green, blue"))
        rgb = None
    if "buzzer_pin" not in table:
        found.append((f"{key}.buzzer_pin", "missing"))
        return None
    return FeedbackConfig(
        led_pin=table.get("led_pin"),
        buzzer_pin=table["buzzer_pin"],
        rgb_pins=(rgb[0], rgb[1], rgb[2]) if rgb is not None else None,
    )
