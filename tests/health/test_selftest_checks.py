"""The self-test's checks one by one: the pure verdicts, and each check on real files and a real camera."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import seeded_key

from agent.camera.base import CameraSettings
from agent.camera.synthetic import SyntheticCamera
from agent.errors import CameraError
from agent.health.report import Check
from agent.health.selftest import (
    ClockTrust,
    CountingOutput,
    SelfTestResult,
    camera_verdict,
    check_key,
    check_store,
    clock_trust,
    key_verdict,
    space_verdict,
    watch_camera,
)

MIB = 1024 * 1024
FINGERPRINT = seeded_key(1).fingerprint


def test_camera_verdict() -> None:
    assert camera_verdict(15, 15, 0.52, 10, None) == Check("camera", True, "15 frames in 0.52 s")
    assert camera_verdict(0, 15, 10.0, 10, None) == Check("camera", False, "no frames within 10 s")
    assert camera_verdict(4, 15, 10.0, 10, None) == Check("camera", False, "only 4 of 15 frames within 10 s")
    failed = camera_verdict(2, 15, 0.1, 10, "sensor gone")
    assert failed == Check("camera", False, "capture failed after 2 frames: sensor gone")


def test_watch_camera_on_the_synthetic_camera() -> None:
    settings = CameraSettings(width=320, height=192, fps=30)
    with SyntheticCamera(settings, realtime=True) as camera:
        output = CountingOutput()
        camera.start_recording(output)
        check = watch_camera(lambda: output.frames, 5, 5.0, lambda: camera.error)
        camera.stop_recording()
    assert check.ok and check.detail.startswith("5 frames in "), check
    with SyntheticCamera(settings, realtime=True, max_frames=2) as camera:
        output = CountingOutput()
        camera.start_recording(output)
        check = watch_camera(lambda: output.frames, 5, 0.3, lambda: camera.error)
        camera.stop_recording()
    assert check == Check("camera", False, "only 2 of 5 frames within 0.3 s")


def test_watch_camera_sees_the_capture_fail() -> None:
    # The test picture's frame code does not fit a 160x96 frame: the capture thread fails at once.
    camera = SyntheticCamera(CameraSettings(width=160, height=96, fps=30), realtime=True)
    output = CountingOutput()
    camera.start_recording(output)
    check = watch_camera(lambda: output.frames, 5, 5.0, lambda: camera.error)
    with pytest.raises(CameraError):
        camera.close()
    assert check == Check("camera", False,
                          "capture failed after 0 frames: frame of 160x96 is too small for the frame code")


def test_space_verdict() -> None:
    assert space_verdict(100 * MIB, 64 * MIB) == Check("store", True, "writable, 100.0 MiB free (floor 64.0 MiB)")
    assert not space_verdict(64 * MIB, 64 * MIB).ok
    assert space_verdict(3 * 1024 * MIB, 4 * 1024 * MIB).detail == (
        "only 3.0 GiB free, at or below the floor of 4.0 GiB (recorder.floor_mb)"
    )


def test_check_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    check, writable = check_store(store, 1, create=False)  # the technician's run creates nothing
    assert check.ok and writable and not store.exists()
    check, writable = check_store(store, 1, create=True)
    assert check.ok and writable and (store / "segments").is_dir() and (store / "quarantine").is_dir()
    assert sorted(p.name for p in store.iterdir()) == ["quarantine", "segments"]  # the probe is gone
    check, writable = check_store(store, 2**62, create=True)
    assert not check.ok and writable  # full but writable: the failure can still be recorded

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    check, writable = check_store(blocked / "store", 1, create=True)
    assert not check.ok and not writable and check.detail.startswith(f"store {blocked / 'store'}: cannot create")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode 0555 folder (test_selftest_daemon covers a "
                                              "read-only store as root)")
def test_check_store_in_a_folder_without_write_permission(tmp_path: Path) -> None:
    store = tmp_path / "store"
    check_store(store, 1, create=True)
    store.chmod(0o555)
    try:
        check, writable = check_store(store, 1, create=True)
    finally:
        store.chmod(0o755)
    assert not writable and check.detail == f"{store}: cannot create a file (Permission denied)"


def test_clock_trust(tmp_path: Path) -> None:
    marker, rtc = tmp_path / "synchronized", tmp_path / "rtc0"
    untrusted = ClockTrust(False, "not synchronised since boot and no real-time clock")
    assert clock_trust(str(marker), str(rtc)) == untrusted
    assert untrusted.check() == Check("clock", True, "untrusted: not synchronised since boot and no real-time clock")
    rtc.mkdir()
    assert clock_trust(str(marker), str(rtc)) == ClockTrust(True, f"real-time clock present ({rtc})")
    assert clock_trust(str(marker), "") == untrusted  # an empty path is not looked at
    marker.write_text("")
    assert clock_trust(str(marker), "") == ClockTrust(True, f"synchronised since boot ({marker})")


def test_key_verdict_and_check_key(tmp_path: Path) -> None:
    assert key_verdict(FINGERPRINT, "").ok
    assert key_verdict(FINGERPRINT, FINGERPRINT.upper()).ok
    other = seeded_key(2).fingerprint
    assert key_verdict(FINGERPRINT, other) == Check(
        "key", False, f"fingerprint {FINGERPRINT[:16]}... is not the enrolled {other[:16]}..."
    )
    path = tmp_path / "identity" / "device.key"
    check, key = check_key(path, "", create=False)
    assert key is None and check == Check("key", False, f"key file {path}: not found")
    check, key = check_key(path, "", create=True)  # the daemon's first start creates it
    assert check.ok and key is not None and path.exists()
    path.chmod(0o644)
    check, key = check_key(path, "", create=True)
    assert key is None and not check.ok and "lets others read it" in check.detail


def test_result_summary_and_record() -> None:
    trusted = ClockTrust(True, "real-time clock present (/sys/class/rtc/rtc0)")
    checks = (Check("camera", True, "15 frames in 0.50 s"), Check("store", True, "ok"), trusted.check(),
              Check("key", True, "ok"))
    passed = SelfTestResult(checks, trusted)
    assert passed.passed and passed.summary == (
        "self-test passed; clock trusted (real-time clock present (/sys/class/rtc/rtc0))"
    )
    failed = SelfTestResult((Check("camera", False, "no frames within 10 s"), *checks[1:3],
                             Check("key", False, "key file k: not found")), trusted)
    assert failed.summary == "self-test failed: camera: no frames within 10 s; key: key file k: not found"
    body = failed.ledger_body()
    assert (body["kind"], body["result"], body["clock_trusted"]) == ("selftest", "fail", True)
    assert [c["name"] for c in body["checks"]] == ["camera", "store", "clock", "key"]
