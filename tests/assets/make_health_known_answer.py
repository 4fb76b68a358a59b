"""Regenerate the health-report known answers in tests/assets/health/ (checked by
tests/health_sync/test_health_report.py).

    .venv/bin/python tests/assets/make_health_known_answer.py

``good.line`` is a degraded report from device "kat-0001" signed with the known-answer key (seed
0x4b * 32, public key in tests/assets/good/device.pub); ``tampered.line`` is the same line with the state
changed from "degraded" to "ok" and the failing check's ``ok`` flipped (same length), so its signature no
longer matches. Ed25519 is deterministic: regenerating with unchanged code reproduces both files byte for
byte. Regenerate only on purpose: a diff means the report format changed.
"""

from __future__ import annotations

from pathlib import Path

from agent.evidence.keys import DeviceKey
from agent.health.report import Check, HealthReport, sign_report

HEALTH_ASSETS = Path(__file__).resolve().parent / "health"
KEY_SEED = bytes([0x4B]) * 32

KNOWN_REPORT = HealthReport(
    device="kat-0001",
    at_wall_us=1_700_000_100_000_000,
    boot="0b0c0000-0000-4000-8000-000000000001",
    state="degraded",
    summary="frame rate 11.5 fps, below the 14 fps floor",
    checks=(
        Check("camera", True, "frames arriving"),
        Check("store", True, "writable, 12.0 GB free"),
        Check("clock", True, "synchronised since boot"),
        Check("key", True, "matches the enrolled fingerprint"),
        Check("frame-rate", False, "11.5 fps, floor 14 fps"),
    ),
    clock_trusted=True,
    metrics={"fps": 11.5, "write_latency_ms": 23.25, "free_bytes": 12_000_000_000, "temperature_c": 61.0,
             "battery_percent": None},
)


def tamper(line: bytes) -> bytes:
    assert line.count(b'"state":"degraded"') == 1 and line.count(b'"ok":false') == 1
    return line.replace(b'"state":"degraded"', b'"state":"ok"').replace(b'"ok":false', b'"ok":true')


def main() -> None:
    HEALTH_ASSETS.mkdir(exist_ok=True)
    line = sign_report(KNOWN_REPORT, DeviceKey.from_seed(KEY_SEED))
    (HEALTH_ASSETS / "good.line").write_bytes(line)
    (HEALTH_ASSETS / "tampered.line").write_bytes(tamper(line))
    print(line.decode("ascii"), end="")


if __name__ == "__main__":
    main()
