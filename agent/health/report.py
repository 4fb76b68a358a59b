"""The device's signed health report: what the self-test and the runtime monitor found, for the station.

The agent writes its newest report to one file (atomically replaced); the uploader forwards that file's
line, unchanged, as a retained message, and the station verifies it with the device's enrolled key. The
line is ``payload TAB signature-hex LF`` like a ledger line; the payload is canonical JSON and the
signature (Ed25519, device key) covers HEALTH_DOMAIN + payload, so a report can never pass for a ledger
record or an acknowledgement, nor they for a report. docs/sync-protocol.md describes the format.

Canonical JSON has no floats; a non-integer metric is carried as ``{"milli": round(value * 1000)}`` and
read back as that many thousandths (so a float metric keeps three decimal places).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import EncodingError, RecordFormatError, VerificationError
from agent.evidence.encoding import MAX_SAFE_INTEGER, canonical_json, is_hex64
from agent.evidence.fsutil import write_file_durably
from agent.evidence.keys import DeviceKey, fingerprint, public_key_raw, verify_signature
from agent.evidence.record import BOOT_ID_PATTERN, DEVICE_ID_PATTERN
from agent.evidence.signed_line import parse_signed_line

HEALTH_VERSION = 1
HEALTH_DOMAIN = b"bodycam/device/v1/health\x00"
STATES = ("ok", "degraded", "failed")
# The check names the agent uses; others matching CHECK_NAME_PATTERN are accepted, so a later agent can
# add a check without breaking an older station.
KNOWN_CHECKS = ("camera", "store", "clock", "key", "frame-rate", "write-latency", "storage", "temperature",
                "battery")
CHECK_NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")
METRIC_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
MAX_REPORT_BYTES = 16 * 1024
MAX_CHECKS = 16
MAX_METRICS = 16
MAX_TEXT_CHARS = 300
_WHAT = "health report"

Metric = int | float | None


@dataclass(frozen=True)
class Check:
    """One check's outcome; ``detail`` says what was measured or why it failed (one line)."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class HealthReport:
    """The device's health at ``at_wall_us`` (device wall clock) during boot ``boot`` (the ledger's boot id).

    ``state`` is "ok" (every check passed), "degraded" (recording, but something needs attention) or
    "failed" (the device cannot record); ``summary`` is one line saying why."""

    device: str
    at_wall_us: int
    boot: str
    state: str
    summary: str
    checks: tuple[Check, ...]
    clock_trusted: bool
    metrics: Mapping[str, Metric] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A frozen report holds a read-only copy of the metrics, so a caller's later change cannot alter it.
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))
        object.__setattr__(self, "checks", tuple(self.checks))

    def failing_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)


def _fail(message: str) -> RecordFormatError:
    return RecordFormatError(f"{_WHAT}: {message}")


def _is_int(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


def _check_text(item: Any, where: str) -> str:
    if not isinstance(item, str):
        raise _fail(f"{where}: {str(item)[:80]!r} is not a string")
    if len(item) > MAX_TEXT_CHARS:
        raise _fail(f"{where}: {len(item)} characters, more than the {MAX_TEXT_CHARS} allowed")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in item):
        raise _fail(f"{where}: holds a control character (must be one line)")
    return item


def _encode_metric(name: str, value: Any) -> Any:
    if value is None or _is_int(value):
        if value is not None and abs(value) > MAX_SAFE_INTEGER:
            raise _fail(f"metric {name!r}: {value} is outside +-(2^53-1)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) * 1000 > MAX_SAFE_INTEGER:
            raise _fail(f"metric {name!r}: {value!r} is not a finite number in range")
        return {"milli": round(value * 1000)}
    raise _fail(f"metric {name!r}: {str(value)[:80]!r} is not an integer, a float or null")


def _decode_metric(name: str, value: Any) -> Metric:
    if value is None or _is_int(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, dict) and set(value) == {"milli"} and _is_int(value["milli"]):
        return float(value["milli"]) / 1000
    raise _fail(f"metric {name!r}: {str(value)[:80]!r} is not an integer, {{\"milli\": integer}} or null")


def validate_report(report: HealthReport) -> None:
    """Raise RecordFormatError naming the first field of ``report`` that a station would refuse."""
    if not isinstance(report.device, str) or not DEVICE_ID_PATTERN.match(report.device):
        raise _fail(f"field 'device': {str(report.device)[:80]!r} is not a valid device id")
    if not _is_int(report.at_wall_us) or not 0 <= report.at_wall_us <= MAX_SAFE_INTEGER:
        raise _fail(f"field 'at_wall_us': {str(report.at_wall_us)[:80]!r} is not a time in microseconds")
    if not isinstance(report.boot, str) or not BOOT_ID_PATTERN.match(report.boot):
        raise _fail(f"field 'boot': {str(report.boot)[:80]!r} is not a boot id")
    if report.state not in STATES:
        raise _fail(f"field 'state': {str(report.state)[:80]!r} is not one of {', '.join(STATES)}")
    _check_text(report.summary, "field 'summary'")
    if not isinstance(report.clock_trusted, bool):
        raise _fail(f"field 'clock_trusted': {str(report.clock_trusted)[:80]!r} is not true or false")
    if len(report.checks) > MAX_CHECKS:
        raise _fail(f"{len(report.checks)} checks, more than the {MAX_CHECKS} allowed")
    seen: set[str] = set()
    for index, check in enumerate(report.checks):
        where = f"checks[{index}]"
        if not isinstance(check, Check):
            raise _fail(f"{where}: not a check")
        if not isinstance(check.name, str) or not CHECK_NAME_PATTERN.match(check.name):
            raise _fail(f"{where}.name: {str(check.name)[:80]!r} is not [a-z][a-z0-9-]{{0,31}}")
        if check.name in seen:
            raise _fail(f"{where}.name: check {check.name!r} appears twice")
        seen.add(check.name)
        if not isinstance(check.ok, bool):
            raise _fail(f"{where}.ok: {str(check.ok)[:80]!r} is not true or false")
        _check_text(check.detail, f"{where}.detail")
    if report.state == "ok" and report.failing_checks():
        raise _fail(f"state 'ok' but check {report.failing_checks()[0].name!r} failed")
    if len(report.metrics) > MAX_METRICS:
        raise _fail(f"{len(report.metrics)} metrics, more than the {MAX_METRICS} allowed")
    for name, value in report.metrics.items():
        if not isinstance(name, str) or not METRIC_NAME_PATTERN.match(name):
            raise _fail(f"metric name {str(name)[:80]!r} is not [a-z][a-z0-9_]{{0,31}}")
        _encode_metric(name, value)


def report_payload(report: HealthReport, key_fingerprint: str) -> bytes:
    """The canonical payload of ``report``, naming the signing key by its fingerprint."""
    validate_report(report)
    value = {
        "v": HEALTH_VERSION, "type": "health", "device": report.device, "key": key_fingerprint,
        "at_wall_us": report.at_wall_us, "boot": report.boot, "state": report.state, "summary": report.summary,
        "clock_trusted": report.clock_trusted,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks],
        "metrics": {name: _encode_metric(name, value) for name, value in report.metrics.items()},
    }
    try:
        return canonical_json(value)
    except EncodingError as exc:
        raise _fail(str(exc)) from None


