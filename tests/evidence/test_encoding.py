"""Unit tests of the canonical encoding (agent/evidence/encoding.py) and of ledger line parsing (record.py).

The rules under test are those of docs/ledger-format.md, sections 2-6: one valid spelling per value, a
restricted JSON subset, the ten header fields, the body fields per type, and domain-separated hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from helpers import DEFAULT_BOOT_ID, DEFAULT_MONO_US, DEFAULT_WALL_US, seeded_key
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import EncodingError, RecordFormatError
from agent.evidence.encoding import (
    FORMAT_VERSION,
    GENESIS_PREV,
    MAX_DEPTH,
    MAX_LINE_BYTES,
    MAX_SAFE_INTEGER,
    RECORD_LINK_DOMAIN,
    SIGNATURE_DOMAIN,
    canonical_json,
    check_value,
    is_hex64,
    parse_canonical_json,
    record_link,
    signed_message,
)
from agent.evidence.keys import verify_signature
from agent.evidence.record import HEADER_FIELDS, Record, SignedRecord, parse_line

KEY = seeded_key(3)
HEX_A = "a" * 64
SEGMENT_BODY = {"file": "segments/000001.bin", "sha256": HEX_A, "size": 1024}


# --- helpers -------------------------------------------------------------------------------------------


def header(**changes: Any) -> dict[str, Any]:
    """A valid record object (a segment record), with ``changes`` applied; a change to ``...`` drops the key."""
    value: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "seq": 7,
        "prev": GENESIS_PREV.replace("0", "1"),
        "type": "segment",
        "device": "dev-0001",
        "key": KEY.fingerprint,
        "wall_us": DEFAULT_WALL_US,
        "mono_us": DEFAULT_MONO_US,
        "boot": DEFAULT_BOOT_ID,
        "body": dict(SEGMENT_BODY),
    }
    for name, new in changes.items():
        if new is ...:
            del value[name]
        else:
            value[name] = new
    return value


def body(**changes: Any) -> dict[str, Any]:
    """The segment body with ``changes`` applied (``...`` drops the key)."""
    value = dict(SEGMENT_BODY)
    for name, new in changes.items():
        if new is ...:
            del value[name]
        else:
            value[name] = new
    return value


def line_of(payload: bytes, signature: bytes | None = None) -> bytes:
    """A ledger line: payload, TAB, hex signature (a real one by KEY unless given), LF."""
    sig = signature if signature is not None else KEY.sign(payload).hex().encode("ascii")
    return payload + b"\t" + sig + b"\n"


def line_for(value: Any) -> bytes:
    return line_of(canonical_json(value))


# --- canonical form ------------------------------------------------------------------------------------


def test_keys_are_sorted_and_there_is_no_whitespace() -> None:
    value = {"zeta": [1, 2, {"b": None, "a": True}], "alpha": "x y", "mid": False}
    assert canonical_json(value) == b'{"alpha":"x y","mid":false,"zeta":[1,2,{"a":true,"b":null}]}'


def test_keys_sort_by_byte_order_digits_and_underscore_before_letters() -> None:
    assert canonical_json({"a_b": 1, "ab": 2, "a1": 3, "a": 4}) == b'{"a":4,"a1":3,"a_b":1,"ab":2}'


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("é", b'"\\u00e9"'),
        ("ÿ", b'"\\u00ff"'),
        ("\u20ac", b'"\\u20ac"'),  # euro sign: lowercase hex digits
        ("\ufeff", b'"\\ufeff"'),
        ("\x7f", b'"\\u007f"'),  # DEL is escaped although ASCII
        ("\U0001f600", b'"\\ud83d\\ude00"'),  # astral: a lowercase surrogate pair
        ("\U0010ffff", b'"\\udbff\\udfff"'),
        ("\x00\x01\x1f", b'"\\u0000\\u0001\\u001f"'),
        ("\b\t\n\f\r", b'"\\b\\t\\n\\f\\r"'),
        ('"\\', b'"\\"\\\\"'),
        ("/", b'"/"'),  # solidus as itself, never "\/"
        (" ~", b'" ~"'),
    ],
)
def test_string_escapes(text: str, encoded: bytes) -> None:
    assert canonical_json(text) == encoded
    assert parse_canonical_json(encoded) == text


def test_payload_is_printable_ascii_without_tab_or_lf() -> None:
    payload = canonical_json({"s": "tab\there\nnewline \u00e9 \U0001f600 \x00"})
    assert all(0x20 <= byte <= 0x7E for byte in payload)


@pytest.mark.parametrize("value", [0, 1, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, True, False, None, "", [], {}])
def test_scalars_and_empty_containers(value: Any) -> None:
    encoded = canonical_json(value)
    assert encoded == json.dumps(value).encode("ascii")
    assert parse_canonical_json(encoded) == value
    assert type(parse_canonical_json(encoded)) is type(value)


def test_tuples_encode_as_arrays() -> None:
    assert canonical_json({"a": (1, "b")}) == b'{"a":[1,"b"]}'


def test_mappings_that_are_not_dicts_encode_like_dicts() -> None:
    # Bodies are typed as Mapping; json.dumps alone encodes only dicts.
    value = {"outer": MappingProxyType({"b": 1, "a": OrderedDict([("z", 1), ("y", 2)])})}
    assert canonical_json(value) == b'{"outer":{"a":{"y":2,"z":1},"b":1}}'
    with pytest.raises(EncodingError, match="key 'B'"):
        canonical_json({"outer": MappingProxyType({"B": 1})})


# --- values the encoding refuses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.0, "floats"),
        (0.5, "floats"),
        (float("nan"), "floats"),
        (float("inf"), "floats"),
        (MAX_SAFE_INTEGER + 1, "outside"),
        (-MAX_SAFE_INTEGER - 1, "outside"),
        (2**64, "outside"),
        (b"bytes", "bytes"),
        (bytearray(b"x"), "bytearray"),
        ({1, 2}, "set"),
        (frozenset(), "frozenset"),
        (object(), "object"),
        ("lone \ud800 surrogate", "surrogate"),
        ("\udc80", "surrogate"),  # what surrogateescape makes of an undecodable byte
        ("\ud83d\ude00", "surrogate"),  # a pair spelled as two code points is not the character
    ],
)
def test_refused_values(value: Any, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        canonical_json(value)
    with pytest.raises(EncodingError):
        canonical_json({"body": {"nested": [value]}})


def test_refusal_names_where_the_bad_value_is() -> None:
    with pytest.raises(EncodingError, match=r"record\.body\.items\[1\]: floats"):
        check_value({"body": {"items": [1, 2.5]}})


@pytest.mark.parametrize(
    "key",
    [1, None, True, ("a",), b"a", "", "A", "Ab", "aB", "1a", "_a", "a-b", "a b", "a.b", "é", "a" * 65, "a\n"],
)
def test_refused_keys(key: Any) -> None:
    with pytest.raises(EncodingError, match="is not"):
        canonical_json({key: 1})
    with pytest.raises(EncodingError):
        canonical_json([{"ok": {key: 1}}])


@pytest.mark.parametrize("key", ["a", "z", "a0", "a_", "snake_case_9", "a" * 64])
def test_allowed_keys(key: str) -> None:
    assert parse_canonical_json(canonical_json({key: 1})) == {key: 1}


def test_nesting_limit_is_fixed_at_max_depth() -> None:
    def nested(levels: int) -> Any:
        value: Any = []
        for _ in range(levels - 1):
            value = [value]
        return value

    assert parse_canonical_json(canonical_json(nested(MAX_DEPTH))) == nested(MAX_DEPTH)
    with pytest.raises(EncodingError, match=f"nested deeper than {MAX_DEPTH} levels"):
        canonical_json(nested(MAX_DEPTH + 1))
    with pytest.raises(EncodingError, match=f"nested deeper than {MAX_DEPTH} levels"):
        canonical_json(nested(sys.getrecursionlimit() + 100))  # refused by the limit, not by a RecursionError


# --- parse_canonical_json refuses every other spelling ---------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b' {"a":1}', "canonical"),
        (b'{"a":1} ', "canonical"),
        (b'{"a":1}\n', "canonical"),
        (b'{"a": 1}', "canonical"),
        (b'{"a":1, "b":2}', "canonical"),
        (b'{\n"a":1}', "canonical"),
        (b'{"b":1,"a":2}', "canonical"),  # keys not sorted
        (b'{"a":1,"a":2}', "canonical"),  # duplicate key: json.loads keeps the last value
        (b'{"a":2,"a":2}', "canonical"),  # even with the same value twice
        (b"1.0", "float"),
        (b"1e3", "float"),
        (b"1E3", "float"),
        (b"-0.0", "float"),
        (b"NaN", "NaN"),
        (b"Infinity", "Infinity"),
        (b"-Infinity", "Infinity"),
        (b"-0", "canonical"),
        (b"01", "not valid JSON"),
        (b"+1", "not valid JSON"),
        (b"9007199254740992", "outside"),
        (b"-9007199254740992", "outside"),
        (b"9" * 5000, "not valid JSON"),  # past Python's int digit limit
        (b"TRUE", "not valid JSON"),
        (b'"\\u00E9"', "canonical"),  # uppercase hex digits
        (b'"\\u00e9\\u00E9"', "canonical"),
        (b'"\\uD83D\\uDE00"', "canonical"),
        (b'"\\u0041"', "canonical"),  # ASCII letter escaped
        (b'"\\u0008"', "canonical"),  # \b has a short escape
        (b'"\\u000a"', "canonical"),
        (b'"\\/"', "canonical"),  # escaped solidus
        (b'"\x7f"', "canonical"),  # raw DEL must be escaped
        (b'"\x01"', "not valid JSON"),  # raw control character
        (b'"\t"', "not valid JSON"),
        (b'"\\ud800"', "surrogate"),  # lone surrogate escape
        (b'"\\udc80x"', "surrogate"),
        (b'"\\ude00\\ud83d"', "surrogate"),  # a pair in the wrong order
        (b'"caf\xc3\xa9"', "non-ASCII byte at offset 4"),  # UTF-8 instead of an escape
        (b"\xef\xbb\xbf{}", "non-ASCII byte at offset 0"),  # byte order mark
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"{}{}", "not valid JSON"),
        (b"{'a':1}", "not valid JSON"),
        (b'{"A":1}', "is not"),  # key outside the pattern
    ],
)
def test_non_canonical_spellings_are_refused(payload: bytes, message: str) -> None:
    with pytest.raises(EncodingError, match=re.escape(message)):
        parse_canonical_json(payload)


def test_duplicate_keys_would_otherwise_silently_keep_the_last_value() -> None:
    # The reason the re-encoding check refuses duplicates: a plain JSON parser hides the first value.
    assert json.loads('{"a":1,"a":2}') == {"a": 2}
    assert canonical_json(json.loads('{"a":1,"a":2}')) == b'{"a":2}'
    with pytest.raises(EncodingError, match="canonical"):
        parse_canonical_json(b'{"a":1,"a":2}')


def test_astral_character_parses_from_its_pair() -> None:
    assert parse_canonical_json(b'"\\ud83d\\ude00"') == "\U0001f600"


# --- round trip properties -----------------------------------------------------------------------------

keys = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)  # no surrogates
scalars = st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | texts
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)


def _spec_string(text: str) -> str:
    """Section 3's string rules, written out independently of the json module."""
    short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = []
    for char in text:
        point = ord(char)
        if char in short:
            out.append(short[char])
        elif 0x20 <= point <= 0x7E:
            out.append(char)
        elif point <= 0xFFFF:
            out.append(f"\\u{point:04x}")
        else:
            point -= 0x10000
            out.append(f"\\u{0xD800 + (point >> 10):04x}\\u{0xDC00 + (point & 0x3FF):04x}")
    return '"' + "".join(out) + '"'


