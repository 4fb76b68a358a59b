from __future__ import annotations

import pytest

from agent.camera.base import CameraSettings
from agent.camera.factory import ENV_VAR


@pytest.fixture(autouse=True)
def no_backend_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """A BODYCAM_CAMERA set in the developer's shell must not change what the tests open."""
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def small_settings() -> CameraSettings:
    """Small and quick to encode, with a short GOP so a few dozen frames hold several keyframes."""
    return CameraSettings(
        width=320,
        height=240,
        fps=30,
        bitrate=600_000,
        keyframe_interval=10,
        device_id="cam-test-01",
        officer_id="officer-42",
    )