def sign_report(report: HealthReport, key: DeviceKey) -> bytes:
    """The report as one signed line: canonical-JSON payload TAB signature-hex LF."""
    payload = report_payload(report, key.fingerprint)
    line = payload + b"\t" + key.sign(payload, domain=HEALTH_DOMAIN).hex().encode("ascii") + b"\n"
    if len(line) > MAX_REPORT_BYTES:
        raise _fail(f"{len(line)} bytes, more than the {MAX_REPORT_BYTES} allowed")
    return line


@dataclass(frozen=True)
class ParsedReport:
    report: HealthReport
    key: str  # fingerprint of the key the report says signed it
    payload: bytes
    signature: bytes


_FIELDS = frozenset({"v", "type", "device", "key", "at_wall_us", "boot", "state", "summary", "clock_trusted",
                     "checks", "metrics"})


def parse_report(line: bytes) -> ParsedReport:
    """Parse a report line (format only; verify_report also checks the signature). RecordFormatError."""
    parsed = parse_signed_line(line, _WHAT, MAX_REPORT_BYTES, _FIELDS, one_line=True)
    value = parsed.value
    if value["v"] != HEALTH_VERSION or value["type"] != "health":
        raise _fail(f"fields 'v'/'type': {value['v']!r}/{str(value['type'])[:40]!r} are not {HEALTH_VERSION}/'health'")
    if not is_hex64(value["key"]):
        raise _fail(f"field 'key': {str(value['key'])[:80]!r} is not a key fingerprint")
    checks = value["checks"]
    if not isinstance(checks, list):
        raise _fail("field 'checks': not a list")
    parsed_checks = []
    for index, item in enumerate(checks):
        if not isinstance(item, dict) or set(item) != {"name", "ok", "detail"}:
            raise _fail(f"checks[{index}]: not an object with name, ok and detail")
        parsed_checks.append(Check(item["name"], item["ok"], item["detail"]))
    metrics = value["metrics"]
    if not isinstance(metrics, dict):
        raise _fail("field 'metrics': not an object")
    report = HealthReport(
        device=value["device"], at_wall_us=value["at_wall_us"], boot=value["boot"], state=value["state"],
        summary=value["summary"], checks=tuple(parsed_checks), clock_trusted=value["clock_trusted"],
        metrics={name: _decode_metric(name, item) for name, item in metrics.items()},
    )
    validate_report(report)
    return ParsedReport(report, value["key"], parsed.payload, parsed.signature)


def verify_report(line: bytes, public_key: Ed25519PublicKey, device: str) -> HealthReport:
    """The report in ``line`` if ``public_key`` signed it and it is about ``device``; else VerificationError
    (a malformed line included) naming what is wrong."""
    try:
        parsed = parse_report(line)
    except RecordFormatError as exc:
        raise VerificationError(str(exc)) from None
    what = f"{_WHAT} from {device}"
    if parsed.key != fingerprint(public_key_raw(public_key)):
        raise VerificationError(f"{what}: signed by another key ({parsed.key[:16]}...)")
    if not verify_signature(public_key, parsed.payload, parsed.signature, domain=HEALTH_DOMAIN):
        raise VerificationError(f"{what}: signature invalid")
    if parsed.report.device != device:
        raise VerificationError(f"{what}: about device {parsed.report.device!r}, not {device!r}")
    return parsed.report


def write_report_file(path: Path, line: bytes) -> None:
    """Replace ``path`` with ``line`` atomically (temporary file, fsync, rename, fsync the folder), so a
    reader sees the old report or the new one, never a mix. Creates the folder if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_durably(path, line, mode=0o644)


def read_report_file(path: Path) -> bytes | None:
    """The file's bytes (at most one byte more than a report may have, so an oversize file is refused by
    parse_report without being read whole), or None when there is no report yet. Other errors: OSError."""
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_REPORT_BYTES + 1)
    except FileNotFoundError:
        return None