@settings(max_examples=200, deadline=None)
@given(values)
def test_round_trip(value: Any) -> None:
    payload = canonical_json(value)
    assert all(0x20 <= byte <= 0x7E for byte in payload)
    parsed = parse_canonical_json(payload)
    assert parsed == value
    assert canonical_json(parsed) == payload


@settings(max_examples=300, deadline=None)
@given(texts)
def test_strings_follow_the_written_rules(text: str) -> None:
    assert canonical_json(text).decode("ascii") == _spec_string(text)


@settings(max_examples=100, deadline=None)
@given(values)
def test_other_json_spellings_of_the_same_value_are_refused(value: Any) -> None:
    canonical = canonical_json(value)
    for spelling in (
        json.dumps(value, sort_keys=True),  # default separators have spaces
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        json.dumps(value, separators=(",", ":"), indent=1),
    ):
        raw = spelling if isinstance(spelling, bytes) else spelling.encode("utf-8")
        if raw != canonical:
            with pytest.raises(EncodingError):
                parse_canonical_json(raw)


@settings(max_examples=100, deadline=None)
@given(st.integers(MAX_SAFE_INTEGER + 1, 2**256) | st.integers(-(2**256), -MAX_SAFE_INTEGER - 1))
def test_integers_beyond_the_safe_range_are_refused(number: int) -> None:
    with pytest.raises(EncodingError, match="outside"):
        canonical_json({"n": number})
    with pytest.raises(EncodingError, match="outside"):
        parse_canonical_json(str(number).encode("ascii"))


