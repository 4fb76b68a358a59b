"""The signed one-line messages outside the ledger (ack, officer assignment, health report) share one parse
(agent/evidence/signed_message.py): the same refusals, each named after its message."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import seeded_key

from agent.errors import RecordFormatError
from agent.evidence.ack import Ack, parse_ack, sign_ack
from agent.evidence.assignment import Assignment, parse_assignment, sign_assignment
from agent.health.report import Check, HealthReport, parse_report, sign_report

STATION = seeded_key(9)
DEVICE = seeded_key(1)


def _ack_line() -> bytes:
    ack = Ack("station-1", STATION.fingerprint, "dev-0001", "s1", 3, "0" * 64, (), 1_700_000_000_000_000)
    return sign_ack(ack, STATION).to_line()


def _assignment_line() -> bytes:
    assignment = Assignment("station-1", STATION.fingerprint, "dev-0001", "B5678", 1_700_000_000_000_000, "a" * 32)
    return sign_assignment(assignment, STATION).to_line()


def _report_line() -> bytes:
    report = HealthReport("dev-0001", 1_700_000_000_000_000, "0b0c0000-0000-4000-8000-000000000001", "ok",
                          "all checks passed", (Check("store", True, "writable"),), True)
    return sign_report(report, DEVICE)


MESSAGES: list[tuple[str, Callable[[], bytes], Callable[[bytes], object]]] = [
    ("ack", _ack_line, parse_ack),
    ("assignment", _assignment_line, parse_assignment),
    ("health report", _report_line, parse_report),
]


@pytest.mark.parametrize(("what", "make", "parse"), MESSAGES)
def test_a_signature_in_another_spelling_than_128_lowercase_hex_digits_is_refused(
    what: str, make: Callable[[], bytes], parse: Callable[[bytes], object]
) -> None:
    line = make()
    parse(line)  # the signer's own spelling parses
    payload, _, sig = line.rstrip(b"\n").rpartition(b"\t")
    for bad in (sig.upper(), b"zz" + sig[2:]):
        with pytest.raises(RecordFormatError, match=rf"^{what}: signature is not hex \(128 lowercase digits\)"):
            parse(payload + b"\t" + bad + b"\n")
    with pytest.raises(RecordFormatError, match=rf"^{what}: not 'payload TAB signature-hex'"):
        parse(payload + b"\t" + sig[:-2] + b"\n")


@pytest.mark.parametrize(("what", "make", "parse"), MESSAGES)
def test_a_payload_with_a_field_missing_or_unknown_is_refused_naming_it(
    what: str, make: Callable[[], bytes], parse: Callable[[bytes], object]
) -> None:
    payload, _, sig = make().rstrip(b"\n").rpartition(b"\t")
    extra = payload[:-1] + b',"zz":1}'
    with pytest.raises(RecordFormatError, match=rf"^{what}: field 'zz' is unknown"):
        parse(extra + b"\t" + sig + b"\n")
    with pytest.raises(RecordFormatError, match=rf"^{what}: not a JSON object"):
        parse(b"[]\t" + sig + b"\n")
