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


# table -> key -> (type or types, default); a default of ... means the key is required
Schema = dict[str, dict[str, tuple[type | tuple[type, ...], Any]]]


def typed_tables(
    data: dict[str, Any], schema: Schema, ranges: dict[str, tuple[float, float]], source: str,
    other_tables: tuple[str, ...] = (),
) -> dict[str, dict[str, Any]]:
    """Every table of ``schema`` from a parsed config file, with defaults filled in.

    Refuses (ConfigError naming the file and the dotted key) unknown tables (``other_tables`` are read
    elsewhere), unknown keys, missing required keys, wrong types (a TOML boolean is never taken for a
    number) and numbers outside ``ranges`` (dotted key -> inclusive bounds)."""
    known = [*schema, *other_tables]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source}: key '{unknown[0]}': unknown table (known: {', '.join(known)})")
    return {table: _typed_table(data.get(table, {}), table, schema[table], ranges, source) for table in schema}


def _typed_table(raw: object, table: str, keys: dict[str, tuple[type | tuple[type, ...], Any]],
                 ranges: dict[str, tuple[float, float]], source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key '{table}': must be a table")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ConfigError(f"{source}: key '{table}.{unknown[0]}': unknown key (known: {', '.join(keys)})")
    result: dict[str, Any] = {}
    for key, (kind, default) in keys.items():
        dotted = f"{table}.{key}"
        if key not in raw:
            if default is ...:
                raise ConfigError(f"{source}: key '{dotted}': missing")
            result[key] = default
            continue
        value = raw[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ConfigError(f"{source}: key '{dotted}': wrong type {type(value).__name__}")
        if dotted in ranges and isinstance(value, int | float) and not isinstance(value, bool):
            low, high = ranges[dotted]
            if not low <= value <= high:
                raise ConfigError(f"{source}: key '{dotted}': {value} is outside {low}..{high}")
        result[key] = value
    return result
