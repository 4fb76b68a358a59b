"""Reading a TOML file of the project's (config, profile, scenario): one place for its errors."""

from __future__ import annotations

import json
import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.evidence.encoding import has_type, is_number


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

_TYPE_WORDS: dict[type, str] = {
    str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "an array", dict: "a table",
}
_MAX_VALUE_CHARS = 60


def toml_value(value: object) -> str:
    """``value`` spelt as in a TOML file (strings quoted, ``true``/``false``), cut short if long."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(toml_value(item) for item in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    else:
        text = str(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def refusal(source: str, key: str, value: object, expected: str) -> ConfigError:
    """The one shape of every refused setting: ``FILE: key 'dotted.key': value VALUE: expected ...``."""
    return ConfigError(f"{source}: key '{key}': value {toml_value(value)}: expected {expected}")


def type_words(kind: type | tuple[type, ...]) -> str:
    """``int`` -> "an integer"; ``(int, float)`` -> "a number"; ``(str, int)`` -> "a string or an integer"."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(_TYPE_WORDS.get(k, k.__name__) for k in kinds)


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
        raise ConfigError(f"{source}: key '{unknown[0]}': unknown table: expected one of {', '.join(known)}")
    return {table: _typed_table(data.get(table, {}), table, schema[table], ranges, source) for table in schema}


def _typed_table(raw: object, table: str, keys: dict[str, tuple[type | tuple[type, ...], Any]],
                 ranges: dict[str, tuple[float, float]], source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise refusal(source, table, raw, f"a table ([{table}])")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ConfigError(f"{source}: key '{table}.{unknown[0]}': unknown key: expected one of {', '.join(keys)}")
    result: dict[str, Any] = {}
    for key, (kind, default) in keys.items():
        dotted = f"{table}.{key}"
        if key not in raw:
            if default is ...:
                raise ConfigError(f"{source}: key '{dotted}': missing: expected {type_words(kind)}")
            result[key] = default
            continue
        value = raw[key]
        if not has_type(value, kind):
            actual = "a boolean" if isinstance(value, bool) else type_words(type(value))
            raise refusal(source, dotted, value, f"{type_words(kind)}, not {actual}")
        if dotted in ranges and is_number(value):
            low, high = ranges[dotted]
            if not low <= value <= high:
                raise refusal(source, dotted, value, f"{_number(low)}..{_number(high)}")
        result[key] = value
    return result


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)
