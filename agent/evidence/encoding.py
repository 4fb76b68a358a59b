"""Canonical byte encoding of records and the domain-separated hashes built on it.

The exact rules are in docs/ledger-format.md; this module is their reference implementation. The
encoding is a restricted JSON: objects with ASCII keys, strings, integers that fit an IEEE double
exactly, booleans, null and arrays; no floats. Keys are sorted, there is no whitespace, and every
non-ASCII character is escaped, so a payload is plain ASCII and has exactly one valid spelling.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from agent.errors import EncodingError

FORMAT_VERSION = 1
# A record line (payload, tab, signature, newline) is never longer than this; it also bounds
# what recovery may treat as a torn tail.
MAX_LINE_BYTES = 64 * 1024
MAX_SAFE_INTEGER = 2**53 - 1
# Objects and arrays nest at most this deep (the record object is level 1): a fixed limit, so whether a
# payload is valid never depends on a parser's recursion limit or stack.
MAX_DEPTH = 16

RECORD_LINK_DOMAIN = b"bodycam/ledger/v1/record-link\x00"
SIGNATURE_DOMAIN = b"bodycam/ledger/v1/record-signature\x00"
GENESIS_PREV = "0" * 64

_KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
# UTF-16 surrogate code points are not characters: a string holding one (Python allows it, e.g. from
# surrogateescape) cannot be written as UTF-8 and other JSON parsers read its escape differently.
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_value(value: Any, where: str = "record", depth: int = 1) -> None:
    """Raise EncodingError naming the first part of ``value`` the encoding does not allow."""
    # Every ledger line read is checked here (replay at start, custody, the station's verifier): the quick
    # pass over plain JSON types builds no names; only a value it cannot pass is walked again to name the fault.
    if not _plainly_allowed(value, depth):
        _check_named(value, where, depth)


def _plainly_allowed(value: Any, depth: int) -> bool:
    """True when ``value`` is made only of exact dict/list/tuple/str/int/bool/None that the encoding allows;
    False means "look closer" (a fault, or a Mapping or subclass the named walk judges)."""
    kind = type(value)
    if kind is str:
        return bool(value.isascii() or not _SURROGATE.search(value))
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    if value is None or kind is bool:
        return True
    if depth > MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _allowed_key(key) or not _plainly_allowed(item, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_plainly_allowed(item, depth + 1) for item in value)
    return False


@functools.lru_cache(maxsize=4096)
def _allowed_key(key: str) -> bool:
    return _KEY_PATTERN.match(key) is not None  # a few dozen field names recur on every line


def _check_named(value: Any, where: str, depth: int) -> None:
    if isinstance(value, Mapping | list | tuple) and depth > MAX_DEPTH:
        raise EncodingError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise EncodingError(f"{where}: string holds a UTF-16 surrogate code point (not a character)")
        return
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return
        raise EncodingError(f"{where}: integer {value} is outside +-(2^53-1)")
    if isinstance(value, float):
        raise EncodingError(f"{where}: floats are not allowed (use an integer unit)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not _KEY_PATTERN.match(key):
                raise EncodingError(f"{where}: key {key!r} is not [a-z][a-z0-9_]{{0,63}}")
            _check_named(item, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_named(item, f"{where}[{index}]", depth + 1)
        return
    raise EncodingError(f"{where}: values of type {type(value).__name__} are not allowed")


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` canonically; raises EncodingError for anything outside the allowed subset."""
    try:
        check_value(value)
        text = _ENCODER.encode(value)
    except RecursionError:
        raise EncodingError("value is nested too deeply") from None
    return text.encode("ascii")


def _as_dict(value: Any) -> Any:
    # json.dumps encodes only dict objects natively; check_value has already vetted every other Mapping.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"values of type {type(value).__name__} are not allowed")


# Made once: json.dumps/json.loads with options build a new encoder/decoder per call (read on every line).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
                            default=_as_dict)


def parse_canonical_json(payload: bytes) -> Any:
    """Decode ``payload`` and insist it is in canonical form (one spelling per value)."""
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError as exc:
        raise EncodingError(f"payload has a non-ASCII byte at offset {exc.start}") from None
    try:
        value = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise EncodingError(f"payload is not valid JSON ({exc})") from None
    if canonical_json(value) != payload:
        raise EncodingError("payload is not in canonical form")
    return value


def _refuse_float(text: str) -> Any:
    raise EncodingError(f"float {text} is not allowed")


def _refuse_constant(text: str) -> Any:
    raise EncodingError(f"{text} is not allowed")


_DECODER = json.JSONDecoder(parse_float=_refuse_float, parse_constant=_refuse_constant)


def record_link(payload: bytes) -> str:
    """The hash that the next record's ``prev`` field carries (hex SHA-256, domain-separated)."""
    return hashlib.sha256(RECORD_LINK_DOMAIN + payload).hexdigest()


def signed_message(payload: bytes) -> bytes:
    """The exact bytes an Ed25519 record signature covers."""
    return SIGNATURE_DOMAIN + payload


def is_hex64(value: object) -> bool:
    return isinstance(value, str) and bool(_HEX64.match(value))


# JSON's and TOML's true and false arrive as Python bools, and bool is a subclass of int: every check for a
# number goes through these, so that ``true`` is never taken for 1.


def is_integer(value: object) -> TypeGuard[int]:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def has_type(value: object, kind: type | tuple[type, ...]) -> bool:
    """``isinstance(value, kind)``, except that a bool passes only where ``kind`` names bool itself."""
    if isinstance(value, bool):
        return kind is bool or (isinstance(kind, tuple) and bool in kind)
    return isinstance(value, kind)
