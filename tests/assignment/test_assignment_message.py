"""The station's officer assignment as a signed message, and the pure rules over the ledger's records."""

from __future__ import annotations

import json

import pytest
from helpers import seeded_key

from agent.errors import RecordFormatError, RefusedError, VerificationError
from agent.evidence.ack import ACK_DOMAIN
from agent.evidence.assignment import (
    ASSIGNMENT_DOMAIN,
    Assignment,
    OfficerState,
    SignedAssignment,
    Verdict,
    dock_body,
    judge_station,
    officer_state,
    open_case,
    parse_assignment,
    sign_assignment,
    station_body,
    verify_assignment,
)
from agent.evidence.encoding import SIGNATURE_DOMAIN, canonical_json

STATION = seeded_key(9)
IMPOSTOR = seeded_key(10)
DEVICE = "cam-0001"
T0 = 1_800_000_000_000_000


def signed(officer: str = "B5678", issued: int = T0, serial: str = "a" * 32, device: str = DEVICE,
           signer: object = STATION) -> SignedAssignment:
    assignment = Assignment("station-1", STATION.fingerprint, device, officer, issued, serial)
    return sign_assignment(assignment, signer)  # type: ignore[arg-type]


def test_a_signed_assignment_parses_back_and_verifies() -> None:
    line = signed().to_line()
    parsed = parse_assignment(line)
    assert parsed.assignment == signed().assignment
    verify_assignment(parsed, STATION.public_key, DEVICE)
    payload = json.loads(parsed.payload)
    assert payload == {"v": 1, "type": "officer-assignment", "station": "station-1", "key": STATION.fingerprint,
                       "device": DEVICE, "officer": "B5678", "issued_wall_us": T0, "serial": "a" * 32}
    # Its own domain: the same key's signature over the payload as an ack or a ledger record does not verify.
    assert STATION.sign(parsed.payload, domain=ASSIGNMENT_DOMAIN) == parsed.signature
    for domain in (ACK_DOMAIN, SIGNATURE_DOMAIN):
        other = SignedAssignment(parsed.assignment, parsed.payload, STATION.sign(parsed.payload, domain=domain))
        with pytest.raises(VerificationError, match="signature invalid"):
            verify_assignment(other, STATION.public_key, DEVICE)


def test_a_flipped_byte_or_another_key_or_device_is_refused() -> None:
    line = signed().to_line()
    tampered = line.replace(b"B5678", b"B5679")
    with pytest.raises(VerificationError, match="signature invalid"):
        verify_assignment(parse_assignment(tampered), STATION.public_key, DEVICE)
    sig_at = line.rindex(b"\t") + 5
    flipped = line[:sig_at] + (b"0" if line[sig_at:sig_at + 1] != b"0" else b"1") + line[sig_at + 1:]
    with pytest.raises(VerificationError, match="signature invalid"):
        verify_assignment(parse_assignment(flipped), STATION.public_key, DEVICE)
    # Signed by another key claiming the station's fingerprint: the signature fails; under its own: the key.
    with pytest.raises(VerificationError, match="signature invalid"):
        verify_assignment(signed(signer=IMPOSTOR), STATION.public_key, DEVICE)
    with pytest.raises(VerificationError, match="another station key"):
        verify_assignment(signed(), IMPOSTOR.public_key, DEVICE)
    with pytest.raises(VerificationError, match="about device 'cam-0002'"):
        verify_assignment(signed(device="cam-0002"), STATION.public_key, DEVICE)


