"""Writing a config back as TOML: tables, strings, numbers, booleans and arrays of those.

Enough for the device and station configs, which hold nothing else. Comments of the file being rewritten are
not kept (``bodycam-provision`` regenerates device.toml from its values); the text written is checked to read
back as exactly the data given, so a value this writer cannot express fails loudly instead of changing.
"""

from __future__ import annotations

import math
import re
import tomllib
from typing import Any

from agent.errors import ConfigError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(item: Any, where: str) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if math.isnan(item) or math.isinf(item):
            raise ConfigError(f"key '{where}': {item} cannot be written to a config")
        return repr(item)
    if isinstance(item, str):
        return _string(item)
    if isinstance(item, list):
        return "[" + ", ".join(_value(x, where) for x in item) + "]"
    raise ConfigError(f"key '{where}': a {type(item).__name__} cannot be written to a config")


def dumps(data: dict[str, Any], header: str = "") -> str:
    """``data`` as TOML text, scalars of a table before its sub-tables; ``header`` lines become comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]

    def table(path: list[str], content: dict[str, Any]) -> None:
        scalars = [(k, v) for k, v in content.items() if not isinstance(v, dict)]
        if path and (scalars or not content):
            lines.extend(["", "[" + ".".join(_key(p) for p in path) + "]"])
        for key, item in scalars:
            lines.append(f"{_key(key)} = {_value(item, '.'.join([*path, key]))}")
        for key, item in content.items():
            if isinstance(item, dict):
                table([*path, key], item)

    table([], data)
    text = "\n".join(lines).lstrip("\n") + "\n"
    if tomllib.loads(text) != data:
        raise ConfigError("config: the values cannot be written as TOML faithfully")
    return text
