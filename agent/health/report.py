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

from agent.errors import RecordFormatError, VerificationError
from agent.evidence.encoding import MAX_SAFE_INTEGER, is_integer
from agent.evidence.fsutil import write_file_durably
from agent.evidence.keys import DeviceKey
from agent.evidence.record import BOOT_ID_PATTERN
from agent.evidence.signed_message import (
    BOOLEAN,
    COUNT,
    DEVICE_ID,
    HEX64,
    MessageFormat,
    SignedLine,
    list_of,
    object_of,
    one_line,
    one_of,
    text,
)

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


def _encode_metric(name: str, value: Any) -> Any:
    if value is None or is_integer(value):
        if value is not None and abs(value) > MAX_SAFE_INTEGER:
            raise _fail(f"metric {name!r}: {value} is outside +-(2^53-1)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) * 1000 > MAX_SAFE_INTEGER:
            raise _fail(f"metric {name!r}: {value!r} is not a finite number in range")
        return {"milli": round(value * 1000)}
    raise _fail(f"metric {name!r}: {str(value)[:80]!r} is not an integer, a float or null")


def _decode_metric(value: Any) -> Metric:
    if isinstance(value, dict):
        return float(value["milli"]) / 1000
    return value  # type: ignore[no-any-return]


def _metrics_problem(value: Any, path: str) -> str | None:
    """The encoded metrics: at most MAX_METRICS names, each an integer, ``{"milli": integer}`` or null."""
    if not isinstance(value, dict):
        return f"field {path!r}: not an object"
    if len(value) > MAX_METRICS:
        return f"{len(value)} metrics, more than the {MAX_METRICS} allowed"
    for name, item in value.items():
        if not isinstance(name, str) or not METRIC_NAME_PATTERN.match(name):
            return f"metric name {str(name)[:80]!r} is not [a-z][a-z0-9_]{{0,31}}"
        milli = isinstance(item, dict) and set(item) == {"milli"} and is_integer(item["milli"])
        if not (item is None or is_integer(item) or milli):
            return f"metric {name!r}: {str(item)[:80]!r} is not an integer, {{\"milli\": integer}} or null"
    return None


def _checks_unique(value: Mapping[str, Any]) -> str | None:
    seen: set[str] = set()
    for index, check in enumerate(value["checks"]):
        if check["name"] in seen:
            return f"checks[{index}].name: check {check['name']!r} appears twice"
        seen.add(check["name"])
    return None


def _ok_means_no_failure(value: Mapping[str, Any]) -> str | None:
    failing = [c["name"] for c in value["checks"] if not c["ok"]]
    return f"state 'ok' but check {failing[0]!r} failed" if value["state"] == "ok" and failing else None


HEALTH_FORMAT = MessageFormat(
    _WHAT, HEALTH_DOMAIN, {"v": HEALTH_VERSION, "type": "health"},
    {
        "device": DEVICE_ID, "key": HEX64, "at_wall_us": COUNT, "boot": text(BOOT_ID_PATTERN, "a boot id"),
        "state": one_of(STATES), "summary": one_line(MAX_TEXT_CHARS), "clock_trusted": BOOLEAN,
        "checks": list_of(object_of({
            "name": text(CHECK_NAME_PATTERN, "[a-z][a-z0-9-]{0,31}"), "ok": BOOLEAN,
            "detail": one_line(MAX_TEXT_CHARS),
        }), MAX_CHECKS, "checks"),
        "metrics": _metrics_problem,
    },
    max_bytes=MAX_REPORT_BYTES, rules=(_checks_unique, _ok_means_no_failure), one_line=True,
)  # fmt: skip


def _body(report: HealthReport, key_fingerprint: str) -> dict[str, Any]:
    for index, check in enumerate(report.checks):
        if not isinstance(check, Check):
            raise _fail(f"checks[{index}]: not a check")
    return {
        "device": report.device, "key": key_fingerprint, "at_wall_us": report.at_wall_us, "boot": report.boot,
        "state": report.state, "summary": report.summary, "clock_trusted": report.clock_trusted,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks],
        "metrics": {name: _encode_metric(name, value) for name, value in report.metrics.items()},
    }  # fmt: skip


def report_payload(report: HealthReport, key_fingerprint: str) -> bytes:
    """The canonical payload of ``report``, naming the signing key by its fingerprint; RecordFormatError
    naming the first field a station would refuse."""
    return HEALTH_FORMAT.payload(_body(report, key_fingerprint))


def sign_report(report: HealthReport, key: DeviceKey) -> bytes:
    """The report as one signed line: canonical-JSON payload TAB signature-hex LF."""
    return HEALTH_FORMAT.sign(_body(report, key.fingerprint), key).to_line()


@dataclass(frozen=True)
class ParsedReport:
    report: HealthReport
    key: str  # fingerprint of the key the report says signed it
    payload: bytes
    signature: bytes


def parse_report(line: bytes) -> ParsedReport:
    """Parse a report line (format only; verify_report also checks the signature). RecordFormatError."""
    parsed = HEALTH_FORMAT.parse(line)
    value = parsed.value
    report = HealthReport(
        device=value["device"], at_wall_us=value["at_wall_us"], boot=value["boot"], state=value["state"],
        summary=value["summary"], checks=tuple(Check(c["name"], c["ok"], c["detail"]) for c in value["checks"]),
        clock_trusted=value["clock_trusted"],
        metrics={name: _decode_metric(item) for name, item in value["metrics"].items()},
    )
    return ParsedReport(report, value["key"], parsed.payload, parsed.signature)


def verify_report(line: bytes, public_key: Ed25519PublicKey, device: str) -> HealthReport:
    """The report in ``line`` if ``public_key`` signed it and it is about ``device``; else VerificationError
    (a malformed line included) naming what is wrong."""
    try:
        parsed = parse_report(line)
    except RecordFormatError as exc:
        raise VerificationError(str(exc)) from None
    signed = SignedLine({"key": parsed.key, "device": parsed.report.device}, parsed.payload, parsed.signature)
    HEALTH_FORMAT.verify(signed, public_key, device, what=f"{_WHAT} from {device}")
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
