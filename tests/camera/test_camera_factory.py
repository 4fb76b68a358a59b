from __future__ import annotations

import logging
from pathlib import Path

import pytest
from camera_doubles import RecordingOutput

from agent.camera import fake_picamera2
from agent.camera.base import CameraSettings
from agent.camera.factory import BACKENDS, ENV_VAR, chosen_backend, open_camera
from agent.camera.picamera2_camera import Picamera2Camera
from agent.camera.synthetic import SyntheticCamera
from agent.errors import CameraError


def test_opens_the_named_backend_with_its_options(small_settings: CameraSettings, tmp_path: Path) -> None:
    camera = open_camera("synthetic", small_settings, realtime=False, max_frames=3)
    assert isinstance(camera, SyntheticCamera) and camera.max_frames == 3
    output = RecordingOutput()
    camera.start_recording(output)
    assert camera.wait_finished(10)
    camera.close()
    assert len(output.frames) == 3

    fake = fake_picamera2.load(fast=True, max_frames=2)
    pi = open_camera("picamera2", small_settings, module_loader=lambda: fake)
    assert isinstance(pi, Picamera2Camera)
    pi.close()

    with pytest.raises(CameraError, match="cannot open video file"):
        open_camera("opencv", small_settings, source=tmp_path / "absent.avi")


def test_the_environment_overrides_the_configured_backend(
    small_settings: CameraSettings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ENV_VAR, " Synthetic ")
    # Configured for the Pi; the Pi-only option is dropped, with a log line, instead of failing.
    with caplog.at_level(logging.INFO, logger="agent.camera.factory"):
        camera = open_camera("picamera2", small_settings, module_loader=lambda: None, camera_num=0)
    assert isinstance(camera, SyntheticCamera)
    assert "ignoring options" in caplog.text and "module_loader" in caplog.text
    camera.close()
    monkeypatch.setenv(ENV_VAR, "")  # empty means unset
    assert chosen_backend("opencv") == "opencv"


def test_chosen_backend_reads_a_given_environment() -> None:
    assert chosen_backend("picamera2", environ={ENV_VAR: "synthetic"}) == "synthetic"
    assert chosen_backend("picamera2", environ={}) == "picamera2"
    assert chosen_backend(" OpenCV ", environ={ENV_VAR: "  "}) == "opencv"


def test_an_override_drops_the_opencv_source(small_settings: CameraSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "synthetic")
    camera = open_camera("opencv", small_settings, source=0)
    assert isinstance(camera, SyntheticCamera)
    camera.close()


def test_unknown_backends_list_the_valid_names(small_settings: CameraSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CameraError, match=r"unknown camera backend 'webcam' \(from the configuration\)") as info:
        open_camera("webcam", small_settings)
    assert all(name in str(info.value) for name in BACKENDS)
    monkeypatch.setenv(ENV_VAR, "libcamera")
    with pytest.raises(CameraError, match=r"'libcamera' \(from \$BODYCAM_CAMERA\): valid names are synthetic"):
        open_camera("synthetic", small_settings)


def test_a_misspelt_option_fails_when_nothing_was_overridden(small_settings: CameraSettings) -> None:
    with pytest.raises(CameraError, match="takes no option real_time"):
        open_camera("synthetic", small_settings, real_time=False)
