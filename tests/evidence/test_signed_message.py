"""The one helper for signed messages (agent/evidence/signed_message.py): a declaration judges what is signed
and what is parsed alike, refuses unknown, missing and mistyped fields naming them, and keeps true apart
from 1; the int-not-bool checks the whole tree uses."""

from __future__ import annotations

import re

import pytest
from helpers import seeded_key

from agent.errors import RecordFormatError, VerificationError
from agent.evidence.ack import ACK_DOMAIN, ACK_FORMAT, Ack, AckedFile, parse_ack, sign_ack
from agent.evidence.assignment import Assignment, sign_assignment
from agent.evidence.encoding import canonical_json, has_type, is_integer, is_number
from agent.evidence.signed_message import (
    COUNT,
    HEX64,
    MessageFormat,
    list_of,
    object_of,
    one_line,
    text,
)

STATION = seeded_key(9)
T0 = 1_700_000_000_000_000
DEMO = MessageFormat(
    "demo", b"bodycam/test/v1/demo\x00", {"v": 1, "type": "demo"},
    {"key": HEX64, "device": text(re.compile(r"[a-z0-9-]{1,16}\Z"), "a short id"), "n": COUNT,
     "notes": list_of(object_of({"text": one_line(10), "n": COUNT}), 2, "notes")},
    max_bytes=1024,
)  # fmt: skip


def _body(**change: object) -> dict[str, object]:
    return {"key": STATION.fingerprint, "device": "dev-1", "n": 3, "notes": [{"text": "hi", "n": 0}], **change}


def test_a_declared_message_signs_parses_and_verifies_under_its_domain_only() -> None:
    signed = DEMO.sign(_body(), STATION)
    assert signed.payload == canonical_json({"v": 1, "type": "demo", **_body()})
    parsed = DEMO.parse(signed.to_line())
    assert parsed == signed
    DEMO.verify(parsed, STATION.public_key, "dev-1", what="demo 3")
    with pytest.raises(VerificationError, match=r"^demo 3: about device 'dev-1', not 'dev-2'$"):
        DEMO.verify(parsed, STATION.public_key, "dev-2", what="demo 3")
    with pytest.raises(VerificationError, match=r"^demo 3: signed by another key \("):
        DEMO.verify(parsed, seeded_key(1).public_key, "dev-1", what="demo 3")
    forged = type(parsed)(parsed.value, parsed.payload, STATION.sign(parsed.payload, domain=ACK_DOMAIN))
    with pytest.raises(VerificationError, match=r"^demo 3: signature invalid; nothing done$"):
        DEMO.verify(forged, STATION.public_key, "dev-1", what="demo 3", then="; nothing done")


@pytest.mark.parametrize(("change", "message"), [
    ({"zz": 1}, r"^demo: field 'zz' is unknown \(known: v, type, key, device, n, notes\)$"),
    ({"n": -1}, r"^demo: field 'n': -1 is not a whole number in 0\.\.9007199254740991$"),
    ({"n": True}, r"^demo: field 'n': True is not a whole number"),
    ({"device": "Dev/1"}, r"^demo: field 'device': 'Dev/1' is not a short id$"),
    ({"notes": {}}, r"^demo: field 'notes': not a list$"),
    ({"notes": [{"text": "a"}]}, r"^demo: notes\[0\]: not an object with text and n$"),
    ({"notes": [{"text": "a\nb", "n": 0}]}, r"^demo: notes\[0\]\.text: holds a control character"),
    ({"notes": [{"text": "a", "n": 0}] * 3}, r"^demo: 3 notes, more than the 2 allowed$"),
])
def test_the_signer_refuses_what_the_parser_refuses_naming_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(RecordFormatError, match=message):
        DEMO.sign(_body(**change), STATION)
    payload = canonical_json({"v": 1, "type": "demo", **_body(**change)})
    line = payload + b"\t" + STATION.sign(payload, domain=DEMO.domain).hex().encode() + b"\n"
    with pytest.raises(RecordFormatError, match=message):
        DEMO.parse(line)


def test_a_missing_field_and_a_header_of_true_are_refused() -> None:
    body = _body()
    del body["n"]
    with pytest.raises(RecordFormatError, match=r"^demo: field 'n' is missing$"):
        DEMO.check({"v": 1, "type": "demo", **body})
    # true == 1 in Python: the header compares types too.
    must = r"\(fields 'v'/'type' must be 1/'demo'\)"
    with pytest.raises(RecordFormatError, match=r"^demo: field 'v': True is not 1 " + must):
        DEMO.check({**_body(), "v": True, "type": "demo"})


def test_an_ack_with_a_version_of_true_is_refused_though_its_signature_is_good() -> None:
    good = sign_ack(Ack("station-1", STATION.fingerprint, "dev-1", "s1", 3, "0" * 64, (), T0), STATION)
    payload = good.payload.replace(b'"v":1', b'"v":true')
    with pytest.raises(RecordFormatError, match=r"^ack: field 'v': True is not 1"):
        parse_ack(payload + b"\t" + STATION.sign(payload, domain=ACK_DOMAIN).hex().encode() + b"\n")


def test_the_station_does_not_sign_an_ack_or_assignment_its_devices_would_refuse() -> None:
    with pytest.raises(RecordFormatError, match=r"^ack: field 'session': 'two words' is not"):
        sign_ack(Ack("station-1", STATION.fingerprint, "dev-1", "two words", 3, "0" * 64, (), T0), STATION)
    with pytest.raises(RecordFormatError, match=r"^ack: files\[0\]\.sha256: 'abc' is not 64 lowercase hex digits$"):
        sign_ack(Ack("station-1", STATION.fingerprint, "dev-1", "s1", 3, "0" * 64,
                     (AckedFile("segments/000001.mp4", "abc", 5),), T0), STATION)
    with pytest.raises(RecordFormatError, match=r"^assignment: field 'serial': 'xyz' is not 32 lowercase hex"):
        sign_assignment(Assignment("station-1", STATION.fingerprint, "dev-1", "B1", T0, "xyz"), STATION)
    assert ACK_FORMAT.max_bytes == 16 * 1024


def test_an_unsigned_declaration_cannot_sign() -> None:
    fields_only = MessageFormat("request", b"", {"type": "request"}, {"n": COUNT})
    fields_only.check({"type": "request", "n": 1})
    with pytest.raises(TypeError, match="request: not a signed message"):
        fields_only.sign({"n": 1}, STATION)


def test_int_checks_never_take_a_bool_for_a_number() -> None:
    assert is_integer(0) and not is_integer(True) and not is_integer(1.0)
    assert is_number(1.5) and is_number(2) and not is_number(False) and not is_number("1")
    assert has_type(True, bool) and not has_type(True, int) and not has_type(True, (int, str))
    assert has_type(True, (bool, str)) and has_type(3, int) and has_type("x", (int, str)) and not has_type(3, str)