# --- parse_line ----------------------------------------------------------------------------------------


def test_parse_line_accepts_a_valid_line() -> None:
    value = header()
    payload = canonical_json(value)
    line = line_of(payload)
    signed = parse_line(line)
    assert isinstance(signed, SignedRecord)
    assert signed.payload == payload
    assert signed.signature == KEY.sign(payload)
    assert signed.seq == 7
    assert signed.record == Record(
        seq=7, prev=value["prev"], type="segment", device="dev-0001", key=KEY.fingerprint,
        wall_us=DEFAULT_WALL_US, mono_us=DEFAULT_MONO_US, boot=DEFAULT_BOOT_ID, body=SEGMENT_BODY,
    )
    assert signed.record.to_payload() == payload
    assert signed.to_line() == line
    assert signed.link == record_link(payload)
    assert verify_signature(KEY.public_key, signed.payload, signed.signature)
    assert parse_line(line[:-1]) == signed  # the LF is optional


def test_parse_line_does_not_check_the_signature() -> None:
    # Parsing is syntax only; the verifier checks signatures against the device key.
    signed = parse_line(line_of(canonical_json(header()), b"0" * 128))
    assert signed.signature == bytes(64)


@pytest.mark.parametrize(
    "record_type, record_body",
    [
        ("boot", {"public_key": KEY.public_raw.hex(), "software": "bodycam 0.1.0", "reason": "first start"}),
        (
            "recovery",
            {"offset": 0, "length": 5, "sha256": HEX_A, "file": "quarantine/ledger-torn-0-aaaaaaaaaaaaaaaa.bin"},
        ),
        ("segment", SEGMENT_BODY),
        ("event", {"kind": "bookmark"}),
        ("event", {"kind": "", "note": "extra body fields are allowed", "n": [1, {"x": None}]}),
        ("purge", {"file": "segments/000001.bin", "sha256": HEX_A, "reason": "acknowledged"}),
    ],
)
def test_every_record_type_parses(record_type: str, record_body: dict[str, Any]) -> None:
    signed = parse_line(line_for(header(type=record_type, body=record_body)))
    assert signed.record.type == record_type
    assert dict(signed.record.body) == record_body


