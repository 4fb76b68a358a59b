"""The signed health report: sign/verify round trip, strict parsing, domain separation, known answers."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import seeded_key

from agent.errors import RecordFormatError, VerificationError
from agent.evidence.ack import ACK_DOMAIN
from agent.evidence.encoding import SIGNATURE_DOMAIN, canonical_json
from agent.evidence.keys import DeviceKey, load_public_key, verify_signature
from agent.health.report import (
    HEALTH_DOMAIN,
    MAX_REPORT_BYTES,
    Check,
    HealthReport,
    parse_report,
    read_report_file,
    sign_report,
    verify_report,
    write_report_file,
)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
KAT_SEED = bytes([0x4B]) * 32

REPORT = HealthReport(
    device="dev-0001", at_wall_us=1_700_000_000_000_000, boot="0b0c0000-0000-4000-8000-000000000001",
    state="failed", summary="self-test failed: camera: no frames in 5 s",
    checks=(Check("camera", False, "no frames in 5 s"), Check("store", True, "writable")),
    clock_trusted=False, metrics={"fps": 0, "free_bytes": 1_000_000, "temperature_c": 48.5, "battery_percent": None},
)


def test_sign_verify_round_trip() -> None:
    key = seeded_key(1)
    line = sign_report(REPORT, key)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.count(b"\t") == 1
    got = verify_report(line, key.public_key, "dev-0001")
    assert got == REPORT
    assert got.metrics["temperature_c"] == 48.5 and isinstance(got.metrics["fps"], int)
    assert got.failing_checks() == (Check("camera", False, "no frames in 5 s"),)


def test_float_metric_keeps_three_decimals() -> None:
    key = seeded_key(1)
    report = replace(REPORT, metrics={"fps": 14.98765})
    assert verify_report(sign_report(report, key), key.public_key, "dev-0001").metrics["fps"] == 14.988


def test_report_metrics_cannot_be_changed_after_creation() -> None:
    metrics: dict[str, int | float | None] = {"fps": 15}
    report = replace(REPORT, metrics=metrics)
    metrics["fps"] = 1
    assert report.metrics["fps"] == 15
    with pytest.raises(TypeError):
        report.metrics["fps"] = 2  # type: ignore[index]


def test_wrong_key_other_device_and_tampering_are_refused() -> None:
    key = seeded_key(1)
    line = sign_report(REPORT, key)
    with pytest.raises(VerificationError, match="health report from dev-0001: signed by another key"):
        verify_report(line, seeded_key(2).public_key, "dev-0001")
    with pytest.raises(VerificationError, match="about device 'dev-0001', not 'dev-0002'"):
        verify_report(line, key.public_key, "dev-0002")
    flipped = line.replace(b'"state":"failed"', b'"state":"ok"').replace(b'"ok":false', b'"ok":true')
    with pytest.raises(VerificationError, match="signature invalid"):
        verify_report(flipped, key.public_key, "dev-0001")


def test_signature_is_domain_separated_from_ledger_records_and_acks() -> None:
    key = seeded_key(1)
    line = sign_report(REPORT, key)
    payload, _, sig_hex = line[:-1].rpartition(b"\t")
    signature = bytes.fromhex(sig_hex.decode())
    assert verify_signature(key.public_key, payload, signature, domain=HEALTH_DOMAIN)
    assert not verify_signature(key.public_key, payload, signature, domain=SIGNATURE_DOMAIN)
    assert not verify_signature(key.public_key, payload, signature, domain=ACK_DOMAIN)
    # A ledger-domain signature over the very same payload does not make a valid report.
    forged = payload + b"\t" + key.sign(payload).hex().encode() + b"\n"
    with pytest.raises(VerificationError, match="signature invalid"):
        verify_report(forged, key.public_key, "dev-0001")


def _resigned(key: DeviceKey, edit: dict[str, object]) -> bytes:
    """The report's payload with ``edit`` applied (None deletes a field), canonical and validly signed."""
    import json

    value = json.loads(sign_report(REPORT, key).split(b"\t")[0])
    for name, item in edit.items():
        if item is None:
            del value[name]
        else:
            value[name] = item
    payload = canonical_json(value)
    return payload + b"\t" + key.sign(payload, domain=HEALTH_DOMAIN).hex().encode() + b"\n"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"extra": 1}, "field 'extra' is unknown"),
        ({"summary": None}, "field 'summary' is missing"),
        ({"state": "broken"}, "field 'state': 'broken' is not one of ok, degraded, failed"),
        ({"at_wall_us": "soon"}, "field 'at_wall_us'"),
        ({"at_wall_us": -1}, "field 'at_wall_us'"),
        ({"clock_trusted": 1}, "field 'clock_trusted'"),
        ({"device": "bad/id"}, "field 'device'"),
        ({"boot": "NOT A BOOT"}, "field 'boot'"),
        ({"type": "ack"}, "fields 'v'/'type'"),
        ({"v": 2}, "fields 'v'/'type'"),
        ({"key": "abc"}, "field 'key'"),
        ({"checks": {}}, "field 'checks': not a list"),
        ({"checks": [{"name": "camera", "ok": True}]}, r"checks\[0\]: not an object with name, ok and detail"),
        ({"checks": [{"name": "Camera", "ok": True, "detail": ""}]}, r"checks\[0\].name"),
        ({"checks": [{"name": "camera", "ok": "yes", "detail": ""}]}, r"checks\[0\].ok"),
        ({"checks": [{"name": "camera", "ok": True, "detail": "x"}, {"name": "camera", "ok": True, "detail": "y"}]},
         "appears twice"),
        ({"state": "ok"}, "state 'ok' but check 'camera' failed"),
        ({"summary": "two\nlines"}, "control character"),
        ({"summary": "x" * 301}, "more than the 300 allowed"),
        ({"metrics": []}, "field 'metrics': not an object"),
        ({"metrics": {"fps": "fast"}}, "metric 'fps'"),
        ({"metrics": {"fps": {"milli": 1, "x": 2}}}, "metric 'fps'"),
        ({"metrics": {"fps": True}}, "metric 'fps'"),
    ],
)
def test_malformed_reports_are_refused_naming_the_field(edit: dict[str, object], message: str) -> None:
    key = seeded_key(1)
    line = _resigned(key, edit)
    with pytest.raises(RecordFormatError, match=f"^health report: .*{message}"):
        parse_report(line)
    with pytest.raises(VerificationError, match=f"^health report: .*{message}"):
        verify_report(line, key.public_key, "dev-0001")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"", "not exactly one line"),
        (b"{}\tab\n", "not 'payload TAB signature-hex'"),
        (b"{}\t" + b"zz" * 64 + b"\n", "signature is not hex"),
        (b"not json\t" + b"00" * 64 + b"\n", "not valid JSON"),
        (b'{"a": 1}\t' + b"00" * 64 + b"\n", "not in canonical form"),
        (b"[]\t" + b"00" * 64 + b"\n", "not a JSON object"),
        (b"{}\t" + b"00" * 64, "not exactly one line ending in LF"),
        (b"{}\n{}\t" + b"00" * 64 + b"\n", "not exactly one line ending in LF"),
        (b"x" * (MAX_REPORT_BYTES + 1), "more than the 16384 allowed"),
    ],
)
def test_malformed_lines_are_refused(line: bytes, message: str) -> None:
    with pytest.raises(RecordFormatError, match=f"^health report: .*{message}"):
        parse_report(line)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"state": "ok"}, "state 'ok' but check 'camera' failed"),
        ({"summary": "a\nb"}, "control character"),
        ({"metrics": {"fps": float("nan")}}, "not a finite number"),
        ({"metrics": {"Fps": 1}}, "metric name 'Fps'"),
        ({"metrics": {"fps": "15"}}, "metric 'fps'"),
        ({"checks": (Check("camera", True, "a"),) * 2}, "appears twice"),
        ({"checks": tuple(Check(f"c{i}", True, "") for i in range(17))}, "17 checks"),
        ({"device": ""}, "field 'device'"),
        ({"at_wall_us": 1.5}, "field 'at_wall_us'"),
    ],
)
def test_signing_refuses_a_report_the_station_would_refuse(change: dict[str, object], message: str) -> None:
    with pytest.raises(RecordFormatError, match=message):
        sign_report(replace(REPORT, **change), seeded_key(1))  # type: ignore[arg-type]


