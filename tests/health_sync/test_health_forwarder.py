"""The uploader's decision what health line to publish (no MQTT): changed file or new connection only."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import seeded_key

from agent.health.report import Check, HealthReport, sign_report, write_report_file
from sync.uploader.health import HealthForwarder

DEVICE = "dev-0001"
REPORT = HealthReport(
    device=DEVICE, at_wall_us=1_700_000_000_000_000, boot="0b0c0000-0000-4000-8000-000000000001",
    state="failed", summary="self-test failed", checks=(Check("camera", False, "no frames"),), clock_trusted=True,
    metrics={},
)


def test_absent_file_sends_nothing(tmp_path: Path) -> None:
    assert HealthForwarder(tmp_path / "health.json", DEVICE).due(None) is None


def test_line_is_sent_once_per_connection_and_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    first = sign_report(REPORT, seeded_key(1))
    write_report_file(path, first)
    forwarder = HealthForwarder(path, DEVICE)
    conn_a, conn_b = object(), object()
    assert forwarder.due(None) == first and forwarder.due(conn_a) == first
    forwarder.sent(conn_a, first)
    assert forwarder.due(conn_a) is None
    assert forwarder.due(conn_b) == first  # a new connection: sent again (the station may have lost it)
    second = sign_report(replace(REPORT, at_wall_us=REPORT.at_wall_us + 1), seeded_key(1))
    write_report_file(path, second)
    assert forwarder.due(conn_a) == second
    forwarder.sent(conn_a, second)
    assert forwarder.due(conn_a) is None
    path.unlink()
    assert forwarder.due(conn_b) is None


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{}\n", "not a valid report line (health report: not 'payload TAB signature-hex')"),
        (b"", "not a valid report line (health report: not exactly one line ending in LF)"),
        (None, "about device 'dev-0002', not this device 'dev-0001'"),
    ],
)
def test_a_bad_file_is_logged_once_with_its_path_and_not_sent(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                               content: bytes | None, why: str) -> None:
    path = tmp_path / "health.json"
    path.write_bytes(content if content is not None else sign_report(replace(REPORT, device="dev-0002"),
                                                                     seeded_key(1)))
    forwarder = HealthForwarder(path, DEVICE)
    with caplog.at_level(logging.ERROR):
        assert forwarder.due(None) is None
        assert forwarder.due(object()) is None  # looked at again, unchanged: not logged again
    assert [r.getMessage() for r in caplog.records] == [f"health report file {path}: {why}; not sent"]
    # Repaired: the next look sends it.
    good = sign_report(REPORT, seeded_key(1))
    write_report_file(path, good)
    assert forwarder.due(None) == good


@pytest.mark.parametrize("kind", ["folder", "under-a-file"])
def test_an_unreadable_path_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    if kind == "folder":
        path = tmp_path / "health.json"
        path.mkdir()  # stat works, reading fails
    else:
        (tmp_path / "run").write_text("a file, not a folder")
        path = tmp_path / "run" / "health.json"  # stat itself fails (not a folder)
    forwarder = HealthForwarder(path, DEVICE)
    with caplog.at_level(logging.ERROR):
        assert forwarder.due(None) is None and forwarder.due(object()) is None
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"health report file {path}: cannot be read (") and message.endswith("; not sent")