def _refused(line: bytes, message: str) -> None:
    with pytest.raises(RecordFormatError, match=message):
        parse_line(line)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"", "no tab"),
        (b"\n", "no tab"),
        (canonical_json(header()) + b" " + b"0" * 128 + b"\n", "no tab"),
        (canonical_json(header()) + b"0" * 128 + b"\n", "no tab"),
        (canonical_json(header()) + b"\t" + b"0" * 127 + b"\n", "signature"),
        (canonical_json(header()) + b"\t" + b"0" * 129 + b"\n", "signature"),
        (canonical_json(header()) + b"\t" + b"A" * 128 + b"\n", "signature"),  # uppercase hex
        (canonical_json(header()) + b"\t" + b"g" * 128 + b"\n", "signature"),
        (canonical_json(header()) + b"\t" + b"0" * 126 + b"\n\n", "signature"),
        (canonical_json(header()) + b"\t\n", "signature"),
        (canonical_json(header()) + b"\t" + b"0" * 128 + b"\t\n", "signature"),  # a tab after the signature
        (canonical_json(header()) + b"\t" + b"0" * 128 + b"\r\n", "signature"),  # CRLF line ending
        (canonical_json(header()) + b"\t" + b" " + b"0" * 127 + b"\n", "signature"),
    ],
)
def test_line_framing_is_refused(line: bytes, message: str) -> None:
    _refused(line, message)


