"""Reading a TOML file of the project's (config, profile, scenario): one place for its errors."""

from __future__ import annotations

import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from agent.errors import ConfigError


def read_toml(path: Path | Traversable, label: str) -> dict[str, Any]:
    """The parsed file; ConfigError "<label>: ..." when it is missing, unreadable, not UTF-8 or not TOML."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: is not valid TOML ({exc})") from None
