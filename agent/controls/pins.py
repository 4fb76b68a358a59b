"""Choosing gpiozero's pin factory: the hardware behind the buttons, the LED and the buzzer.

gpiozero already hides the hardware behind its pin factories (lgpio on a Pi 5 and current Raspberry Pi OS,
rpigpio, pigpio, native, and mock for tests and the simulator). The order of choice mirrors the camera's
(agent/camera/factory.py):

1. ``$GPIOZERO_PIN_FACTORY``, when set: gpiozero reads it itself, so ``pin_factory()`` returns None;
2. ``controls.pin_factory`` in the config file;
3. neither: None, and gpiozero tries lgpio, rpigpio, pigpio, native in turn.

Pass the result to ``ButtonPanel`` and ``FeedbackDriver`` (the same object to both, so a mock factory's pins are
shared). lgpio opens a notification pipe in the working directory, so the service needs a writable
``WorkingDirectory``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from agent.errors import ConfigError
from firmware_config.controls import PIN_FACTORIES, TABLE

ENV_VAR = "GPIOZERO_PIN_FACTORY"


def pin_factory(name: str | None, environ: Mapping[str, str] | None = None) -> Any:
    """A gpiozero pin factory for ``name`` (from the config), or None to let gpiozero choose.

    Raises ConfigError naming ``controls.pin_factory`` when the name is unknown or the factory cannot be
    opened on this machine (every real factory fails off a Raspberry Pi).
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR, "").strip() or name is None:
        return None
    if name not in PIN_FACTORIES:
        known = ", ".join(PIN_FACTORIES)
        raise ConfigError(f"key '{TABLE}.pin_factory': unknown pin factory {name!r} (known: {known})")
    entry = next((ep for ep in entry_points(group="gpiozero_pin_factories") if ep.name == name), None)
    if entry is None:
        raise ConfigError(f"key '{TABLE}.pin_factory': gpiozero offers no pin factory {name!r} here")
    try:
        return entry.load()()
    except Exception as exc:  # each factory fails differently off the Pi (ImportError, OSError, PinUnknownPi...)
        raise ConfigError(f"key '{TABLE}.pin_factory': pin factory {name!r} cannot be opened: {exc}") from exc