def test_a_tab_inside_the_payload_is_refused() -> None:
    # Only the last tab separates the signature; an earlier one stays in the payload.
    payload = canonical_json(header())
    inside_a_string = payload.replace(b'"segments/', b'"seg\tments/')
    _refused(line_of(inside_a_string, b"0" * 128), "not valid JSON")  # raw control character
    between_tokens = b"{\t" + payload[1:]
    _refused(line_of(between_tokens, b"0" * 128), "not in canonical form")  # JSON whitespace


def test_non_canonical_payload_is_refused() -> None:
    value = header()
    spaced = json.dumps(value, sort_keys=True).encode("ascii")
    _refused(line_of(spaced), "not in canonical form")
    unsorted = json.dumps(value, separators=(",", ":")).encode("ascii")
    _refused(line_of(unsorted), "not in canonical form")
    with_float = canonical_json(value).replace(b'"seq":7', b'"seq":7.0')
    _refused(line_of(with_float), "float")


@pytest.mark.parametrize("payload", [b"[]", b"1", b'"x"', b"null", b"true"])
def test_payload_must_be_an_object(payload: bytes) -> None:
    _refused(line_of(payload), "not a JSON object")


@pytest.mark.parametrize("missing", sorted(HEADER_FIELDS))
def test_every_header_field_is_required(missing: str) -> None:
    _refused(line_for(header(**{missing: ...})), rf"missing \['{missing}'\]")


@pytest.mark.parametrize("extra", ["sig", "extra", "vv", "z"])
def test_extra_header_fields_are_refused(extra: str) -> None:
    _refused(line_for(header(**{extra: 1})), rf"unexpected \['{extra}'\]")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("v", True),
        ("seq", True),
        ("seq", False),
        ("wall_us", True),
        ("mono_us", False),
        ("seq", "7"),
        ("v", "1"),
        ("prev", None),
        ("type", 1),
        ("device", ["dev-0001"]),
        ("key", None),
        ("boot", 1),
        ("body", []),
        ("body", None),
        ("body", "segment"),
    ],
)
def test_header_field_of_the_wrong_type_is_refused(name: str, value: Any) -> None:
    _refused(line_for(header(**{name: value})), f"field '{name}' has the wrong type")


@pytest.mark.parametrize("version", [0, 2, -1, 100])
def test_other_format_versions_are_refused(version: int) -> None:
    _refused(line_for(header(v=version)), f"format version {version} is not 1")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seq": 0}, "seq 0 is below 1"),
        ({"seq": -5}, "below 1"),
        ({"prev": "A" * 64}, "prev"),
        ({"prev": "0" * 63}, "prev"),
        ({"prev": ""}, "prev"),
        ({"key": KEY.fingerprint.upper()}, "key"),
        ({"key": KEY.fingerprint + "0"}, "key"),
        ({"wall_us": -1}, "negative"),
        ({"mono_us": -1}, "negative"),
    ],
)
def test_header_values_are_checked(changes: dict[str, Any], message: str) -> None:
    _refused(line_for(header(**changes)), message)


@pytest.mark.parametrize(
    "device", ["", "-dev", ".dev", "_dev", "dev 1", "dev/1", "dev\n", "dév", "a" * 65, "dev:1", "..", "dev\\1"]
)
def test_bad_device_ids_are_refused(device: str) -> None:
    _refused(line_for(header(device=device)), "device id")


@pytest.mark.parametrize("device", ["d", "D", "0", "dev-0001", "Cam_7.front", "a" * 64])
def test_good_device_ids(device: str) -> None:
    assert parse_line(line_for(header(device=device))).record.device == device