def test_report_file_is_replaced_atomically_and_absent_is_none(tmp_path: Path) -> None:
    path = tmp_path / "run" / "health.json"
    assert read_report_file(path) is None
    key = seeded_key(1)
    first = sign_report(REPORT, key)
    write_report_file(path, first)
    assert read_report_file(path) == first
    second = sign_report(replace(REPORT, at_wall_us=REPORT.at_wall_us + 1), key)
    write_report_file(path, second)
    assert read_report_file(path) == second
    assert sorted(p.name for p in path.parent.iterdir()) == ["health.json"]  # no temporary file left
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_oversize_file_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    path.write_bytes(b"x" * (10 * MAX_REPORT_BYTES))
    data = read_report_file(path)
    assert data is not None and len(data) == MAX_REPORT_BYTES + 1
    with pytest.raises(RecordFormatError, match="more than the"):
        parse_report(data)


# --- known answers (tests/assets/make_health_known_answer.py) -----------------------------------------

KNOWN_SIGNATURE = (
    "9694b68914e766db09440b14a01424e39ab05843aba5c13a2067279bb0b659115cbfc5beb0929a266c37459c905cdb5aafaf04af3d13695b28df8f723c728703"
)


def test_known_answer_report_verifies_and_reproduces_byte_for_byte() -> None:
    line = (ASSETS / "health" / "good.line").read_bytes()
    assert line.endswith(KNOWN_SIGNATURE.encode() + b"\n")
    public_key = load_public_key(ASSETS / "good" / "device.pub")
    report = verify_report(line, public_key, "kat-0001")
    assert (report.state, report.summary) == ("degraded", "frame rate 11.5 fps, below the 14 fps floor")
    assert [c.name for c in report.failing_checks()] == ["frame-rate"]
    assert dict(report.metrics) == {"fps": 11.5, "write_latency_ms": 23.25, "free_bytes": 12_000_000_000,
                                    "temperature_c": 61.0, "battery_percent": None}
    # Deterministic Ed25519 and canonical JSON: signing the parsed report again gives the same bytes.
    assert sign_report(report, DeviceKey.from_seed(KAT_SEED)) == line


def test_known_answer_tampered_report_fails() -> None:
    line = (ASSETS / "health" / "tampered.line").read_bytes()
    public_key = load_public_key(ASSETS / "good" / "device.pub")
    assert parse_report(line).report.state == "ok"  # well-formed, so only the signature can catch it
    with pytest.raises(VerificationError, match=r"^health report from kat-0001: signature invalid$"):
        verify_report(line, public_key, "kat-0001")
