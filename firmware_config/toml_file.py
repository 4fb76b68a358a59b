"""Reading a TOML file of the project's (config, profile, scenario): one place for its errors."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


Keys = dict[str, tuple[type | tuple[type, ...], Any]]
"""One table's declaration: key -> (type or types, default); a default of ... means the key is required."""
Schema = dict[str, Keys]
"""A config file's declaration: table -> its Keys."""


@dataclass(frozen=True)
class Text:
    """A string setting's rule beyond its type: a pattern it matches (anchored by the pattern's own ``\\Z``),
    one of ``choices``, or ``printable``: non-empty printable text (an empty path is the working directory),
    or with ``empty`` printable text that may be empty (a setting left unused)."""

    expected: str = ""  # the words after "expected"; for choices, "one of A, B" when empty
    pattern: re.Pattern[str] | None = None
    choices: tuple[str, ...] = ()
    printable: bool = False
    empty: bool = False

    def accepts(self, value: str) -> bool:
        if self.pattern is not None and not self.pattern.match(value):
            return False
        if self.choices and value not in self.choices:
            return False
        return not self.printable or (value.isprintable() and (self.empty or bool(value.strip())))

    def words(self) -> str:
        return self.expected or f"one of {', '.join(self.choices)}"


PRINTABLE = Text("non-empty printable text", printable=True)
FILE_PATH = Text("printable text (a file path)", printable=True, empty=True)  # "": no file


def refusal(source: str, key: str, value: object, expected: str) -> ConfigError:
    """The one shape of every refused setting: ``FILE: key 'dotted.key': value VALUE: expected ...``."""
    return ConfigError(f"{source}: key '{key}': value {toml_value(value)}: expected {expected}")


def type_words(kind: type | tuple[type, ...]) -> str:
    """``int`` -> "an integer"; ``(int, float)`` -> "a number"; ``(str, int)`` -> "a string or an integer"."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(_TYPE_WORDS.get(k, k.__name__) for k in kinds)


@dataclass(frozen=True)
class Problem:
    """One key a declaration refuses, before it is worded: the readers word it in their own message shape."""

    key: str  # the dotted key
    what: str  # "unknown", "missing", "type" or "range"
    value: object = None
    kind: type | tuple[type, ...] = object  # the declared type ("missing", "type")
    allowed: tuple[str, ...] = ()  # the declared keys ("unknown")
    bounds: tuple[float, float] = (0, 0)  # ("range")

    def actual(self) -> str:
        """What the value is: "a boolean", "an integer", "a string" ..."""
        return value_words(self.value)


def unknown_keys(raw: Mapping[str, Any], allowed: Iterable[str], prefix: str = "", in_order: bool = False,
                 ) -> list[Problem]:
    """A Problem for every key of ``raw`` not in ``allowed``, sorted (``in_order``: as in the file); ``prefix``
    ends in a dot."""
    known = tuple(allowed)
    keys = [key for key in raw if key not in known]
    return [Problem(f"{prefix}{key}", "unknown", raw[key], allowed=known) for key in (keys if in_order else
                                                                                      sorted(keys))]


def check_table(
    raw: Mapping[str, Any], keys: Keys, prefix: str = "", ranges: Mapping[str, tuple[float, float]] | None = None,
    in_order: bool = False,
) -> tuple[dict[str, Any], list[Problem]]:
    """The declared keys of one table with defaults filled in, and every problem: unknown keys first, then each
    declared key in order (missing, wrong type: a TOML boolean is never taken for a number, out of ``ranges``,
    which maps a dotted key to inclusive bounds). A key with a problem is left out of the values."""
    problems = unknown_keys(raw, keys, prefix, in_order)
    values: dict[str, Any] = {}
    for key, (kind, default) in keys.items():
        dotted = f"{prefix}{key}"
        if key not in raw:
            if default is ...:
                problems.append(Problem(dotted, "missing", kind=kind))
            else:
                values[key] = default
            continue
        value = raw[key]
        if not has_type(value, kind):
            problems.append(Problem(dotted, "type", value, kind=kind))
        elif ranges and dotted in ranges and is_number(value) and not ranges[dotted][0] <= value <= ranges[dotted][1]:
            problems.append(Problem(dotted, "range", value, kind=kind, bounds=ranges[dotted]))
        else:
            values[key] = value
    return values, problems


def value_words(value: object) -> str:
    """What a parsed value is: "a boolean", "an integer", "a string", "an array" ..."""
    return "a boolean" if isinstance(value, bool) else type_words(type(value))


def typed_tables(
    data: dict[str, Any], schema: Schema, ranges: dict[str, tuple[float, float]], source: str,
    other_tables: tuple[str, ...] = (), texts: Mapping[str, Text] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every table of ``schema`` from a parsed config file, with defaults filled in.

    Refuses (ConfigError naming the file and the dotted key) unknown tables (``other_tables`` are read
    elsewhere), unknown keys, missing required keys, wrong types (a TOML boolean is never taken for a
    number), numbers outside ``ranges`` (dotted key -> inclusive bounds) and then, once every table is
    typed, strings ``texts`` (dotted key -> Text, checked in that order) does not accept."""
    known = [*schema, *other_tables]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source}: key '{unknown[0]}': unknown table: expected one of {', '.join(known)}")
    values = {table: _typed_table(data.get(table, {}), table, schema[table], ranges, source) for table in schema}
    for dotted, rule in (texts or {}).items():
        table, key = dotted.split(".", 1)
        if not rule.accepts(values[table][key]):
            raise refusal(source, dotted, values[table][key], rule.words())
    return values


def _typed_table(raw: object, table: str, keys: Keys, ranges: dict[str, tuple[float, float]],
                 source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise refusal(source, table, raw, f"a table ([{table}])")
    values, problems = check_table(raw, keys, f"{table}.", ranges)
    if problems:
        raise expected_refusal(source, problems[0])
    return values


def expected_refusal(source: str, problem: Problem) -> ConfigError:
    """``problem`` in the one message shape, ``FILE: key 'a.b': value V: expected ...``."""
    if problem.what == "unknown":
        return ConfigError(f"{source}: key '{problem.key}': unknown key: expected one of {', '.join(problem.allowed)}")
    if problem.what == "missing":
        return ConfigError(f"{source}: key '{problem.key}': missing: expected {type_words(problem.kind)}")
    if problem.what == "range":
        low, high = problem.bounds
        return refusal(source, problem.key, problem.value, f"{_number(low)}..{_number(high)}")
    return refusal(source, problem.key, problem.value, f"{type_words(problem.kind)}, not {problem.actual()}")


def short_words(problem: Problem, kind_words: Mapping[type | tuple[type, ...], str] | None = None) -> str:
    """``problem`` in the older, shorter wording the profile, scenario and ``[controls]`` messages keep (their
    tests pin it): ``unknown key (allowed: a, b)``, ``missing``, ``must be X, not Y``, ``V is outside L..H``.
    ``kind_words`` words a declared type otherwise than ``type_words`` does."""
    if problem.what == "unknown":
        return f"unknown key (allowed: {', '.join(problem.allowed)})"
    if problem.what == "missing":
        return "missing"
    if problem.what == "range":
        return f"{problem.value} is outside {problem.bounds[0]}..{problem.bounds[1]}"
    expected = (kind_words or {}).get(problem.kind) or type_words(problem.kind)
    return f"must be {expected}, not {problem.actual()}"


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)