@pytest.mark.parametrize(
    "boot", ["", "0B0C0000-0000-4000-8000-000000000001", "g", "boot id", "{0b0c}", "0" * 65, "0b0c_0000", "0\n"]
)
def test_bad_boot_ids_are_refused(boot: str) -> None:
    _refused(line_for(header(boot=boot)), "boot id")


@pytest.mark.parametrize("record_type", ["", "Segment", "segments", "unknown", "boot ", "file"])
def test_unknown_record_types_are_refused(record_type: str) -> None:
    _refused(line_for(header(type=record_type)), "unknown record type")


@pytest.mark.parametrize(
    ("record_type", "record_body", "field"),
    [
        ("segment", body(file=...), "file"),
        ("segment", body(sha256=...), "sha256"),
        ("segment", body(size=...), "size"),
        ("segment", {}, "file"),
        ("boot", {"software": "x", "reason": "y"}, "public_key"),
        ("boot", {"public_key": HEX_A, "reason": "y"}, "software"),
        ("boot", {"public_key": HEX_A, "software": "x"}, "reason"),
        ("recovery", {"length": 1, "sha256": HEX_A, "file": "quarantine/t.bin"}, "offset"),
        ("recovery", {"offset": 1, "sha256": HEX_A, "file": "quarantine/t.bin"}, "length"),
        ("event", {}, "kind"),
        ("event", {"kinds": "x"}, "kind"),
        ("purge", {"file": "segments/000001.bin", "sha256": HEX_A}, "reason"),
    ],
)
def test_body_missing_a_required_field_is_refused(record_type: str, record_body: dict[str, Any], field: str) -> None:
    _refused(line_for(header(type=record_type, body=record_body)), f"{record_type} body field '{field}' is missing")


@pytest.mark.parametrize(
    ("record_body", "field"),
    [
        (body(size=True), "size"),  # a bool is not an int
        (body(size=False), "size"),
        (body(size=-1), "size"),
        (body(size="1024"), "size"),
        (body(size=None), "size"),
        (body(sha256="A" * 64), "sha256"),
        (body(sha256="a" * 63), "sha256"),
        (body(sha256=1), "sha256"),
        (body(file=1), "file"),
        (body(file=None), "file"),
    ],
)
def test_body_field_of_the_wrong_kind_is_refused(record_body: dict[str, Any], field: str) -> None:
    _refused(line_for(header(body=record_body)), f"segment body field '{field}' has a wrong value")


def test_event_kind_must_be_a_string() -> None:
    _refused(line_for(header(type="event", body={"kind": 1})), "'kind' has a wrong value")


@pytest.mark.parametrize(
    "name",
    [
        "segments/../ledger.jsonl",
        "segments/..",
        "segments/../../etc/passwd",
        "../segments/000001.bin",
        "segments/sub/../000001.bin",
        "/etc/passwd",
        "/segments/000001.bin",
        "/work/store/segments/000001.bin",
        "segments//000001.bin",
        "segments/",
        "segments",
        "",
        "segments/.hidden",
        "segments/.000001.bin.tmp-1",
        "segments/a/b",
        "segments\\000001.bin",
        "segments/000001.bin\n",
        "segments/000 001.bin",
        "segments/é.bin",
        "other/000001.bin",
        "identity/device.key",
        "ledger.jsonl",
        "./segments/000001.bin",
        "segments/" + "a" * 129,
    ],
)
def test_file_names_outside_the_store_folders_are_refused(name: str) -> None:
    _refused(line_for(header(body=body(file=name))), "'file' has a wrong value")
    purge = {"file": name, "sha256": HEX_A, "reason": "acknowledged"}
    _refused(line_for(header(type="purge", body=purge)), "'file' has a wrong value")


@pytest.mark.parametrize(
    "name", ["segments/000001.bin", "segments/000041.mp4", "segments/a..b", "segments/" + "a" * 128]
)
def test_good_file_names(name: str) -> None:
    assert parse_line(line_for(header(body=body(file=name)))).record.body["file"] == name


def _event_line(text_length: int) -> bytes:
    return line_for(header(type="event", body={"kind": "note", "text": "x" * text_length}))


