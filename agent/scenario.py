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
from agent.evidence.fsutil import display_path
from agent.workflow.events import Button
from firmware_config.toml_file import Keys, Problem, check_table, read_toml, short_words, unknown_keys

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


# The declarations (firmware_config.toml_file), keys in sorted order: "allowed: ..." lists them so.
_TOP_KEYS = ("press", "scenario")
_SCENARIO_KEYS: Keys = {"name": (str, ...), "seconds": ((int, float), ...)}
# Any button value passes the declaration (bool named too: has_type takes a bool only where bool is named);
# the Button lookup below refuses what is not a button's name.
_PRESS_KEYS: Keys = {
    "at": ((int, float), ...), "button": ((object, bool), None), "hold": ((int, float), PRESS_SECONDS),
}
_WORDS = {str: "must be a non-empty string", (int, float): "must be a number"}


def parse_scenario(data: dict[str, Any], source: str) -> Scenario:
    _refuse(source, unknown_keys(data, _TOP_KEYS))
    head = data.get("scenario")
    if not isinstance(head, dict):
        raise ConfigError(f"{source}: key 'scenario': a [scenario] table is required")
    values = _checked(head, _SCENARIO_KEYS, source, "scenario.", {"scenario.seconds": (1.0, MAX_SECONDS)})
    if not values["name"].strip():
        raise ConfigError(f"{source}: key 'scenario.name': must be a non-empty string")
    seconds = float(values["seconds"])
    raw = data.get("press", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: key 'press': must be an array of tables ([[press]])")
    presses = [_press(entry, f"press[{index}]", seconds, source) for index, entry in enumerate(raw)]
    ordered = sorted(presses, key=lambda p: p.at)
    for before, after in pairwise(ordered):
        if after.at < before.at + before.hold:
            raise ConfigError(f"{source}: key 'press': the press at {after.at} s starts before the one at "
                              f"{before.at} s is released")
    return Scenario(values["name"].strip(), seconds, tuple(ordered))


def _press(entry: object, where: str, seconds: float, source: str) -> ScriptedPress:
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: key '{where}': must be a table")
    ranges = {f"{where}.at": (0.0, seconds), f"{where}.hold": (0.05, 30.0)}
    values = _checked(entry, _PRESS_KEYS, source, f"{where}.", ranges)
    try:
        button = Button(values["button"])
    except ValueError:
        valid = ", ".join(b.value for b in Button)
        raise ConfigError(f"{source}: key '{where}.button': {values['button']!r} is not one of {valid}") from None
    at, hold = float(values["at"]), float(values["hold"])
    if at + hold > seconds:
        raise ConfigError(f"{source}: key '{where}': the press ends after scenario.seconds ({seconds})")
    return ScriptedPress(at, button, hold)


def _checked(table: dict[str, Any], keys: Keys, source: str, prefix: str,
             ranges: dict[str, tuple[float, float]]) -> dict[str, Any]:
    values, problems = check_table(table, keys, prefix, ranges)
    _refuse(source, problems)
    return values


def _refuse(source: str, problems: list[Problem]) -> None:
    """The first problem, in the scenario files' wording."""
    if not problems:
        return
    problem = problems[0]
    wording = _WORDS[problem.kind] if problem.what in ("missing", "type") else short_words(problem)
    raise ConfigError(f"{source}: key '{problem.key}': {wording}")


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
