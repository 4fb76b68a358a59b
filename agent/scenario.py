"""Scripted button presses for the simulator: the real device code, gpiozero's mock pins, the synthetic camera.

A scenario file is TOML (documented in docs/field-workflow.md):

    [scenario]
    name = "complete inspection"
    seconds = 24.0            # how long the run lasts, from the start

    [[press]]
    at = 1.0                  # seconds from the start
    button = "stage"          # record | stage | mark
    hold = 1.2                # optional: hold this long (a long press when past the hold time)

The presses are made by driving the mock pins low and high at those times, so debounce, hold detection,
feedback and the workflow all run exactly as they do on the device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.evidence.encoding import is_number
from agent.evidence.fsutil import display_path
from agent.workflow.events import Button
from firmware_config.toml_file import read_toml

PRESS_SECONDS = 0.15  # a short press: well past debounce, well short of the hold time
MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class ScriptedPress:
    at: float
    button: Button
    hold: float  # how long the button stays down


@dataclass(frozen=True)
class Scenario:
    name: str
    seconds: float
    presses: tuple[ScriptedPress, ...]


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; ConfigError names the file, the key and the problem."""
    source = display_path(path)
    return parse_scenario(read_toml(path, source), source)


def parse_scenario(data: dict[str, Any], source: str) -> Scenario:
    _only(data, {"scenario", "press"}, source, "")
    head = data.get("scenario")
    if not isinstance(head, dict):
        raise ConfigError(f"{source}: key 'scenario': a [scenario] table is required")
    _only(head, {"name", "seconds"}, source, "scenario.")
    name = head.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{source}: key 'scenario.name': must be a non-empty string")
    seconds = _number(head.get("seconds"), source, "scenario.seconds", 1.0, MAX_SECONDS)
    presses = []
    raw = data.get("press", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: key 'press': must be an array of tables ([[press]])")
    for index, entry in enumerate(raw):
        where = f"press[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: key '{where}': must be a table")
        _only(entry, {"at", "button", "hold"}, source, f"{where}.")
        at = _number(entry.get("at"), source, f"{where}.at", 0.0, seconds)
        button_name = entry.get("button")
        try:
            button = Button(button_name)
        except ValueError:
            valid = ", ".join(b.value for b in Button)
            raise ConfigError(f"{source}: key '{where}.button': {button_name!r} is not one of {valid}") from None
        hold = PRESS_SECONDS if "hold" not in entry else _number(entry["hold"], source, f"{where}.hold", 0.05, 30.0)
        if at + hold > seconds:
            raise ConfigError(f"{source}: key '{where}': the press ends after scenario.seconds ({seconds})")
        presses.append(ScriptedPress(at, button, hold))
    ordered = sorted(presses, key=lambda p: p.at)
    for before, after in pairwise(ordered):
        if after.at < before.at + before.hold:
            raise ConfigError(f"{source}: key 'press': the press at {after.at} s starts before the one at "
                              f"{before.at} s is released")
    return Scenario(name.strip(), seconds, tuple(ordered))


def _only(table: dict[str, Any], allowed: set[str], source: str, prefix: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{source}: key '{prefix}{unknown[0]}': unknown key (allowed: {', '.join(sorted(allowed))})")


def _number(value: object, source: str, key: str, low: float, high: float) -> float:
    if not is_number(value):
        raise ConfigError(f"{source}: key '{key}': must be a number")
    if not low <= value <= high:
        raise ConfigError(f"{source}: key '{key}': {value} is outside {low}..{high}")
    return float(value)


def play(scenario: Scenario, pins: dict[Button, Any], sleep_until: Any = None) -> None:
    """Drive mock pins (active low, as wired with pull-ups) at the scenario's times, then wait for its end."""
    started = time.monotonic()

    def until(offset: float) -> None:
        delay = started + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    wait = sleep_until or until
    for press in scenario.presses:
        wait(press.at)
        pins[press.button].drive_low()
        wait(press.at + press.hold)
        pins[press.button].drive_high()
    wait(scenario.seconds)