def test_line_length_limit_is_64_kib_including_the_lf() -> None:
    base = len(_event_line(0))
    at_limit = _event_line(MAX_LINE_BYTES - base)
    assert len(at_limit) == MAX_LINE_BYTES == 64 * 1024
    assert parse_line(at_limit).record.type == "event"
    assert parse_line(at_limit[:-1]).record.type == "event"
    over = _event_line(MAX_LINE_BYTES - base + 1)
    _refused(over, "longer than 65536 bytes")
    _refused(over[:-1], "longer than 65536 bytes")
    _refused(b"x" * (1024 * 1024), "longer than")  # checked before anything else


def test_deeply_nested_payloads_are_refused_without_a_recursion_error() -> None:
    # Near the interpreter's recursion limit json.loads succeeds but re-encoding the value does not; that
    # must surface as a RecordFormatError (the verifier reports those), not as an escaping RecursionError.
    limit = sys.getrecursionlimit()
    for depth in range(limit - 150, limit + 10):
        for payload in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
            with pytest.raises(RecordFormatError):
                parse_line(line_of(payload, b"0" * 128))


def test_strings_with_surrogates_are_refused_in_lines() -> None:
    payload = canonical_json(header(type="event", body={"kind": "note"})).replace(b'"note"', b'"no\\udc80te"')
    _refused(line_of(payload), "surrogate")
    with pytest.raises(EncodingError, match="surrogate"):
        Record(1, GENESIS_PREV, "event", "d", KEY.fingerprint, 0, 0, "0", {"kind": "\udc80"}).to_payload()


# --- domain-separated hashes -----------------------------------------------------------------------------


PAYLOAD = canonical_json(header())


def test_record_link_is_domain_separated() -> None:
    link = record_link(PAYLOAD)
    assert is_hex64(link)
    assert link != hashlib.sha256(PAYLOAD).hexdigest()
    assert link == hashlib.sha256(b"bodycam/ledger/v1/record-link\x00" + PAYLOAD).hexdigest()
    assert RECORD_LINK_DOMAIN == b"bodycam/ledger/v1/record-link\x00"


def test_signed_message_is_domain_separated() -> None:
    message = signed_message(PAYLOAD)
    assert message == b"bodycam/ledger/v1/record-signature\x00" + PAYLOAD
    assert message != PAYLOAD
    assert SIGNATURE_DOMAIN == b"bodycam/ledger/v1/record-signature\x00"


def test_the_two_domains_differ_and_neither_prefixes_the_other() -> None:
    assert not RECORD_LINK_DOMAIN.startswith(SIGNATURE_DOMAIN)
    assert not SIGNATURE_DOMAIN.startswith(RECORD_LINK_DOMAIN)
    assert record_link(PAYLOAD) != hashlib.sha256(signed_message(PAYLOAD)).hexdigest()


def test_a_record_signature_is_not_a_signature_over_the_bare_payload() -> None:
    signature = KEY.sign(PAYLOAD)
    assert verify_signature(KEY.public_key, PAYLOAD, signature)
    KEY.public_key.verify(signature, signed_message(PAYLOAD))
    with pytest.raises(InvalidSignature):
        KEY.public_key.verify(signature, PAYLOAD)
    assert not verify_signature(KEY.public_key, PAYLOAD + b" ", signature)


def test_link_depends_on_every_payload_byte() -> None:
    other = PAYLOAD.replace(b'"seq":7', b'"seq":8')
    assert record_link(other) != record_link(PAYLOAD)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0" * 64, True),
        ("0123456789abcdef" * 4, True),
        ("0123456789ABCDEF" * 4, False),
        ("0" * 63, False),
        ("0" * 65, False),
        ("0" * 64 + "\n", False),
        ("g" * 64, False),
        (b"0" * 64, False),
        (None, False),
        (0, False),
    ],
)
def test_is_hex64(value: object, expected: bool) -> None:
    assert is_hex64(value) is expected


def test_genesis_prev_is_64_zeros() -> None:
    assert GENESIS_PREV == "0" * 64 and is_hex64(GENESIS_PREV)