@pytest.mark.parametrize(("change", "message"), [
    (lambda v: {**v, "extra": 1}, "field 'extra' is unknown"),
    (lambda v: {k: x for k, x in v.items() if k != "serial"}, "field 'serial' is missing"),
    (lambda v: {**v, "officer": ""}, "officer id"),
    (lambda v: {**v, "officer": "x" * 65}, "officer id"),
    (lambda v: {**v, "officer": "A\n1"}, "officer id"),
    (lambda v: {**v, "officer": 7}, "must be text"),
    (lambda v: {**v, "issued_wall_us": -1}, "issued_wall_us"),
    (lambda v: {**v, "serial": "XYZ"}, "serial"),
    (lambda v: {**v, "type": "ack"}, "type"),
    (lambda v: {**v, "device": "../x"}, "device"),
])
def test_malformed_assignments_are_refused_naming_the_field(change: object, message: str) -> None:
    value = json.loads(signed().payload)
    payload = canonical_json(change(value))  # type: ignore[operator]
    line = payload + b"\t" + STATION.sign(payload, domain=ASSIGNMENT_DOMAIN).hex().encode() + b"\n"
    with pytest.raises(RecordFormatError, match=message):
        parse_assignment(line)


def test_non_canonical_oversized_and_unsigned_lines_are_refused() -> None:
    good = signed().to_line()
    payload, _, sig = good.rstrip(b"\n").rpartition(b"\t")
    with pytest.raises(RecordFormatError, match="canonical"):
        parse_assignment(payload.replace(b",", b", ", 1) + b"\t" + sig)
    with pytest.raises(RecordFormatError, match="more than"):
        parse_assignment(b"x" * 5000)
    with pytest.raises(RecordFormatError, match="payload TAB signature"):
        parse_assignment(payload)
    with pytest.raises(RecordFormatError, match="officer id"):
        signed(officer=" ")


# --- which assignment is news -----------------------------------------------------------------------------


def test_the_officer_in_effect_is_the_newest_assignment_and_dock_ones_do_not_reorder_the_stations() -> None:
    first, later = signed("B1", T0, "1" * 32), signed("B2", T0 + 10, "2" * 32)
    records = [
        ("event", {"kind": "bookmark"}),
        ("event", station_body(first, "T0001")),
        ("event", dock_body("D1", "B1", T0 - 5_000_000)),  # the device's clock may be behind the station's
    ]
    state = officer_state(records)
    assert state.current("T0001") == "D1" and state.by == "dock"
    assert (state.station_issued_wall_us, state.station_serial) == (T0, "1" * 32)
    # The retained first assignment again: already recorded. An older one: ignored. A later one: recorded.
    assert judge_station(first.assignment, state, None) is Verdict.IN_EFFECT
    assert judge_station(signed("B0", T0 - 1, "0" * 32).assignment, state, None) is Verdict.OLDER
    assert judge_station(later.assignment, state, None) is Verdict.RECORD
    assert officer_state([*records, ("event", station_body(later, "D1"))]).current("T0001") == "B2"
    assert OfficerState().current("T0001") == "T0001"


def test_a_new_assignment_is_refused_while_a_case_is_open_but_a_duplicate_is_not() -> None:
    first = signed("B1", T0, "1" * 32)
    state = officer_state([("event", station_body(first, "T0001"))])
    records = [("case-open", {"case_id": "cam-0001-00001"}), ("stage", {"case_id": "cam-0001-00001"})]
    case = open_case(records)
    assert case == "cam-0001-00001"
    with pytest.raises(RefusedError, match="case cam-0001-00001 is open"):
        judge_station(signed("B2", T0 + 1, "2" * 32).assignment, state, case)
    assert judge_station(first.assignment, state, case) is Verdict.IN_EFFECT
    assert open_case([*records, ("case-close", {"case_id": "cam-0001-00001"})]) is None


def test_record_bodies_carry_what_an_auditor_needs() -> None:
    s = signed()
    body = station_body(s, "T0001")
    assert body == {"kind": "officer-assigned", "officer": "B5678", "previous_officer": "T0001",
                    "by": "station station-1", "station": "station-1", "station_key": STATION.fingerprint,
                    "issued_wall_us": T0, "serial": "a" * 32, "assignment": s.text()}
    again = parse_assignment(body["assignment"].encode())  # the line rides along: checkable again later
    verify_assignment(again, STATION.public_key, DEVICE)
    assert dock_body("C9", "B5678", 5) == {"kind": "officer-assigned", "officer": "C9", "previous_officer": "B5678",
                                           "by": "dock", "issued_wall_us": 5}
    with pytest.raises(RecordFormatError):
        dock_body("", "B5678", 5)
